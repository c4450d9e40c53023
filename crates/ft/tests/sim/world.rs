//! One simulated FT pair, everything drawn from one seed: a primary core
//! driving a simulated VM (an instruction counter that logs inputs and
//! produces outputs at random instructions), a backup core driving a
//! simulated replayer (executing received entries at its own speed, never
//! past the horizon), the logging network of `net`, the arbiter of
//! `arbiter`, and a schedule of faults (crashes, resets, partitions, delay
//! spikes, corruption, duplicated dials, stale processes from other
//! generations, arbiter outages and losses). Time advances in 1 ms steps;
//! the safety invariants are checked at every action and step, the liveness
//! ones at the end according to the scenario. The drivers here are the
//! reference for how real drivers feed the cores.

use ftvm_ft::wire::{Frame, Hello, Message, WireDecoder};
use ftvm_ft::{
    ArbiterResult, Backup, BackupAction, Config, FtError, LogEntry, Phase, Primary, PrimaryAction,
    Role, PROTOCOL_VERSION,
};

use crate::arbiter::{self, Arbiter};
use crate::net::{ConnId, Delivery, End, Net, NetParams};
use crate::rng::Rng;

/// Kinds the simulated VM logs.
const KIND_OUTPUT_MARK: u8 = 0x30;
const KIND_QUANTUM_MARK: u8 = 0x31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// No faults: progress, bounded lag, every output released.
    Calm,
    /// The primary dies; the backup must go live in time.
    PrimaryCrash,
    /// The backup dies; the primary must go on alone in time.
    BackupCrash,
    /// The logging network is cut for good while both live: exactly one
    /// goes on.
    Partition,
    /// The primary or the backup leaves on purpose.
    Handover,
    /// Short disruptions (resets, short partitions, delay spikes,
    /// corruption, duplicated dials, stale processes): no failover.
    Flaky,
    /// A failure while the arbiter is unreachable or lossy: safety only.
    ArbiterTrouble,
    /// Anything at any time: safety only.
    Chaos,
}

pub const SCENARIOS: [Scenario; 8] = [
    Scenario::Calm,
    Scenario::PrimaryCrash,
    Scenario::BackupCrash,
    Scenario::Partition,
    Scenario::Handover,
    Scenario::Flaky,
    Scenario::ArbiterTrouble,
    Scenario::Chaos,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    CrashPrimary {
        clean: bool,
    },
    CrashBackup {
        clean: bool,
    },
    Reset,
    Partition {
        dur: u64,
    },
    Spike {
        dur: u64,
        extra: u64,
    },
    Corrupt,
    DupDial,
    /// A process that is not the peer connects to `target`: from another
    /// generation, for another VM, or sending garbage.
    Stale {
        target: End,
        what: u8,
    },
    ArbiterOutage {
        who: Option<Role>,
        dur: u64,
    },
    PrimaryLeaves,
    BackupLeaves,
}

/// Deliberate bugs, to show the checks catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    None,
    /// Outputs depend on the last entry logged before them, not on an entry
    /// at their instruction (the paper's first failover challenge).
    OutputDependsOnEarlierEntry,
    /// The driver lets outputs out at once instead of waiting for the core.
    ReleaseImmediately,
    /// An arbiter that is not a test-and-set: everyone wins.
    ArbiterAlwaysWins,
}

/// How the simulated primary driver picks the entry an output depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkPolicy {
    /// A marker entry at the output's instruction.
    PerOutput,
    /// One marker at the end of the quantum for all its outputs.
    PerQuantum,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub scenario: Scenario,
    pub duration: u64,
    cfg: Config,
    p_speed: u64,
    b_speed: u64,
    entry_chance: f64,
    output_chance: f64,
    idle_chance: f64,
    big_payload_chance: f64,
    policy: MarkPolicy,
    net: NetParams,
    redial: (u64, u64),
    faults: Vec<(u64, Fault)>,
    arb_loss: f64,
    /// Whether the disruptions are short enough that no failover may happen.
    mild: bool,
}

