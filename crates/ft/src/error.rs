//! The one error type of the cores. Errors from `on_message` mean the
//! connection carried something this node must not accept (another
//! generation, a failed handshake, a gap in the log): the driver logs it,
//! drops the connection and calls `on_disconnect`. Errors from the other
//! events mean the driver itself misused the core; the core's state is
//! unchanged by a refused event in every case.

use ftvm_log::LogError;

use crate::wire::{BatchError, MessageType};
use crate::{Generation, Role, Seq};

#[derive(Debug, Clone, thiserror::Error)]
pub enum FtError {
    #[error("invalid configuration: {reason}")]
    BadConfig { reason: &'static str },

    #[error("message from generation {theirs}, this pair is generation {ours}")]
    WrongGeneration {
        ours: Generation,
        theirs: Generation,
    },
    #[error("peer speaks protocol version {theirs}, this build {ours}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("peer serves VM {theirs:?}, this node {ours:?}")]
    WrongVm { ours: String, theirs: String },
    #[error("peer says it is the {theirs}, but this node is the {ours}")]
    WrongRole { ours: Role, theirs: Role },
    #[error("peer runs a different machine (configuration or images differ)")]
    MachineMismatch,
    #[error("peer has {theirs} log entries, fewer than the {ours} this node knows it has")]
    PeerBehind { ours: Seq, theirs: Seq },
    #[error("peer claims {theirs} log entries, more than the {ours} that exist")]
    PeerAhead { ours: Seq, theirs: Seq },

    #[error("message on no connection (on_connected was not called)")]
    NotConnected,
    #[error("expected Hello as the first message, got {got}")]
    ExpectedHello { got: MessageType },
    #[error("unexpected {got} message from the {from}")]
    UnexpectedMessage { got: MessageType, from: Role },
    #[error("log gap: next entry is {expected}, message starts at {got}")]
    LogGap { expected: Seq, got: Seq },
    #[error("bad log batch: {0}")]
    BadBatch(#[from] BatchError),
    #[error("entry icount goes backwards: {prev} then {got}")]
    IcountBackwards { prev: u64, got: u64 },
    #[error("peer reports icount {theirs}, beyond this node's {ours}")]
    IcountAhead { ours: u64, theirs: u64 },

    #[error("not accepting a logging connection: this node is {phase}")]
    NotAccepting { phase: &'static str },
    #[error("node is {phase}: event refused")]
    Closed { phase: &'static str },
    #[error("invalid log entry: {0}")]
    BadEntry(#[from] LogError),
    #[error("output depends on entry {depends_on}, but only {last} entries exist")]
    OutputDependsOnFuture { depends_on: Seq, last: Seq },
    #[error("executed entry {seq}, but only {delivered} were handed out")]
    ExecutedNotDelivered { seq: Seq, delivered: Seq },
    #[error("execution went backwards: entry {seq} at icount {icount} after entry {prev_seq} at icount {prev_icount}")]
    ExecutedBackwards {
        seq: Seq,
        icount: u64,
        prev_seq: Seq,
        prev_icount: u64,
    },
    #[error("executed to icount {icount}, past the replay horizon {horizon}")]
    BeyondHorizon { icount: u64, horizon: u64 },
    #[error("drain reported with {executed} of {received} received entries executed")]
    DrainIncomplete { executed: Seq, received: Seq },
    #[error("no test-and-set is pending")]
    NoArbiterRequest,
}
