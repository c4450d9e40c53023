//! What can go wrong talking to the etcd arbiter. Every error means "no
//! decision": callers must not act alone on any of them.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EtcdError {
    /// The `etcd://` address is malformed.
    #[error("bad etcd arbiter address {addr:?}: {why}")]
    BadTarget { addr: String, why: String },
    /// A VM or claimant name the arbiter cannot store.
    #[error("invalid arbiter request: {0}")]
    Invalid(String),
    /// No answer from a quorum within the caller's limit.
    #[error("etcd arbiter {target}: no answer within {ms} ms ({last})")]
    Timeout {
        target: String,
        ms: u128,
        last: String,
    },
    /// An ADVANCE to a generation that is not above the current one.
    #[error("etcd arbiter {target}: VM {vm:?} is already at generation {current}; advance needs a higher one")]
    NotAbove {
        target: String,
        vm: String,
        current: u64,
    },
    /// A key holds something this arbiter did not write.
    #[error("etcd arbiter {target}: key {key:?} holds an unreadable value: {why}")]
    Corrupt {
        target: String,
        key: String,
        why: String,
    },
    /// The client runtime could not be started.
    #[error("cannot start the etcd client runtime: {0}")]
    Runtime(std::io::Error),
}
