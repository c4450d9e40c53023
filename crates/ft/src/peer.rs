//! What the primary and backup cores share about their peer: the state of
//! the logging connection and its handshake (our Hello, the checks of the
//! peer's Hello and of every frame, the handshake deadline), silence-based
//! failure detection, and the arbiter client that decides who may go on
//! alone (with the mapping of its steps, which both cores act on alike).
//! Each core keeps what is its own — the log, the output rule, lag
//! control, the replay horizon — and turns the [`Watch`] and
//! [`Arbitration`] answers into its own actions.

use crate::arbiter::{ArbiterClient, ArbiterStep, TasRequest};
use crate::config::Config;
use crate::detector::FailureDetector;
use crate::error::FtError;
use crate::wire::{Frame, Hello};
use crate::{ArbiterResult, HaltReason, Role, Seq, PROTOCOL_VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conn {
    None,
    /// Connected, our Hello sent, waiting for the peer's.
    Handshake,
    Ready,
}

/// What the passing of time means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Nothing to do.
    Quiet,
    /// Silent past the failure timeout: declare the peer dead.
    PeerDead,
    /// The handshake took too long: the connection was dropped (the core
    /// tells its driver to disconnect).
    HandshakeTimedOut,
}

/// What an arbitration step asks of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arbitration {
    Wait,
    /// Send this test-and-set.
    Request(TasRequest),
    /// Act alone.
    Won,
    /// Halt, for this reason.
    Halt(HaltReason),
}

impl From<ArbiterStep> for Arbitration {
    fn from(s: ArbiterStep) -> Self {
        match s {
            ArbiterStep::Wait => Arbitration::Wait,
            ArbiterStep::Request(r) => Arbitration::Request(r),
            ArbiterStep::Won => Arbitration::Won,
            ArbiterStep::Lost => Arbitration::Halt(HaltReason::LostArbiter),
            ArbiterStep::GaveUp => Arbitration::Halt(HaltReason::ArbiterUnreachable),
        }
    }
}

/// The peer as one core sees it.
#[derive(Debug)]
pub(crate) struct Peer {
    me: Role,
    pub conn: Conn,
    /// When a handshake in progress is given up.
    handshake_deadline: u64,
    pub detector: FailureDetector,
    arbiter: ArbiterClient,
}

impl Peer {
    pub fn new(cfg: &Config, me: Role, now_ms: u64) -> Peer {
        Peer {
            me,
            conn: Conn::None,
            handshake_deadline: 0,
            detector: FailureDetector::new(now_ms, cfg.startup_timeout_ms, cfg.failure_timeout_ms)
                .with_heartbeat(cfg.heartbeat_interval_ms),
            arbiter: ArbiterClient::new(
                cfg.generation,
                me,
                cfg.arbiter_retry_ms,
                cfg.arbiter_deadline_ms,
            ),
        }
    }

    /// A new connection: starts the handshake and returns the Hello to
    /// send, saying that this side holds the log up to `seq`.
    pub fn connected(&mut self, cfg: &Config, now_ms: u64, seq: Seq, log_header: Vec<u8>) -> Hello {
        self.conn = Conn::Handshake;
        self.handshake_deadline = now_ms.saturating_add(cfg.handshake_timeout_ms);
        Hello {
            version: PROTOCOL_VERSION,
            vm: cfg.vm.clone(),
            role: self.me,
            machine_hash: cfg.machine_hash,
            seq,
            log_header,
        }
    }

    /// Forgets the connection; returns whether there was one (which the
    /// driver must then close).
    pub fn disconnect(&mut self) -> bool {
        std::mem::replace(&mut self.conn, Conn::None) != Conn::None
    }

    /// Checks a frame before its message is looked at: a connection must
    /// exist and the frame be of this pair's generation.
    pub fn check_frame(&self, cfg: &Config, frame: &Frame) -> Result<(), FtError> {
        if self.conn == Conn::None {
            return Err(FtError::NotConnected);
        }
        if frame.generation != cfg.generation {
            return Err(FtError::WrongGeneration {
                ours: cfg.generation,
                theirs: frame.generation,
            });
        }
        Ok(())
    }

    /// Checks the peer's Hello: protocol version, the other role, the same
    /// VM and machine. The log positions are each core's to check.
    pub fn check_hello(&self, cfg: &Config, h: &Hello) -> Result<(), FtError> {
        if h.version != PROTOCOL_VERSION {
            return Err(FtError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: h.version,
            });
        }
        if h.role != self.me.peer() {
            return Err(FtError::WrongRole {
                ours: self.me,
                theirs: h.role,
            });
        }
        if h.vm != cfg.vm {
            return Err(FtError::WrongVm {
                ours: cfg.vm.clone(),
                theirs: h.vm.clone(),
            });
        }
        if h.machine_hash != cfg.machine_hash {
            return Err(FtError::MachineMismatch);
        }
        Ok(())
    }

    /// Failure detection and the handshake deadline, while the peer is
    /// expected.
    pub fn watch(&mut self, now_ms: u64) -> Watch {
        if self.detector.expired(now_ms) {
            return Watch::PeerDead;
        }
        if self.conn == Conn::Handshake && now_ms >= self.handshake_deadline {
            self.conn = Conn::None;
            return Watch::HandshakeTimedOut;
        }
        Watch::Quiet
    }

    /// When [`watch`](Self::watch) next has something to say.
    pub fn watch_deadline_ms(&self) -> u64 {
        let t = self.detector.deadline_ms();
        if self.conn == Conn::Handshake {
            t.min(self.handshake_deadline)
        } else {
            t
        }
    }

    /// Starts arbitration (the first test-and-set).
    pub fn arbitrate(&mut self, now_ms: u64) -> Arbitration {
        self.arbiter.start(now_ms).into()
    }

    /// Arbitration retries and deadline.
    pub fn arbiter_tick(&mut self, now_ms: u64) -> Arbitration {
        self.arbiter.on_tick(now_ms).into()
    }

    /// The arbiter's answer.
    pub fn arbiter_result(
        &mut self,
        now_ms: u64,
        result: ArbiterResult,
    ) -> Result<Arbitration, FtError> {
        Ok(self.arbiter.on_result(now_ms, result)?.into())
    }

    pub fn arbiter_timeout_ms(&self) -> Option<u64> {
        self.arbiter.next_timeout_ms()
    }

    pub fn arbiter_attempts(&self) -> u32 {
        self.arbiter.attempts()
    }
}
