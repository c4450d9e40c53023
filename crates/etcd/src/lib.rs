//! The arbiter of an FT pair kept in etcd instead of `ftvm storage`. The
//! test-and-set that decides which side may act alone is one etcd
//! transaction: read the VM's state key, apply exactly the built-in
//! arbiter's rules ([`ftvm_storage::VmRecord`]), and write the winner only
//! if the key is still at the revision that was read. etcd's Raft makes the
//! answer linearizable across the cluster: a client that can only reach a
//! minority of the members gets no answer, and no answer is never a win.
//! [`target`] parses `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`, [`keys`] owns
//! the key layout, [`record`] the values, and [`EtcdArbiter`] the calls;
//! [`local`] starts real etcd members for tests and the lab.

mod client;
mod error;
pub mod keys;
pub mod local;
pub mod record;
pub mod target;

pub use client::EtcdArbiter;
pub use error::EtcdError;
pub use target::EtcdTarget;
