//! `ftvm primary`, and the live loop a backup continues in after it went
//! live. Each turn: let the protocol core tick and carry out its actions,
//! apply the host clock (at most once a millisecond) and whatever the host
//! delivered (console bytes, frames, disk completions) — each logged as an
//! entry before it is applied — then run the guest in short slices
//! ([`SLICE`] steps), looking at the event loop with a zero timeout between
//! two: an acknowledgement read there releases outputs at once. The turn
//! ends as soon as the guest produced outputs (the machine stops right
//! after the device access), host input waits, the guest idles, or a
//! quantum is done; the turn's outputs then go to the core behind an
//! `Outputs` marker entry logged at the step where the turn ended, and the
//! marker is sent at once. The core releases them once the backup
//! acknowledged that marker (the output rule: every output depends on an
//! entry at or after its instruction); only then are frames sent, bytes
//! printed and disk requests submitted. Entropy requests are not visible
//! outside and are served at once. While the core asks for a throttle the
//! guest does not run, but events are still served. Without a core (a
//! backup that went live, or a primary that won the arbiter and runs alone)
//! outputs go straight out.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ftvm_ft::{GoodbyeReason, HaltReason, OutputId, Phase, Primary, PrimaryAction, Role};
use ftvm_machine::layout::TIMEBASE_HZ;
use ftvm_machine::{BlkOp, DeviceConfig, Finisher, Input, Machine, Output, Stop};
use ftvm_replay::{OutputHasher, Record};

use super::arbiter::Arbiter;
use super::join::{Donation, DonorStep};
use super::link::{Link, Listener};
use super::status::{Board, HoldStats, Report, Timeline};
use super::test_fault::{FaultKind, TestFault};
use super::{Clock, FtArgs, FtSettings, EXIT_HALTED, FT_QUANTUM, SLICE};
use crate::console::{Console, ConsoleTarget, Filtered};
use crate::devices::{self, Backends};
use crate::driver::{install_signal_handlers, STOP_REQUESTED};
use crate::events::{EventSender, FtEvent, HostEvent};
use crate::machine_args::MachineArgs;
use crate::metrics::VmMetrics;
use crate::reactor::{Reactor, HOST_EVENTS, JOIN_LISTENER};

/// Longest the loop sleeps while the guest idles.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(20);
/// Pause between dial attempts while the backup is unreachable.
const REDIAL_MS: u64 = 200;
/// Pause before dialling again after the backup refused the handshake.
const REFUSED_REDIAL_MS: u64 = 1000;
/// How often the status report is refreshed.
const PUBLISH_MS: u64 = 250;
/// How long a powering-off primary waits for its held outputs to clear.
const POWER_OFF_DRAIN: Duration = Duration::from_secs(3);
/// Shortest interval between two time inputs while the guest runs.
const TIME_EVERY: Duration = Duration::from_millis(1);
/// How long a joiner may take, from the donor's pause, to answer the new
/// pair's handshake.
const JOIN_GRACE_MS: u64 = 2_000;
/// Shortest interval between two turns of a join's pre-copy.
const DONATE_EVERY: Duration = Duration::from_millis(2);

/// Milliseconds since `t` (timeline stamps are relative to the process
/// start, like the protocol core's clock).
fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// An output waiting for the backup's acknowledgement.
struct Held {
    id: OutputId,
    output: Output,
    produced: Instant,
    /// When the marker it depends on was written to the socket.
    sent: Option<Instant>,
}

#[derive(Args, Debug)]
pub struct PrimaryArgs {
    #[command(flatten)]
    pub ft: FtArgs,
    /// Where the backup listens for the logging connection (`ftvm backup --listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub backup: SocketAddr,
    /// Send a state digest every N steps, which the backup checks (0: never).
    #[arg(long, value_name = "N", default_value_t = 1_000_000_000)]
    pub digest_interval: u64,
    /// Where console output goes: stdio, null, or file:PATH.
    #[arg(long, value_name = "TARGET", default_value = "stdio")]
    pub console: ConsoleTarget,
    /// Do not read console input from stdin.
    #[arg(long)]
    pub no_input: bool,
    /// Test switch: a fault when the guest reaches instruction STEP
    /// (STEP:die, STEP:stall:MS, STEP:drop, STEP:corrupt); see
    /// `crates/node/src/ft/test_fault.rs`.
    #[arg(long, hide = true, value_name = "STEP:KIND")]
    pub test_fault: Option<TestFault>,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// The announcement a guest's NIC makes when it appears on a new port: a
/// broadcast RARP request from its MAC, as after a live migration, so that
/// bridges and switches learn where the MAC now lives.
pub fn rarp_announcement(mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x80, 0x35]); // EtherType RARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]); // Ethernet/IPv4, reverse request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0; 4]);
    f.resize(60, 0);
    f
}

/// The protocol side of a paired primary.
struct Pairing {
    core: Primary,
    link: Link,
    arbiter: Arbiter,
    /// Where to dial the backup (again); `None` for a joined backup that
    /// gave no address (the pair then lives on its first connection).
    backup: Option<SocketAddr>,
    next_dial_ms: u64,
    dial_warned: bool,
    held: VecDeque<Held>,
    /// When the last acknowledgement was read off the socket.
    ack_read: Instant,
    next_output: OutputId,
    digest_interval: u64,
    next_digest: u64,
    throttle_until: u64,
    /// A join's connection: tell the core about it once the link has sent
    /// everything buffered (the join's last pages and state).
    connect_when_flushed: bool,
}

