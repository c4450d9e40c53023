//! `ftvm backup`: re-executes the primary's log and takes over when the
//! primary dies. It listens for the logging connection; the primary's Hello
//! carries its log header, from which the backup builds the very machine
//! the primary booted (same power-on values; its own copies of the images,
//! which the handshake's identity hash checked) in a one-shot thread, while
//! the loop goes on acknowledging what arrives. Then, entry by entry, it
//! runs the machine to the entry's step and applies it — inputs as the
//! primary applied them, `Outputs` markers compared with the hash of what
//! its own execution produced, digests compared with its own state — and
//! with nothing pending runs on up to the core's horizon, never further.
//! It never touches the network or the disk while following: its outputs
//! are dropped, but it remembers the block and entropy requests not yet
//! completed in the log and the outputs since the last marker. When the core
//! says `GoLive` (the primary fell silent, the log was drained and the
//! arbiter said Won), it opens the real TAP and disk, announces the guest's
//! MACs, submits those requests again, lets out the outputs the primary
//! cannot have released, and continues in the live loop of
//! [`super::primary`].

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ftvm_ft::{Backup, BackupAction, LogEntry, Message, Phase, Role};
use ftvm_log::LogHeader;
use ftvm_machine::{Input, Machine, MachineConfig, Output, Slot, Stop};
use ftvm_replay::{recorded_config, OutputHasher, Record};

use super::arbiter::Arbiter;
use super::join;
use super::link::{Link, Listener};
use super::primary::{Live, LiveSetup};
use super::status::{Board, Report, Timeline};
use super::test_fault::{FaultKind, TestFault};
use super::{Clock, FtArgs, FtSettings, EXIT_DIVERGED, EXIT_HALTED, SLICE};
use crate::console::ConsoleTarget;
use crate::devices;
use crate::driver::{install_signal_handlers, STOP_REQUESTED};
use crate::events::{EventSender, FtEvent, HostEvent};
use crate::machine_args::MachineArgs;
use crate::metrics::VmMetrics;
use crate::reactor::{Reactor, LISTENER};

/// Longest the loop sleeps with nothing to replay.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(20);
const PUBLISH_MS: u64 = 250;
/// Digests a backup that went live sends to a backup joining it.
const DEFAULT_DIGEST_INTERVAL: u64 = 1_000_000_000;
/// Numbers for accepted connections start here (the link never dials).
const FIRST_ACCEPTED_ID: u64 = 1 << 32;

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub ft: FtArgs,
    /// Where to accept the primary's logging connection.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: SocketAddr,
    /// Join a primary that runs the guest without a backup (its
    /// `--join-listen` address): receive its state while it runs, then
    /// follow it as a new pair (re-protection).
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<SocketAddr>,
    /// Test switch: die (SIGKILL to itself) the moment the primary's state
    /// has arrived, i.e. while the primary is pausing to form the pair, to
    /// check that a join interrupted there leaves a working primary.
    #[arg(long, hide = true)]
    pub test_die_at_join_state: bool,
    /// Test switch: a fault when the replayed guest reaches instruction
    /// STEP (STEP:die, STEP:stall:MS, STEP:drop, STEP:corrupt); see
    /// `crates/node/src/ft/test_fault.rs`.
    #[arg(long, hide = true, value_name = "STEP:KIND")]
    pub test_fault: Option<TestFault>,
    /// Where console output goes once live: stdio, null, or file:PATH.
    #[arg(long, value_name = "TARGET", default_value = "stdio")]
    pub console: ConsoleTarget,
    /// Do not read console input from stdin once live.
    #[arg(long)]
    pub no_input: bool,
    /// The same machine as the primary's (images, memory, devices); shared
    /// drives are opened only when the backup goes live.
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// Why replay cannot go on.
enum Stuck {
    /// The execution differs from the primary's.
    Diverged(String),
}

