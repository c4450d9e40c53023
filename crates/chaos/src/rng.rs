//! The campaign's random numbers: SplitMix64, written out here rather than
//! taken from a crate so that the mapping from a recorded seed to a trial's
//! schedule can never change under a dependency upgrade — a seed in
//! `docs/reliability.md` or a regression test must replay the same faults
//! forever. Each trial gets its own stream from (campaign seed, trial index).

/// A SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The stream of trial `trial` of the campaign with seed `seed`.
    pub fn for_trial(seed: u64, trial: u64) -> Rng {
        let mut r = Rng(seed ^ 0x6a09_e667_f3bc_c909);
        let mix = r.next_u64() ^ trial.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Rng(mix)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_fixed_by_seed_and_trial() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_trial(7, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_trial(7, 3).next_u64(),
            Rng::for_trial(7, 4).next_u64()
        );
        assert_ne!(
            Rng::for_trial(7, 3).next_u64(),
            Rng::for_trial(8, 3).next_u64()
        );
        let mut r = Rng::for_trial(1, 1);
        for _ in 0..1000 {
            let v = r.range(5, 9);
            assert!((5..=9).contains(&v));
        }
    }
}
