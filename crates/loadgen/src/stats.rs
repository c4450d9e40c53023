//! Summary statistics of a write run, computed once at the end from the
//! per-operation timestamps: latency percentiles (nearest-rank, so every
//! reported value is a latency that was actually observed) and the gaps
//! between consecutive successful replies. The longest gap is the number a
//! failover test cares about: it is how long the client saw the service stall
//! while the backup took over. All times are microseconds since the start of
//! the run.

use serde::Serialize;

/// The interval between two consecutive successful replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Length of the interval.
    pub gap_us: u64,
    /// When the earlier of the two replies arrived.
    pub start_us: u64,
    /// When the later of the two replies arrived.
    pub end_us: u64,
}

/// Nearest-rank percentile `p` (0 < p <= 100) of `sorted`, which must be in
/// ascending order; `None` when there are no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}

/// The `n` longest gaps between consecutive entries of `reply_times` (which
/// must be non-decreasing), longest first; among equal gaps the earlier one
/// comes first.
pub fn top_gaps(reply_times: &[u64], n: usize) -> Vec<Gap> {
    let mut top: Vec<Gap> = Vec::with_capacity(n + 1);
    if n == 0 {
        return top;
    }
    for pair in reply_times.windows(2) {
        let gap = Gap {
            gap_us: pair[1].saturating_sub(pair[0]),
            start_us: pair[0],
            end_us: pair[1],
        };
        if top.len() == n && top.last().is_some_and(|last| last.gap_us >= gap.gap_us) {
            continue;
        }
        // Insert after every gap at least as long: keeps order stable.
        let at = top.partition_point(|g| g.gap_us >= gap.gap_us);
        top.insert(at, gap);
        top.truncate(n);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(50));
        assert_eq!(percentile(&hundred, 99.0), Some(99));
        assert_eq!(percentile(&hundred, 100.0), Some(100));
        let four = [10, 20, 30, 40];
        assert_eq!(percentile(&four, 50.0), Some(20));
        assert_eq!(percentile(&four, 99.0), Some(40));
        assert_eq!(percentile(&four, 0.0), Some(10));
    }

    #[test]
    fn gaps_need_two_replies() {
        assert!(top_gaps(&[], 3).is_empty());
        assert!(top_gaps(&[5], 3).is_empty());
        assert!(top_gaps(&[1, 2, 3], 0).is_empty());
    }

    #[test]
    fn finds_the_longest_gaps_in_order() {
        // Gaps: 10, 500, 10, 2000, 10, 500, 30
        let times = [0, 10, 510, 520, 2520, 2530, 3030, 3060];
        let top = top_gaps(&times, 3);
        assert_eq!(
            top,
            vec![
                Gap {
                    gap_us: 2000,
                    start_us: 520,
                    end_us: 2520
                },
                Gap {
                    gap_us: 500,
                    start_us: 10,
                    end_us: 510
                },
                Gap {
                    gap_us: 500,
                    start_us: 2530,
                    end_us: 3030
                },
            ]
        );
        let all = top_gaps(&times, 100);
        assert_eq!(all.len(), times.len() - 1);
        assert!(all.windows(2).all(|w| w[0].gap_us >= w[1].gap_us));
    }

    #[test]
    fn equal_times_give_zero_gaps() {
        let top = top_gaps(&[4, 4, 4], 3);
        assert_eq!(top.len(), 2);
        assert!(top.iter().all(|g| g.gap_us == 0));
        assert_eq!(top[0].start_us, 4);
    }
}