/// Replay state of a backup.
struct Follower {
    machine: Machine,
    /// The entry being run towards, handed out by the core.
    current: Option<LogEntry>,
    executed_seq: u64,
    /// State digests compared with the primary's and found equal.
    digests_checked: u64,
    /// Outputs since the last `Outputs` marker (hashed in `hasher`).
    unmarked: Vec<Output>,
    hasher: OutputHasher,
    /// Block and entropy requests not yet completed in the log.
    outstanding: BTreeMap<(Slot, u64), Output>,
    powered_off: bool,
    /// Non-shared disks: this backup's own copies, on which it performs
    /// every block request as its machine makes it, and the results,
    /// waiting for the primary's completion entry (which carries no read
    /// data then).
    local: Option<LocalDisks>,
    local_done: BTreeMap<(Slot, u64), Vec<u8>>,
    metrics: VmMetrics,
}

/// This backup's own disks, by virtio slot.
type LocalDisks = BTreeMap<Slot, Box<dyn devices::DiskBackend>>;

impl Follower {
    fn new(machine: Machine, local: Option<LocalDisks>, metrics: VmMetrics) -> Follower {
        Follower {
            machine,
            current: None,
            executed_seq: 0,
            digests_checked: 0,
            unmarked: Vec::new(),
            hasher: OutputHasher::default(),
            outstanding: BTreeMap::new(),
            powered_off: false,
            local,
            local_done: BTreeMap::new(),
            metrics,
        }
    }

    fn collect_outputs(&mut self) {
        for o in self.machine.take_outputs() {
            match &o {
                Output::Rng { slot, id, .. } => {
                    self.outstanding.insert((*slot, *id), o);
                    continue;
                }
                Output::Blk { slot, id, op } => {
                    self.outstanding.insert((*slot, *id), o.clone());
                    if let Some(local) = &self.local {
                        // In order, as the primary's disk worker does.
                        if let Input::BlkDone { data, .. } = devices::block(local, *slot, *id, op) {
                            self.local_done.insert((*slot, *id), data);
                        }
                    }
                }
                _ => {}
            }
            self.hasher.add(&o);
            self.unmarked.push(o);
        }
    }

    fn apply(&mut self, e: &LogEntry) -> Result<(), Stuck> {
        let rec = Record::decode(e.kind, &e.payload).map_err(|err| {
            Stuck::Diverged(format!(
                "log entry {} (step {}) is malformed: {err}",
                e.seq, e.icount
            ))
        })?;
        match rec {
            Record::Input(mut input) => {
                match &mut input {
                    Input::BlkDone { slot, id, data, .. } => {
                        self.outstanding.remove(&(*slot, *id));
                        if self.local.is_some() {
                            // The read data is this backup's own copy's.
                            match self.local_done.remove(&(*slot, *id)) {
                                Some(local) => *data = local,
                                None => {
                                    return Err(Stuck::Diverged(format!(
                                        "the primary completed block request {id} (slot {slot}), which this backup never issued"
                                    )))
                                }
                            }
                        }
                    }
                    Input::RngData { slot, id, .. } => {
                        self.outstanding.remove(&(*slot, *id));
                    }
                    _ => {}
                }
                self.machine.apply(&input);
            }
            Record::Outputs { hash, count } => {
                let (h, c) = self.hasher.take();
                if (h, c) != (hash, count) {
                    return Err(Stuck::Diverged(format!(
                        "outputs differ at step {}: the primary produced {count} output units, this backup {c} (hashes {hash:#x} / {h:#x})",
                        e.icount
                    )));
                }
                self.unmarked.clear();
            }
            Record::Digest(expected) => {
                let t = std::time::Instant::now();
                let found = self.machine.digest();
                super::primary::warn_if_slow("backup", e.icount, t);
                let diff = expected.differences(&found);
                if !diff.is_empty() {
                    if let Some(ft) = &self.metrics.ft {
                        ft.digest_failed();
                    }
                    return Err(Stuck::Diverged(format!(
                        "state differs from the primary's at step {}: {}",
                        e.icount,
                        diff.join("; ")
                    )));
                }
                self.digests_checked += 1;
            }
            Record::End(_) => {}
        }
        self.executed_seq = e.seq;
        Ok(())
    }

