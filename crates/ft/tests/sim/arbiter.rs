//! The simulated arbiter: a linearizable test-and-set per generation that
//! answers Won to the first claimant and again to the same claimant's
//! retries, Lost to anyone else. Each node reaches it over its own path,
//! which can be cut for a while; a request can be lost on the way there or
//! its answer on the way back (the claim then holds though the claimant never
//! heard), and the claimant's driver reports Unreachable when its request
//! times out.

use ftvm_ft::{ArbiterResult, Generation, Role};

use crate::rng::Rng;

/// How long a driver waits for the arbiter's answer.
pub const REQUEST_TIMEOUT: u64 = 60;
/// Largest one-way delay to the arbiter.
pub const MAX_DELAY: u64 = 5;

#[derive(Debug)]
pub struct Arbiter {
    pub generation: Generation,
    pub winner: Option<Role>,
    /// (from, to, who): `who` cannot reach the arbiter in `from..to`
    /// (`None`: nobody can).
    pub outages: Vec<(u64, u64, Option<Role>)>,
    /// Probability that a request or an answer is lost.
    pub loss: f64,
    /// Requests on their way: (arrives at, claimant, generation, sent at).
    arriving: Vec<(u64, Role, Generation, u64)>,
    /// Answers on their way: (at, claimant, answer).
    answers: Vec<(u64, Role, ArbiterResult)>,
    pub requests: u64,
    /// A broken arbiter (for the checks' own test): everyone wins.
    pub always_win: bool,
    rng: Rng,
}

impl Arbiter {
    pub fn new(generation: Generation, rng: Rng) -> Self {
        Arbiter {
            generation,
            winner: None,
            outages: Vec::new(),
            loss: 0.0,
            arriving: Vec::new(),
            answers: Vec::new(),
            requests: 0,
            always_win: false,
            rng,
        }
    }

    pub fn reachable(&self, now: u64, who: Role) -> bool {
        !self
            .outages
            .iter()
            .any(|&(from, to, w)| now >= from && now < to && w.is_none_or(|w| w == who))
    }

    pub fn request(&mut self, now: u64, who: Role, generation: Generation) {
        self.requests += 1;
        if !self.reachable(now, who) || self.rng.chance(self.loss) {
            self.answers
                .push((now + REQUEST_TIMEOUT, who, ArbiterResult::Unreachable));
            return;
        }
        let d = self.rng.range(1, MAX_DELAY);
        self.arriving.push((now + d, who, generation, now));
    }

    /// Applies the requests that arrived (in arrival order) and returns the
    /// answers due at `now`.
    pub fn poll(&mut self, now: u64) -> Vec<(Role, ArbiterResult)> {
        self.arriving.sort_by_key(|a| a.0);
        while let Some(&(at, who, generation, sent)) = self.arriving.first() {
            if at > now {
                break;
            }
            self.arriving.remove(0);
            let answer = if generation != self.generation {
                ArbiterResult::Lost
            } else if self.always_win {
                self.winner = Some(who);
                ArbiterResult::Won
            } else {
                match self.winner {
                    None => {
                        self.winner = Some(who);
                        ArbiterResult::Won
                    }
                    Some(w) if w == who => ArbiterResult::Won,
                    Some(_) => ArbiterResult::Lost,
                }
            };
            let back = at + self.rng.range(1, MAX_DELAY);
            if self.reachable(back, who) && !self.rng.chance(self.loss) {
                self.answers.push((back, who, answer));
            } else {
                self.answers
                    .push((sent + REQUEST_TIMEOUT, who, ArbiterResult::Unreachable));
            }
        }
        let mut due = Vec::new();
        self.answers.sort_by_key(|a| a.0);
        while let Some(&(at, who, r)) = self.answers.first() {
            if at > now {
                break;
            }
            self.answers.remove(0);
            due.push((who, r));
        }
        due
    }
}
