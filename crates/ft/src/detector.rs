//! Failure detection by silence: the peer is dead when nothing valid came
//! from it for `timeout_ms`. Time is whatever the caller says it is; before
//! the first message a longer startup grace applies. Used by both cores.

/// Declares the peer dead after a period of silence.
#[derive(Debug, Clone)]
pub struct FailureDetector {
    timeout_ms: u64,
    deadline_ms: u64,
    last_heard_ms: Option<u64>,
    heartbeat_ms: u64,
    missed: u64,
}

impl FailureDetector {
    /// A detector created at `now_ms` that waits `startup_ms` for the first
    /// sign of life, then allows `timeout_ms` of silence.
    pub fn new(now_ms: u64, startup_ms: u64, timeout_ms: u64) -> Self {
        FailureDetector {
            timeout_ms,
            deadline_ms: now_ms.saturating_add(startup_ms),
            last_heard_ms: None,
            heartbeat_ms: 0,
            missed: 0,
        }
    }

    /// Counts missed heartbeats of a peer that sends one every
    /// `interval_ms` when it has nothing else to send (0: do not count).
    pub fn with_heartbeat(mut self, interval_ms: u64) -> Self {
        self.heartbeat_ms = interval_ms;
        self
    }

    /// Something valid arrived from the peer at `now_ms`.
    pub fn heard(&mut self, now_ms: u64) {
        if let (Some(l), true) = (self.last_heard_ms, self.heartbeat_ms > 0) {
            let intervals = now_ms.saturating_sub(l) / self.heartbeat_ms;
            self.missed += intervals.saturating_sub(1);
        }
        let last = self.last_heard_ms.map_or(now_ms, |l| l.max(now_ms));
        self.last_heard_ms = Some(last);
        // The first message ends the startup grace.
        self.deadline_ms = last.saturating_add(self.timeout_ms);
    }

    /// Whether the silence has lasted past the deadline.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
    }

    /// When the peer will be declared dead if nothing arrives.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// When the peer was last heard from.
    pub fn last_heard_ms(&self) -> Option<u64> {
        self.last_heard_ms
    }

    /// Heartbeat intervals beyond the first that passed in silences which
    /// ended (a silence still going on is the deadline's business).
    pub fn heartbeats_missed(&self) -> u64 {
        self.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_grace_then_timeout() {
        let mut d = FailureDetector::new(1000, 5000, 500);
        assert!(!d.expired(5999));
        assert!(d.expired(6000));
        d.heard(1200);
        // The first message ends the startup grace.
        assert_eq!(d.deadline_ms(), 1700);
        d.heard(5800);
        assert_eq!(d.deadline_ms(), 6300);
        assert!(!d.expired(6299));
        assert!(d.expired(6300));
    }

    #[test]
    fn counts_the_heartbeats_that_did_not_come() {
        let mut d = FailureDetector::new(0, 500, 100).with_heartbeat(10);
        d.heard(5);
        // On time, and a little late: nothing missed.
        d.heard(15);
        d.heard(34);
        assert_eq!(d.heartbeats_missed(), 0);
        // 45 ms of silence: four intervals, three beyond the first.
        d.heard(79);
        assert_eq!(d.heartbeats_missed(), 3);
        // Not counted without an interval.
        let mut d = FailureDetector::new(0, 500, 100);
        d.heard(0);
        d.heard(90);
        assert_eq!(d.heartbeats_missed(), 0);
    }

    #[test]
    fn time_going_backwards_never_shortens_the_deadline() {
        let mut d = FailureDetector::new(0, 500, 500);
        d.heard(400);
        d.heard(100);
        assert_eq!(d.last_heard_ms(), Some(400));
        assert_eq!(d.deadline_ms(), 900);
    }
}
