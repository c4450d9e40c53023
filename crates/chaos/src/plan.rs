//! What a trial does, derived from nothing but (campaign seed, trial index):
//! the disk mode, how many client connections, and 1–4 faults, each with
//! the time (ms after the load started) it is injected at and its
//! parameters. A fault that needs a pair while the VM runs alone is
//! preceded by a join when the trial runs (see `trial.rs`); the plan itself
//! never looks at the system, so the same seed always plans the same
//! trial. Fault kinds have stable names (`--faults`) and a stable order, so
//! a recorded seed replays the same schedule.

use std::fmt;

use crate::rng::Rng;

/// The pair's failure timeout the campaign runs with (ftvm's default); the
/// stall lengths are chosen around it.
pub const FAILURE_TIMEOUT_MS: u64 = 100;

/// Every fault kind, in the order the generator numbers them.
pub const ALL_KINDS: [Kind; 16] = [
    Kind::KillPrimary,
    Kind::KillBackup,
    Kind::KillStorage,
    Kind::KillJoiner,
    Kind::StallPrimary,
    Kind::StallBackup,
    Kind::CutLog,
    Kind::ShapeLog,
    Kind::ShapeStorage,
    Kind::CutStorageFailover,
    Kind::Join,
    Kind::JoinFailover,
    Kind::StepDie,
    Kind::StepStall,
    Kind::StepDrop,
    Kind::StepCorrupt,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// SIGKILL the process running the guest.
    KillPrimary,
    /// SIGKILL the following backup.
    KillBackup,
    /// SIGKILL `ftvm storage` (NBD and arbiter), restarted after a pause.
    KillStorage,
    /// Start a join, SIGKILL the joiner during its pre-copy or just after.
    KillJoiner,
    /// SIGSTOP/SIGCONT the process running the guest.
    StallPrimary,
    /// SIGSTOP/SIGCONT the backup.
    StallBackup,
    /// The logging link down, then up again.
    CutLog,
    /// Traffic shaping on the logging link for a while.
    ShapeLog,
    /// Traffic shaping on the storage link of the host running the guest.
    ShapeStorage,
    /// The backup's storage link cut, the primary killed, the link healed.
    CutStorageFailover,
    /// A backup joins the VM running alone, under load.
    Join,
    /// A backup joins, and the donor is killed right after the pair formed.
    JoinFailover,
    /// `--test-fault STEP:die` on one side of the first pair.
    StepDie,
    /// `--test-fault STEP:stall:MS`.
    StepStall,
    /// `--test-fault STEP:drop` (the logging connection closed).
    StepDrop,
    /// `--test-fault STEP:corrupt` (one log entry damaged on the wire).
    StepCorrupt,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillPrimary => "kill-primary",
            Kind::KillBackup => "kill-backup",
            Kind::KillStorage => "kill-storage",
            Kind::KillJoiner => "kill-joiner",
            Kind::StallPrimary => "stall-primary",
            Kind::StallBackup => "stall-backup",
            Kind::CutLog => "cut-log",
            Kind::ShapeLog => "shape-log",
            Kind::ShapeStorage => "shape-storage",
            Kind::CutStorageFailover => "cut-storage-failover",
            Kind::Join => "join",
            Kind::JoinFailover => "join-failover",
            Kind::StepDie => "step-die",
            Kind::StepStall => "step-stall",
            Kind::StepDrop => "step-drop",
            Kind::StepCorrupt => "step-corrupt",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        ALL_KINDS.iter().copied().find(|k| k.name() == s)
    }

    /// Injected through `--test-fault` when the first pair starts.
    pub fn is_step(self) -> bool {
        matches!(
            self,
            Kind::StepDie | Kind::StepStall | Kind::StepDrop | Kind::StepCorrupt
        )
    }

    /// Needs the VM to run alone (a join starts it).
    pub fn needs_solo(self) -> bool {
        matches!(self, Kind::Join | Kind::JoinFailover | Kind::KillJoiner)
    }

    /// Needs a backup following.
    pub fn needs_pair(self) -> bool {
        matches!(
            self,
            Kind::KillPrimary
                | Kind::KillBackup
                | Kind::StallPrimary
                | Kind::StallBackup
                | Kind::CutLog
                | Kind::ShapeLog
                | Kind::CutStorageFailover
        )
    }
}

/// Which side of the first pair a step fault is given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Primary,
    Backup,
}

/// One planned fault.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: Kind,
    /// When, in ms after the load started (step faults: when the guest
    /// reaches `step`; this is only the order key).
    pub at_ms: u64,
    /// Stall length, cut length, shaping duration, storage downtime, or
    /// the delay before a joiner is killed (ms).
    pub dur_ms: u64,
    /// Step faults: the side and the guest instruction.
    pub side: Side,
    pub step: u64,
    /// Shaping: rate in kbit/s and queue limit in bytes.
    pub rate_kbit: u64,
    pub limit_bytes: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Primary => "primary",
            Side::Backup => "backup",
        };
        match self.kind {
            k if k.is_step() => {
                write!(f, "{}({side}@step {}", k.name(), self.step)?;
                if k == Kind::StepStall {
                    write!(f, ", {} ms", self.dur_ms)?;
                }
                write!(f, ")")
            }
            Kind::StallPrimary | Kind::StallBackup | Kind::CutLog => {
                write!(
                    f,
                    "{}@{}ms({} ms)",
                    self.kind.name(),
                    self.at_ms,
                    self.dur_ms
                )
            }
            Kind::ShapeLog | Kind::ShapeStorage => write!(
                f,
                "{}@{}ms({} kbit/s, {} B queue, {} ms)",
                self.kind.name(),
                self.at_ms,
                self.rate_kbit,
                self.limit_bytes,
                self.dur_ms
            ),
            Kind::KillStorage => {
                write!(
                    f,
                    "{}@{}ms(down {} ms)",
                    self.kind.name(),
                    self.at_ms,
                    self.dur_ms
                )
            }
            Kind::CutStorageFailover => {
                write!(
                    f,
                    "{}@{}ms(cut {} ms)",
                    self.kind.name(),
                    self.at_ms,
                    self.dur_ms
                )
            }
            Kind::KillJoiner => {
                write!(
                    f,
                    "{}@{}ms(after {} ms)",
                    self.kind.name(),
                    self.at_ms,
                    self.dur_ms
                )
            }
            _ => write!(f, "{}@{}ms", self.kind.name(), self.at_ms),
        }
    }
}

