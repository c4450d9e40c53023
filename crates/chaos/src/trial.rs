//! One trial: a fresh lab and pair, the client load, the planned faults
//! (each followed by waiting for the system to settle: one process running
//! the guest, and either a backup following it or nobody), then the
//! checks — every acknowledged write readable from the live VM, no two
//! hosts running the guest alone at once (the status monitor) and one
//! arbiter win per generation, no divergence, no panic, every process that
//! ended by itself ended with a documented status (4: halted by the
//! protocol; a test fault's own SIGKILL), a corrupted log entry refused by
//! the receiver's checksum, and the client's connection unbroken. Time and
//! traffic are bounded: every wait has a deadline, and the load stops a
//! little after the last fault settled.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::lab::{is_active, Lab, Monitor, Proc, Tools, REDIS};
use crate::plan::{Fault, Kind, Plan, Side};

/// Boot to redis answering.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// From a fault to a settled system.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(25);
/// A settled state must hold this long.
const SETTLE_HOLD: Duration = Duration::from_millis(250);
/// A join, from the joiner's start to the new pair.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a planned step fault to fire.
const STEP_WAIT: Duration = Duration::from_secs(8);
/// Longest a loadgen may take to stop once asked.
const LOAD_STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for one reply during the load.
const OP_TIMEOUT_MS: u64 = 20_000;

/// What the trial needs from the campaign.
pub struct Ctx<'a> {
    pub tools: &'a Tools,
    pub prefix: &'a str,
    pub dir: PathBuf,
    pub stop: &'a AtomicBool,
}

/// How a trial went.
#[derive(Debug, Default, serde::Serialize)]
pub struct TrialResult {
    pub seed: u64,
    pub trial: u64,
    pub local_disks: bool,
    pub connections: u32,
    /// Faults as injected, with the time (ms after the load started).
    pub injected: Vec<String>,
    pub kinds: Vec<String>,
    pub failures: Vec<String>,
    pub interrupted: bool,
    /// Arbiter wins (failovers and primaries going on alone).
    pub arbiter_wins: u64,
    pub acked: u64,
    /// The client's longest pause (ms) over all its connections.
    pub max_gap_ms: Option<f64>,
    /// The step fault fired (None: the trial had none).
    pub step_fired: Option<bool>,
    /// Guest step of the primary when the load started.
    pub load_start_icount: Option<u64>,
    /// The plan killed the only running copy of the VM (a step fault on a
    /// side left alone): nothing could survive, so the client's connection
    /// and the acknowledged writes cannot be checked.
    pub vm_lost_by_plan: bool,
    /// Faults skipped because no backup could join first.
    pub skipped: Vec<String>,
    pub secs: f64,
}

impl TrialResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && !self.interrupted
    }
}

/// The observed state of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The guest runs on `active`, a backup follows on the other host.
    Paired { active: usize },
    /// The guest runs on `active` alone.
    Solo { active: usize },
}

impl State {
    fn active(self) -> usize {
        match self {
            State::Paired { active } | State::Solo { active } => active,
        }
    }
}

struct Trial<'a> {
    ctx: &'a Ctx<'a>,
    plan: &'a Plan,
    lab: Lab,
    procs: Vec<Proc>,
    storage: usize,
    mon: Option<Monitor>,
    t0: Instant,
    res: TrialResult,
    joiners: u32,
}