    /// Replays for at most `SLICE` steps (so that what arrives on the
    /// logging connection is read and acknowledged promptly). Returns
    /// whether anything happened.
    fn replay(&mut self, core: &mut Backup, tf: Option<&TestFault>) -> Result<bool, Stuck> {
        let start = self.machine.icount();
        let mut progressed = false;
        loop {
            if self.current.is_none() {
                self.current = core.next_entry();
            }
            let target = match &self.current {
                Some(e) => e.icount,
                None => core.horizon(),
            };
            let at = self.machine.icount();
            if at > target {
                if self.current.is_some() {
                    return Err(Stuck::Diverged(format!(
                        "the next log entry is at step {target}, but this backup is already at step {at}"
                    )));
                }
                return Ok(progressed);
            }
            if at < target {
                if at >= start + SLICE || self.powered_off {
                    return Ok(progressed);
                }
                let mut limit = target.min(start + SLICE);
                if let Some(tf) = tf {
                    limit = tf.limit(at, limit);
                }
                let stop = self.machine.run(limit);
                self.metrics.exit(&self.machine, stop, false);
                progressed = true;
                self.collect_outputs();
                if tf.is_some_and(|t| t.limit(at, u64::MAX) == self.machine.icount()) {
                    // At the test fault's step: the driver carries it out.
                    return Ok(progressed);
                }
                match stop {
                    Stop::Limit => {}
                    Stop::Idle { .. } => {
                        if self.machine.icount() < target {
                            return Err(Stuck::Diverged(format!(
                                "the guest went idle at step {} but the primary ran on to step {target} without an input",
                                self.machine.icount()
                            )));
                        }
                    }
                    Stop::Finished(_) => self.powered_off = true,
                }
                continue;
            }
            let Some(e) = self.current.take() else {
                return Ok(progressed);
            };
            self.apply(&e)?;
            progressed = true;
        }
    }
}

struct BackupDriver {
    args: BackupArgs,
    /// Non-shared disks, until the follower takes them.
    local_disks: Option<LocalDisks>,
    /// The TAP devices, attached since startup, read only once live.
    taps: Vec<ftvm_host::TapDevice>,
    own: Arc<MachineConfig>,
    identity: [u8; 32],
    core: Backup,
    /// The primary's machine is being built off the loop.
    building: bool,
    link: Link,
    /// A connection that arrived while a paired one is up: it replaces that
    /// one only if its first frame is a Hello of this pair, so a stray
    /// client cannot disturb a working logging connection.
    probation: Option<(u64, Link)>,
    arbiter: Arbiter,
    clock: Clock,
    started: std::time::Instant,
    /// The pair's generation (a joined backup's comes from its primary).
    generation: u64,
    tx: EventSender,
    reactor: Reactor,
    listener: Listener,
    /// Scratch: tokens the event loop reported ready, and what the
    /// connections produced.
    ready: Vec<mio::Token>,
    ftq: Vec<FtEvent>,
    /// When the last log entry arrived, and the failover in progress.
    last_entry_ms: Option<u64>,
    timeline: Option<Timeline>,
    follower: Option<Follower>,
    virtio: Vec<ftvm_machine::DeviceConfig>,
    draining: bool,
    board: Board,
    report: Report,
    last_publish: u64,
    metrics: VmMetrics,
}

/// A machine built off the loop for this backup to follow.
struct Built {
    machine: Machine,
    virtio: Vec<ftvm_machine::DeviceConfig>,
    ram_mib: u64,
    ms: u128,
}

/// What the build thread sends back: the machine, or why it could not be
/// built.
pub struct MachineBuilt(Box<std::result::Result<Built, String>>);

impl std::fmt::Debug for MachineBuilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Ok(b) => write!(f, "MachineBuilt(ok, {} ms)", b.ms),
            Err(e) => write!(f, "MachineBuilt(error: {e})"),
        }
    }
}

/// What the loop decided.
enum Next {
    GoLive,
    Exit(u8),
}

