//! The backup's protocol core. It checks the primary's handshake, decodes
//! Log batches into numbered entries (ignoring ones it already has after a
//! reconnection, refusing gaps), acknowledges on receipt, hands entries to
//! the replayer in order (`next_entry`) together with how far the machine
//! may run without them (`horizon`), and records replay progress
//! (`on_executed`). When the primary is silent for the failure timeout it
//! stops listening, asks its driver to execute everything received
//! (`DrainLog`), and only when the driver reports the log drained does it
//! test-and-set the arbiter; it goes live only on Won and halts on Lost or
//! when the arbiter stays unreachable. Every output the primary released
//! depends on an entry this core acknowledged, and every acknowledged entry
//! is executed before going live, so the survivor reproduces them all.

use std::collections::VecDeque;

use crate::config::Config;
use crate::error::FtError;
use crate::peer::{Arbitration, Conn, Peer, Watch};
use crate::status::{Phase, Status};
use crate::wire::{decode_entries, Frame, GoodbyeReason, Hello, Message};
use crate::{ArbiterResult, Generation, HaltReason, Role, Seq};

/// One received log entry, numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: Seq,
    pub icount: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// What the backup's driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupAction {
    /// Encode and write this frame on the logging connection.
    Send(Frame),
    /// Close the logging connection (and call `on_disconnect`).
    Disconnect,
    /// The primary is considered dead: execute every entry `next_entry`
    /// still returns (each at its icount), then call `on_drained`.
    DrainLog,
    /// Ask the arbiter; answer with `on_arbiter_result`.
    TestAndSet {
        generation: Generation,
        claimant: Role,
    },
    /// This node won: stop replaying, attach the real network and disk,
    /// announce the guest's MAC address, run as the primary.
    GoLive,
    /// Stop the VM and exit.
    Halt { reason: HaltReason },
}

/// The backup's sans-I/O core.
#[derive(Debug)]
pub struct Backup {
    cfg: Config,
    now: u64,
    phase: Phase,
    /// The connection, its handshake, failure detection, the arbiter.
    peer: Peer,
    received: Seq,
    received_icount: u64,
    /// The primary's icount from its last heartbeat: no entry below it is
    /// still to come.
    primary_icount: u64,
    entries: VecDeque<LogEntry>,
    buffered_bytes: u64,
    delivered: Seq,
    delivered_icount: u64,
    executed: Seq,
    executed_icount: u64,
    ack_sent: Seq,
    ack_due: bool,
    reported_icount: u64,
    log_header: Option<Vec<u8>>,
    bytes_sent: u64,
    bytes_received: u64,
    last_sent_ms: u64,
    actions: VecDeque<BackupAction>,
}

impl Backup {
    /// A backup starting at `now_ms` from the same initial state as its
    /// primary, waiting for the primary to connect.
    pub fn new(cfg: Config, now_ms: u64) -> Result<Self, FtError> {
        cfg.validate()?;
        Ok(Backup {
            peer: Peer::new(&cfg, Role::Backup, now_ms),
            cfg,
            now: now_ms,
            phase: Phase::Following,
            received: 0,
            received_icount: 0,
            primary_icount: 0,
            entries: VecDeque::new(),
            buffered_bytes: 0,
            delivered: 0,
            delivered_icount: 0,
            executed: 0,
            executed_icount: 0,
            ack_sent: 0,
            ack_due: false,
            reported_icount: 0,
            log_header: None,
            bytes_sent: 0,
            bytes_received: 0,
            last_sent_ms: now_ms,
            actions: VecDeque::new(),
        })
    }

    /// A backup that starts from the primary's state at instruction
    /// `icount` (it joined a running guest) instead of from power-on.
    pub fn new_at(cfg: Config, now_ms: u64, icount: u64) -> Result<Self, FtError> {
        let mut b = Backup::new(cfg, now_ms)?;
        b.received_icount = icount;
        b.primary_icount = icount;
        b.delivered_icount = icount;
        b.executed_icount = icount;
        b.reported_icount = icount;
        Ok(b)
    }

    /// The next thing to do, `None` when there is nothing. Call until `None`
    /// after every event.
    pub fn poll_action(&mut self) -> Option<BackupAction> {
        if self.actions.is_empty() && self.ack_due {
            self.send_ack();
        }
        self.actions.pop_front()
    }

