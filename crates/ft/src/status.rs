//! The observability snapshot both cores return from `status()`: role,
//! phase, generation, log positions, lag, held outputs and traffic, for the
//! status endpoint the drivers expose. Plain data with a one-line Display.

use std::fmt;

use crate::{Generation, Role, Seq};

/// Where a core is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Primary with a live (or reconnecting) backup: outputs wait for acks.
    Paired,
    /// Backup replaying the primary's log.
    Following,
    /// Backup declared the primary dead and is executing what it received.
    Draining,
    /// Waiting for the arbiter's test-and-set.
    Arbitrating,
    /// Primary won the arbiter: runs without a backup.
    Alone,
    /// Backup won the arbiter: runs as the primary.
    Live,
    /// Stopped; the driver must stop the VM.
    Halted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Paired => "paired",
            Phase::Following => "following",
            Phase::Draining => "draining",
            Phase::Arbitrating => "arbitrating",
            Phase::Alone => "alone",
            Phase::Live => "live",
            Phase::Halted => "halted",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of a core.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub role: Role,
    pub phase: Phase,
    pub generation: Generation,
    /// A logging connection with a completed handshake is up.
    pub connected: bool,
    /// Primary: entries appended. Backup: entries received.
    pub log_seq: Seq,
    /// Primary: entries the backup acknowledged. Backup: entries it
    /// acknowledged in its last Ack.
    pub acked_seq: Seq,
    /// Backup: entries its driver reported executed. Primary: 0.
    pub executed_seq: Seq,
    /// Primary: its instruction count. Backup: its executed count.
    pub icount: u64,
    /// The other side's instruction count as last reported.
    pub peer_icount: u64,
    /// How far the backup's execution is behind the primary's.
    pub lag_instructions: u64,
    /// The same in milliseconds of primary execution (primary only, once
    /// its execution rate is known).
    pub lag_ms: Option<u64>,
    /// Primary: outputs waiting for acknowledgement.
    pub held_outputs: usize,
    /// Primary: outputs released so far.
    pub released_outputs: u64,
    /// Primary: log bytes kept for resending (unacknowledged). Backup: log
    /// bytes received but not yet handed to the replayer.
    pub buffered_bytes: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Primary: total milliseconds of throttling asked for.
    pub throttled_ms: u64,
    /// When the peer was last heard from.
    pub last_heard_ms: Option<u64>,
    /// Heartbeat intervals beyond the first that passed in silence.
    pub heartbeats_missed: u64,
    /// Test-and-set requests sent.
    pub arbiter_attempts: u32,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} gen={} connected={} log={} acked={} executed={} icount={} peer_icount={} lag={} instr",
            self.role,
            self.phase,
            self.generation,
            self.connected,
            self.log_seq,
            self.acked_seq,
            self.executed_seq,
            self.icount,
            self.peer_icount,
            self.lag_instructions,
        )?;
        if let Some(ms) = self.lag_ms {
            write!(f, " ({ms} ms)")?;
        }
        write!(
            f,
            " held={} released={} buffered={}B sent={}B received={}B throttled={}ms",
            self.held_outputs,
            self.released_outputs,
            self.buffered_bytes,
            self.bytes_sent,
            self.bytes_received,
            self.throttled_ms
        )
    }
}
