//! The campaign report: one line per trial (seed, trial, disks, faults with
//! their times, outcome, failures) and a summary — trials, outcomes,
//! faults by kind, arbiter wins, acknowledged writes, and the client's
//! longest pause in trials with a failover (min/median/max) — that can
//! also be computed over the JSON lines of several runs (`--summarize`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::trial::TrialResult;

pub fn line(r: &TrialResult) -> String {
    let outcome = if r.interrupted {
        "INTERRUPTED".to_string()
    } else if r.passed() {
        "PASS".to_string()
    } else {
        format!("FAIL: {}", r.failures.join("; "))
    };
    let lost = if r.vm_lost_by_plan {
        " | VM lost by plan (the only copy killed; writes not checkable)"
    } else {
        ""
    };
    let skipped = if r.skipped.is_empty() {
        String::new()
    } else {
        format!(" | skipped (no backup could join): {}", r.skipped.join(" "))
    };
    let step = match r.step_fired {
        Some(true) => ", step fault fired",
        Some(false) => ", step fault not reached",
        None => "",
    };
    format!(
        "seed {} trial {}: {} disks, {} conn; {} | {} wins, {} acked, max gap {} ms{step}, {:.1} s{lost}{skipped} | {outcome}",
        r.seed,
        r.trial,
        if r.local_disks { "local" } else { "shared" },
        r.connections,
        r.injected.join(" "),
        r.arbiter_wins,
        r.acked,
        r.max_gap_ms.map_or("-".into(), |g| format!("{g:.0}")),
        r.secs
    )
}

#[derive(Default)]
pub struct Summary {
    pub trials: u64,
    pub passed: u64,
    pub failed: u64,
    pub kinds: BTreeMap<String, u64>,
    pub wins: u64,
    pub acked: u64,
    pub gaps: Vec<f64>,
    pub step_fired: u64,
    pub step_missed: u64,
    pub vm_lost: u64,
    pub skipped: u64,
    pub trial_s: Vec<f64>,
    pub wall_s: f64,
}

impl Summary {
    pub fn add(&mut self, r: &TrialResult) {
        self.add_value(&serde_json::to_value(r).unwrap_or_default());
    }

    fn add_value(&mut self, v: &serde_json::Value) {
        self.trials += 1;
        let failures = v["failures"].as_array().map_or(0, |a| a.len());
        if failures == 0 {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        for k in v["kinds"].as_array().into_iter().flatten() {
            if let Some(k) = k.as_str() {
                *self.kinds.entry(k.to_string()).or_default() += 1;
            }
        }
        let wins = v["arbiter_wins"].as_u64().unwrap_or(0);
        self.wins += wins;
        self.acked += v["acked"].as_u64().unwrap_or(0);
        if wins > 0 {
            if let Some(g) = v["max_gap_ms"].as_f64() {
                self.gaps.push(g);
            }
        }
        if v["vm_lost_by_plan"].as_bool() == Some(true) {
            self.vm_lost += 1;
        }
        self.skipped += v["skipped"].as_array().map_or(0, |a| a.len() as u64);
        match v["step_fired"].as_bool() {
            Some(true) => self.step_fired += 1,
            Some(false) => self.step_missed += 1,
            None => {}
        }
        if let Some(s) = v["secs"].as_f64() {
            self.trial_s.push(s);
        }
    }

    pub fn from_jsonl(path: &Path) -> Result<Summary> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut s = Summary::default();
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            s.add_value(&v);
        }
        s.wall_s = s.trial_s.iter().sum();
        Ok(s)
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "  trials {}: {} passed, {} failed; {:.0} s ({:.1} s per trial)\n",
            self.trials,
            self.passed,
            self.failed,
            self.wall_s,
            if self.trials > 0 {
                self.trial_s.iter().sum::<f64>() / self.trials as f64
            } else {
                0.0
            }
        );
        out += &format!(
            "  arbiter wins (failovers and primaries going on alone): {}; acknowledged writes checked: {}\n",
            self.wins, self.acked
        );
        out += &format!(
            "  step faults: {} fired, {} not reached\n",
            self.step_fired, self.step_missed
        );
        out += &format!(
            "  VM lost by plan (the only running copy killed): {} trials; faults skipped (no backup could join): {}\n",
            self.vm_lost, self.skipped
        );
        out += "  faults by kind (as injected):\n";
        for (k, n) in &self.kinds {
            out += &format!("    {k:<22} {n}\n");
        }
        let mut g = self.gaps.clone();
        g.sort_by(f64::total_cmp);
        if g.is_empty() {
            out += "  client's longest pause in trials with a failover: none\n";
        } else {
            out += &format!(
                "  client's longest pause in trials with a failover ({}): min {:.0} ms, median {:.0} ms, max {:.0} ms\n",
                g.len(),
                g[0],
                g[g.len() / 2],
                g[g.len() - 1]
            );
        }
        out
    }
}