impl Pairing {
    /// Leaves the pair on purpose: the core's Goodbye (and whatever log it
    /// flushes first) goes out before the connection closes.
    fn leave(&mut self, now: u64, reason: GoodbyeReason) {
        if self.core.leave(now, reason).is_ok() {
            while let Some(a) = self.core.poll_action() {
                if let PrimaryAction::Send(frame) = a {
                    self.link.send(&frame);
                }
            }
        }
        self.link.finish(Duration::from_secs(1));
    }
}

pub struct Live {
    machine: Machine,
    /// The machine's virtio devices (for the MACs to announce).
    virtio: Vec<DeviceConfig>,
    backends: Backends,
    console: Console,
    reactor: Reactor,
    tx: EventSender,
    /// Scratch: tokens the event loop reported ready.
    ready: Vec<mio::Token>,
    /// Scratch: what the logging connections produced.
    ftq: Vec<FtEvent>,
    /// The host threads queued events since the last look.
    woken: bool,
    join_listener: Option<Listener>,
    last_time: Option<Instant>,
    last_donate: Instant,
    holds: HoldStats,
    /// The failover this process survived, until its first output is out.
    timeline: Option<Timeline>,
    pending: VecDeque<Input>,
    clock: Clock,
    pair: Option<Pairing>,
    /// How to form a new pair when a backup joins (`--join-listen`).
    settings: FtSettings,
    /// A join in progress.
    donation: Option<Donation>,
    /// Block requests submitted to the disk and not yet completed: a join
    /// pauses only when there are none, so the new backup, which cannot
    /// know about them, never has to re-issue one.
    inflight_blk: usize,
    /// When (ms on `clock`) to repeat the MAC announcement after going live.
    announce_at: Vec<u64>,
    board: Board,
    report: Report,
    started: std::time::Instant,
    buf: Vec<u8>,
    last_publish: u64,
    quit: bool,
    /// `--test-fault` of `ftvm primary`.
    test_fault: Option<TestFault>,
    metrics: VmMetrics,
}

/// How a live run ended.
pub enum Ended {
    /// The guest powered off (or a bare-metal program ended) with this status.
    Finished(u8),
    /// The protocol halted this process.
    Halted(HaltReason),
    /// A signal or the console asked to stop.
    Stopped,
}

impl Ended {
    pub fn exit_code(&self) -> u8 {
        match self {
            Ended::Finished(c) => *c,
            Ended::Halted(_) => EXIT_HALTED,
            Ended::Stopped => 130,
        }
    }
}

/// What a live loop starts from.
pub struct LiveSetup {
    pub machine: Machine,
    pub virtio: Vec<DeviceConfig>,
    pub backends: Backends,
    pub console: ConsoleTarget,
    pub read_input: bool,
    pub clock: Clock,
    pub board: Board,
    pub report: Report,
    pub settings: FtSettings,
    /// When the process started (for the uptime in status reports).
    pub started: std::time::Instant,
    pub reactor: Reactor,
    /// The failover that made this process live, if it did.
    pub timeline: Option<Timeline>,
    pub metrics: VmMetrics,
}