impl Params {
    pub fn generate(rng: &mut Rng, scenario: Scenario) -> Params {
        let generation = rng.range(1, 1_000_000);
        let mut cfg = Config::new("sim-vm", generation, [0x5a; 32]);
        cfg.log_header = b"FTVMLOG\0 (simulated header)".to_vec();
        cfg.heartbeat_interval_ms = rng.range(10, 60);
        cfg.failure_timeout_ms = rng.range((4 * cfg.heartbeat_interval_ms).max(200), 600);
        cfg.handshake_timeout_ms = cfg.failure_timeout_ms / 4;
        cfg.startup_timeout_ms = cfg.failure_timeout_ms * 2;
        cfg.lag_target_ms = rng.range(20, 150);
        cfg.max_throttle_ms = rng.range(2, 10);
        cfg.progress_report_ms = rng.range(2, 10);
        cfg.max_batch_bytes = [64, 512, 4096, 256 << 10][rng.below(4) as usize];
        cfg.max_unacked_bytes = [4 << 10, 1 << 20, 256 << 20][rng.below(3) as usize];
        cfg.arbiter_retry_ms = rng.range(10, 100);
        cfg.arbiter_deadline_ms = rng.range(300, 2000);

        let p_speed = rng.range(1_000, 20_000);
        let b_speed = (p_speed as f64 * (0.6 + 1.4 * rng.unit())) as u64;
        let min_delay = rng.range(0, 2);
        let net = NetParams {
            min_delay,
            max_delay: min_delay + rng.range(0, 8),
            max_chunk: [7, 64, 1500, 1 << 16][rng.below(4) as usize],
        };
        let timeout = cfg.failure_timeout_ms;
        let mut faults = Vec::new();
        let mut arb_loss = 0.0;
        let mut duration = rng.range(1000, 2500);
        let settle = timeout + 1500;
        match scenario {
            Scenario::Calm => {}
            Scenario::PrimaryCrash | Scenario::BackupCrash => {
                let at = rng.range(100, 1500);
                let clean = rng.chance(0.5);
                faults.push((
                    at,
                    if scenario == Scenario::PrimaryCrash {
                        Fault::CrashPrimary { clean }
                    } else {
                        Fault::CrashBackup { clean }
                    },
                ));
                duration = at + settle;
            }
            Scenario::Partition => {
                let at = rng.range(100, 1500);
                faults.push((
                    at,
                    Fault::Partition {
                        dur: timeout + rng.range(800, 2000),
                    },
                ));
                duration = at + settle;
            }
            Scenario::Handover => {
                let at = rng.range(100, 1500);
                faults.push((
                    at,
                    if rng.chance(0.5) {
                        Fault::PrimaryLeaves
                    } else {
                        Fault::BackupLeaves
                    },
                ));
                duration = at + settle;
            }
            Scenario::Flaky => {
                // Disruptions spaced so that no silence reaches the timeout.
                let mut at = rng.range(50, 300);
                while at < duration {
                    let f = match rng.below(7) {
                        0 => Fault::Reset,
                        1 => Fault::Partition {
                            dur: rng.range(1, timeout / 4),
                        },
                        2 => Fault::Spike {
                            dur: rng.range(10, 200),
                            extra: rng.range(1, timeout / 8),
                        },
                        3 => Fault::Corrupt,
                        4 => Fault::DupDial,
                        5 => Fault::Stale {
                            target: if rng.chance(0.5) { End::P } else { End::B },
                            what: rng.below(4) as u8,
                        },
                        _ => Fault::ArbiterOutage {
                            who: None,
                            dur: rng.range(10, 500),
                        },
                    };
                    faults.push((at, f));
                    at += timeout + rng.range(50, 400);
                }
            }
            Scenario::ArbiterTrouble => {
                let at = rng.range(100, 1500);
                let f = match rng.below(3) {
                    0 => Fault::CrashPrimary {
                        clean: rng.chance(0.5),
                    },
                    1 => Fault::CrashBackup {
                        clean: rng.chance(0.5),
                    },
                    _ => Fault::Partition {
                        dur: timeout + rng.range(100, 3000),
                    },
                };
                faults.push((at, f));
                let who = match rng.below(3) {
                    0 => None,
                    1 => Some(Role::Primary),
                    _ => Some(Role::Backup),
                };
                let start = at.saturating_sub(rng.range(0, 300)) + rng.range(0, timeout + 200);
                faults.push((
                    start,
                    Fault::ArbiterOutage {
                        who,
                        dur: rng.range(50, 2 * cfg.arbiter_deadline_ms),
                    },
                ));
                arb_loss = 0.3 * rng.unit();
                duration = at + settle + 2 * cfg.arbiter_deadline_ms;
            }
            Scenario::Chaos => {
                duration = rng.range(1500, 4000);
                let n = rng.range(1, 12);
                for _ in 0..n {
                    let at = rng.range(0, duration);
                    let f = match rng.below(12) {
                        0 => Fault::CrashPrimary {
                            clean: rng.chance(0.5),
                        },
                        1 => Fault::CrashBackup {
                            clean: rng.chance(0.5),
                        },
                        2 => Fault::Reset,
                        3 => Fault::Partition {
                            dur: rng.range(1, 3 * timeout),
                        },
                        4 => Fault::Spike {
                            dur: rng.range(10, 1000),
                            extra: rng.range(1, timeout),
                        },
                        5 => Fault::Corrupt,
                        6 => Fault::DupDial,
                        7 => Fault::Stale {
                            target: if rng.chance(0.5) { End::P } else { End::B },
                            what: rng.below(4) as u8,
                        },
                        8 if rng.chance(0.5) => Fault::ArbiterOutage {
                            who: [None, Some(Role::Primary), Some(Role::Backup)]
                                [rng.below(3) as usize],
                            dur: rng.range(10, 3000),
                        },
                        9 => Fault::PrimaryLeaves,
                        10 => Fault::BackupLeaves,
                        _ => Fault::Reset,
                    };
                    faults.push((at, f));
                }
                if rng.chance(0.5) {
                    arb_loss = 0.2 * rng.unit();
                }
                // Time for the last fault to play out.
                let last = faults
                    .iter()
                    .map(|&(at, f)| match f {
                        Fault::Partition { dur } | Fault::Spike { dur, .. } => at + dur,
                        _ => at,
                    })
                    .max()
                    .unwrap_or(0);
                duration = duration.max(last) + settle;
            }
        }
        faults.sort_by_key(|f| f.0);
        let redial = (rng.range(1, 10), rng.range(10, 30));
        // Mild: the longest silence a disruption can cause stays below the
        // timeout (partition + heartbeat gap + delays + a reconnection).
        let worst = faults
            .iter()
            .map(|&(_, f)| match f {
                Fault::Partition { dur } => dur,
                Fault::Spike { extra, .. } => 3 * extra,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let silence = worst
            + cfg.heartbeat_interval_ms
            + 4 * net.max_delay
            + 2 * (timeout / 8)
            + redial.1
            + 10;
        let mild = scenario == Scenario::Calm || (scenario == Scenario::Flaky && silence < timeout);
        Params {
            scenario,
            duration,
            cfg,
            p_speed,
            b_speed,
            entry_chance: 0.2 + 0.7 * rng.unit(),
            output_chance: 0.05 + 0.5 * rng.unit(),
            idle_chance: 0.05 * rng.unit(),
            big_payload_chance: 0.02 * rng.unit(),
            policy: if rng.chance(0.5) {
                MarkPolicy::PerOutput
            } else {
                MarkPolicy::PerQuantum
            },
            net,
            redial,
            faults,
            arb_loss,
            mild,
        }
    }
}

struct EntryRec {
    icount: u64,
    kind: u8,
    payload: Vec<u8>,
}

struct OutRec {
    icount: u64,
    depends_on: u64,
    submitted_at: u64,
    released_at: Option<u64>,
}

/// A node's end of the logging channel.
#[derive(Default)]
struct Link {
    conn: Option<ConnId>,
    dec: WireDecoder,
}

struct PNode {
    core: Primary,
    alive: bool,
    halted: bool,
    alone: bool,
    link: Link,
    icount: u64,
    paused_until: u64,
    idle_until: u64,
    next_dial: u64,
    next_release: u64,
}

struct BNode {
    core: Backup,
    alive: bool,
    halted: bool,
    live: bool,
    link: Link,
    icount: u64,
    executed: u64,
    pending: Option<LogEntry>,
    drain_started: Option<u64>,
    drained: bool,
}

/// What a run did, for the summary.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub entries: u64,
    pub outputs: u64,
    pub released: u64,
    pub failovers: u64,
    pub halts: u64,
    pub protocol_errors: u64,
    pub max_lag_over_target: f64,
    pub max_failover_ms: u64,
    pub sim_ms: u64,
}

pub struct World {
    seed: u64,
    p: Params,
    now: u64,
    rng: Rng,
    net: Net,
    arb: Arbiter,
    pn: PNode,
    bn: BNode,
    log: Vec<EntryRec>,
    outputs: Vec<OutRec>,
    quantum_outputs: Vec<u64>,
    stale_conns: Vec<(ConnId, End)>,
    went_on: Vec<(Role, u64)>,
    halted_at: [Option<u64>; 2],
    crashed_at: [Option<u64>; 2],
    left_at: Option<(Role, u64)>,
    cut_at: Option<u64>,
    drain_ms: Option<u64>,
    tas_requests: u64,
    report: Report,
    trace: bool,
    mutation: Mutation,
}

type Res = Result<(), String>;

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let mut root = Rng::new(seed);
        let scenario = SCENARIOS[root.below(SCENARIOS.len() as u64) as usize];
        Self::with_scenario(seed, scenario, trace)
    }

    pub fn with_scenario(seed: u64, scenario: Scenario, trace: bool) -> World {
        let mut root = Rng::new(seed);
        let _ = root.next_u64();
        let p = Params::generate(&mut root.fork(), scenario);
        let net = Net::new(p.net, root.fork());
        let mut arb = Arbiter::new(p.cfg.generation, root.fork());
        arb.loss = p.arb_loss;
        let pcore = Primary::new(p.cfg.clone(), 0).expect("valid config");
        let mut bcfg = p.cfg.clone();
        bcfg.log_header.clear();
        let bcore = Backup::new(bcfg, 0).expect("valid config");
        World {
            seed,
            now: 0,
            rng: root.fork(),
            net,
            arb,
            pn: PNode {
                core: pcore,
                alive: true,
                halted: false,
                alone: false,
                link: Link::default(),
                icount: 0,
                paused_until: 0,
                idle_until: 0,
                next_dial: 0,
                next_release: 0,
            },
            bn: BNode {
                core: bcore,
                alive: true,
                halted: false,
                live: false,
                link: Link::default(),
                icount: 0,
                executed: 0,
                pending: None,
                drain_started: None,
                drained: false,
            },
            log: Vec::new(),
            outputs: Vec::new(),
            quantum_outputs: Vec::new(),
            stale_conns: Vec::new(),
            went_on: Vec::new(),
            halted_at: [None, None],
            crashed_at: [None, None],
            left_at: None,
            cut_at: None,
            drain_ms: None,
            tas_requests: 0,
            report: Report::default(),
            trace,
            mutation: Mutation::None,
            p,
        }
    }

    pub fn with_mutation(mut self, m: Mutation) -> World {
        self.mutation = m;
        self.arb.always_win = m == Mutation::ArbiterAlwaysWins;
        self
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    fn tr(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>5}] {}", self.now, what());
        }
    }

    fn fail(&self, what: String) -> String {
        format!(
            "seed {} ({:?}) at {} ms: {}",
            self.seed, self.p.scenario, self.now, what
        )
    }

    /// Runs to the end; `Err` describes the first violated invariant.
    pub fn run(mut self) -> Result<Report, String> {
        self.tr(|| format!("params: {:?}", self.p));
        for t in 0..=self.p.duration {
            self.step(t)?;
        }
        self.finish()?;
        self.report.sim_ms = self.p.duration;
        self.report.entries = self.log.len() as u64;
        self.report.outputs = self.outputs.len() as u64;
        self.report.released = self
            .outputs
            .iter()
            .filter(|o| o.released_at.is_some())
            .count() as u64;
        Ok(self.report)
    }

    fn step(&mut self, now: u64) -> Res {
        self.now = now;
        while let Some(&(at, f)) = self.p.faults.first() {
            if at > now {
                break;
            }
            self.p.faults.remove(0);
            self.apply_fault(f)?;
        }
        for (id, end, d) in self.net.poll(now) {
            self.deliver(id, end, d)?;
        }
        for (who, r) in self.arb.poll(now) {
            self.arbiter_answer(who, r)?;
        }
        self.primary_step()?;
        self.backup_step()?;
        self.maybe_dial();
        self.check_step()
    }

    // ----- faults -----

    fn apply_fault(&mut self, f: Fault) -> Res {
        self.tr(|| format!("FAULT {f:?}"));
        let now = self.now;
        match f {
            Fault::CrashPrimary { clean } => {
                if self.pn.alive {
                    self.pn.alive = false;
                    self.crashed_at[0] = Some(now);
                    if let (true, Some(c)) = (clean, self.pn.link.conn.take()) {
                        self.net.close(now, c, End::P);
                    }
                }
            }
            Fault::CrashBackup { clean } => {
                if self.bn.alive {
                    self.bn.alive = false;
                    self.crashed_at[1] = Some(now);
                    if let (true, Some(c)) = (clean, self.bn.link.conn.take()) {
                        self.net.close(now, c, End::B);
                    }
                }
            }
            Fault::Reset => self.net.reset_all(now),
            Fault::Partition { dur } => {
                self.net.partition(now, dur);
                if dur > self.p.cfg.failure_timeout_ms {
                    self.cut_at.get_or_insert(now);
                }
            }
            Fault::Spike { dur, extra } => self.net.spike(now, dur, extra),
            Fault::Corrupt => {
                self.net.corrupt();
            }
            Fault::DupDial => {
                if self.pn.alive && !self.pn.halted && self.pn.core.phase() == Phase::Paired {
                    self.net.dial(now, End::P);
                    self.net.dial(now, End::P);
                }
            }
            Fault::Stale { target, what } => {
                if let Some(id) = self.net.dial(now, target.other()) {
                    self.stale_conns.push((id, target.other()));
                    let bytes = self.stale_bytes(target, what);
                    self.net.send(now, id, target.other(), &bytes);
                }
            }
            Fault::ArbiterOutage { who, dur } => self.arb.outages.push((now, now + dur, who)),
            Fault::PrimaryLeaves => {
                if self.pn.alive && !self.pn.halted {
                    self.left_at = Some((Role::Primary, now));
                    self.pn
                        .core
                        .leave(now, ftvm_ft::GoodbyeReason::Leaving)
                        .map_err(|e| self.fail(format!("leave refused: {e}")))?;
                    self.process_p()?;
                }
            }
            Fault::BackupLeaves => {
                if self.bn.alive && !self.bn.halted && !self.bn.live {
                    self.left_at = Some((Role::Backup, now));
                    self.bn
                        .core
                        .leave(now)
                        .map_err(|e| self.fail(format!("leave refused: {e}")))?;
                    self.process_b()?;
                }
            }
        }
        Ok(())
    }

    /// What a process that is not the peer sends: a Hello from another
    /// generation, for another VM, with another machine, or garbage.
    fn stale_bytes(&mut self, target: End, what: u8) -> Vec<u8> {
        let role = match target {
            End::P => Role::Backup,
            End::B => Role::Primary,
        };
        let cfg = &self.p.cfg;
        let mut hello = Hello {
            version: PROTOCOL_VERSION,
            vm: cfg.vm.clone(),
            role,
            machine_hash: cfg.machine_hash,
            seq: 0,
            log_header: Vec::new(),
        };
        let mut generation = cfg.generation;
        match what {
            0 => generation = generation.wrapping_sub(1 + self.rng.below(3)),
            1 => hello.vm = "another-vm".into(),
            2 => hello.machine_hash = [0xEE; 32],
            _ => {
                let n = self.rng.range(1, 300) as usize;
                return self.rng.bytes(n);
            }
        }
        let mut out = Vec::new();
        Frame {
            generation,
            message: Message::Hello(hello),
        }
        .encode(&mut out)
        .expect("valid hello");
        // A stale primary would go on with log entries of its own.
        Frame {
            generation,
            message: Message::Heartbeat {
                now_ms: 0,
                icount: u64::MAX,
            },
        }
        .encode(&mut out)
        .expect("valid heartbeat");
        out
    }

    // ----- the logging channel, as a driver sees it -----

    fn node_up(&self, end: End) -> bool {
        match end {
            End::P => self.pn.alive && !self.pn.halted,
            End::B => self.bn.alive && !self.bn.halted && !self.bn.live,
        }
    }

    fn link(&mut self, end: End) -> &mut Link {
        match end {
            End::P => &mut self.pn.link,
            End::B => &mut self.bn.link,
        }
    }

    fn core_connected(&mut self, end: End) -> Result<(), FtError> {
        match end {
            End::P => self.pn.core.on_connected(self.now),
            End::B => self.bn.core.on_connected(self.now),
        }
    }

    fn core_disconnect(&mut self, end: End) {
        match end {
            End::P => self.pn.core.on_disconnect(self.now),
            End::B => self.bn.core.on_disconnect(self.now),
        }
    }

    fn core_message(&mut self, end: End, frame: Frame) -> Result<(), FtError> {
        match end {
            End::P => self.pn.core.on_message(self.now, frame),
            End::B => self.bn.core.on_message(self.now, frame),
        }
    }

    fn process(&mut self, end: End) -> Res {
        match end {
            End::P => self.process_p(),
            End::B => self.process_b(),
        }
    }

    /// Closes this node's connection and tells its core.
    fn drop_link(&mut self, end: End) {
        if let Some(c) = self.link(end).conn.take() {
            self.net.close(self.now, c, end);
            self.core_disconnect(end);
        }
    }

    fn deliver(&mut self, id: ConnId, end: End, d: Delivery) -> Res {
        if self.stale_conns.contains(&(id, end)) {
            // The stale process's own end: it ignores what it gets.
            return Ok(());
        }
        if !self.node_up(end) {
            if matches!(d, Delivery::Open) {
                self.net.close(self.now, id, end);
            }
            return Ok(());
        }
        match d {
            Delivery::Open => {
                // The driver keeps one connection: the newest.
                self.drop_link(end);
                match self.core_connected(end) {
                    Ok(()) => {
                        let l = self.link(end);
                        l.conn = Some(id);
                        l.dec = WireDecoder::new();
                    }
                    Err(_) => self.net.close(self.now, id, end),
                }
                self.tr(|| format!("{end:?} connected on #{id}"));
                self.process(end)?;
            }
            Delivery::Bytes(b) => {
                if self.link(end).conn != Some(id) {
                    return Ok(());
                }
                self.link(end).dec.push(&b);
                loop {
                    match self.link(end).dec.next_frame() {
                        Ok(Some(frame)) => {
                            let what = format!("{:?}", frame.message.message_type());
                            if let Err(e) = self.core_message(end, frame) {
                                self.report.protocol_errors += 1;
                                self.tr(|| format!("{end:?} refused {what} on #{id}: {e}"));
                                self.drop_link(end);
                            }
                            self.process(end)?;
                            if self.link(end).conn != Some(id) {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.report.protocol_errors += 1;
                            self.tr(|| format!("{end:?} wire error on #{id}: {e}"));
                            self.drop_link(end);
                            self.process(end)?;
                            break;
                        }
                    }
                }
            }
            Delivery::Fin => {
                if self.link(end).conn == Some(id) {
                    self.tr(|| format!("{end:?} lost #{id}"));
                    self.link(end).conn = None;
                    let _ = self.link(end).dec.finish();
                    self.core_disconnect(end);
                    self.process(end)?;
                }
            }
        }
        Ok(())
    }

    fn maybe_dial(&mut self) {
        let pn = &self.pn;
        if !pn.alive || pn.halted || pn.core.phase() != Phase::Paired || pn.link.conn.is_some() {
            return;
        }
        if self.now < self.pn.next_dial {
            return;
        }
        let (lo, hi) = self.p.redial;
        self.pn.next_dial = self.now + self.rng.range(lo, hi);
        if let Some(id) = self.net.dial(self.now, End::P) {
            self.tr(|| format!("P dials #{id}"));
        }
    }

    fn send(&mut self, end: End, frame: Frame) -> Res {
        let Some(c) = self.link(end).conn else {
            return Err(self.fail(format!("{end:?} core sent {frame:?} with no connection")));
        };
        let bytes = frame
            .to_bytes()
            .map_err(|e| self.fail(format!("unencodable frame: {e}")))?;
        self.net.send(self.now, c, end, &bytes);
        Ok(())
    }

    // ----- the arbiter -----

    fn arbiter_answer(&mut self, who: Role, r: ArbiterResult) -> Res {
        self.tr(|| format!("arbiter answers {who:?}: {r:?}"));
        let now = self.now;
        match who {
            Role::Primary if self.pn.alive && !self.pn.halted => {
                let _ = self.pn.core.on_arbiter_result(now, r);
                self.process_p()
            }
            Role::Backup if self.bn.alive && !self.bn.halted && !self.bn.live => {
                let _ = self.bn.core.on_arbiter_result(now, r);
                self.process_b()
            }
            _ => Ok(()),
        }
    }

    // ----- the primary: VM and driver -----

    fn primary_step(&mut self) -> Res {
        let now = self.now;
        if !self.pn.alive {
            return Ok(());
        }
        if self.pn.halted {
            // A halted core must stay silent whatever happens.
            self.pn.core.on_tick(now);
            return self.process_p();
        }
        // Timers first: a throttle that is still needed is renewed before
        // the guest runs again.
        self.pn.core.on_tick(now);
        self.process_p()?;
        if self.pn.halted {
            return Ok(());
        }
        if now >= self.pn.paused_until && now >= self.pn.idle_until {
            if self.rng.chance(self.p.idle_chance) {
                self.pn.idle_until = now + self.rng.range(1, 30);
            }
            self.run_primary_quantum()?;
        }
        self.pn.core.on_progress(now, self.pn.icount);
        self.process_p()
    }

    fn run_primary_quantum(&mut self) -> Res {
        let n = self.p.p_speed * self.rng.range(80, 120) / 100;
        let start = self.pn.icount;
        let end = start + n;
        let mut events: Vec<(u64, bool)> = Vec::new();
        while self.rng.chance(self.p.entry_chance) && events.len() < 4 {
            events.push((self.rng.range(start, end), false));
        }
        while self.rng.chance(self.p.output_chance) && events.len() < 8 {
            events.push((self.rng.range(start, end), true));
        }
        events.sort();
        for (icount, is_output) in events {
            self.pn.icount = icount;
            if is_output {
                let id = self.outputs.len() as u64;
                if self.mutation == Mutation::OutputDependsOnEarlierEntry {
                    let seq = self.log.len() as u64;
                    self.submit_output(id, icount, seq)?;
                    continue;
                }
                match self.p.policy {
                    MarkPolicy::PerOutput => {
                        let seq =
                            self.log_entry(icount, KIND_OUTPUT_MARK, id.to_le_bytes().to_vec())?;
                        self.submit_output(id, icount, seq)?;
                    }
                    MarkPolicy::PerQuantum => {
                        self.outputs.push(OutRec {
                            icount,
                            depends_on: u64::MAX,
                            submitted_at: self.now,
                            released_at: None,
                        });
                        self.quantum_outputs.push(id);
                    }
                }
            } else {
                let kind = self.rng.range(1, 5) as u8;
                let len = if self.rng.chance(self.p.big_payload_chance) {
                    self.rng.range(1000, 5000)
                } else {
                    self.rng.range(0, 40)
                } as usize;
                let payload = self.rng.bytes(len);
                self.log_entry(icount, kind, payload)?;
            }
        }
        self.pn.icount = end;
        if !self.quantum_outputs.is_empty() {
            let seq = self.log_entry(end, KIND_QUANTUM_MARK, Vec::new())?;
            for id in std::mem::take(&mut self.quantum_outputs) {
                self.outputs[id as usize].depends_on = seq;
                self.pn
                    .core
                    .on_output(id, seq)
                    .map_err(|e| self.fail(format!("output refused: {e}")))?;
                if self.mutation == Mutation::ReleaseImmediately {
                    self.released(id)?;
                }
                self.process_p()?;
            }
        }
        Ok(())
    }

    fn log_entry(&mut self, icount: u64, kind: u8, payload: Vec<u8>) -> Result<u64, String> {
        let seq = self
            .pn
            .core
            .on_log_entry(icount, kind, &payload)
            .map_err(|e| self.fail(format!("valid entry refused: {e}")))?;
        if seq != self.log.len() as u64 + 1 {
            return Err(self.fail(format!(
                "entry numbered {seq}, expected {}",
                self.log.len() + 1
            )));
        }
        self.log.push(EntryRec {
            icount,
            kind,
            payload,
        });
        self.process_p()?;
        Ok(seq)
    }

    fn submit_output(&mut self, id: u64, icount: u64, seq: u64) -> Res {
        self.outputs.push(OutRec {
            icount,
            depends_on: seq,
            submitted_at: self.now,
            released_at: None,
        });
        self.pn
            .core
            .on_output(id, seq)
            .map_err(|e| self.fail(format!("output refused: {e}")))?;
        if self.mutation == Mutation::ReleaseImmediately {
            self.released(id)?;
        }
        self.process_p()
    }

    fn process_p(&mut self) -> Res {
        while let Some(a) = self.pn.core.poll_action() {
            if self.pn.halted {
                return Err(self.fail(format!("primary acted after halting: {a:?}")));
            }
            match a {
                PrimaryAction::Send(frame) => self.send(End::P, frame)?,
                PrimaryAction::Disconnect => self.drop_link(End::P),
                PrimaryAction::ReleaseOutput(_)
                    if self.mutation == Mutation::ReleaseImmediately => {}
                PrimaryAction::ReleaseOutput(id) => self.released(id)?,
                PrimaryAction::Throttle { until_ms } => {
                    if until_ms <= self.now || until_ms > self.now + self.p.cfg.max_throttle_ms {
                        return Err(self.fail(format!("throttle until {until_ms} out of bounds")));
                    }
                    self.pn.paused_until = until_ms;
                }
                PrimaryAction::TestAndSet {
                    generation,
                    claimant,
                } => self.test_and_set(Role::Primary, generation, claimant)?,
                PrimaryAction::GoAlone => {
                    self.tr(|| "PRIMARY GOES ALONE".into());
                    self.went_on(Role::Primary)?;
                    self.pn.alone = true;
                }
                PrimaryAction::Halt { reason } => {
                    self.tr(|| format!("PRIMARY HALTS: {reason}"));
                    self.pn.halted = true;
                    self.halted_at[0] = Some(self.now);
                    self.report.halts += 1;
                    self.drop_link(End::P);
                }
            }
        }
        Ok(())
    }

    /// Invariant 2 and release order.
    fn released(&mut self, id: u64) -> Res {
        if id != self.pn.next_release {
            return Err(self.fail(format!(
                "output {id} released out of order (expected {})",
                self.pn.next_release
            )));
        }
        self.pn.next_release += 1;
        let Some(out) = self.outputs.get(id as usize) else {
            return Err(self.fail(format!("unknown output {id} released")));
        };
        let have = self.bn.core.status().log_seq;
        if !self.pn.alone && have < out.depends_on {
            return Err(self.fail(format!(
                "OUTPUT RULE: output {id} released while paired, depends on entry {} but the backup has only {have}",
                out.depends_on
            )));
        }
        self.outputs[id as usize].released_at = Some(self.now);
        Ok(())
    }

    fn test_and_set(&mut self, node: Role, generation: u64, claimant: Role) -> Res {
        if generation != self.p.cfg.generation || claimant != node {
            return Err(self.fail(format!(
                "{node:?} asked the arbiter for generation {generation} as {claimant:?}"
            )));
        }
        if node == Role::Backup && !self.bn.drained {
            return Err(self.fail("backup asked the arbiter before draining".into()));
        }
        self.tas_requests += 1;
        self.tr(|| format!("{node:?} test-and-set"));
        self.arb.request(self.now, node, generation);
        Ok(())
    }

    /// Invariant 1: one node goes on per generation, and only the winner.
    fn went_on(&mut self, who: Role) -> Res {
        if let Some(&(other, at)) = self.went_on.first() {
            return Err(self.fail(format!(
                "SPLIT BRAIN: {who:?} goes on after {other:?} did at {at} ms"
            )));
        }
        if self.arb.winner != Some(who) {
            return Err(self.fail(format!(
                "{who:?} goes on but the arbiter's winner is {:?}",
                self.arb.winner
            )));
        }
        self.went_on.push((who, self.now));
        self.report.failovers += 1;
        Ok(())
    }

    // ----- the backup: replayer and driver -----

    fn backup_step(&mut self) -> Res {
        let now = self.now;
        if !self.bn.alive {
            return Ok(());
        }
        if self.bn.halted || self.bn.live {
            self.bn.core.on_tick(now);
            return self.process_b();
        }
        let mut budget = self.p.b_speed * self.rng.range(80, 120) / 100;
        loop {
            if self.bn.pending.is_none() {
                self.bn.pending = self.bn.core.next_entry();
            }
            let Some(e) = &self.bn.pending else {
                if self.bn.drain_started.is_none() {
                    let h = self.bn.core.horizon();
                    self.bn.icount = self.bn.icount.max(h.min(self.bn.icount + budget));
                }
                break;
            };
            if e.icount < self.bn.icount {
                return Err(self.fail(format!(
                    "DIVERGENCE: backup at icount {} receives entry {} for icount {}",
                    self.bn.icount, e.seq, e.icount
                )));
            }
            let need = e.icount - self.bn.icount;
            if need > budget {
                self.bn.icount += budget;
                break;
            }
            budget -= need;
            self.bn.icount = e.icount;
            let (seq, icount) = (e.seq, e.icount);
            let truth = self.log.get(seq as usize - 1);
            let same = truth.is_some_and(|t| {
                t.icount == e.icount && t.kind == e.kind && t.payload == e.payload
            });
            if !same {
                return Err(self.fail(format!(
                    "backup replays entry {seq} that differs from the primary's"
                )));
            }
            self.bn.pending = None;
            self.bn.executed = seq;
            self.bn
                .core
                .on_executed(now, seq, icount)
                .map_err(|e| self.fail(format!("execution report refused: {e}")))?;
        }
        self.bn
            .core
            .on_executed(now, self.bn.executed, self.bn.icount)
            .map_err(|e| self.fail(format!("progress report refused: {e}")))?;
        if self.bn.drain_started.is_some()
            && !self.bn.drained
            && self.bn.pending.is_none()
            && self.bn.core.pending_entries() == 0
        {
            self.bn.drained = true;
            self.drain_ms = self.bn.drain_started.map(|s| now - s);
            self.tr(|| format!("backup drained at icount {}", self.bn.icount));
            self.bn
                .core
                .on_drained(now)
                .map_err(|e| self.fail(format!("drain refused: {e}")))?;
        }
        self.process_b()?;
        self.bn.core.on_tick(now);
        self.process_b()
    }

    fn process_b(&mut self) -> Res {
        while let Some(a) = self.bn.core.poll_action() {
            if self.bn.halted || self.bn.live {
                return Err(self.fail(format!("backup acted after halting or going live: {a:?}")));
            }
            match a {
                BackupAction::Send(frame) => self.send(End::B, frame)?,
                BackupAction::Disconnect => self.drop_link(End::B),
                BackupAction::DrainLog => {
                    self.tr(|| {
                        format!(
                            "backup drains (received {}, executed {})",
                            self.bn.core.status().log_seq,
                            self.bn.executed
                        )
                    });
                    self.bn.drain_started = Some(self.now);
                }
                BackupAction::TestAndSet {
                    generation,
                    claimant,
                } => self.test_and_set(Role::Backup, generation, claimant)?,
                BackupAction::GoLive => {
                    self.tr(|| "BACKUP GOES LIVE".into());
                    self.went_on(Role::Backup)?;
                    self.check_survivor()?;
                    self.bn.live = true;
                }
                BackupAction::Halt { reason } => {
                    self.tr(|| format!("BACKUP HALTS: {reason}"));
                    self.bn.halted = true;
                    self.halted_at[1] = Some(self.now);
                    self.report.halts += 1;
                    self.drop_link(End::B);
                }
            }
        }
        Ok(())
    }

    /// Invariant 3: the backup going live has executed everything every
    /// released output depends on, up to the output's instruction.
    fn check_survivor(&self) -> Res {
        let received = self.bn.core.status().log_seq;
        if self.bn.executed != received || self.bn.pending.is_some() {
            return Err(self.fail(format!(
                "backup goes live having executed {} of {received} received entries",
                self.bn.executed
            )));
        }
        for (id, o) in self.outputs.iter().enumerate() {
            if o.released_at.is_some()
                && (self.bn.executed < o.depends_on || self.bn.icount < o.icount)
            {
                return Err(self.fail(format!(
                    "LOST OUTPUT: output {id} (icount {}, entry {}) was released but the new primary stops at entry {} icount {}",
                    o.icount, o.depends_on, self.bn.executed, self.bn.icount
                )));
            }
        }
        Ok(())
    }

    // ----- checks -----

    fn check_step(&mut self) -> Res {
        // The replayer never runs past an input it has not applied.
        if self.bn.alive && !self.bn.live {
            if let Some(next) = self.log.get(self.bn.executed as usize) {
                if self.bn.icount > next.icount && !self.pn.alone {
                    return Err(self.fail(format!(
                        "DIVERGENCE: backup at icount {} is past entry {} at icount {}",
                        self.bn.icount,
                        self.bn.executed + 1,
                        next.icount
                    )));
                }
            }
        }
        // Lag stays bounded while paired with no faults.
        if self.p.mild && self.now > 300 && self.pn.core.phase() == Phase::Paired {
            let s = self.pn.core.status();
            if s.connected {
                let target = self.p.cfg.lag_target_ms as f64;
                let lag = s.lag_instructions as f64 / self.p.p_speed as f64;
                let ratio = lag / target;
                if ratio > self.report.max_lag_over_target {
                    self.report.max_lag_over_target = ratio;
                }
                let bound = target * 1.2
                    + self.p.cfg.max_throttle_ms as f64
                    + 6.0 * self.net.max_delay() as f64
                    + 2.0 * self.p.cfg.progress_report_ms as f64
                    + 20.0;
                if lag > bound {
                    return Err(self.fail(format!(
                        "LAG: backup {lag:.0} ms of primary execution behind (target {target}, bound {bound:.0})"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Liveness, according to the scenario.
    fn finish(&mut self) -> Res {
        let cfg = &self.p.cfg;
        let timeout = cfg.failure_timeout_ms;
        let delay = self.p.net.max_delay;
        let arb = 2 * arbiter::MAX_DELAY + 2;
        let end = self.p.duration;
        let drain = self.drain_ms.unwrap_or(0);
        let ok_outputs_released = |w: &World, upto: u64| -> Res {
            for (id, o) in w.outputs.iter().enumerate() {
                if o.submitted_at + 200 <= upto && o.released_at.is_none() {
                    return Err(w.fail(format!(
                        "LIVENESS: output {id} submitted at {} never released",
                        o.submitted_at
                    )));
                }
            }
            Ok(())
        };
        if self.p.mild {
            if !self.went_on.is_empty() || self.tas_requests > 0 {
                return Err(self.fail(format!(
                    "LIVENESS: failover without a fault that warrants one (went on: {:?}, arbiter requests: {})",
                    self.went_on, self.tas_requests
                )));
            }
            ok_outputs_released(self, end)?;
            if self.log.len() > 10 && self.bn.executed == 0 {
                return Err(self.fail("LIVENESS: the backup never executed anything".into()));
            }
        }
        // With a perfect arbiter and nobody crashing or leaving, the VM
        // survives whatever the network does: one node is still running,
        // and it is the one that went on if any did.
        let perfect_arbiter = self.arb.loss == 0.0 && self.arb.outages.is_empty();
        if perfect_arbiter && self.crashed_at == [None, None] && self.left_at.is_none() {
            let running = [!self.pn.halted, !self.bn.halted];
            if running == [false, false] {
                return Err(self.fail(
                    "LIVENESS: both nodes halted with a perfect arbiter and no crash".into(),
                ));
            }
            if let Some(&(who, _)) = self.went_on.first() {
                let i = if who == Role::Primary { 0 } else { 1 };
                if !running[i] {
                    return Err(self.fail(format!("LIVENESS: {who:?} went on, then halted")));
                }
            }
        }
        let went = |w: &World| w.went_on.first().copied();
        match self.p.scenario {
            Scenario::PrimaryCrash => {
                let at = self.crashed_at[0].expect("crash scheduled");
                let Some((Role::Backup, t)) = went(self) else {
                    return Err(self.fail(format!(
                        "LIVENESS: primary crashed at {at}, backup never went live ({:?})",
                        self.went_on
                    )));
                };
                let bound = at + timeout + delay + drain + arb + 3;
                self.report.max_failover_ms = t - at;
                if t > bound {
                    return Err(self.fail(format!("LIVENESS: backup live at {t}, bound {bound} (crash {at}, drain {drain} ms)")));
                }
                self.check_drain_bounded()?;
            }
            Scenario::BackupCrash => {
                let at = self.crashed_at[1].expect("crash scheduled");
                let Some((Role::Primary, t)) = went(self) else {
                    return Err(self.fail(format!(
                        "LIVENESS: backup crashed at {at}, primary never went alone ({:?})",
                        self.went_on
                    )));
                };
                let bound = at + timeout + delay + arb + 3;
                self.report.max_failover_ms = t - at;
                if t > bound {
                    return Err(self.fail(format!("LIVENESS: primary alone at {t}, bound {bound}")));
                }
                ok_outputs_released(self, end)?;
            }
            Scenario::Partition => {
                let at = self.cut_at.expect("partition scheduled");
                let Some((who, t)) = went(self) else {
                    return Err(self.fail(format!("LIVENESS: partition at {at}, nobody went on")));
                };
                let bound = at + timeout + delay + drain + arb + 3;
                if t > bound {
                    return Err(
                        self.fail(format!("LIVENESS: {who:?} went on at {t}, bound {bound}"))
                    );
                }
                let loser = match who {
                    Role::Primary => 1,
                    Role::Backup => 0,
                };
                if self.halted_at[loser].is_none_or(|h| h > bound + 5) {
                    return Err(self.fail(format!(
                        "LIVENESS: the loser did not halt in time ({:?})",
                        self.halted_at
                    )));
                }
                self.report.max_failover_ms = t - at;
            }
            Scenario::Handover => {
                let (who, at) = self.left_at.expect("leave scheduled");
                let Some((survivor, t)) = went(self) else {
                    return Err(self.fail(format!(
                        "LIVENESS: {who:?} left at {at}, the other did not take over"
                    )));
                };
                // No failure timeout: the Goodbye triggers it.
                let bound = at + delay + drain + arb + 3;
                if survivor == who || t > bound {
                    return Err(self.fail(format!("LIVENESS: {survivor:?} took over at {t} after {who:?} left at {at} (bound {bound})")));
                }
                self.report.max_failover_ms = t - at;
            }
            _ => {}
        }
        Ok(())
    }

    /// Lag control keeps the replay a failover needs short.
    fn check_drain_bounded(&self) -> Res {
        let Some(drain) = self.drain_ms else {
            return Ok(());
        };
        let cfg = &self.p.cfg;
        let slack =
            cfg.max_throttle_ms + 6 * self.p.net.max_delay + 2 * cfg.progress_report_ms + 20;
        let behind_ms = cfg.lag_target_ms * 12 / 10 + slack;
        let bound = (behind_ms as f64 * self.p.p_speed as f64 * 1.2 / (self.p.b_speed as f64 * 0.8))
            .ceil() as u64
            + 2;
        if drain > bound {
            return Err(self.fail(format!("DRAIN: {drain} ms to drain, bound {bound} ms")));
        }
        Ok(())
    }
}