/// Runs one trial; errors of the harness itself become failures.
pub fn run(ctx: &Ctx, plan: &Plan) -> TrialResult {
    let started = Instant::now();
    let mut res = TrialResult {
        seed: plan.seed,
        trial: plan.trial,
        local_disks: plan.local_disks,
        connections: plan.connections,
        ..TrialResult::default()
    };
    if let Err(e) = fs::create_dir_all(&ctx.dir) {
        res.failures
            .push(format!("cannot create {}: {e}", ctx.dir.display()));
        return res;
    }
    let lab = match Lab::up(ctx.prefix, &ctx.dir, ctx.tools, plan.local_disks) {
        Ok(l) => l,
        Err(e) => {
            res.failures.push(format!("lab: {e:#}"));
            return res;
        }
    };
    let mut t = Trial {
        ctx,
        plan,
        lab,
        procs: Vec::new(),
        storage: 0,
        mon: None,
        t0: Instant::now(),
        res,
        joiners: 0,
    };
    if let Err(e) = t.body() {
        if ctx.stop.load(Ordering::SeqCst) {
            t.res.interrupted = true;
        } else {
            t.res.failures.push(format!("{e:#}"));
        }
    }
    for p in t.procs.iter_mut() {
        // Everything still running is ended here; no status is checked.
        if p.alive() {
            p.signal(libc::SIGCONT);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
    if let Some(m) = t.mon.take() {
        m.stop();
    }
    let mut res = std::mem::take(&mut t.res);
    drop(t);
    res.secs = started.elapsed().as_secs_f64();
    res
}

impl Trial<'_> {
    fn nap(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            if self.ctx.stop.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn mon(&self) -> &Monitor {
        self.mon
            .as_ref()
            .expect("the monitor runs during the trial")
    }

    /// The running process on `host`.
    fn on_host(&mut self, host: usize) -> Option<&mut Proc> {
        self.procs
            .iter_mut()
            .rev()
            .find(|p| p.host == host && p.exited.is_none())
    }

    fn alive_on(&mut self, host: usize) -> bool {
        for p in self.procs.iter_mut() {
            p.alive();
        }
        self.procs
            .iter()
            .any(|p| p.host == host && p.exited.is_none())
    }

    fn phase(&mut self, host: usize) -> Option<String> {
        if !self.alive_on(host) {
            return None;
        }
        self.mon().phase(host).map(|s| s.phase)
    }

    fn describe_hosts(&mut self) -> String {
        let mut s = Vec::new();
        for h in 1..=2 {
            let alive = self.alive_on(h);
            let ph = self.mon().phase(h).map(|s| s.phase);
            s.push(format!(
                "h{h}: {}",
                match (alive, ph) {
                    (false, _) => "no process".to_string(),
                    (true, Some(p)) => p,
                    (true, None) => "not answering".to_string(),
                }
            ));
        }
        s.join(", ")
    }

    fn observe(&mut self) -> Option<State> {
        let p = [self.phase(1), self.phase(2)];
        let active: Vec<usize> = (1..=2)
            .filter(|h| p[h - 1].as_deref().is_some_and(is_active))
            .collect();
        let [a] = active[..] else { return None };
        let o = 3 - a;
        match p[a - 1].as_deref() {
            Some("paired") if p[o - 1].as_deref() == Some("following") => {
                Some(State::Paired { active: a })
            }
            Some("alone") | Some("live") if !self.alive_on(o) => Some(State::Solo { active: a }),
            _ => None,
        }
    }

    /// Waits until the pair is in a settled state for `SETTLE_HOLD`.
    fn settle(&mut self, timeout: Duration) -> Result<State> {
        let t = Instant::now();
        let mut since: Option<(State, Instant)> = None;
        loop {
            let s = self.observe();
            match (s, since) {
                (Some(s), Some((prev, at))) if s == prev => {
                    if at.elapsed() >= SETTLE_HOLD {
                        return Ok(s);
                    }
                }
                (Some(s), _) => since = Some((s, Instant::now())),
                (None, _) => since = None,
            }
            if s.is_none() && self.lost_by_plan() {
                self.res.vm_lost_by_plan = true;
                bail!(VmLost);
            }
            if t.elapsed() > timeout {
                bail!(
                    "the pair did not settle within {timeout:?} ({} ms into the load): {}",
                    self.ms(),
                    self.describe_hosts()
                );
            }
            self.nap(Duration::from_millis(30))?;
        }
    }

    /// Nothing runs on either host, and the last process to end was
    /// killed on purpose (by the campaign or its own test fault).
    fn lost_by_plan(&mut self) -> bool {
        if self.alive_on(1) || self.alive_on(2) {
            return false;
        }
        use std::os::unix::process::ExitStatusExt;
        self.procs.iter().filter(|p| p.host != 0).any(|p| {
            p.killed || (p.may_die && p.exited.and_then(|s| s.signal()) == Some(libc::SIGKILL))
        }) && self
            .procs
            .iter()
            .filter(|p| p.host != 0)
            .all(|p| p.exited.is_some())
    }

    fn body(&mut self) -> Result<()> {
        match self.body_inner() {
            Err(e) if e.downcast_ref::<VmLost>().is_some() => {
                // Still checked: nothing diverged, panicked or ran twice.
                self.check_processes(self.plan.step_fault());
                self.check_arbiter()?;
                for s in self.mon().split_brains() {
                    self.res.failures.push(format!("two VMs live: {s}"));
                }
                Ok(())
            }
            r => r,
        }
    }

    fn body_inner(&mut self) -> Result<()> {
        let step = self.plan.step_fault().cloned();
        let tf = step.as_ref().map(Plan::test_fault_arg);
        let tf_for = |side: Side| step.as_ref().filter(|f| f.side == side).and(tf.as_deref());
        let storage = self.lab.spawn_storage("storage")?;
        self.procs.push(storage);
        self.storage = 0;
        self.lab.wait_arbiter(Duration::from_secs(20))?;
        let mut backup = self
            .lab
            .spawn_backup("backup", 2, None, tf_for(Side::Backup))?;
        backup.may_die = step
            .as_ref()
            .is_some_and(|f| f.kind == Kind::StepDie && f.side == Side::Backup);
        self.procs.push(backup);
        let mut primary = self.lab.spawn_primary(tf_for(Side::Primary))?;
        primary.may_die = step
            .as_ref()
            .is_some_and(|f| f.kind == Kind::StepDie && f.side == Side::Primary);
        self.procs.push(primary);
        self.mon = Some(Monitor::start(&self.lab)?);
        self.ping(BOOT_TIMEOUT)?;
        let first = self
            .settle(Duration::from_secs(30))
            .context("the first pair")?;
        if let State::Solo { active } = first {
            // A false failover at startup (a loaded host): the faults start
            // from a pair, so a backup joins first.
            self.join(active)?;
            self.record("join@boot(to re-pair)".into(), Kind::Join);
            self.settle(SETTLE_TIMEOUT)?;
        }
        self.res.load_start_icount = self.mon().phase(1).map(|s| s.icount);
        let loads = self.start_load()?;
        self.t0 = Instant::now();
        if let Some(f) = &step {
            self.res.injected.push(f.to_string());
            self.res.kinds.push(f.kind.name().into());
        }
        if let Some(f) = &step {
            // The step fault goes first: the timed faults would often end
            // the side it is given to before the guest gets there.
            self.res.step_fired = Some(self.wait_step(f)?);
            self.settle(SETTLE_TIMEOUT)
                .context("after the step fault")?;
            self.t0 = Instant::now();
        }
        for f in self.plan.faults.iter().filter(|f| !f.kind.is_step()) {
            let wait = f.at_ms.saturating_sub(self.ms());
            self.nap(Duration::from_millis(wait))?;
            let state = self.settle(SETTLE_TIMEOUT)?;
            self.inject(f, state)?;
        }
        self.settle(SETTLE_TIMEOUT)
            .context("after the last fault")?;
        self.nap(Duration::from_millis(self.plan.tail_ms))?;
        self.finish_load(loads)?;
        self.check_processes(step.as_ref());
        self.check_arbiter()?;
        for s in self.mon().split_brains() {
            self.res.failures.push(format!("two VMs live: {s}"));
        }
        Ok(())
    }

    fn ping(&self, timeout: Duration) -> Result<()> {
        let st = self
            .lab
            .cmd_in("c", &self.lab.tools.loadgen)
            .args(["ping", "--addr", REDIS, "--timeout-ms"])
            .arg(timeout.as_millis().to_string())
            .stderr(Stdio::null())
            .status()
            .context("cannot run ftvm-loadgen ping")?;
        if !st.success() {
            bail!("redis never answered within {timeout:?}");
        }
        Ok(())
    }

    fn start_load(&mut self) -> Result<Vec<(String, Child)>> {
        let mut loads = Vec::new();
        for c in 0..self.plan.connections {
            let prefix = format!("c{c}");
            let log = fs::File::create(self.ctx.dir.join(format!("load-{prefix}.log")))?;
            let child = self
                .lab
                .cmd_in("c", &self.lab.tools.loadgen)
                .args(["write", "--addr", REDIS, "--prefix", &prefix])
                .args(["--duration", "300", "--until-file"])
                .arg(self.ctx.dir.join("stop-load"))
                .arg("--acked-file")
                .arg(self.ctx.dir.join(format!("{prefix}.acked")))
                .arg("--report")
                .arg(self.ctx.dir.join(format!("{prefix}.json")))
                .args(["--op-timeout-ms", &OP_TIMEOUT_MS.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .context("cannot start ftvm-loadgen")?;
            loads.push((prefix, child));
        }
        Ok(loads)
    }

    fn finish_load(&mut self, loads: Vec<(String, Child)>) -> Result<()> {
        fs::write(self.ctx.dir.join("stop-load"), b"").context("cannot stop the load")?;
        for (prefix, mut child) in loads {
            let t = Instant::now();
            let st = loop {
                if let Some(st) = child.try_wait()? {
                    break Some(st);
                }
                if t.elapsed() > LOAD_STOP_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                self.nap(Duration::from_millis(20))?;
            };
            let report: serde_json::Value =
                fs::read_to_string(self.ctx.dir.join(format!("{prefix}.json")))
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
            let acked = report["ops_acked"].as_u64().unwrap_or(0);
            self.res.acked += acked;
            if let Some(g) = report["max_gap_ms"].as_f64() {
                self.res.max_gap_ms = Some(self.res.max_gap_ms.map_or(g, |m: f64| m.max(g)));
            }
            match st {
                Some(st) if st.success() && report["connection_broken"] == false => {}
                _ => self.res.failures.push(format!(
                    "client connection {prefix} did not survive ({}): {}",
                    st.map_or("did not stop".to_string(), |s| s.to_string()),
                    report["error"].as_str().unwrap_or("no report")
                )),
            }
            if acked == 0 {
                self.res
                    .failures
                    .push(format!("client connection {prefix}: no write acknowledged"));
            }
            let out = self
                .lab
                .cmd_in("c", &self.lab.tools.loadgen)
                .args([
                    "verify",
                    "--addr",
                    REDIS,
                    "--prefix",
                    &prefix,
                    "--acked-file",
                ])
                .arg(self.ctx.dir.join(format!("{prefix}.acked")))
                .output()
                .context("cannot run ftvm-loadgen verify")?;
            if !out.status.success() {
                self.res.failures.push(format!(
                    "acknowledged writes of {prefix} not readable from the live VM: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ));
            }
        }
        Ok(())
    }

    /// Processes that ended on their own must have ended as documented;
    /// no log may show a panic or a divergence.
    fn check_processes(&mut self, step: Option<&Fault>) {
        for p in self.procs.iter_mut() {
            p.alive();
        }
        let mut fails = Vec::new();
        for p in &self.procs {
            let log = fs::read_to_string(&p.log).unwrap_or_default();
            if log.contains("panicked") {
                fails.push(format!("{} panicked", p.name));
            }
            if log.contains("DIVERGED") {
                fails.push(format!("{} reported a divergence", p.name));
            }
            if p.killed {
                continue;
            }
            let Some(st) = p.exited else { continue };
            use std::os::unix::process::ExitStatusExt;
            let ok = st.code() == Some(4) || (p.may_die && st.signal() == Some(libc::SIGKILL));
            if !ok {
                let last = log.lines().last().unwrap_or("").to_string();
                fails.push(format!("{} exited with {st}: {last}", p.name));
            }
        }
        if let Some(f) = step.filter(|f| f.kind == Kind::StepCorrupt) {
            if self.res.step_fired == Some(true) {
                // The side that received the damaged entry must have refused it.
                let receiver = match f.side {
                    Side::Primary => "backup",
                    Side::Backup => "backup",
                };
                let log = self
                    .procs
                    .iter()
                    .find(|p| p.name == receiver)
                    .and_then(|p| fs::read_to_string(&p.log).ok())
                    .unwrap_or_default();
                if !log.contains("checksum mismatch") {
                    fails.push("the corrupted log entry was not refused by a checksum".into());
                }
            }
        }
        self.res.failures.extend(fails);
    }

    fn check_arbiter(&mut self) -> Result<()> {
        let h = self.lab.arbiter_history()?;
        self.res.arbiter_wins = h.len() as u64;
        for w in h.windows(2) {
            if w[1].0 <= w[0].0 {
                self.res.failures.push(format!(
                    "the arbiter recorded two wins for generation {}: {h:?}",
                    w[1].0
                ));
            }
        }
        Ok(())
    }

    /// Waits for the planned step fault to fire; false if its side ended
    /// (or the guest did not get there) first.
    fn wait_step(&mut self, f: &Fault) -> Result<bool> {
        let name = match f.side {
            Side::Primary => "primary",
            Side::Backup => "backup",
        };
        let t = Instant::now();
        loop {
            let (log, alive) = {
                let Some(p) = self.procs.iter_mut().find(|p| p.name == name) else {
                    return Ok(false);
                };
                let alive = p.alive();
                (fs::read_to_string(&p.log).unwrap_or_default(), alive)
            };
            if log.contains("test fault: step") {
                return Ok(true);
            }
            if !alive || t.elapsed() > STEP_WAIT {
                return Ok(false);
            }
            self.nap(Duration::from_millis(50))?;
        }
    }

    fn record(&mut self, what: String, kind: Kind) {
        self.res.injected.push(what);
        self.res.kinds.push(kind.name().into());
    }

    /// Starts a backup on the free host joining `donor`; waits for the pair.
    fn join(&mut self, donor: usize) -> Result<()> {
        let host = 3 - donor;
        self.joiners += 1;
        let name = format!("joiner{}", self.joiners);
        let p = self.lab.spawn_backup(&name, host, Some(donor), None)?;
        self.procs.push(p);
        let t = Instant::now();
        loop {
            if self.observe() == Some(State::Paired { active: donor }) {
                return Ok(());
            }
            if !self.alive_on(host) || t.elapsed() > JOIN_TIMEOUT {
                // Not necessarily a failure of the system: the caller settles.
                return Ok(());
            }
            self.nap(Duration::from_millis(30))?;
        }
    }

    fn kill_host(&mut self, host: usize) {
        if let Some(p) = self.on_host(host) {
            p.kill();
        }
    }

    fn stall_host(&mut self, host: usize, ms: u64) -> Result<()> {
        let Some(pid) = self.on_host(host).map(|p| p.pid()) else {
            return Ok(());
        };
        // SAFETY: kill(2) with a child's pid (not yet reaped) and valid signals.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let r = self.nap(Duration::from_millis(ms));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        r
    }

    fn shape(&self, links: &[(String, &str)], f: &Fault) -> Result<()> {
        for (ns, dev) in links {
            let rate = format!("{}kbit", f.rate_kbit);
            let limit = f.limit_bytes.to_string();
            self.lab.tc(
                ns,
                &[
                    "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "16kb",
                    "limit", &limit,
                ],
            )?;
        }
        let r = self.nap(Duration::from_millis(f.dur_ms));
        for (ns, dev) in links {
            let _ = self.lab.tc(ns, &["qdisc", "del", "dev", dev, "root"]);
        }
        r
    }

    /// Injects `f` into the settled `state`; returns the settled state after.
    fn inject(&mut self, f: &Fault, mut state: State) -> Result<State> {
        if f.kind.needs_pair() {
            if let State::Solo { active } = state {
                let at = self.ms();
                self.join(active)?;
                self.record(format!("join@{at}ms(to re-pair)"), Kind::Join);
                state = self.settle(SETTLE_TIMEOUT)?;
                if let State::Solo { .. } = state {
                    // Killing the only copy proves nothing: skip.
                    self.res.skipped.push(f.to_string());
                    return Ok(state);
                }
            }
        }
        if f.kind.needs_solo() {
            if let State::Paired { active } = state {
                let at = self.ms();
                self.kill_host(3 - active);
                self.record(
                    format!("kill-backup@{at}ms(to free a host)"),
                    Kind::KillBackup,
                );
                state = self.settle(SETTLE_TIMEOUT)?;
            }
        }
        let a = state.active();
        let o = 3 - a;
        let at = self.ms();
        let mut shown = f.clone();
        shown.at_ms = at;
        self.record(shown.to_string(), f.kind);
        match f.kind {
            Kind::KillPrimary => self.kill_host(a),
            Kind::KillBackup => self.kill_host(o),
            Kind::StallPrimary => self.stall_host(a, f.dur_ms)?,
            Kind::StallBackup => self.stall_host(o, f.dur_ms)?,
            Kind::KillStorage => {
                self.procs[self.storage].kill();
                self.nap(Duration::from_millis(f.dur_ms))?;
                let p = self.lab.spawn_storage("storage-restarted")?;
                self.procs.push(p);
                self.storage = self.procs.len() - 1;
                self.lab.wait_arbiter(Duration::from_secs(20))?;
            }
            Kind::CutLog => {
                self.lab.netns(&["cut", self.ctx.prefix, "log"])?;
                let r = self.nap(Duration::from_millis(f.dur_ms));
                self.lab.netns(&["heal", self.ctx.prefix, "log"])?;
                r?;
            }
            Kind::ShapeLog => {
                let links = [(String::from("h1"), "log2"), (String::from("h2"), "log1")];
                self.shape(&links, f)?;
            }
            Kind::ShapeStorage => {
                let links = [
                    (format!("h{a}"), "st0"),
                    (String::from("st"), if a == 1 { "h1" } else { "h2" }),
                ];
                self.shape(&links, f)?;
            }
            Kind::CutStorageFailover => {
                let link = format!("storage:{o}");
                self.lab.netns(&["cut", self.ctx.prefix, &link])?;
                self.kill_host(a);
                let r = self.nap(Duration::from_millis(f.dur_ms));
                self.lab.netns(&["heal", self.ctx.prefix, &link])?;
                r?;
            }
            Kind::Join => self.join(a)?,
            Kind::JoinFailover => {
                self.join(a)?;
                if self.observe() == Some(State::Paired { active: a }) {
                    self.kill_host(a);
                } else {
                    self.res
                        .skipped
                        .push(format!("{}: the join did not complete", f));
                }
            }
            Kind::KillJoiner => {
                self.joiners += 1;
                let name = format!("joiner{}", self.joiners);
                let p = self.lab.spawn_backup(&name, o, Some(a), None)?;
                self.procs.push(p);
                self.nap(Duration::from_millis(f.dur_ms))?;
                self.kill_host(o);
            }
            k => return Err(anyhow!("{} is not injected at a time", k.name())),
        }
        self.settle(SETTLE_TIMEOUT)
            .with_context(|| format!("after {}", f.kind.name()))
    }
}

/// The only running copy of the VM was killed by the plan.
#[derive(Debug)]
struct VmLost;

impl std::fmt::Display for VmLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the plan killed the only running copy of the VM")
    }
}

impl std::error::Error for VmLost {}

/// Removes a passed trial's directory.
pub fn clean(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}