/// A trial's whole plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub trial: u64,
    pub local_disks: bool,
    /// Client connections (one loadgen each).
    pub connections: u32,
    /// How long the load runs after the last fault settled (ms).
    pub tail_ms: u64,
    pub faults: Vec<Fault>,
}

/// How the disk mode is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskChoice {
    Seeded,
    Local,
    Shared,
}

/// Guest instructions the first pair has executed when redis answers and
/// the load starts are 197–201 million on this guest (measured: the
/// trial results' `load_start_icount`); step faults land from
/// `STEP_BASE` to `STEP_BASE + STEP_SPREAD`, so that most hit during the
/// load (which advances the guest some millions of steps a second).
pub const STEP_BASE: u64 = 203_000_000;
pub const STEP_SPREAD: u64 = 40_000_000;

impl Plan {
    /// The plan of trial `trial` of campaign `seed`, drawing fault kinds
    /// from `kinds` (non-empty).
    pub fn new(seed: u64, trial: u64, kinds: &[Kind], disks: DiskChoice) -> Plan {
        let mut r = Rng::for_trial(seed, trial);
        let seeded_local = r.chance(1, 3);
        let local_disks = match disks {
            DiskChoice::Seeded => seeded_local,
            DiskChoice::Local => true,
            DiskChoice::Shared => false,
        };
        let connections = r.range(1, 2) as u32;
        let n = r.range(1, 4) as usize;
        let mut faults = Vec::with_capacity(n);
        let mut t = r.range(300, 1200);
        let mut step_used = false;
        for _ in 0..n {
            let mut kind = *r.pick(kinds);
            if kind.is_step() && step_used {
                // One test fault per trial (it is given when the pair starts).
                kind = *r.pick(kinds);
                if kind.is_step() {
                    continue;
                }
            }
            step_used |= kind.is_step();
            let dur_ms = match kind {
                Kind::StallPrimary | Kind::StallBackup | Kind::StepStall => *r.pick(&[
                    FAILURE_TIMEOUT_MS / 2,
                    FAILURE_TIMEOUT_MS,
                    FAILURE_TIMEOUT_MS * 3,
                ]),
                Kind::CutLog => r.range(50, 1500),
                Kind::ShapeLog | Kind::ShapeStorage => r.range(500, 2000),
                Kind::KillStorage => r.range(100, 1500),
                Kind::CutStorageFailover => r.range(200, 2000),
                Kind::KillJoiner => r.range(20, 800),
                _ => 0,
            };
            let side = if r.chance(1, 2) {
                Side::Primary
            } else {
                Side::Backup
            };
            let step = STEP_BASE + r.range(0, STEP_SPREAD);
            let rate_kbit = *r.pick(&[256, 1024, 4096, 16384]);
            let limit_bytes = *r.pick(&[3_000, 15_000, 64_000]);
            faults.push(Fault {
                kind,
                at_ms: if kind.is_step() { 0 } else { t },
                dur_ms,
                side,
                step,
                rate_kbit,
                limit_bytes,
            });
            t += r.range(400, 1500);
        }
        if faults.is_empty() {
            // Only step faults were drawn twice: keep a plain kill.
            faults.push(Fault {
                kind: Kind::KillPrimary,
                at_ms: t,
                dur_ms: 0,
                side: Side::Primary,
                step: 0,
                rate_kbit: 0,
                limit_bytes: 0,
            });
        }
        Plan {
            seed,
            trial,
            local_disks,
            connections,
            tail_ms: r.range(500, 1000),
            faults,
        }
    }

    /// The step fault of this trial, if any.
    pub fn step_fault(&self) -> Option<&Fault> {
        self.faults.iter().find(|f| f.kind.is_step())
    }

    /// `--test-fault` value for the step fault.
    pub fn test_fault_arg(f: &Fault) -> String {
        match f.kind {
            Kind::StepDie => format!("{}:die", f.step),
            Kind::StepStall => format!("{}:stall:{}", f.step, f.dur_ms),
            Kind::StepDrop => format!("{}:drop", f.step),
            _ => format!("{}:corrupt", f.step),
        }
    }

    pub fn describe(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|f| f.to_string()).collect();
        format!(
            "{} disks, {} conn, faults: {}",
            if self.local_disks { "local" } else { "shared" },
            self.connections,
            faults.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_a_function_of_seed_and_trial() {
        for t in 0..50 {
            let a = Plan::new(42, t, &ALL_KINDS, DiskChoice::Seeded).describe();
            let b = Plan::new(42, t, &ALL_KINDS, DiskChoice::Seeded).describe();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn plans_have_one_to_four_faults_and_at_most_one_step_fault() {
        for t in 0..500 {
            let p = Plan::new(1, t, &ALL_KINDS, DiskChoice::Seeded);
            assert!((1..=4).contains(&p.faults.len()), "{}", p.describe());
            assert!(p.faults.iter().filter(|f| f.kind.is_step()).count() <= 1);
        }
    }

    #[test]
    fn kinds_have_stable_names() {
        for k in ALL_KINDS {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
    }
}