impl BackupDriver {
    /// Starts building the primary's machine from its log header, in a
    /// one-shot thread: building (loading the images, the identity hash,
    /// priming the digest cache) takes tens of milliseconds on a big guest,
    /// and the loop must go on reading and acknowledging the primary's
    /// entries meanwhile or the primary's failure detector counts the
    /// backup as dead before the pair has even started. The entries wait in
    /// the core until the machine arrives ([`FtEvent::MachineBuilt`]).
    fn start_build(&mut self, header: Vec<u8>) {
        self.building = true;
        let own = self.own.clone();
        let ft = self.args.ft.clone();
        let identity = self.identity;
        let tx = self.tx.clone();
        let build = move || -> Result<Built> {
            let t = std::time::Instant::now();
            let (h, _) =
                LogHeader::decode(&header).context("the primary's log header is unreadable")?;
            let rc = recorded_config(&h)?;
            let cfg = MachineConfig::from_spec(
                &rc.spec,
                own.bios.clone(),
                own.kernel.clone(),
                own.initrd.clone(),
            );
            if ft.identity(&cfg) != identity {
                bail!("the primary's machine differs from this backup's (memory, devices, command line or images)");
            }
            let mut machine = Machine::new(&cfg).context("cannot build the primary's machine")?;
            machine.prime_digest();
            Ok(Built {
                machine,
                virtio: cfg.virtio.clone(),
                ram_mib: rc.spec.ram_size >> 20,
                ms: t.elapsed().as_millis(),
            })
        };
        std::thread::spawn(move || {
            let r = build().map_err(|e| format!("{e:#}"));
            // A failed send: the driver is gone, nothing to build for.
            let _ = tx.send(HostEvent::Ft(FtEvent::MachineBuilt(MachineBuilt(
                Box::new(r),
            ))));
        });
    }

    /// The machine from [`BackupDriver::start_build`] arrived.
    fn machine_built(&mut self, built: MachineBuilt) -> Result<()> {
        self.building = false;
        let b = (*built.0).map_err(|e| anyhow!(e))?;
        eprintln!(
            "ftvm: backup: following the primary ({} MiB, {} virtio devices; machine built in {} ms, off the loop)",
            b.ram_mib,
            b.virtio.len(),
            b.ms
        );
        self.virtio = b.virtio;
        self.follower = Some(Follower::new(
            b.machine,
            self.local_disks.take(),
            self.metrics.clone(),
        ));
        Ok(())
    }

    fn on_event(&mut self, ev: HostEvent) -> Result<()> {
        let now = self.clock.ms();
        let HostEvent::Ft(ev) = ev else {
            return Ok(());
        };
        match ev {
            FtEvent::Connected { conn, stream } if self.link.is_handshaken() => {
                let mut link = Link::new(self.tx.clone(), self.reactor.registry(), "backup")?;
                link.attach(conn, stream)?;
                self.probation = Some((conn, link));
            }
            FtEvent::Frame { conn, frame }
                if self.probation.as_ref().is_some_and(|(c, _)| *c == conn) =>
            {
                let Some((_, link)) = self.probation.take() else {
                    return Ok(());
                };
                let from = link.peer_name();
                let ours = matches!(&frame.message, Message::Hello(h) if h.vm == self.args.ft.vm)
                    && frame.generation == self.generation;
                if !ours {
                    eprintln!(
                        "ftvm: backup: refused a connection from {from} that did not start with this pair's Hello (got {:?}, generation {})",
                        frame.message.message_type(),
                        frame.generation
                    );
                    return Ok(());
                }
                // The primary reconnected: the new connection takes over.
                self.link.close();
                self.link = link;
                match self.core.on_connected(now) {
                    Ok(()) => return self.on_event(HostEvent::Ft(FtEvent::Frame { conn, frame })),
                    Err(e) => eprintln!("ftvm: backup: refusing a connection from {from}: {e}"),
                }
            }
            FtEvent::Closed { conn, error }
                if self.probation.as_ref().is_some_and(|(c, _)| *c == conn) =>
            {
                let from = self
                    .probation
                    .take()
                    .and_then(|(_, l)| l.peer())
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                eprintln!(
                    "ftvm: backup: a second connection from {from} ended before its Hello: {}",
                    error.unwrap_or_else(|| "closed".into())
                );
            }
            FtEvent::Connected { conn, stream } => {
                let from = stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                match self.core.on_connected(now) {
                    Ok(()) => {
                        self.link.attach(conn, stream)?;
                        tracing::info!("logging connection from {from}");
                    }
                    Err(e) => eprintln!("ftvm: backup: refusing a connection from {from}: {e}"),
                }
            }
            FtEvent::Frame { conn, mut frame } => {
                if self.link.is_current(conn) {
                    if matches!(frame.message, Message::Log { .. }) {
                        self.last_entry_ms = Some(now);
                    }
                    if let Some(tf) = self.args.test_fault.as_mut() {
                        tf.damage_decoded("backup", &mut frame);
                    }
                    if let Err(e) = self.core.on_message(now, frame) {
                        self.link
                            .drop_with(format!("dropping the logging connection: {e}"));
                        self.core.on_disconnect(now);
                    } else {
                        if self.follower.is_none() && !self.building {
                            if let Some(h) = self.core.log_header().map(|h| h.to_vec()) {
                                self.start_build(h);
                            }
                        }
                        if !self.link.is_handshaken() {
                            self.link.note_handshake(self.core.status().connected);
                        }
                    }
                }
            }
            FtEvent::Closed { conn, error } => {
                if self.link.is_current(conn) {
                    self.link.drop_with(
                        error.unwrap_or_else(|| "the primary closed the logging connection".into()),
                    );
                    self.core.on_disconnect(now);
                }
            }
            FtEvent::MachineBuilt(built) => self.machine_built(built)?,
            // A following backup neither dials nor takes joins.
            FtEvent::DialFailed { .. } | FtEvent::Joiner { .. } => {}
            FtEvent::Arbiter(result, detail) => {
                eprintln!("ftvm: backup: arbiter: {result:?}: {detail}");
                if let Some(t) = self.timeline.as_mut() {
                    t.arbiter_answer_ms = Some(now);
                }
                if let Err(e) = self.core.on_arbiter_result(now, result) {
                    tracing::warn!("arbiter answer not expected: {e}");
                }
            }
        }
        Ok(())
    }

