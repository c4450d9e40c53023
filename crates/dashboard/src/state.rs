//! What the page shows, derived from the pollers' sightings once per round
//! (pure: no threads, no I/O, so it is tested directly). A round takes every
//! target's latest report into a [`Sample`] — role, phase, generation and
//! the plotted numbers — and appends it to a ring of the last
//! [`HISTORY_ROUNDS`] rounds; comparing each target's sample with its
//! previous one yields the timeline's [`Event`]s: phase changes, failovers
//! (with the survivor's breakdown), joins, halts, a target going
//! unreachable or coming back.

use std::collections::VecDeque;

use ftvm_node::ft::status::{Report, Timeline};
use serde::Serialize;

use crate::target::Seen;

/// Rounds kept: ten minutes at two a second.
pub const HISTORY_ROUNDS: usize = 1200;
/// Timeline events kept.
pub const MAX_EVENTS: usize = 200;

/// One target in one round.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// primary, backup, halted, down (unreachable) or unknown (not polled yet).
    pub role: &'static str,
    pub phase: String,
    pub started_as: String,
    pub vm: String,
    pub generation: Option<u64>,
    pub connected: bool,
    pub peer: Option<String>,
    pub lag_ms: Option<f64>,
    pub lag_instructions: Option<u64>,
    pub log_mbit_s: Option<f64>,
    pub hold_us_p50: Option<f64>,
    pub hold_us_p99: Option<f64>,
    pub mips: Option<f64>,
    pub joins: u64,
    pub error: Option<String>,
    #[serde(skip)]
    failover: Option<String>,
    #[serde(skip)]
    last_join: Option<(f64, f64)>,
}

/// The role a phase means: a process running the guest is the primary,
/// whatever it was started as.
pub fn role(phase: &str, started_as: &str) -> &'static str {
    match phase {
        "paired" | "alone" | "live" => "primary",
        "following" | "draining" | "waiting" => "backup",
        "arbitrating" if started_as == "primary" => "primary",
        "arbitrating" => "backup",
        "halted" => "halted",
        _ => "unknown",
    }
}

impl Sample {
    pub fn of(seen: &Seen) -> Sample {
        match seen {
            Seen::Nothing => Sample {
                role: "unknown",
                ..Sample::default()
            },
            Seen::Unreachable(e) => Sample {
                role: "down",
                phase: "unreachable".into(),
                error: Some(e.clone()),
                ..Sample::default()
            },
            Seen::Report(r) => Sample::of_report(r),
        }
    }

    fn of_report(r: &Report) -> Sample {
        let paired = r.phase == "paired";
        Sample {
            role: role(&r.phase, &r.started_as),
            phase: r.phase.clone(),
            started_as: r.started_as.clone(),
            vm: r.vm.clone(),
            generation: Some(r.generation),
            connected: r.connected,
            peer: r.peer.clone(),
            lag_ms: r.lag_ms.map(|v| v as f64),
            lag_instructions: Some(r.lag_instructions),
            log_mbit_s: Some(r.log_mbit_s),
            hold_us_p50: r.hold.as_ref().filter(|_| paired).map(|h| h.hold_us_p50),
            hold_us_p99: r.hold.as_ref().filter(|_| paired).map(|h| h.hold_us_p99),
            mips: Some(r.mips),
            joins: r.joins,
            error: r.halted.clone(),
            failover: r
                .failover
                .as_ref()
                .filter(|t| t.took_over_ms.is_some())
                .map(Timeline::describe),
            last_join: r.last_join_s.zip(r.last_join_pause_ms),
        }
    }
}

/// One entry of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since the dashboard started.
    pub t: f64,
    pub target: String,
    /// failover, join, phase, halted, down, up.
    pub kind: &'static str,
    pub text: String,
}

/// One poll round: the time and every target's sample, in target order.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub t: f64,
    pub samples: Vec<Sample>,
}

/// The history the page starts from.
#[derive(Debug, Default, Serialize)]
pub struct State {
    /// Target names, in order; `groups` indexes into them.
    pub targets: Vec<String>,
    /// The targets of each pair (`--pair`), by index.
    pub groups: Vec<Vec<usize>>,
    pub rounds: VecDeque<Round>,
    pub events: VecDeque<Event>,
}

impl State {
    pub fn new(targets: Vec<String>, groups: Vec<Vec<usize>>) -> State {
        State {
            targets,
            groups,
            ..State::default()
        }
    }