    // ----- the replayer -----

    /// The next received entry to execute, in order. The machine must run
    /// exactly to `entry.icount`, apply it, then report `on_executed`.
    pub fn next_entry(&mut self) -> Option<LogEntry> {
        if matches!(self.phase, Phase::Live | Phase::Halted) {
            return None;
        }
        let e = self.entries.pop_front()?;
        self.buffered_bytes -= e.payload.len() as u64;
        self.delivered = e.seq;
        self.delivered_icount = e.icount;
        Some(e)
    }

    /// How far the machine may run with no entry pending: the icount of the
    /// last entry received or the primary's icount from its last heartbeat,
    /// whichever is higher (no entry below it can still arrive).
    pub fn horizon(&self) -> u64 {
        self.received_icount.max(self.primary_icount)
    }

    /// The replayer executed every entry up to `seq` (all handed out by
    /// `next_entry`) and the machine is at `icount`.
    pub fn on_executed(&mut self, now_ms: u64, seq: Seq, icount: u64) -> Result<(), FtError> {
        self.advance(now_ms);
        if matches!(self.phase, Phase::Live | Phase::Halted) {
            return Err(FtError::Closed {
                phase: self.phase.as_str(),
            });
        }
        if seq > self.delivered {
            return Err(FtError::ExecutedNotDelivered {
                seq,
                delivered: self.delivered,
            });
        }
        let backwards = seq < self.executed
            || icount < self.executed_icount
            || (seq == self.delivered && seq > 0 && icount < self.delivered_icount);
        if backwards {
            return Err(FtError::ExecutedBackwards {
                seq,
                icount,
                prev_seq: self.executed,
                prev_icount: self.executed_icount.max(self.delivered_icount),
            });
        }
        if icount > self.horizon() {
            return Err(FtError::BeyondHorizon {
                icount,
                horizon: self.horizon(),
            });
        }
        self.executed = seq;
        self.executed_icount = icount;
        Ok(())
    }

    /// After `DrainLog`: every received entry has been executed.
    pub fn on_drained(&mut self, now_ms: u64) -> Result<(), FtError> {
        self.advance(now_ms);
        if self.phase != Phase::Draining {
            return Err(FtError::Closed {
                phase: self.phase.as_str(),
            });
        }
        if self.executed < self.received {
            return Err(FtError::DrainIncomplete {
                executed: self.executed,
                received: self.received,
            });
        }
        self.phase = Phase::Arbitrating;
        let step = self.peer.arbitrate(self.now);
        self.arbitration(step);
        Ok(())
    }

    // ----- the network and the clock -----

    /// A logging connection from the primary is established (replacing any
    /// previous one). Refused once the primary has been declared dead.
    pub fn on_connected(&mut self, now_ms: u64) -> Result<(), FtError> {
        self.advance(now_ms);
        if self.phase != Phase::Following {
            return Err(FtError::NotAccepting {
                phase: self.phase.as_str(),
            });
        }
        self.drop_queued_sends();
        self.ack_due = false;
        let hello = self
            .peer
            .connected(&self.cfg, self.now, self.received, Vec::new());
        self.send(Message::Hello(hello));
        Ok(())
    }

    /// The logging connection broke or was closed.
    pub fn on_disconnect(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.drop_queued_sends();
        self.peer.conn = Conn::None;
        self.ack_due = false;
    }