    fn actions(&mut self) -> Option<Next> {
        while let Some(a) = self.core.poll_action() {
            match a {
                BackupAction::Send(frame) => self.link.send(&frame),
                BackupAction::Disconnect => {
                    self.link.close();
                    self.core.on_disconnect(self.clock.ms());
                }
                BackupAction::DrainLog => {
                    self.timeline = Some(Timeline {
                        what: "backup went live".into(),
                        last_entry_ms: self.last_entry_ms,
                        last_heard_ms: self.core.status().last_heard_ms,
                        suspected_ms: Some(self.clock.ms()),
                        ..Timeline::default()
                    });
                    eprintln!(
                        "ftvm: backup: the primary is silent; executing the {} log entries received but not yet replayed",
                        self.core.pending_entries()
                    );
                    self.draining = true;
                }
                BackupAction::TestAndSet {
                    generation,
                    claimant,
                } => {
                    eprintln!(
                        "ftvm: backup: asking the arbiter at {} to take over",
                        self.arbiter.addr()
                    );
                    self.arbiter.test_and_set(generation, claimant, &self.tx);
                }
                BackupAction::GoLive => {
                    if let Some(t) = self.timeline.as_mut() {
                        t.took_over_ms = Some(self.clock.ms());
                    }
                    return Some(Next::GoLive);
                }
                BackupAction::Halt { reason } => {
                    eprintln!("ftvm: backup: halting: {reason}");
                    self.link.close();
                    self.report.halted = Some(reason.to_string());
                    self.publish(true);
                    let code = match reason {
                        ftvm_ft::HaltReason::PeerPoweredOff => 0,
                        _ => EXIT_HALTED,
                    };
                    return Some(Next::Exit(code));
                }
            }
        }
        None
    }

    fn publish(&mut self, force: bool) {
        let now = self.clock.ms();
        if !force && now < self.last_publish + PUBLISH_MS {
            return;
        }
        self.last_publish = now;
        let s = self.core.status();
        let r = &mut self.report;
        r.uptime_s = self.clock.secs();
        r.phase = if self.follower.is_none() && s.phase == Phase::Following {
            "waiting".into()
        } else {
            s.phase.as_str().into()
        };
        r.connected = s.connected;
        r.peer = self.link.peer().map(|a| a.to_string());
        r.icount = self.follower.as_ref().map_or(0, |f| f.machine.icount());
        r.digests_checked = self.follower.as_ref().map_or(0, |f| f.digests_checked);
        r.log_seq = s.log_seq;
        r.acked_seq = s.acked_seq;
        r.executed_seq = s.executed_seq;
        r.lag_instructions = s.lag_instructions;
        r.log_bytes_sent = s.bytes_sent;
        r.log_bytes_received = s.bytes_received;
        r.arbiter_attempts = s.arbiter_attempts;
        r.heartbeats_missed = s.heartbeats_missed;
        if self.timeline.is_some() {
            r.failover = self.timeline.clone();
        }
        self.metrics.guest.icount(r.icount);
        if let Some(ft) = &self.metrics.ft {
            ft.status(&super::status::sample(r, false));
        }
        self.board.publish(self.report.clone());
    }

