//! ftvm-ft: the fault-tolerance protocol of an ftvm pair as sans-I/O state
//! machines. A [`Primary`] turns the log entries and outputs of the running
//! guest into logging-channel messages, holds every output until the backup
//! has acknowledged the entry it depends on (the output rule), measures the
//! backup's execution lag and asks its driver to slow down, and decides with
//! the arbiter whether to go on alone when the backup falls silent. A
//! [`Backup`] buffers and acknowledges the log, hands entries to its replayer
//! and, when the primary falls silent, drains the log, asks the arbiter and
//! goes live only if it won. Neither touches a socket, a clock, a thread or
//! the VM: drivers feed them events stamped with `now_ms`, then drain
//! `poll_action()` and carry out what it says. [`wire`] is the byte format of
//! the logging channel; `docs/ft-protocol.md` describes the protocol.

#![forbid(unsafe_code)]

mod arbiter;
mod backup;
mod config;
mod detector;
mod error;
mod lag;
mod peer;
mod primary;
mod status;
pub mod wire;

pub use arbiter::{ArbiterClient, ArbiterStep, TasRequest};
pub use backup::{Backup, BackupAction, LogEntry};
pub use config::Config;
pub use detector::FailureDetector;
pub use error::FtError;
pub use primary::{Primary, PrimaryAction};
pub use status::{Phase, Status};
pub use wire::{Frame, GoodbyeReason, Hello, Message};

/// Sequence number of a log entry on the logging channel. The first entry a
/// primary appends is 1; 0 means "no entry" (an output that depends on no
/// input, a backup that has received nothing).
pub type Seq = u64;

/// Generation of a primary/backup pair. Every message and every arbiter
/// test-and-set carries it; a process of another generation can neither talk
/// to the pair nor win its arbiter.
pub type Generation = u64;

/// The driver's identifier for one output (a transmitted frame, console
/// bytes, a disk write). Opaque to the cores; released in submission order.
pub type OutputId = u64;

/// Version of the logging-channel protocol carried in [`Hello`]; a peer with
/// another version is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// Which side of the pair a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs the guest with real I/O and streams the log.
    Primary,
    /// Re-executes the log; goes live if the primary dies.
    Backup,
}

impl Role {
    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Primary => Role::Backup,
            Role::Backup => Role::Primary,
        }
    }

    /// Lower-case name, as in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the arbiter (the shared storage's test-and-set) answered, as the
/// driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArbiterResult {
    /// The flag for this generation was unset, or already set by this same
    /// claimant (a retry whose first answer was lost): go on.
    Won,
    /// Another claimant holds this generation: halt.
    Lost,
    /// No answer (connection refused, request timed out). The core retries
    /// until its deadline and never acts on this.
    Unreachable,
}

/// Why a core told its driver to halt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltReason {
    /// The peer won the arbiter: it is (or is about to be) the only live one.
    LostArbiter,
    /// The arbiter could not be reached before the deadline; acting alone
    /// without it could split the brain.
    ArbiterUnreachable,
    /// The primary announced that the guest powered off; there is nothing
    /// to take over.
    PeerPoweredOff,
    /// This node was told to stop (`leave`).
    Shutdown,
}

impl std::fmt::Display for HaltReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HaltReason::LostArbiter => "the peer won the arbiter",
            HaltReason::ArbiterUnreachable => "the arbiter was unreachable until the deadline",
            HaltReason::PeerPoweredOff => "the primary's guest powered off",
            HaltReason::Shutdown => "stopped on request",
        })
    }
}
