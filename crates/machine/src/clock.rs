//! The guest clock: guest time (`mtime`, in ticks of [`TIMEBASE_HZ`]) as a
//! pure function of the step count and the time inputs received so far.
//!
//! Between two `Time` inputs, time advances at a nominal rate of
//! `steps_per_tick` steps per tick, but never more than `max_ahead` ticks past
//! the last input, so guest time cannot run away from the host clock when the
//! emulator runs faster than nominal. A `Time` input re-anchors the clock at
//! the current step: time becomes the larger of the host's reading and the
//! interpolated value, so it never goes backwards. Everything here is
//! deterministic given the inputs, which is what makes time replayable.
//!
//! [`TIMEBASE_HZ`]: crate::layout::TIMEBASE_HZ

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestClock {
    anchor_icount: u64,
    anchor_time: u64,
    /// Interpolated time never passes this: the last host reading plus `max_ahead`.
    limit_time: u64,
    steps_per_tick: u64,
    max_ahead: u64,
}

impl GuestClock {
    pub fn new(steps_per_tick: u64, max_ahead: u64) -> Self {
        GuestClock {
            anchor_icount: 0,
            anchor_time: 0,
            limit_time: max_ahead,
            steps_per_tick: steps_per_tick.max(1),
            max_ahead,
        }
    }

    /// Guest time at step `icount` (which must not precede the anchor).
    #[inline]
    pub fn now(&self, icount: u64) -> u64 {
        let steps = icount.saturating_sub(self.anchor_icount);
        self.anchor_time
            .saturating_add(steps / self.steps_per_tick)
            .min(self.limit_time)
    }

    /// Whether restored state keeps the invariants [`GuestClock::new`] and
    /// [`GuestClock::sync`] establish (a snapshot is outside input).
    pub fn check(&self) -> Result<(), String> {
        if self.steps_per_tick == 0 {
            return Err("guest clock with 0 steps per tick".into());
        }
        if self.anchor_time > self.limit_time {
            return Err(format!(
                "guest clock anchored at {} past its limit {}",
                self.anchor_time, self.limit_time
            ));
        }
        Ok(())
    }

    /// Applies a host time reading taken at step `icount`. Time never goes
    /// backwards; interpolation may then run at most `max_ahead` ticks past
    /// the host's reading.
    pub fn sync(&mut self, icount: u64, host_ticks: u64) {
        let t = self.now(icount).max(host_ticks);
        self.anchor_icount = icount;
        self.anchor_time = t;
        self.limit_time = t.max(host_ticks.saturating_add(self.max_ahead));
    }

    /// First step at which time reaches `t`, given no further input; `None`
    /// if it never does without input. Returns a step at or before the
    /// anchor when `t` has already been reached.
    pub fn step_reaching(&self, t: u64) -> Option<u64> {
        if t <= self.anchor_time {
            return Some(self.anchor_icount);
        }
        if t > self.limit_time {
            return None;
        }
        Some(
            self.anchor_icount
                .saturating_add((t - self.anchor_time).saturating_mul(self.steps_per_tick)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Found by fuzzing (fuzz/regressions/snapshot/): a snapshot whose
    // clock had 0 steps per tick divided by zero at the first interrupt
    // check. Restored clocks are checked now.
    #[test]
    fn restored_clocks_are_checked() {
        assert!(GuestClock::new(10, 1000).check().is_ok());
        let mut c = GuestClock::new(10, 1000);
        c.steps_per_tick = 0;
        assert!(c.check().is_err());
        let mut c = GuestClock::new(10, 1000);
        c.anchor_time = c.limit_time + 1;
        assert!(c.check().is_err());
        let mut c = GuestClock::new(1, u64::MAX);
        c.anchor_time = u64::MAX - 1;
        assert_eq!(c.now(u64::MAX), u64::MAX);
        assert!(c.step_reaching(u64::MAX).is_some());
    }

    #[test]
    fn interpolates_caps_and_never_goes_back() {
        let mut c = GuestClock::new(10, 1000);
        assert_eq!(c.now(0), 0);
        assert_eq!(c.now(95), 9);
        assert_eq!(c.now(1_000_000), 1000); // capped at host (0) + max_ahead
        c.sync(1_000_000, 500); // host behind: keep time, but stop interpolating past 500 + 1000
        assert_eq!(c.now(1_000_000), 1000);
        assert_eq!(c.now(2_000_000), 1500);
        c.sync(2_000_000, 5000); // host ahead: jump
        assert_eq!(c.now(2_000_000), 5000);
        assert_eq!(c.now(2_000_030), 5003);
    }

    #[test]
    fn fast_emulation_does_not_accumulate_a_lead() {
        // 1000 quanta in which the emulator runs twice the nominal speed.
        let mut c = GuestClock::new(10, 100);
        let mut icount = 0;
        for q in 1..=1000u64 {
            icount += 2000; // 200 ticks' worth of steps per 100 host ticks
            c.sync(icount, q * 100);
            assert!(
                c.now(icount) <= q * 100 + 100,
                "quantum {q}: {}",
                c.now(icount)
            );
        }
    }

    #[test]
    fn step_reaching_matches_now() {
        let mut c = GuestClock::new(7, 100);
        c.sync(50, 1000);
        for t in [900, 1000, 1001, 1050, 1100] {
            let s = c.step_reaching(t).unwrap();
            assert!(c.now(s) >= t);
            if s > 50 {
                assert!(c.now(s - 1) < t);
            }
        }
        assert_eq!(c.step_reaching(1101), None);
    }
}