    /// Leaves the pair on purpose: the Goodbye goes out before the
    /// connection closes, and the primary goes on alone.
    fn leave(&mut self) {
        if self.core.leave(self.clock.ms()).is_ok() {
            while let Some(a) = self.core.poll_action() {
                if let BackupAction::Send(f) = a {
                    self.link.send(&f);
                }
            }
        }
        self.link.finish(Duration::from_secs(1));
    }

    /// `--test-fault`: the replayed guest reached the step (dying and
    /// stalling happened inside `due`).
    fn test_fault_if_due(&mut self, icount: u64) {
        let Some(kind) = self
            .args
            .test_fault
            .as_mut()
            .and_then(|t| t.due("backup", icount))
        else {
            return;
        };
        if kind == FaultKind::Drop {
            self.link
                .drop_with("test fault: dropping the logging connection".into());
            self.core.on_disconnect(self.clock.ms());
        }
    }

    fn diverged(&mut self, why: String) -> u8 {
        eprintln!("ftvm: backup: DIVERGED from the primary: {why}");
        eprintln!(
            "ftvm: backup: this backup cannot take over; leaving so that the primary runs alone"
        );
        self.leave();
        self.report.halted = Some(format!("diverged: {why}"));
        self.publish(true);
        EXIT_DIVERGED
    }

