//! The primary's protocol core. The driver reports the guest's log entries
//! (`on_log_entry`, which numbers them), its outputs (`on_output`, with the
//! entry each depends on), its execution progress, the logging connection's
//! comings and goings, received frames, the arbiter's answers and the passing
//! of time; `poll_action` returns what to do: send a frame, release an
//! output, pause the guest (lag control), test-and-set, go alone, halt.
//! Outputs are released strictly in submission order and, while paired,
//! only once the backup has acknowledged the entry they depend on. Entries
//! are kept until acknowledged, so a reconnecting backup resumes the stream
//! where its Hello says it stopped. When the backup is silent for the failure
//! timeout the core drops the connection and asks the arbiter; only Won lets
//! it release the held outputs and run alone.

use std::collections::VecDeque;

use ftvm_log::{is_caller_kind, FrameEncoder, LogError, MAX_FRAME_BODY};

use crate::config::Config;
use crate::error::FtError;
use crate::lag::LagMeter;
use crate::peer::{Arbitration, Conn, Peer, Watch};
use crate::status::{Phase, Status};
use crate::wire::{Frame, GoodbyeReason, Hello, Message};
use crate::{ArbiterResult, Generation, HaltReason, OutputId, Role, Seq};

/// Longest encoding of an icount delta plus the kind byte.
const ENTRY_OVERHEAD: u64 = 11;

/// What the primary's driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryAction {
    /// Encode and write this frame on the logging connection.
    Send(Frame),
    /// Close the logging connection (and call `on_disconnect`).
    Disconnect,
    /// Let this output out (transmit the frame, print the bytes, write the
    /// disk). Comes in the order the outputs were submitted.
    ReleaseOutput(OutputId),
    /// Execute no guest instructions before `until_ms`: the backup is too
    /// far behind (or too much log is unacknowledged).
    Throttle { until_ms: u64 },
    /// Ask the arbiter; answer with `on_arbiter_result`.
    TestAndSet {
        generation: Generation,
        claimant: Role,
    },
    /// This node won: it runs without a backup from now on (every held
    /// output has been or is being released by the actions that follow).
    GoAlone,
    /// Stop the guest and exit; no held output may be released.
    Halt { reason: HaltReason },
}

#[derive(Debug, Clone)]
struct Stored {
    seq: Seq,
    icount: u64,
    kind: u8,
    payload: Vec<u8>,
}

/// The primary's sans-I/O core.
#[derive(Debug)]
pub struct Primary {
    cfg: Config,
    now: u64,
    phase: Phase,
    /// The connection, its handshake, failure detection, the arbiter.
    peer: Peer,
    /// Sequence number the next entry gets.
    next_seq: Seq,
    last_entry_icount: u64,
    /// Entries not yet acknowledged, oldest first (seq `acked + 1` ..).
    unacked: VecDeque<Stored>,
    unacked_bytes: u64,
    /// Next entry to send on the current connection.
    send_from: Seq,
    acked: Seq,
    held: VecDeque<(OutputId, Seq)>,
    released: u64,
    lag: LagMeter,
    throttle_until: u64,
    throttled_ms: u64,
    bytes_sent: u64,
    bytes_received: u64,
    last_sent_ms: u64,
    actions: VecDeque<PrimaryAction>,
}

impl Primary {
    /// A primary starting at `now_ms`, waiting for its backup to connect.
    pub fn new(cfg: Config, now_ms: u64) -> Result<Self, FtError> {
        cfg.validate()?;
        Ok(Primary {
            peer: Peer::new(&cfg, Role::Primary, now_ms),
            cfg,
            now: now_ms,
            phase: Phase::Paired,
            next_seq: 1,
            last_entry_icount: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            send_from: 1,
            acked: 0,
            held: VecDeque::new(),
            released: 0,
            lag: LagMeter::default(),
            throttle_until: 0,
            throttled_ms: 0,
            bytes_sent: 0,
            bytes_received: 0,
            last_sent_ms: now_ms,
            actions: VecDeque::new(),
        })
    }

    /// A primary whose pair starts at instruction `icount` rather than at
    /// power-on: a backup joined a running guest and holds its state at
    /// that step (re-protection). No entry may come before `icount`.
    pub fn new_at(cfg: Config, now_ms: u64, icount: u64) -> Result<Self, FtError> {
        let mut p = Primary::new(cfg, now_ms)?;
        p.last_entry_icount = icount;
        p.lag.progress(now_ms, icount);
        p.lag.backup_at(icount);
        Ok(p)
    }

