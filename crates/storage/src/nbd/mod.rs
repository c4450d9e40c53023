//! The NBD side of `ftvm storage`: protocol constants and message codecs
//! ([`proto`]), export lookup and file operations (`export`), the
//! per-connection server (`server`) and the reconnecting client library
//! ([`NbdClient`]).

pub(crate) mod client;
pub(crate) mod export;
pub mod proto;
pub(crate) mod server;

pub use client::{NbdClient, NbdClientOptions};
pub use export::valid_name as valid_export_name;
