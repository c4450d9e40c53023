//! The tunables of both cores, with the defaults the issues ask for
//! (heartbeat every 10 ms, peer declared dead after 100 ms of silence, lag
//! target 100 ms) and a check that refuses combinations that cannot work
//! (a heartbeat slower than the timeout, zero intervals, oversized names).

use crate::error::FtError;
use crate::wire::{MAX_LOG_HEADER, MAX_VM_NAME};
use crate::Generation;

/// Configuration shared by [`crate::Primary`] and [`crate::Backup`]; both
/// sides of a pair must agree on `vm`, `generation` and `machine_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The VM's name (1..=255 bytes of UTF-8), checked in the handshake.
    pub vm: String,
    /// The pair's generation: carried by every frame and test-and-set.
    pub generation: Generation,
    /// Identity of the machine (hash of the log header), checked in the
    /// handshake.
    pub machine_hash: [u8; 32],
    /// Primary only: the `ftvm-log` header sent in its Hello.
    pub log_header: Vec<u8>,
    /// Send a heartbeat when nothing else was sent for this long.
    pub heartbeat_interval_ms: u64,
    /// Silence from the peer longer than this declares it dead.
    pub failure_timeout_ms: u64,
    /// A connection whose handshake has not completed this long after it
    /// was established is dropped (so the driver dials again).
    pub handshake_timeout_ms: u64,
    /// Before the pair has ever completed a handshake, how long to wait for
    /// the peer before declaring it dead (the two processes are rarely
    /// started within one failure timeout of each other).
    pub startup_timeout_ms: u64,
    /// Execution lag above which the primary throttles itself.
    pub lag_target_ms: u64,
    /// Longest single pause the primary asks for when throttling.
    pub max_throttle_ms: u64,
    /// The primary also throttles when this many bytes of log are sent or
    /// queued but not yet acknowledged (its memory bound).
    pub max_unacked_bytes: u64,
    /// Largest batch of entries per Log message (a single larger entry still
    /// goes in a message of its own).
    pub max_batch_bytes: usize,
    /// The backup reports execution progress (an Ack) at most this often
    /// when it receives nothing to acknowledge.
    pub progress_report_ms: u64,
    /// Wait between test-and-set attempts after the arbiter was unreachable.
    pub arbiter_retry_ms: u64,
    /// Give up (halt) if the arbiter has not answered Won or Lost this long
    /// after the first attempt.
    pub arbiter_deadline_ms: u64,
}

impl Config {
    /// A configuration with the default timings.
    pub fn new(vm: impl Into<String>, generation: Generation, machine_hash: [u8; 32]) -> Self {
        Config {
            vm: vm.into(),
            generation,
            machine_hash,
            log_header: Vec::new(),
            heartbeat_interval_ms: 10,
            failure_timeout_ms: 100,
            handshake_timeout_ms: 100,
            startup_timeout_ms: 10_000,
            lag_target_ms: 100,
            max_throttle_ms: 10,
            max_unacked_bytes: 256 << 20,
            max_batch_bytes: 256 << 10,
            progress_report_ms: 10,
            arbiter_retry_ms: 100,
            arbiter_deadline_ms: 30_000,
        }
    }

    /// Refuses configurations that cannot work.
    pub fn validate(&self) -> Result<(), FtError> {
        let bad = |reason: &'static str| Err(FtError::BadConfig { reason });
        if self.vm.is_empty() || self.vm.len() > MAX_VM_NAME {
            return bad("vm name must be 1 to 255 bytes");
        }
        if self.log_header.len() > MAX_LOG_HEADER {
            return bad("log header larger than a Hello can carry");
        }
        if self.heartbeat_interval_ms == 0 || self.failure_timeout_ms == 0 {
            return bad("heartbeat interval and failure timeout must be positive");
        }
        if self.heartbeat_interval_ms.saturating_mul(2) > self.failure_timeout_ms {
            return bad("the failure timeout must be at least two heartbeat intervals");
        }
        if self.handshake_timeout_ms == 0 || self.handshake_timeout_ms > self.failure_timeout_ms {
            return bad("the handshake timeout must be positive and at most the failure timeout");
        }
        if self.startup_timeout_ms < self.failure_timeout_ms {
            return bad("the startup timeout must be at least the failure timeout");
        }
        if self.max_throttle_ms == 0 || self.progress_report_ms == 0 {
            return bad("max_throttle_ms and progress_report_ms must be positive");
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes > 16 << 20 {
            return bad("max_batch_bytes must be between 1 byte and 16 MiB");
        }
        if self.arbiter_retry_ms == 0 {
            return bad("arbiter_retry_ms must be positive");
        }
        Ok(())
    }
}