    /// The next thing to do, `None` when there is nothing. Call until `None`
    /// after every event.
    pub fn poll_action(&mut self) -> Option<PrimaryAction> {
        if self.actions.is_empty() {
            self.flush_batch();
        }
        self.actions.pop_front()
    }

    // ----- events from the VM -----

    /// The guest consumed a non-deterministic input at `icount`: log it.
    /// Returns the entry's sequence number, which outputs produced after it
    /// may depend on. Entries must come in icount order, at or after the
    /// last reported progress.
    pub fn on_log_entry(&mut self, icount: u64, kind: u8, payload: &[u8]) -> Result<Seq, FtError> {
        if self.phase == Phase::Halted {
            return Err(FtError::Closed {
                phase: self.phase.as_str(),
            });
        }
        let frame = self.next_seq - 1;
        if !is_caller_kind(kind) {
            return Err(LogError::ReservedKind {
                offset: 0,
                frame,
                kind,
            }
            .into());
        }
        let floor = self.last_entry_icount.max(self.lag.icount());
        if icount < floor {
            return Err(FtError::IcountBackwards {
                prev: floor,
                got: icount,
            });
        }
        let body = payload.len() as u64 + ENTRY_OVERHEAD;
        if body > MAX_FRAME_BODY {
            return Err(LogError::FrameTooLarge {
                offset: 0,
                frame,
                len: body,
                max: MAX_FRAME_BODY,
            }
            .into());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_entry_icount = icount;
        self.lag.saw_icount(icount);
        if self.phase == Phase::Paired {
            self.unacked_bytes += payload.len() as u64;
            self.unacked.push_back(Stored {
                seq,
                icount,
                kind,
                payload: payload.to_vec(),
            });
        }
        Ok(seq)
    }

    /// The guest produced an output whose effects depend on log entry
    /// `depends_on` (an entry at or after the output's icount, or 0 for no
    /// input at all). It is released once the backup acknowledged that
    /// entry, after every output submitted before it.
    pub fn on_output(&mut self, output: OutputId, depends_on: Seq) -> Result<(), FtError> {
        match self.phase {
            Phase::Halted => {
                return Err(FtError::Closed {
                    phase: self.phase.as_str(),
                })
            }
            _ if depends_on >= self.next_seq => {
                return Err(FtError::OutputDependsOnFuture {
                    depends_on,
                    last: self.next_seq - 1,
                })
            }
            Phase::Alone => self.release(output),
            _ => {
                self.held.push_back((output, depends_on));
                self.release_ready();
            }
        }
        Ok(())
    }

    /// The guest's machine is at `icount` at `now_ms` (call after every
    /// quantum; the lag measurement and heartbeats use it).
    pub fn on_progress(&mut self, now_ms: u64, icount: u64) {
        self.advance(now_ms);
        self.lag.progress(self.now, icount);
        self.check_lag();
    }

    // ----- events from the network and the clock -----

    /// A logging connection to the backup is established (replacing any
    /// previous one). Refused once the backup has been declared dead.
    pub fn on_connected(&mut self, now_ms: u64) -> Result<(), FtError> {
        self.advance(now_ms);
        if self.phase != Phase::Paired {
            return Err(FtError::NotAccepting {
                phase: self.phase.as_str(),
            });
        }
        self.drop_queued_sends();
        let hello = self.peer.connected(
            &self.cfg,
            self.now,
            self.next_seq - 1,
            self.cfg.log_header.clone(),
        );
        self.send(Message::Hello(hello));
        Ok(())
    }

    /// The logging connection broke or was closed.
    pub fn on_disconnect(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.drop_queued_sends();
        self.peer.conn = Conn::None;
    }

    /// A frame arrived on the logging connection. An error means the
    /// connection must be dropped (then call `on_disconnect`).
    pub fn on_message(&mut self, now_ms: u64, frame: Frame) -> Result<(), FtError> {
        self.advance(now_ms);
        if self.phase != Phase::Paired {
            return Ok(());
        }
        self.peer.check_frame(&self.cfg, &frame)?;
        self.bytes_received += frame.encoded_len() as u64;
        let got = frame.message.message_type();
        match (self.peer.conn, frame.message) {
            (Conn::Handshake, Message::Hello(h)) => self.on_hello(h)?,
            (Conn::Handshake, _) => return Err(FtError::ExpectedHello { got }),
            (
                _,
                Message::Ack {
                    seq,
                    executed_icount,
                },
            ) => self.on_ack(seq, executed_icount)?,
            (_, Message::Heartbeat { icount, .. }) => self.on_backup_icount(icount)?,
            (_, Message::Goodbye { reason, .. }) => {
                self.peer.detector.heard(self.now);
                if reason == GoodbyeReason::Leaving {
                    self.declare_failure();
                } else {
                    self.peer.conn = Conn::None;
                    self.actions.push_back(PrimaryAction::Disconnect);
                }
                return Ok(());
            }
            (
                _,
                Message::Hello(_)
                | Message::Log { .. }
                | Message::JoinRequest { .. }
                | Message::JoinPages { .. }
                | Message::JoinState { .. }
                | Message::JoinDisk { .. },
            ) => {
                return Err(FtError::UnexpectedMessage {
                    got,
                    from: Role::Backup,
                })
            }
        }
        self.peer.detector.heard(self.now);
        self.check_lag();
        Ok(())
    }

    /// Time passes: failure detection, heartbeats, lag control, arbiter
    /// retries. Call at least every heartbeat interval (`next_timeout_ms`).
    pub fn on_tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
        match self.phase {
            Phase::Paired => {
                match self.peer.watch(self.now) {
                    Watch::PeerDead => return self.declare_failure(),
                    Watch::HandshakeTimedOut => {
                        self.drop_queued_sends();
                        self.actions.push_back(PrimaryAction::Disconnect);
                        return;
                    }
                    Watch::Quiet => {}
                }
                if self.peer.conn == Conn::Ready {
                    self.flush_all();
                    if self.now.saturating_sub(self.last_sent_ms) >= self.cfg.heartbeat_interval_ms
                    {
                        self.send(Message::Heartbeat {
                            now_ms: self.now,
                            icount: self.lag.icount(),
                        });
                    }
                }
                self.check_lag();
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

    /// Stop on purpose: tell the backup why (PowerOff: it stops too;
    /// Leaving: it takes over at once) and halt. Held outputs are dropped;
    /// a driver that wants them out waits for `status().held_outputs == 0`
    /// first.
    pub fn leave(&mut self, now_ms: u64, reason: GoodbyeReason) -> Result<(), FtError> {
        self.advance(now_ms);
        if self.phase == Phase::Halted {
            return Err(FtError::Closed {
                phase: self.phase.as_str(),
            });
        }
        if self.phase == Phase::Paired && self.peer.conn == Conn::Ready {
            self.flush_all();
            self.send(Message::Goodbye {
                reason,
                detail: String::new(),
            });
        }
        self.halt(HaltReason::Shutdown);
        Ok(())
    }

    // ----- queries -----

    pub fn status(&self) -> Status {
        Status {
            role: Role::Primary,
            phase: self.phase,
            generation: self.cfg.generation,
            connected: self.peer.conn == Conn::Ready,
            log_seq: self.next_seq - 1,
            acked_seq: self.acked,
            executed_seq: 0,
            icount: self.lag.icount(),
            peer_icount: self.lag.backup_icount(),
            lag_instructions: self.lag.instructions(),
            lag_ms: self.lag.millis(),
            held_outputs: self.held.len(),
            released_outputs: self.released,
            buffered_bytes: self.unacked_bytes,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            throttled_ms: self.throttled_ms,
            last_heard_ms: self.peer.detector.last_heard_ms(),
            heartbeats_missed: self.peer.detector.heartbeats_missed(),
            arbiter_attempts: self.peer.arbiter_attempts(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When `on_tick` next has something to do.
    pub fn next_timeout_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Paired => {
                let mut t = self.peer.watch_deadline_ms();
                if self.peer.conn == Conn::Ready {
                    t = t.min(self.last_sent_ms + self.cfg.heartbeat_interval_ms);
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
        self.actions
            .retain(|a| !matches!(a, PrimaryAction::Send(_)));
    }

    fn send(&mut self, message: Message) {
        let frame = Frame {
            generation: self.cfg.generation,
            message,
        };
        self.bytes_sent += frame.encoded_len() as u64;
        self.last_sent_ms = self.now;
        self.actions.push_back(PrimaryAction::Send(frame));
    }

    fn release(&mut self, id: OutputId) {
        self.released += 1;
        self.actions.push_back(PrimaryAction::ReleaseOutput(id));
    }

    fn release_ready(&mut self) {
        while let Some(&(id, dep)) = self.held.front() {
            if dep > self.acked {
                break;
            }
            self.held.pop_front();
            self.release(id);
        }
    }

    fn on_hello(&mut self, h: Hello) -> Result<(), FtError> {
        self.peer.check_hello(&self.cfg, &h)?;
        let last = self.next_seq - 1;
        if h.seq > last {
            return Err(FtError::PeerAhead {
                ours: last,
                theirs: h.seq,
            });
        }
        if h.seq < self.acked {
            return Err(FtError::PeerBehind {
                ours: self.acked,
                theirs: h.seq,
            });
        }
        self.peer.conn = Conn::Ready;
        self.set_acked(h.seq);
        self.send_from = h.seq + 1;
        Ok(())
    }

    fn on_ack(&mut self, seq: Seq, executed_icount: u64) -> Result<(), FtError> {
        let sent = self.send_from - 1;
        if seq > sent {
            return Err(FtError::PeerAhead {
                ours: sent,
                theirs: seq,
            });
        }
        self.on_backup_icount(executed_icount)?;
        if seq > self.acked {
            self.set_acked(seq);
        }
        Ok(())
    }

    fn on_backup_icount(&mut self, icount: u64) -> Result<(), FtError> {
        if icount > self.lag.icount() {
            return Err(FtError::IcountAhead {
                ours: self.lag.icount(),
                theirs: icount,
            });
        }
        self.lag.backup_at(icount);
        Ok(())
    }

    fn set_acked(&mut self, seq: Seq) {
        self.acked = seq;
        while let Some(e) = self.unacked.front() {
            if e.seq > seq {
                break;
            }
            self.unacked_bytes -= e.payload.len() as u64;
            self.unacked.pop_front();
        }
        self.release_ready();
    }

    /// Queues one Log message with entries from `send_from`, if any are due.
    fn flush_batch(&mut self) -> bool {
        if self.phase != Phase::Paired
            || self.peer.conn != Conn::Ready
            || self.send_from >= self.next_seq
        {
            return false;
        }
        let Some(front) = self.unacked.front() else {
            return false;
        };
        let skip = (self.send_from - front.seq) as usize;
        let mut enc = FrameEncoder::new();
        let mut bytes = Vec::new();
        let mut count = 0u64;
        for e in self.unacked.iter().skip(skip) {
            // Length prefix, delta and kind, payload, checksum.
            let frame_len = e.payload.len() + 2 * ENTRY_OVERHEAD as usize;
            if count > 0 && bytes.len() + frame_len > self.cfg.max_batch_bytes {
                break;
            }
            if enc
                .encode(e.icount, e.kind, &e.payload, &mut bytes)
                .is_err()
            {
                // Cannot happen: entries were validated when appended.
                break;
            }
            count += 1;
        }
        if count == 0 {
            return false;
        }
        let first_seq = self.send_from;
        self.send_from += count;
        self.send(Message::Log {
            first_seq,
            entries: bytes,
        });
        true
    }

    fn flush_all(&mut self) {
        while self.flush_batch() {}
    }

    fn check_lag(&mut self) {
        if self.phase != Phase::Paired
            || self.peer.conn != Conn::Ready
            || self.now < self.throttle_until
        {
            return;
        }
        let target = self.cfg.lag_target_ms;
        let mut pause = match self.lag.millis() {
            Some(ms) if ms > target => (ms - target).min(self.cfg.max_throttle_ms),
            _ => 0,
        };
        if self.unacked_bytes > self.cfg.max_unacked_bytes {
            pause = self.cfg.max_throttle_ms;
        }
        if pause == 0 {
            return;
        }
        self.throttle_until = self.now + pause;
        self.throttled_ms += pause;
        self.actions.push_back(PrimaryAction::Throttle {
            until_ms: self.throttle_until,
        });
    }

    fn declare_failure(&mut self) {
        self.phase = Phase::Arbitrating;
        if self.peer.disconnect() {
            self.actions.push_back(PrimaryAction::Disconnect);
        }
        self.unacked.clear();
        self.unacked_bytes = 0;
        let step = self.peer.arbitrate(self.now);
        self.arbitration(step);
    }

    /// Carries out an arbitration step: a request to send, or the verdict.
    /// Won releases every held output: no backup is left to wait for.
    fn arbitration(&mut self, step: Arbitration) {
        match step {
            Arbitration::Request(r) => self.actions.push_back(PrimaryAction::TestAndSet {
                generation: r.generation,
                claimant: r.claimant,
            }),
            Arbitration::Won => {
                self.phase = Phase::Alone;
                self.actions.push_back(PrimaryAction::GoAlone);
                while let Some((id, _)) = self.held.pop_front() {
                    self.release(id);
                }
            }
            Arbitration::Halt(reason) => self.halt(reason),
            Arbitration::Wait => {}
        }
    }

    fn halt(&mut self, reason: HaltReason) {
        self.phase = Phase::Halted;
        self.held.clear();
        self.unacked.clear();
        self.unacked_bytes = 0;
        if self.peer.disconnect() {
            self.actions.push_back(PrimaryAction::Disconnect);
        }
        self.actions.push_back(PrimaryAction::Halt { reason });
    }
}

#[cfg(test)]
mod tests;
