//! Deterministic simulation of an FT pair (TigerBeetle-style): every run is
//! a function of one seed, so a failing seed printed here reproduces
//! exactly. `cargo test -p ftvm-ft --test sim` runs a few thousand seeds
//! across all scenarios; environment variables widen or narrow that:
//!
//! - `FT_SIM_SEEDS=100000` — how many seeds (default 4000);
//! - `FT_SIM_BASE=n` — first seed (default 0);
//! - `FT_SIM_SEED=n` — run only this seed, `FT_SIM_TRACE=1` to trace it.
//!
//! The invariants (checked in `world.rs`): never two nodes live or alone
//! in a generation and only the arbiter's winner goes on; no output
//! released while paired before the backup has the entry it depends on;
//! every released output reproducible by a backup that goes live; the
//! backup never runs past an input it has not applied and replays exactly
//! the primary's entries; and, where no fault warrants otherwise, progress,
//! bounded lag, and failover within the failure timeout plus the drain.

mod arbiter;
mod net;
mod rng;
mod world;

use std::collections::BTreeMap;
use std::time::Instant;

use world::{Mutation, Report, Scenario, World, SCENARIOS};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn reproduce(seed: u64) -> String {
    format!("reproduce: FT_SIM_SEED={seed} FT_SIM_TRACE=1 cargo test -p ftvm-ft --test sim simulated_pairs -- --nocapture")
}

#[derive(Default)]
struct Agg {
    runs: u64,
    failovers: u64,
    halts: u64,
    entries: u64,
    released: u64,
    protocol_errors: u64,
    max_lag_over_target: f64,
    max_failover_ms: u64,
    sim_ms: u64,
}

impl Agg {
    fn add(&mut self, r: &Report) {
        self.runs += 1;
        self.failovers += r.failovers;
        self.halts += r.halts;
        self.entries += r.entries;
        self.released += r.released;
        self.protocol_errors += r.protocol_errors;
        self.max_lag_over_target = self.max_lag_over_target.max(r.max_lag_over_target);
        self.max_failover_ms = self.max_failover_ms.max(r.max_failover_ms);
        self.sim_ms += r.sim_ms;
    }
}

/// Runs `seeds` in parallel (each run is single-threaded and deterministic).
fn run_seeds(
    seeds: std::ops::Range<u64>,
    make: impl Fn(u64) -> World + Sync,
) -> (BTreeMap<String, Agg>, Vec<(u64, String)>) {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16) as u64;
    let results: Vec<(u64, String, Result<Report, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let seeds = seeds.clone();
                let make = &make;
                s.spawn(move || {
                    seeds
                        .filter(|seed| seed % workers == w)
                        .map(|seed| {
                            let world = make(seed);
                            let scenario = format!("{:?}", world.params().scenario);
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                world.run()
                            }))
                            .unwrap_or_else(|_| Err(format!("seed {seed}: panicked")));
                            (seed, scenario, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut agg: BTreeMap<String, Agg> = BTreeMap::new();
    let mut failures = Vec::new();
    for (seed, scenario, r) in results {
        match r {
            Ok(r) => agg.entry(scenario).or_default().add(&r),
            Err(e) => failures.push((seed, e)),
        }
    }
    failures.sort();
    (agg, failures)
}

fn summarize(what: &str, n: u64, t: Instant, agg: &BTreeMap<String, Agg>) {
    eprintln!("{what}: {n} seeds in {:.1} s", t.elapsed().as_secs_f64());
    for (name, a) in agg {
        eprintln!(
            "  {name:<15} runs {:>6}  sim {:>7.1} s  entries {:>9}  released {:>8}  failovers {:>5}  halts {:>5}  refused {:>6}  max lag/target {:.2}  max failover {} ms",
            a.runs,
            a.sim_ms as f64 / 1000.0,
            a.entries,
            a.released,
            a.failovers,
            a.halts,
            a.protocol_errors,
            a.max_lag_over_target,
            a.max_failover_ms
        );
    }
}

fn report_failures(failures: &[(u64, String)]) {
    if failures.is_empty() {
        return;
    }
    for (seed, e) in failures.iter().take(10) {
        eprintln!("FAILED {e}\n  {}", reproduce(*seed));
    }
    panic!(
        "{} of the simulated runs violated an invariant",
        failures.len()
    );
}

/// The main property: thousands of seeds over all scenarios.
#[test]
fn simulated_pairs_keep_the_invariants() {
    if let Some(seed) = env_u64("FT_SIM_SEED") {
        let trace = std::env::var("FT_SIM_TRACE").is_ok_and(|v| v != "0");
        match World::new(seed, trace).run() {
            Ok(r) => eprintln!("seed {seed}: ok {r:?}"),
            Err(e) => panic!("{e}\n{}", reproduce(seed)),
        }
        return;
    }
    let n = env_u64("FT_SIM_SEEDS").unwrap_or(4000);
    let base = env_u64("FT_SIM_BASE").unwrap_or(0);
    let t = Instant::now();
    let (agg, failures) = run_seeds(base..base + n, |seed| World::new(seed, false));
    summarize("simulation", n, t, &agg);
    for s in SCENARIOS {
        assert!(
            n < 100 || agg.contains_key(&format!("{s:?}")),
            "scenario {s:?} never ran"
        );
    }
    report_failures(&failures);
}

/// The same seed gives the same run.
#[test]
fn runs_are_deterministic() {
    for seed in [1, 2, 3, 42, 1000] {
        let a = World::new(seed, false).run();
        let b = World::new(seed, false).run();
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}");
    }
}

/// Each scenario on its own, so a regression names the behaviour it broke.
#[test]
fn every_scenario_on_its_own() {
    let per = env_u64("FT_SIM_SCENARIO_SEEDS").unwrap_or(60);
    for s in SCENARIOS {
        let t = Instant::now();
        let (agg, failures) = run_seeds(1_000_000..1_000_000 + per, |seed| {
            World::with_scenario(seed, s, false)
        });
        summarize(&format!("{s:?}"), per, t, &agg);
        report_failures(&failures);
        if s == Scenario::PrimaryCrash || s == Scenario::BackupCrash || s == Scenario::Partition {
            let a = &agg[&format!("{s:?}")];
            assert_eq!(
                a.failovers, a.runs,
                "{s:?}: every run fails over exactly once"
            );
        }
    }
}

/// The checks have teeth: each deliberate bug is caught in some seeds.
#[test]
fn the_checks_catch_deliberate_bugs() {
    let cases = [
        (
            Mutation::OutputDependsOnEarlierEntry,
            Scenario::PrimaryCrash,
            &["LOST OUTPUT"][..],
        ),
        (
            Mutation::ReleaseImmediately,
            Scenario::Calm,
            &["OUTPUT RULE"],
        ),
        (
            Mutation::ArbiterAlwaysWins,
            Scenario::Partition,
            &["SPLIT BRAIN", "arbiter's winner"],
        ),
    ];
    for (m, s, expect) in cases {
        let (_, failures) = run_seeds(2_000_000..2_000_100, |seed| {
            World::with_scenario(seed, s, false).with_mutation(m)
        });
        let caught = failures
            .iter()
            .filter(|(_, e)| expect.iter().any(|x| e.contains(x)))
            .count();
        eprintln!("{m:?} in {s:?}: caught in {caught} of 100 seeds");
        assert!(caught > 0, "{m:?} went unnoticed: {:?}", failures.first());
    }
}