impl Live {
    fn build(s: LiveSetup) -> Result<Live> {
        let mut reactor = s.reactor;
        let tx = reactor.sender();
        let mut backends = s.backends;
        backends.meter(&s.metrics.devices);
        backends.register_nets(&mut reactor)?;
        backends.start_disk_worker(&tx)?;
        let console = Console::open(&s.console, s.read_input.then_some(&mut reactor))?;
        let join_listener = match s.settings.ft.join_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen for joining backups on {addr}"))?;
                Some(Listener::new(
                    l,
                    reactor.registry(),
                    JOIN_LISTENER,
                    1 << 40,
                    true,
                    s.settings.ft.secure.clone(),
                    tx.clone(),
                    "primary",
                )?)
            }
            None => None,
        };
        Ok(Live {
            machine: s.machine,
            virtio: s.virtio,
            backends,
            console,
            reactor,
            tx,
            ready: Vec::new(),
            ftq: Vec::new(),
            woken: false,
            join_listener,
            last_time: None,
            last_donate: Instant::now(),
            holds: HoldStats::default(),
            timeline: s.timeline,
            pending: VecDeque::new(),
            clock: s.clock,
            pair: None,
            settings: s.settings,
            donation: None,
            inflight_blk: 0,
            announce_at: Vec::new(),
            board: s.board,
            report: s.report,
            started: s.started,
            buf: Vec::new(),
            last_publish: 0,
            quit: false,
            test_fault: None,
            metrics: s.metrics,
        })
    }

    /// The live loop of a backup that won the arbiter: no backup of its
    /// own. Outputs the dead primary can never have released are let out,
    /// and block and entropy requests it never completed are submitted
    /// again (block requests are idempotent: a write the primary did finish
    /// writes the same bytes again).
    pub fn go_live(s: LiveSetup, unreleased: Vec<Output>, resubmit: Vec<Output>) -> Result<Live> {
        let mut live = Live::build(s)?;
        if let Some(ft) = &live.metrics.ft {
            ft.failover();
        }
        live.report.solo_since_s = Some(live.started.elapsed().as_secs_f64());
        live.announce();
        // Again a few times, as after a live migration, in case a switch
        // missed the first ones.
        live.announce_at = vec![700, 300, 100];
        for o in unreleased.into_iter().chain(resubmit) {
            live.perform(o)?;
        }
        Ok(live)
    }

    /// Tells the network where the guest's MACs now are.
    fn announce(&mut self) {
        for (slot, d) in self.virtio.iter().enumerate() {
            if let DeviceConfig::Net { mac } = d {
                for _ in 0..3 {
                    self.backends.transmit(slot as u8, &rarp_announcement(*mac));
                }
            }
        }
    }

    fn paired(&self) -> bool {
        self.pair.as_ref().is_some_and(|p| {
            p.core.phase() == Phase::Paired || p.core.phase() == Phase::Arbitrating
        })
    }

    /// Logs (while paired) and applies an input at the current step. With
    /// non-shared disks a read's data is not logged: the backup reads its
    /// own copy.
    fn apply(&mut self, input: Input) -> Result<()> {
        let rec = Record::Input(input);
        if self.paired() {
            let kind = match &rec {
                Record::Input(Input::BlkDone {
                    slot,
                    id,
                    status,
                    data,
                }) if self.settings.ft.local_disks && !data.is_empty() => {
                    Record::Input(Input::BlkDone {
                        slot: *slot,
                        id: *id,
                        status: *status,
                        data: Vec::new(),
                    })
                    .encode(&mut self.buf)
                }
                _ => rec.encode(&mut self.buf),
            };
            if let Some(p) = self.pair.as_mut() {
                p.core
                    .on_log_entry(self.machine.icount(), kind, &self.buf)
                    .context("cannot log an input")?;
            }
        }
        if let Record::Input(input) = rec {
            self.machine.apply(&input);
        }
        Ok(())
    }

    /// Lets one output out.
    fn perform(&mut self, o: Output) -> Result<()> {
        if matches!(o, Output::Console(_) | Output::NetTx { .. }) {
            self.first_output();
        }
        match o {
            Output::Console(bytes) => self.console.write(&bytes)?,
            Output::NetTx { slot, frame } => self.backends.transmit(slot, &frame),
            Output::Blk { slot, id, op } => {
                if let Some(d) = self.donation.as_mut() {
                    match &op {
                        BlkOp::Write { offset, data, .. } => {
                            d.disk_written(slot, *offset, data.len() as u64)
                        }
                        BlkOp::Discard { offset, len } => d.disk_written(slot, *offset, *len),
                        _ => {}
                    }
                }
                match self.backends.submit_block(slot, id, op) {
                    Some(done) => self.pending.push_back(done),
                    None => self.inflight_blk += 1,
                }
            }
            Output::Rng { slot, id, len } => {
                self.pending.push_back(devices::entropy(slot, id, len))
            }
        }
        Ok(())
    }

    /// Hands the quantum's outputs to the core (paired) or lets them out.
    fn outputs(&mut self) -> Result<()> {
        let outs = self.machine.take_outputs();
        if outs.is_empty() {
            return Ok(());
        }
        let mut visible = Vec::with_capacity(outs.len());
        for o in outs {
            match o {
                Output::Rng { slot, id, len } => {
                    self.pending.push_back(devices::entropy(slot, id, len))
                }
                o => visible.push(o),
            }
        }
        if visible.is_empty() {
            return Ok(());
        }
        if !self.paired() {
            for o in visible {
                self.perform(o)?;
            }
            return Ok(());
        }
        let icount = self.machine.icount();
        let mut h = OutputHasher::default();
        for o in &visible {
            h.add(o);
        }
        let (hash, count) = h.take();
        let kind = Record::Outputs { hash, count }.encode(&mut self.buf);
        let Some(p) = self.pair.as_mut() else {
            return Ok(());
        };
        let marker = p
            .core
            .on_log_entry(icount, kind, &self.buf)
            .context("cannot log an output marker")?;
        let produced = Instant::now();
        for o in visible {
            let id = p.next_output;
            p.next_output += 1;
            p.held.push_back(Held {
                id,
                output: o,
                produced,
                sent: None,
            });
            p.core
                .on_output(id, marker)
                .context("the protocol refused an output")?;
        }
        Ok(())
    }

    /// Carries out what the core asks; `Some` when it halted the process.
    fn actions(&mut self) -> Result<Option<Ended>> {
        loop {
            let Some(p) = self.pair.as_mut() else {
                return Ok(None);
            };
            let Some(a) = p.core.poll_action() else {
                return Ok(None);
            };
            match a {
                PrimaryAction::Send(frame) => {
                    let log = matches!(frame.message, ftvm_ft::Message::Log { .. });
                    match self.test_fault.as_mut() {
                        Some(tf) => p
                            .link
                            .send_with(&frame, |b| tf.damage_encoded("primary", &frame, b)),
                        None => p.link.send(&frame),
                    }
                    if log {
                        let now = Instant::now();
                        for h in p.held.iter_mut().rev() {
                            if h.sent.is_some() {
                                break;
                            }
                            h.sent = Some(now);
                        }
                    }
                }
                PrimaryAction::Disconnect => {
                    p.link.close();
                    p.core.on_disconnect(self.clock.ms());
                }
                PrimaryAction::ReleaseOutput(id) => match p.held.pop_front() {
                    Some(h) if h.id == id => {
                        if p.core.phase() == Phase::Paired {
                            if let Some(sent) = h.sent {
                                let [hold_us, _, round_trip_us, _] =
                                    self.holds.add(h.produced, sent, p.ack_read, Instant::now());
                                if let Some(ft) = &self.metrics.ft {
                                    ft.released(hold_us / 1e6, round_trip_us / 1e6);
                                }
                            }
                        }
                        self.perform(h.output)?
                    }
                    other => bail!(
                        "internal error: the protocol released output {id}, but the oldest held output is {:?}",
                        other.map(|h| h.id)
                    ),
                },
                PrimaryAction::Throttle { until_ms } => p.throttle_until = until_ms,
                PrimaryAction::TestAndSet {
                    generation,
                    claimant,
                } => {
                    eprintln!(
                        "ftvm: primary: the backup is gone; asking the arbiter at {} whether to go on alone",
                        p.arbiter.addr()
                    );
                    // A new failover unless this is a retry of the current one.
                    if self
                        .timeline
                        .as_ref()
                        .is_none_or(|t| t.took_over_ms.is_some())
                    {
                        // The core's clock may start later than the process
                        // (a backup that went live has a clock of its own).
                        let offset = ms_since(self.started) - self.clock.ms().min(ms_since(self.started));
                        self.timeline = Some(Timeline {
                            what: "primary went alone".into(),
                            last_heard_ms: p.core.status().last_heard_ms.map(|t| t + offset),
                            suspected_ms: Some(ms_since(self.started)),
                            ..Timeline::default()
                        });
                    }
                    p.arbiter.test_and_set(generation, claimant, &self.tx);
                }
                PrimaryAction::GoAlone => {
                    eprintln!("ftvm: primary: won the arbiter; running alone (unprotected)");
                    if let Some(t) = self.timeline.as_mut() {
                        t.took_over_ms = Some(ms_since(self.started));
                    }
                    if let Some(ft) = &self.metrics.ft {
                        ft.failover();
                    }
                    self.report.solo_since_s = Some(self.started.elapsed().as_secs_f64());
                    self.last_publish = 0;
                }
                PrimaryAction::Halt { reason } => {
                    eprintln!("ftvm: primary: halting: {reason}");
                    p.link.close();
                    return Ok(Some(Ended::Halted(reason)));
                }
            }
        }
    }

    fn ft_event(&mut self, ev: FtEvent) -> Result<()> {
        let now = self.clock.ms();
        let ev = match self.join_event(ev)? {
            Some(ev) => ev,
            None => return Ok(()),
        };
        let Some(p) = self.pair.as_mut() else {
            return Ok(());
        };
        match ev {
            FtEvent::Connected { conn, stream } => {
                p.link.dial_done();
                if p.core.on_connected(now).is_ok() {
                    p.link.attach(conn, stream)?;
                    p.dial_warned = false;
                }
            }
            // Only a following backup builds a machine off the loop.
            FtEvent::Joiner { .. } | FtEvent::MachineBuilt(_) => {}
            FtEvent::DialFailed { error } => {
                p.link.dial_done();
                p.next_dial_ms = now + REDIAL_MS;
                if !p.dial_warned {
                    eprintln!("ftvm: primary: {error}; retrying");
                    p.dial_warned = true;
                }
            }
            FtEvent::Frame { conn, frame } => {
                if p.link.is_current(conn) {
                    if p.connect_when_flushed {
                        // The joiner answered: everything reached it.
                        p.connect_when_flushed = false;
                        p.core
                            .on_connected(now)
                            .context("the new pair refused its connection")?;
                    }
                    if matches!(frame.message, ftvm_ft::Message::Ack { .. }) {
                        p.ack_read = Instant::now();
                    }
                    match p.core.on_message(now, frame) {
                        Ok(()) => {
                            if !p.link.is_handshaken() {
                                p.link.note_handshake(p.core.status().connected);
                            }
                        }
                        Err(e) => {
                            p.link
                                .drop_with(format!("dropping the logging connection: {e}"));
                            p.core.on_disconnect(now);
                            p.next_dial_ms = now + REFUSED_REDIAL_MS;
                        }
                    }
                }
            }
            FtEvent::Closed { conn, error } => {
                if p.link.is_current(conn) {
                    p.link.drop_with(
                        error.unwrap_or_else(|| "the backup closed the logging connection".into()),
                    );
                    p.core.on_disconnect(now);
                    p.next_dial_ms = now + REDIAL_MS;
                }
            }
            FtEvent::Arbiter(result, detail) => {
                eprintln!("ftvm: primary: arbiter: {result:?}: {detail}");
                if let Some(t) = self.timeline.as_mut() {
                    t.arbiter_answer_ms = Some(ms_since(self.started));
                }
                if let Err(e) = p.core.on_arbiter_result(now, result) {
                    tracing::warn!("arbiter answer not expected: {e}");
                }
            }
        }
        Ok(())
    }

    /// Whether this process runs the guest without a backup (and so may
    /// take a joining one).
    fn solo(&self) -> bool {
        self.pair
            .as_ref()
            .is_none_or(|p| p.core.phase() == Phase::Alone)
    }

    /// Join traffic: a joiner connecting, its request, its going away.
    /// Returns the event if it is not about a join.
    fn join_event(&mut self, ev: FtEvent) -> Result<Option<FtEvent>> {
        match ev {
            FtEvent::Joiner { conn, stream } => {
                let mut link = Link::new(self.tx.clone(), self.reactor.registry(), "primary")?;
                link.attach(conn, stream)?;
                let from = link.peer_name();
                let d = Donation::new(conn, link);
                if self.donation.is_some() {
                    eprintln!(
                        "ftvm: primary: refusing a join from {from}: another join is in progress"
                    );
                    d.refuse("another backup is joining");
                } else if !self.solo() {
                    eprintln!("ftvm: primary: refusing a join from {from}: the VM has a backup");
                    d.refuse("this VM already has a backup");
                } else {
                    self.donation = Some(d);
                }
                Ok(None)
            }
            FtEvent::Frame { conn, frame }
                if self.donation.as_ref().is_some_and(|d| d.conn == conn) =>
            {
                let Some(mut d) = self.donation.take() else {
                    return Ok(None);
                };
                let from = d.link.peer_name();
                let identity = self.settings.identity;
                match d.on_request(
                    frame,
                    &self.settings.ft.vm,
                    &identity,
                    &mut self.machine,
                    &self.settings.local_drives,
                ) {
                    Ok(()) => {
                        eprintln!(
                            "ftvm: primary: backup at {from} joining: copying {} MiB of RAM while the guest runs",
                            self.machine.ram.size() >> 20
                        );
                        self.donation = Some(d);
                    }
                    Err(why) => {
                        eprintln!("ftvm: primary: refusing a join from {from}: {why}");
                        self.machine.stop_dirty_log();
                        d.refuse(&why);
                    }
                }
                Ok(None)
            }
            FtEvent::Closed { conn, error }
                if self.donation.as_ref().is_some_and(|d| d.conn == conn) =>
            {
                if let Some(d) = self.donation.take() {
                    eprintln!(
                        "ftvm: primary: the join failed ({}); running on alone",
                        error.unwrap_or_else(|| "the joining backup went away".into())
                    );
                    d.abandon(&mut self.machine);
                }
                Ok(None)
            }
            ev => Ok(Some(ev)),
        }
    }

    /// Pre-copies what the joiner's connection takes this turn; when the
    /// copy has converged, pauses the guest for the rest and forms the new
    /// pair.
    fn donate(&mut self) -> Result<()> {
        let Some(d) = self.donation.as_mut() else {
            return Ok(());
        };
        match d.pump(&mut self.machine) {
            Ok(DonorStep::Wait) => return Ok(()),
            Ok(DonorStep::Finish) => {}
            Err(why) => {
                eprintln!("ftvm: primary: the join failed: {why}; running on alone");
                if let Some(d) = self.donation.take() {
                    self.machine.stop_dirty_log();
                    d.refuse(&why);
                }
                return Ok(());
            }
        }
        if self.inflight_blk > 0 {
            // Pause once the disk requests in flight have completed.
            return Ok(());
        }
        let Some(mut d) = self.donation.take() else {
            return Ok(());
        };
        let pause = std::time::Instant::now();
        let generation = self.settings.generation + 1;
        let ft = &self.settings.ft;
        let advanced = Arbiter::new(&ft.arbiter, &ft.vm, ft.storage_tls())
            .map_err(|e| e.to_string())
            .and_then(|a| a.advance(generation, Duration::from_secs(2)));
        if let Err(e) = advanced {
            eprintln!(
                "ftvm: primary: the join failed: cannot start generation {generation} at the arbiter ({e}); running on alone"
            );
            self.machine.stop_dirty_log();
            d.refuse("the primary could not advance the generation at the arbiter");
            return Ok(());
        }
        let icount = match d.finish(&mut self.machine, generation) {
            Ok(i) => i,
            Err(why) => {
                // The arbiter already moved on; the pair forms anyway and a
                // joiner that cannot follow is a backup failure like any other.
                eprintln!("ftvm: primary: the join could not copy everything: {why}");
                d.refuse(&why);
                return Ok(());
            }
        };
        let now = self.clock.ms();
        let mut cfg = ft.config(self.settings.identity);
        cfg.generation = generation;
        cfg.log_header = self.settings.log_header.clone();
        // The joiner is connected already, but it still has to receive
        // what the link has buffered (up to tens of MiB) and build its
        // machine before it can answer; the core learns of the connection
        // only once the buffer is flushed (`connect_when_flushed`), and the
        // joiner then has the handshake timeout to answer, within
        // JOIN_GRACE in all.
        cfg.startup_timeout_ms = cfg.failure_timeout_ms.max(JOIN_GRACE_MS);
        let core = Primary::new_at(cfg, now, icount).context("bad FT configuration")?;
        let paused = pause.elapsed();
        eprintln!(
            "ftvm: primary: backup joined at step {icount}: {} MiB in {:.2} s, guest paused {:.1} ms; protected again (generation {generation})",
            d.bytes >> 20,
            d.started.elapsed().as_secs_f64(),
            paused.as_secs_f64() * 1e3
        );
        self.settings.generation = generation;
        self.report.generation = generation;
        self.report.solo_since_s = None;
        self.report.joins += 1;
        self.report.last_join_s = Some(d.started.elapsed().as_secs_f64());
        self.report.last_join_pause_ms = Some(paused.as_secs_f64() * 1e3);
        if let Some(ft) = &self.metrics.ft {
            ft.joined(d.started.elapsed().as_secs_f64(), paused.as_secs_f64());
        }
        let digest_interval = self.settings.digest_interval;
        self.pair = Some(Pairing {
            core,
            link: d.link,
            arbiter: Arbiter::new(&ft.arbiter, &ft.vm, ft.storage_tls())?,
            backup: d.joiner_listen,
            next_dial_ms: 0,
            dial_warned: false,
            held: VecDeque::new(),
            ack_read: Instant::now(),
            next_output: 1,
            digest_interval,
            next_digest: icount.saturating_add(digest_interval),
            throttle_until: 0,
            connect_when_flushed: true,
        });
        self.publish(true);
        Ok(())
    }

    fn host_event(&mut self, ev: HostEvent) -> Result<()> {
        match ev {
            HostEvent::Console(bytes) => match self.console.filter(bytes) {
                Filtered::Bytes(b) if !b.is_empty() => self.apply(Input::ConsoleRx(b))?,
                Filtered::Bytes(_) => {}
                Filtered::Quit => self.quit = true,
            },
            HostEvent::Frame(slot, frame) => self.apply(Input::NetRx { slot, frame })?,
            HostEvent::Completion(input) => {
                if matches!(input, Input::BlkDone { .. }) {
                    self.inflight_blk = self.inflight_blk.saturating_sub(1);
                }
                self.apply(input)?
            }
            HostEvent::Ft(ev) => self.ft_event(ev)?,
        }
        Ok(())
    }

    /// A joined backup's connection is handed to the core once the join's
    /// last bytes are out.
    fn connect_joined(&mut self) -> Result<()> {
        let now = self.clock.ms();
        if let Some(p) = self.pair.as_mut() {
            if p.connect_when_flushed && p.link.queued_bytes() == 0 {
                p.connect_when_flushed = false;
                if p.link.is_connected() {
                    p.core
                        .on_connected(now)
                        .context("the new pair refused its connection")?;
                }
            }
        }
        Ok(())
    }

    /// Dials the backup while paired without a connection.
    fn maybe_dial(&mut self) {
        let now = self.clock.ms();
        if let Some(p) = self.pair.as_mut() {
            if p.core.phase() == Phase::Paired
                && !p.connect_when_flushed
                && !p.link.is_connected()
                && !p.link.is_dialing()
                && now >= p.next_dial_ms
            {
                if let Some(addr) = p.backup {
                    p.link.dial(addr, self.settings.ft.secure.as_ref());
                }
            }
        }
    }

    fn publish(&mut self, force: bool) {
        let now = self.clock.ms();
        if !force && now < self.last_publish + PUBLISH_MS {
            return;
        }
        self.last_publish = now;
        let r = &mut self.report;
        r.uptime_s = self.started.elapsed().as_secs_f64();
        r.icount = self.machine.icount();
        if let Some(p) = &self.pair {
            let s = p.core.status();
            r.phase = s.phase.as_str().into();
            r.connected = s.connected;
            r.peer = p.link.peer().map(|a| a.to_string());
            r.log_seq = s.log_seq;
            r.acked_seq = s.acked_seq;
            r.lag_instructions = s.lag_instructions;
            r.lag_ms = s.lag_ms;
            r.held_outputs = s.held_outputs;
            r.released_outputs = s.released_outputs;
            r.log_bytes_sent = s.bytes_sent;
            r.log_bytes_received = s.bytes_received;
            r.throttled_ms = s.throttled_ms;
            r.arbiter_attempts = s.arbiter_attempts;
            r.heartbeats_missed = s.heartbeats_missed;
        } else {
            r.phase = "live".into();
            r.connected = false;
            r.peer = None;
        }
        r.hold = self.holds.report();
        if self.timeline.is_some() {
            r.failover = self.timeline.clone();
        }
        self.metrics.guest.icount(r.icount);
        if let Some(ft) = &self.metrics.ft {
            ft.status(&super::status::sample(r, true));
        }
        self.board.publish(self.report.clone());
    }

    /// Sleeps for at most `wait`, returning early when something for the
    /// guest arrives (applied at once, after a time input, so the guest sees
    /// when it arrived). Logging-channel and arbiter events are handled
    /// without waking the guest: an acknowledgement must not make the
    /// machine run a turn, which would log a time input, which would be
    /// acknowledged...
    fn wait(&mut self, wait: Duration) -> Result<Option<Ended>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(end) = self.pump(left)? {
                return Ok(Some(end));
            }
            let mut input = false;
            while let Some(ev) = self.reactor.try_recv() {
                match ev {
                    HostEvent::Ft(ev) => {
                        self.ft_event(ev)?;
                        if let Some(end) = self.actions()? {
                            return Ok(Some(end));
                        }
                    }
                    ev => {
                        if !input {
                            input = true;
                            self.apply_time()?;
                        }
                        self.host_event(ev)?;
                    }
                }
            }
            if input || !self.pending.is_empty() || left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Applies the host clock as a time input.
    fn apply_time(&mut self) -> Result<()> {
        let t = self.clock.ticks();
        self.last_time = Some(Instant::now());
        self.apply(Input::Time(t))
    }

    /// Looks at the event loop, waiting at most `timeout` (zero between two
    /// slices of guest execution): the logging connections are read and
    /// what they carried is handled at once — an acknowledgement releases
    /// outputs right here — and joiners are accepted. Host events stay on
    /// the channel; `woken` says that some may wait there.
    fn pump(&mut self, timeout: Duration) -> Result<Option<Ended>> {
        self.ready.clear();
        self.reactor
            .poll(timeout, &mut self.ready)
            .context("the event loop failed")?;
        for i in 0..self.ready.len() {
            let t = self.ready[i];
            if t == HOST_EVENTS {
                self.woken = true;
            } else if t == JOIN_LISTENER {
                if let Some(l) = self.join_listener.as_mut() {
                    l.accept(&mut self.ftq);
                }
            } else {
                if let Some(p) = self.pair.as_mut() {
                    if p.link.token() == Some(t) {
                        p.link.ready();
                    }
                }
                if let Some(d) = self.donation.as_mut() {
                    if d.link.token() == Some(t) {
                        d.link.ready();
                    }
                }
            }
        }
        loop {
            if let Some(p) = self.pair.as_mut() {
                p.link.collect(&mut self.ftq);
            }
            if let Some(d) = self.donation.as_mut() {
                d.link.collect(&mut self.ftq);
            }
            if self.ftq.is_empty() {
                return Ok(None);
            }
            for ev in std::mem::take(&mut self.ftq) {
                self.ft_event(ev)?;
                if let Some(end) = self.actions()? {
                    return Ok(Some(end));
                }
            }
        }
    }

    /// The first output let out after this process took over ends its
    /// failover timeline, which goes to the log.
    fn first_output(&mut self) {
        if let Some(t) = self.timeline.as_mut() {
            if t.took_over_ms.is_some() && t.first_output_ms.is_none() {
                t.first_output_ms = Some(ms_since(self.started));
                eprintln!("ftvm: failover timeline: {}", t.describe());
                self.last_publish = 0;
            }
        }
    }

    /// How long the loop may sleep: until the core's next timeout, within
    /// `cap`.
    fn sleep_cap(&self, cap: Duration) -> Duration {
        self.clock.until(
            self.pair.as_ref().and_then(|p| p.core.next_timeout_ms()),
            cap,
        )
    }

    /// Runs the guest for one turn, in slices with a look at the event loop
    /// between two; returns how the machine stopped, or `Err(end)` when
    /// the protocol halted the process meanwhile.
    fn run_turn(&mut self) -> Result<std::result::Result<Stop, Ended>> {
        let limit = self.machine.icount() + FT_QUANTUM;
        loop {
            let at = self.machine.icount();
            let mut end = limit.min(at + SLICE);
            if let Some(tf) = &self.test_fault {
                end = tf.limit(at, end);
            }
            let stop = self.machine.run_until_output(end);
            self.metrics.exit(&self.machine, stop, true);
            self.test_fault_if_due();
            if stop != Stop::Limit || self.machine.icount() >= limit || self.machine.has_outputs() {
                return Ok(Ok(stop));
            }
            self.woken = false;
            if let Some(end) = self.pump(Duration::ZERO)? {
                return Ok(Err(end));
            }
            if self.woken || !self.pending.is_empty() {
                return Ok(Ok(stop));
            }
        }
    }

    /// `--test-fault`: the guest reached the step (dying and stalling
    /// happened inside `due`).
    fn test_fault_if_due(&mut self) {
        let icount = self.machine.icount();
        let Some(kind) = self
            .test_fault
            .as_mut()
            .and_then(|t| t.due("primary", icount))
        else {
            return;
        };
        if kind == FaultKind::Drop {
            let now = self.clock.ms();
            if let Some(p) = self.pair.as_mut() {
                p.link
                    .drop_with("test fault: dropping the logging connection".into());
                p.core.on_disconnect(now);
                p.next_dial_ms = now + REDIAL_MS;
            }
        }
    }

    /// Runs until the guest powers off, the protocol halts the process, or
    /// a signal or the console asks to stop.
    pub fn run(&mut self) -> Result<Ended> {
        let mut was_idle = true;
        loop {
            if STOP_REQUESTED.load(Ordering::SeqCst) || self.quit {
                return self.stop();
            }
            // Read what arrived before judging the silence: after a long
            // step (a digest, a host stall) Acks waiting in the socket are
            // news from the backup.
            if let Some(end) = self.pump(Duration::ZERO)? {
                return Ok(end);
            }
            let now = self.clock.ms();
            if let Some(p) = self.pair.as_mut() {
                p.core.on_tick(now);
            }
            if let Some(end) = self.actions()? {
                return Ok(end);
            }
            self.maybe_dial();
            self.connect_joined()?;
            if self.announce_at.last().is_some_and(|&t| now >= t) {
                self.announce_at.pop();
                self.announce();
            }
            self.publish(false);
            let throttle = self.pair.as_ref().map_or(0, |p| p.throttle_until);
            if now < throttle {
                let w = self.sleep_cap(Duration::from_millis(throttle - now));
                if let Some(end) = self.wait(w)? {
                    return Ok(end);
                }
                continue;
            }
            if was_idle || self.last_time.is_none_or(|t| t.elapsed() >= TIME_EVERY) {
                self.apply_time()?;
            }
            while let Some(input) = self.pending.pop_front() {
                self.apply(input)?;
            }
            if let Some(end) = self.pump(Duration::ZERO)? {
                return Ok(end);
            }
            while let Some(ev) = self.reactor.try_recv() {
                self.host_event(ev)?;
            }
            if let Some(end) = self.actions()? {
                return Ok(end);
            }
            self.digest_if_due()?;
            if self.donation.is_some() && self.last_donate.elapsed() >= DONATE_EVERY {
                self.last_donate = Instant::now();
                self.donate()?;
            }
            let stop = match self.run_turn()? {
                Ok(stop) => stop,
                Err(end) => return Ok(end),
            };
            self.outputs()?;
            let (now, icount) = (self.clock.ms(), self.machine.icount());
            if let Some(p) = self.pair.as_mut() {
                p.core.on_progress(now, icount);
            }
            if let Some(end) = self.actions()? {
                return Ok(end);
            }
            was_idle = false;
            match stop {
                Stop::Limit => {}
                Stop::Idle { wake_at } => {
                    was_idle = true;
                    if !self.pending.is_empty() {
                        continue;
                    }
                    let mut w = MAX_IDLE_WAIT;
                    if let Some(t) = wake_at {
                        let left = t.saturating_sub(self.clock.ticks());
                        w = w.min(Duration::from_nanos(
                            left.saturating_mul(1_000_000_000 / TIMEBASE_HZ),
                        ));
                    }
                    let w = self.sleep_cap(w);
                    if let Some(end) = self.wait(w)? {
                        return Ok(end);
                    }
                }
                Stop::Finished(f) => return self.finished(f),
            }
        }
    }

    fn digest_if_due(&mut self) -> Result<()> {
        if !self.paired() {
            return Ok(());
        }
        let icount = self.machine.icount();
        let due = self
            .pair
            .as_ref()
            .is_some_and(|p| p.digest_interval > 0 && icount >= p.next_digest);
        if !due {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let d = self.machine.digest();
        warn_if_slow("primary", icount, t);
        let kind = Record::Digest(Box::new(d)).encode(&mut self.buf);
        if let Some(p) = self.pair.as_mut() {
            p.core
                .on_log_entry(icount, kind, &self.buf)
                .context("cannot log a digest")?;
            while p.next_digest <= icount {
                p.next_digest += p.digest_interval;
            }
        }
        Ok(())
    }

    /// The guest powered off: let its last outputs out (waiting for the
    /// backup's acknowledgement), tell the backup, end.
    fn finished(&mut self, f: Finisher) -> Result<Ended> {
        let code = match f {
            Finisher::Pass | Finisher::Reset => 0,
            Finisher::Fail(c) => (c as u8).max(1),
        };
        if self.pair.is_some() {
            let deadline = self.clock.ms() + POWER_OFF_DRAIN.as_millis() as u64;
            while self
                .pair
                .as_ref()
                .is_some_and(|p| !p.held.is_empty() && p.core.phase() == Phase::Paired)
                && self.clock.ms() < deadline
            {
                let now = self.clock.ms();
                if let Some(p) = self.pair.as_mut() {
                    p.core.on_tick(now);
                }
                if let Some(end) = self.actions()? {
                    return Ok(end);
                }
                let w = self.sleep_cap(MAX_IDLE_WAIT);
                if let Some(end) = self.pump(w)? {
                    return Ok(end);
                }
                while let Some(ev) = self.reactor.try_recv() {
                    if let HostEvent::Ft(ev) = ev {
                        self.ft_event(ev)?;
                    }
                }
            }
            let now = self.clock.ms();
            if let Some(p) = self.pair.as_mut() {
                p.leave(now, GoodbyeReason::PowerOff);
            }
        }
        eprint!("\r\nftvm: the guest powered off\r\n");
        Ok(Ended::Finished(code))
    }

    /// A signal or the console asked to stop. A paired primary hands the
    /// VM over to its backup (planned failover); a lone one just stops.
    fn stop(&mut self) -> Result<Ended> {
        let now = self.clock.ms();
        if let Some(p) = self.pair.as_mut() {
            if p.core.phase() == Phase::Paired && p.link.is_connected() {
                eprint!("\r\nftvm: primary: stopping; the backup takes over\r\n");
                p.leave(now, GoodbyeReason::Leaving);
                return Ok(Ended::Stopped);
            }
        }
        eprint!("\r\nftvm: stopped\r\n");
        Ok(Ended::Stopped)
    }
}