    /// A frame arrived on the logging connection. An error means the
    /// connection must be dropped (then call `on_disconnect`).
    pub fn on_message(&mut self, now_ms: u64, frame: Frame) -> Result<(), FtError> {
        self.advance(now_ms);
        if self.phase != Phase::Following {
            return Ok(());
        }
        self.peer.check_frame(&self.cfg, &frame)?;
        self.bytes_received += frame.encoded_len() as u64;
        let got = frame.message.message_type();
        match (self.peer.conn, frame.message) {
            (Conn::Handshake, Message::Hello(h)) => self.on_hello(h)?,
            (Conn::Handshake, _) => return Err(FtError::ExpectedHello { got }),
            (_, Message::Log { first_seq, entries }) => self.on_log(first_seq, &entries)?,
            (_, Message::Heartbeat { icount, .. }) => {
                self.primary_icount = self.primary_icount.max(icount);
            }
            (_, Message::Goodbye { reason, .. }) => {
                self.peer.detector.heard(self.now);
                match reason {
                    GoodbyeReason::PowerOff => self.halt(HaltReason::PeerPoweredOff),
                    GoodbyeReason::Leaving => self.declare_failure(),
                    GoodbyeReason::Error => {
                        self.peer.conn = Conn::None;
                        self.ack_due = false;
                        self.actions.push_back(BackupAction::Disconnect);
                    }
                }
                return Ok(());
            }
            (
                _,
                Message::Hello(_)
                | Message::Ack { .. }
                | Message::JoinRequest { .. }
                | Message::JoinPages { .. }
                | Message::JoinState { .. }
                | Message::JoinDisk { .. },
            ) => {
                return Err(FtError::UnexpectedMessage {
                    got,
                    from: Role::Primary,
                })
            }
        }
        self.peer.detector.heard(self.now);
        Ok(())
    }

