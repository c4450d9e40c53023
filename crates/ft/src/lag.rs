//! Execution-lag measurement for the primary. The lag in instructions is
//! the primary's instruction count minus the count the backup last reported
//! executing; the lag in milliseconds is that distance divided by the
//! primary's own recent execution rate (an average over progress reports
//! that advanced), i.e. roughly how long the backup needs to catch up if it
//! runs as fast as the primary — the replay time a failover would cost.
//! Pauses (throttling, an idle guest) do not count as execution time.

/// Weight of a new rate sample in the moving average.
const ALPHA: f64 = 0.125;

#[derive(Debug, Clone, Default)]
pub(crate) struct LagMeter {
    icount: u64,
    last: Option<(u64, u64)>,
    /// Instructions per millisecond while executing.
    rate: Option<f64>,
    backup_icount: u64,
}

impl LagMeter {
    /// The primary's machine is at `icount` at `now_ms`.
    pub fn progress(&mut self, now_ms: u64, icount: u64) {
        if let Some((t, i)) = self.last {
            let dt = now_ms.saturating_sub(t);
            let di = icount.saturating_sub(i);
            if dt > 0 && di > 0 {
                let sample = di as f64 / dt as f64;
                self.rate = Some(match self.rate {
                    Some(r) => r + ALPHA * (sample - r),
                    None => sample,
                });
            }
        }
        if self.last.is_none_or(|(t, _)| now_ms >= t) {
            self.last = Some((now_ms, icount.max(self.icount)));
        }
        self.icount = self.icount.max(icount);
    }

    /// The primary's icount without a time (a log entry's).
    pub fn saw_icount(&mut self, icount: u64) {
        self.icount = self.icount.max(icount);
    }

    pub fn icount(&self) -> u64 {
        self.icount
    }

    /// The backup reported executing up to `icount`.
    pub fn backup_at(&mut self, icount: u64) {
        self.backup_icount = self.backup_icount.max(icount);
    }

    pub fn backup_icount(&self) -> u64 {
        self.backup_icount
    }

    pub fn instructions(&self) -> u64 {
        self.icount.saturating_sub(self.backup_icount)
    }

    /// Instructions per millisecond, once measured.
    #[cfg(test)]
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    pub fn millis(&self) -> Option<u64> {
        let r = self.rate?;
        if r <= 0.0 {
            return None;
        }
        Some((self.instructions() as f64 / r).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_execution_time_only() {
        let mut m = LagMeter::default();
        m.progress(0, 0);
        m.progress(10, 10_000); // 1000 instructions per ms
        m.progress(50, 10_000); // paused: no sample
        m.progress(51, 11_000);
        assert_eq!(m.rate(), Some(1000.0));
        m.backup_at(6_000);
        assert_eq!(m.instructions(), 5_000);
        assert_eq!(m.millis(), Some(5));
        m.backup_at(1_000); // stale report
        assert_eq!(m.backup_icount(), 6_000);
    }

    #[test]
    fn unknown_rate_means_unknown_lag() {
        let mut m = LagMeter::default();
        m.saw_icount(500);
        assert_eq!(m.instructions(), 500);
        assert_eq!(m.millis(), None);
    }
}