/// A digest runs on the machine thread; one that takes a good part of the
/// failure timeout says so (it hashes the RAM written since the previous
/// one, so a long interval on a busy guest costs more).
pub(crate) fn warn_if_slow(side: &str, icount: u64, started: std::time::Instant) {
    let ms = started.elapsed().as_millis();
    if ms >= 20 {
        eprintln!("ftvm: {side}: the state digest at step {icount} took {ms} ms");
    } else {
        tracing::debug!("state digest at step {icount}: {ms} ms");
    }
}

/// `ftvm primary`.
pub fn primary(mut args: PrimaryArgs) -> Result<u8> {
    args.ft.load_tls("primary")?;
    args.machine.nbd_tls = args.ft.storage_tls();
    let (cfg, paths, backends) = args.machine.build()?;
    let identity = args.ft.identity(&cfg);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // The backup rebuilds the machine from this header (the power-on values
    // are the primary's); disk contents are shared, not identified here.
    let header = ftvm_replay::log_header(
        &cfg,
        paths.as_pairs(),
        Vec::new(),
        args.digest_interval,
        created,
    );
    let mut config = args.ft.config(identity);
    config.log_header = header.encode().context("cannot encode the log header")?;
    let config_header = config.log_header.clone();
    let arbiter = Arbiter::new(&args.ft.arbiter, &args.ft.vm, args.ft.storage_tls())?;
    arbiter.check_generation(args.ft.generation)?;
    let clock = Clock::new(0);
    let core = Primary::new(config, clock.ms()).context("bad FT configuration")?;
    let mut machine = Machine::new(&cfg).context("cannot build the machine")?;
    // Before the pair's timing starts, so that the first digest hashes only
    // what the guest wrote since (not all of RAM, which on a big guest takes
    // longer than the backup's failure timeout).
    let primed = std::time::Instant::now();
    machine.prime_digest();
    tracing::debug!("digest cache primed in {} ms", primed.elapsed().as_millis());
    let mut reactor = Reactor::new()?;
    let board = Board::default();
    if let Some(addr) = args.ft.status {
        let a = board.serve(addr, &mut reactor)?;
        eprintln!("ftvm: primary: status on {a}");
    }
    let (metrics, bound) = VmMetrics::start(Some(&args.ft.vm), Some("primary"), args.ft.metrics)?;
    if let Some(a) = bound {
        eprintln!("ftvm: primary: metrics on http://{a}/metrics");
    }
    install_signal_handlers();
    let tx = reactor.sender();
    let link = Link::new(tx, reactor.registry(), "primary")?;
    let report = Report {
        vm: args.ft.vm.clone(),
        started_as: Role::Primary.as_str().into(),
        generation: args.ft.generation,
        ..Report::default()
    };
    let mut live = Live::build(LiveSetup {
        machine,
        virtio: cfg.virtio.clone(),
        backends,
        console: args.console.clone(),
        read_input: !args.no_input,
        clock,
        board,
        report,
        settings: FtSettings {
            ft: args.ft.clone(),
            identity,
            log_header: config_header,
            digest_interval: args.digest_interval,
            generation: args.ft.generation,
            local_drives: super::local_drives(&args.ft, &args.machine.drives),
        },
        started: clock.start(),
        reactor,
        timeline: None,
        metrics,
    })?;
    live.test_fault = args.test_fault.clone();
    live.pair = Some(Pairing {
        core,
        link,
        arbiter,
        backup: Some(args.backup),
        next_dial_ms: 0,
        dial_warned: false,
        held: VecDeque::new(),
        ack_read: Instant::now(),
        next_output: 1,
        digest_interval: args.digest_interval,
        next_digest: args.digest_interval,
        throttle_until: 0,
        connect_when_flushed: false,
    });
    eprintln!(
        "ftvm: primary: VM {:?} generation {}, streaming the log to {}",
        args.ft.vm, args.ft.generation, args.backup
    );
    let ended = live.run()?;
    if let Ended::Halted(reason) = &ended {
        live.report.halted = Some(reason.to_string());
    }
    live.publish(true);
    Ok(ended.exit_code())
}