    /// Time passes: failure detection, heartbeats, progress reports,
    /// arbiter retries. Call at least every heartbeat interval.
    pub fn on_tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
        match self.phase {
            Phase::Following => {
                match self.peer.watch(self.now) {
                    Watch::PeerDead => return self.declare_failure(),
                    Watch::HandshakeTimedOut => {
                        self.drop_queued_sends();
                        self.actions.push_back(BackupAction::Disconnect);
                        return;
                    }
                    Watch::Quiet => {}
                }
                if self.peer.conn != Conn::Ready {
                    return;
                }
                let idle = self.now.saturating_sub(self.last_sent_ms);
                if self.executed_icount != self.reported_icount
                    && idle >= self.cfg.progress_report_ms
                {
                    self.ack_due = true;
                } else if idle >= self.cfg.heartbeat_interval_ms {
                    self.send(Message::Heartbeat {
                        now_ms: self.now,
                        icount: self.executed_icount,
                    });
                }
            }
            Phase::Arbitrating => {
                let step = self.peer.arbiter_tick(self.now);
                self.arbitration(step);
            }
            _ => {}
        }
    }

    /// The arbiter's answer to the last `TestAndSet`.
    pub fn on_arbiter_result(&mut self, now_ms: u64, result: ArbiterResult) -> Result<(), FtError> {
        self.advance(now_ms);
        if self.phase != Phase::Arbitrating {
            return Err(FtError::NoArbiterRequest);
        }
        let step = self.peer.arbiter_result(self.now, result)?;
        self.arbitration(step);
        Ok(())
    }

    /// Stop on purpose: tell the primary (it goes on alone after winning the
    /// arbiter) and halt. Refused once live: the node is the primary then.
    pub fn leave(&mut self, now_ms: u64) -> Result<(), FtError> {
        self.advance(now_ms);
        if matches!(self.phase, Phase::Halted | Phase::Live) {
            return Err(FtError::Closed {
                phase: self.phase.as_str(),
            });
        }
        if self.phase == Phase::Following && self.peer.conn == Conn::Ready {
            self.send(Message::Goodbye {
                reason: GoodbyeReason::Leaving,
                detail: String::new(),
            });
        }
        self.halt(HaltReason::Shutdown);
        Ok(())
    }

    // ----- queries -----

    pub fn status(&self) -> Status {
        let primary = self.horizon();
        Status {
            role: Role::Backup,
            phase: self.phase,
            generation: self.cfg.generation,
            connected: self.peer.conn == Conn::Ready,
            log_seq: self.received,
            acked_seq: self.ack_sent,
            executed_seq: self.executed,
            icount: self.executed_icount,
            peer_icount: primary,
            lag_instructions: primary.saturating_sub(self.executed_icount),
            lag_ms: None,
            held_outputs: 0,
            released_outputs: 0,
            buffered_bytes: self.buffered_bytes,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            throttled_ms: 0,
            last_heard_ms: self.peer.detector.last_heard_ms(),
            heartbeats_missed: self.peer.detector.heartbeats_missed(),
            arbiter_attempts: self.peer.arbiter_attempts(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The `ftvm-log` header the primary sent in its Hello, if any.
    pub fn log_header(&self) -> Option<&[u8]> {
        self.log_header.as_deref()
    }

    /// Entries received and not yet handed out.
    pub fn pending_entries(&self) -> usize {
        self.entries.len()
    }

    /// When `on_tick` next has something to do.
    pub fn next_timeout_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Following => {
                let mut t = self.peer.watch_deadline_ms();
                if self.peer.conn == Conn::Ready {
                    t = t.min(self.last_sent_ms + self.cfg.progress_report_ms);
                }
                Some(t)
            }
            Phase::Arbitrating => self.peer.arbiter_timeout_ms(),
            _ => None,
        }
    }

    // ----- internals -----

    fn advance(&mut self, now_ms: u64) {
        self.now = self.now.max(now_ms);
    }

    /// Frames queued for a connection that no longer exists are not sent
    /// on the next one.
    fn drop_queued_sends(&mut self) {
        self.actions.retain(|a| !matches!(a, BackupAction::Send(_)));
    }

    fn send(&mut self, message: Message) {
        let frame = Frame {
            generation: self.cfg.generation,
            message,
        };
        self.bytes_sent += frame.encoded_len() as u64;
        self.last_sent_ms = self.now;
        self.actions.push_back(BackupAction::Send(frame));
    }

    fn send_ack(&mut self) {
        self.ack_due = false;
        if self.phase != Phase::Following || self.peer.conn != Conn::Ready {
            return;
        }
        self.ack_sent = self.received;
        self.reported_icount = self.executed_icount;
        self.send(Message::Ack {
            seq: self.received,
            executed_icount: self.executed_icount,
        });
    }

    fn on_hello(&mut self, h: Hello) -> Result<(), FtError> {
        self.peer.check_hello(&self.cfg, &h)?;
        if h.seq < self.received {
            return Err(FtError::PeerBehind {
                ours: self.received,
                theirs: h.seq,
            });
        }
        if let Some(known) = &self.log_header {
            if !h.log_header.is_empty() && *known != h.log_header {
                return Err(FtError::MachineMismatch);
            }
        } else if !h.log_header.is_empty() {
            self.log_header = Some(h.log_header);
        }
        self.peer.conn = Conn::Ready;
        Ok(())
    }

    fn on_log(&mut self, first_seq: Seq, bytes: &[u8]) -> Result<(), FtError> {
        let expected = self.received + 1;
        if first_seq > expected {
            return Err(FtError::LogGap {
                expected,
                got: first_seq,
            });
        }
        let batch = decode_entries(bytes)?;
        // Entries this node already has (a resend) are skipped.
        let skip = expected - first_seq;
        let fresh = batch
            .into_iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX));
        let mut prev = self.received_icount;
        let mut new = Vec::new();
        for e in fresh {
            if e.icount < prev {
                return Err(FtError::IcountBackwards {
                    prev,
                    got: e.icount,
                });
            }
            prev = e.icount;
            new.push(e);
        }
        for e in new {
            self.received += 1;
            self.received_icount = e.icount;
            self.buffered_bytes += e.payload.len() as u64;
            self.entries.push_back(LogEntry {
                seq: self.received,
                icount: e.icount,
                kind: e.kind,
                payload: e.payload,
            });
        }
        self.ack_due = true;
        Ok(())
    }

    fn declare_failure(&mut self) {
        self.phase = Phase::Draining;
        self.ack_due = false;
        if self.peer.disconnect() {
            self.actions.push_back(BackupAction::Disconnect);
        }
        self.actions.push_back(BackupAction::DrainLog);
    }

    /// Carries out an arbitration step: a request to send, or the verdict.
    fn arbitration(&mut self, step: Arbitration) {
        match step {
            Arbitration::Request(r) => self.actions.push_back(BackupAction::TestAndSet {
                generation: r.generation,
                claimant: r.claimant,
            }),
            Arbitration::Won => {
                self.phase = Phase::Live;
                self.actions.push_back(BackupAction::GoLive);
            }
            Arbitration::Halt(reason) => self.halt(reason),
            Arbitration::Wait => {}
        }
    }

    fn halt(&mut self, reason: HaltReason) {
        self.phase = Phase::Halted;
        self.ack_due = false;
        self.entries.clear();
        self.buffered_bytes = 0;
        if self.peer.disconnect() {
            self.actions.push_back(BackupAction::Disconnect);
        }
        self.actions.push_back(BackupAction::Halt { reason });
    }
}

#[cfg(test)]
mod tests;
