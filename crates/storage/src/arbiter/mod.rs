//! The arbiter: an atomic, durable, generation-scoped test-and-set per VM
//! that decides which side of an FT pair may act alone. [`wire`] is the
//! framed protocol, `state` the rules and state file format, `store` the
//! durable persistence, `server` the per-connection handler and
//! [`ArbiterClient`] the client library.

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod state;
pub(crate) mod store;
pub mod wire;

pub use client::{ArbiterClient, DEFAULT_CONNECT_TIMEOUT};
pub use state::{ArbiterState, VmRecord};
pub use store::STATE_FILE;