    /// Adds a round at `t` seconds; returns the events it produced.
    pub fn round(&mut self, t: f64, samples: Vec<Sample>) -> Vec<Event> {
        let mut new = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            let prev = self.rounds.back().and_then(|r| r.samples.get(i));
            let name = self.targets.get(i).cloned().unwrap_or_default();
            new.extend(changes(prev, s).into_iter().map(|(kind, text)| Event {
                t,
                target: name.clone(),
                kind,
                text,
            }));
        }
        self.rounds.push_back(Round { t, samples });
        while self.rounds.len() > HISTORY_ROUNDS {
            self.rounds.pop_front();
        }
        self.events.extend(new.iter().cloned());
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
        new
    }
}

/// What changed for one target between two rounds.
fn changes(prev: Option<&Sample>, s: &Sample) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let Some(p) = prev else {
        return out;
    };
    if s.role == "unknown" {
        return out;
    }
    if s.role == "down" && p.role != "down" {
        out.push((
            "down",
            format!("unreachable: {}", s.error.as_deref().unwrap_or("?")),
        ));
        return out;
    }
    if s.role != "down" && p.role == "down" {
        out.push(("up", format!("answering again ({})", s.phase)));
    }
    if s.failover.is_some() && s.failover != p.failover {
        out.push(("failover", s.failover.clone().unwrap_or_default()));
    }
    if s.joins > p.joins && p.role != "down" && p.role != "unknown" {
        let mut text = format!(
            "a backup joined: now generation {}",
            s.generation.unwrap_or(0)
        );
        if let Some((secs, pause_ms)) = s.last_join {
            text.push_str(&format!(
                " (join took {secs:.2} s, guest paused {pause_ms:.1} ms)"
            ));
        }
        out.push(("join", text));
    }
    if s.phase != p.phase && p.role != "down" && p.role != "unknown" {
        let kind = if s.phase == "halted" {
            "halted"
        } else {
            "phase"
        };
        let mut text = format!("{} → {}", p.phase, s.phase);
        if let (Some(e), "halted") = (&s.error, s.phase.as_str()) {
            text.push_str(&format!(": {e}"));
        }
        out.push((kind, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(phase: &str, started_as: &str, joins: u64) -> Seen {
        Seen::Report(Box::new(Report {
            vm: "vm0".into(),
            phase: phase.into(),
            started_as: started_as.into(),
            generation: 1 + joins,
            joins,
            ..Report::default()
        }))
    }

    #[test]
    fn roles_follow_the_phase_not_the_start() {
        assert_eq!(role("following", "backup"), "backup");
        assert_eq!(role("live", "backup"), "primary");
        assert_eq!(role("arbitrating", "primary"), "primary");
        assert_eq!(role("arbitrating", "backup"), "backup");
        assert_eq!(
            Sample::of(&Seen::Unreachable("refused".into())).role,
            "down"
        );
    }

    #[test]
    fn a_failover_then_a_join_make_the_timeline() {
        let mut st = State::new(vec!["h1".into(), "h2".into()], vec![vec![0, 1]]);
        let r = |a: &Seen, b: &Seen| vec![Sample::of(a), Sample::of(b)];
        assert!(st
            .round(
                0.0,
                r(
                    &report("paired", "primary", 0),
                    &report("following", "backup", 0)
                )
            )
            .is_empty());
        let mut live = report("live", "backup", 0);
        if let Seen::Report(rep) = &mut live {
            rep.failover = Some(Timeline {
                what: "backup went live".into(),
                last_heard_ms: Some(1000),
                suspected_ms: Some(1100),
                took_over_ms: Some(1130),
                ..Timeline::default()
            });
        }
        let ev = st.round(0.5, r(&Seen::Unreachable("refused".into()), &live));
        let kinds: Vec<_> = ev.iter().map(|e| (e.target.as_str(), e.kind)).collect();
        assert_eq!(kinds, [("h1", "down"), ("h2", "failover"), ("h2", "phase")]);
        assert!(ev[1].text.contains("took over +130 ms"), "{}", ev[1].text);
        assert!(ev[2].text.contains("following → live"));
        // The same failover seen again is not a new event.
        assert!(st
            .round(1.0, r(&Seen::Unreachable("refused".into()), &live))
            .is_empty());
        let mut joined = live.clone();
        if let Seen::Report(rep) = &mut joined {
            rep.joins = 1;
            rep.generation = 2;
            rep.last_join_s = Some(1.25);
            rep.last_join_pause_ms = Some(4.5);
        }
        let ev = st.round(1.5, r(&report("following", "backup", 0), &joined));
        let kinds: Vec<_> = ev.iter().map(|e| (e.target.as_str(), e.kind)).collect();
        assert_eq!(kinds, [("h1", "up"), ("h2", "join")]);
        assert!(
            ev[1].text.contains("generation 2") && ev[1].text.contains("paused 4.5 ms"),
            "{}",
            ev[1].text
        );
        assert_eq!(st.events.len(), 5);
        assert_eq!(st.rounds.len(), 4);
    }
}
