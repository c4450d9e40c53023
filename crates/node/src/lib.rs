//! `ftvm-node`: what runs inside one VM process. It owns the process's
//! readiness loop ([`reactor`]: epoll through `mio`, with a waker for the
//! host threads that remain — TAP readers, the disk worker, the console),
//! the glue to the host's devices ([`devices`], [`console`]) and the
//! drivers that interleave a deterministic machine with them: [`driver`]
//! for `ftvm run` / `ftvm record`, and [`ft`] for the primary, the backup
//! (following, then live) and re-protection joins. The option structs of
//! those drivers ([`machine_args::MachineArgs`], [`ft::FtArgs`], the
//! primary's and backup's, the TLS options [`tls_args::TlsArgs`]) derive
//! `clap::Args` so that the command line
//! (`crates/cli`) can embed them; the command line itself, its other
//! commands and the printing of status reports live there. [`metrics`]
//! and [`metered`] are the process's Prometheus metrics and the backends
//! that count their own I/O.

pub mod console;
pub mod devices;
pub mod driver;
pub mod events;
pub mod ft;
pub mod guest;
pub mod machine_args;
pub mod metered;
pub mod metrics;
pub mod reactor;
pub mod tls_args;