    /// Looks at the event loop, waiting at most `timeout`: what arrived on
    /// the logging connections (and on a connection on probation) is read
    /// and handed to the core at once, new connections are accepted, and
    /// the events host threads queued (the arbiter's answers) are handled.
    /// The acknowledgement of what was read goes out with the next
    /// `actions`, before any further replay.
    fn pump(&mut self, timeout: Duration) -> Result<()> {
        self.ready.clear();
        self.reactor
            .poll(timeout, &mut self.ready)
            .context("the event loop failed")?;
        for i in 0..self.ready.len() {
            let t = self.ready[i];
            if t == LISTENER {
                self.listener.accept(&mut self.ftq);
            } else if self.link.token() == Some(t) {
                self.link.ready();
            } else if let Some((_, l)) = self.probation.as_mut() {
                if l.token() == Some(t) {
                    l.ready();
                }
            }
        }
        loop {
            self.link.collect(&mut self.ftq);
            if let Some((_, l)) = self.probation.as_mut() {
                l.collect(&mut self.ftq);
            }
            if self.ftq.is_empty() {
                break;
            }
            for ev in std::mem::take(&mut self.ftq) {
                self.on_event(HostEvent::Ft(ev))?;
            }
        }
        while let Some(ev) = self.reactor.try_recv() {
            self.on_event(ev)?;
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Next> {
        loop {
            if STOP_REQUESTED.load(Ordering::SeqCst) {
                eprintln!("ftvm: backup: stopping; the primary goes on alone");
                self.leave();
                return Ok(Next::Exit(130));
            }
            // What arrived first, then the passing of time: after a long
            // step (building the machine, a digest, a host stall) frames
            // waiting in the socket are news from the primary, not silence.
            self.pump(Duration::ZERO)?;
            self.core.on_tick(self.clock.ms());
            if let Some(n) = self.actions() {
                return Ok(n);
            }
            let mut progressed = false;
            if let Some(f) = self.follower.as_mut() {
                match f.replay(&mut self.core, self.args.test_fault.as_ref()) {
                    Ok(p) => progressed = p,
                    Err(Stuck::Diverged(why)) => return Ok(Next::Exit(self.diverged(why))),
                }
                let (seq, icount) = (f.executed_seq, f.machine.icount());
                if let Err(e) = self.core.on_executed(self.clock.ms(), seq, icount) {
                    tracing::debug!("progress not accepted: {e}");
                }
                self.test_fault_if_due(icount);
            }
            if self.draining {
                // A machine still being built has the whole log ahead of it.
                let drained = !self.building
                    && self.core.pending_entries() == 0
                    && self.follower.as_ref().is_none_or(|f| f.current.is_none());
                if drained {
                    self.draining = false;
                    if let Err(e) = self.core.on_drained(self.clock.ms()) {
                        bail!("cannot finish draining the log: {e}");
                    }
                    if let Some(t) = self.timeline.as_mut() {
                        t.drained_ms = Some(self.clock.ms());
                    }
                    eprintln!(
                        "ftvm: backup: log drained at step {}",
                        self.follower.as_ref().map_or(0, |f| f.machine.icount())
                    );
                }
            }
            if let Some(n) = self.actions() {
                return Ok(n);
            }
            self.publish(false);
            if !progressed && !self.draining {
                let wait = self.clock.until(self.core.next_timeout_ms(), MAX_IDLE_WAIT);
                self.pump(wait)?;
            }
        }
    }
}

/// `ftvm backup`.
pub fn backup(mut args: BackupArgs) -> Result<u8> {
    args.ft.load_tls("backup")?;
    args.machine.nbd_tls = args.ft.storage_tls();
    // Building the machine here checks the images and that every drive can
    // be opened, without keeping any (shared images are the primary's until
    // the backup goes live).
    let (own, _paths) = args.machine.build_probed()?;
    // The TAP devices are attached now and kept, unread, until going live:
    // a freshly attached TAP can lose frames for up to a second while the
    // kernel notices its carrier, which a takeover cannot afford. The
    // backup never transmits while following, so no switch learns the
    // guest's MAC here before it goes live.
    let taps = args
        .machine
        .nets
        .iter()
        .map(|n| {
            devices::open_tap(&n.tap).with_context(|| format!("network backend tap:{}", n.tap))
        })
        .collect::<Result<Vec<_>>>()?;
    let identity = args.ft.identity(&own);
    let (metrics, metrics_bound) =
        VmMetrics::start(Some(&args.ft.vm), Some("backup"), args.ft.metrics)?;
    let mut local_disks = if args.ft.local_disks {
        let (_, mut b) = devices::open(
            &args.machine.drives,
            &[],
            false,
            args.machine.nbd_tls.as_ref(),
        )
        .context("cannot open this backup's own disks (--local-disks)")?;
        b.meter(&metrics.devices);
        Some(std::mem::take(&mut b.disks))
    } else {
        None
    };
    let mut config = args.ft.config(identity);
    // With no machine before the primary's Hello there is nothing to take
    // over: wait for the first contact as long as it takes.
    config.startup_timeout_ms = u64::MAX / 4;
    let arbiter = Arbiter::new(&args.ft.arbiter, &args.ft.vm, args.ft.storage_tls())?;
    if args.join.is_none() {
        arbiter.check_generation(args.ft.generation)?;
    }
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen for the primary on {}", args.listen))?;
    let local = listener.local_addr()?;
    let mut reactor = Reactor::new()?;
    let tx = reactor.sender();
    let board = Board::default();
    if let Some(addr) = args.ft.status {
        let a = board.serve(addr, &mut reactor)?;
        eprintln!("ftvm: backup: status on {a}");
    }
    if let Some(a) = metrics_bound {
        eprintln!("ftvm: backup: metrics on http://{a}/metrics");
    }
    install_signal_handlers();
    let clock = Clock::new(0);
    let mut link = Link::new(tx.clone(), reactor.registry(), "backup")?;
    let mut follower = None;
    let mut virtio = Vec::new();
    let mut generation = args.ft.generation;
    let mut pending = Vec::new();
    let core = match args.join {
        None => {
            eprintln!(
                "ftvm: backup: VM {:?} generation {generation}, waiting for the primary on {local}",
                args.ft.vm
            );
            ftvm_ft::Backup::new(config, clock.ms()).context("bad FT configuration")?
        }
        Some(donor) => {
            eprintln!(
                "ftvm: backup: VM {:?}: asking the primary at {donor} to take this backup",
                args.ft.vm
            );
            let j = join::receive(
                donor,
                &args.ft.vm,
                identity,
                local,
                link,
                &mut reactor,
                local_disks.as_ref(),
                args.ft.secure.as_ref(),
            )?;
            if args.test_die_at_join_state {
                eprintln!("ftvm: backup: test switch: dying at the join state");
                // SAFETY: kill(2) on our own pid with a valid signal.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            link = j.link;
            pending = j.pending;
            generation = j.generation;
            config.generation = generation;
            virtio = own.virtio.clone();
            follower = Some(Follower::new(
                j.machine,
                local_disks.take(),
                metrics.clone(),
            ));
            let mut core = ftvm_ft::Backup::new_at(config, clock.ms(), j.icount)
                .context("bad FT configuration")?;
            core.on_connected(clock.ms())
                .context("cannot start the pair on the join connection")?;
            core
        }
    };
    let listener = Listener::new(
        listener,
        reactor.registry(),
        LISTENER,
        FIRST_ACCEPTED_ID,
        false,
        args.ft.secure.clone(),
        tx.clone(),
        "backup",
    )?;
    let report = Report {
        vm: args.ft.vm.clone(),
        started_as: Role::Backup.as_str().into(),
        generation,
        ..Report::default()
    };
    let mut d = BackupDriver {
        local_disks,
        taps,
        own: Arc::new(own),
        identity,
        core,
        building: false,
        link,
        probation: None,
        arbiter,
        clock,
        started: clock.start(),
        generation,
        tx,
        reactor,
        listener,
        ready: Vec::new(),
        // Handled by the first look at the loop, before anything newer.
        ftq: pending,
        last_entry_ms: None,
        timeline: None,
        follower,
        virtio,
        draining: false,
        board,
        report,
        last_publish: 0,
        metrics,
        args,
    };
    match d.run()? {
        Next::Exit(code) => Ok(code),
        Next::GoLive => go_live(d),
    }
}

fn go_live(d: BackupDriver) -> Result<u8> {
    let f = d
        .follower
        .ok_or_else(|| anyhow!("won the arbiter without ever receiving the primary's machine"))?;
    eprintln!(
        "ftvm: backup: won the arbiter; going live at step {} (opening the disks, reading the network)",
        f.machine.icount()
    );
    // Our own disk copies (non-shared disks) are reopened as the live ones.
    drop(f.local);
    let m = &d.args.machine;
    let (_, mut backends) = devices::open(&m.drives, &[], false, m.nbd_tls.as_ref())
        .context("cannot attach the disks to go live")?;
    let mut buf = vec![0u8; ftvm_host::tap::MAX_FRAME];
    for (i, tap) in d.taps.into_iter().enumerate() {
        // Frames queued while following were the primary's business.
        let mut stale = 0;
        while let Ok(ftvm_host::tap::Recv::Frame(_)) =
            tap.recv_timeout(&mut buf, Some(Duration::ZERO))
        {
            stale += 1;
        }
        tracing::debug!("dropped {stale} frames queued on the TAP while following");
        backends
            .nets
            .insert((m.drives.len() + i) as ftvm_machine::Slot, Box::new(tap));
    }
    let unreleased: Vec<Output> = f
        .unmarked
        .into_iter()
        .filter(|o| matches!(o, Output::Console(_) | Output::NetTx { .. }))
        .collect();
    let resubmit: Vec<Output> = f.outstanding.into_values().collect();
    if !resubmit.is_empty() {
        eprintln!(
            "ftvm: backup: re-issuing {} device requests the primary left unfinished",
            resubmit.len()
        );
    }
    let report = d.report;
    let clock = Clock::new(f.machine.guest_time());
    let mut live = Live::go_live(
        LiveSetup {
            machine: f.machine,
            virtio: d.virtio,
            backends,
            console: d.args.console.clone(),
            read_input: !d.args.no_input,
            clock,
            board: d.board,
            report,
            settings: FtSettings {
                ft: d.args.ft.clone(),
                identity: d.identity,
                log_header: d.core.log_header().map(<[u8]>::to_vec).unwrap_or_default(),
                digest_interval: DEFAULT_DIGEST_INTERVAL,
                generation: d.generation,
                local_drives: super::local_drives(&d.args.ft, &d.args.machine.drives),
            },
            started: d.started,
            reactor: d.reactor,
            timeline: d.timeline,
            metrics: d.metrics.clone(),
        },
        unreleased,
        resubmit,
    )?;
    drop(d.link);
    let ended = live.run()?;
    Ok(ended.exit_code())
}
