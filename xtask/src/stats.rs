//! Latency summaries (nearest-rank percentiles) and a tiny deterministic PRNG for key choice.

use std::fmt;
use std::time::Duration;

/// Latency figures of one run, from samples in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencySummary {
    /// Sorts `micros` in place and summarizes it; `None` when there are no samples.
    pub fn from_micros(micros: &mut [u64]) -> Option<LatencySummary> {
        if micros.is_empty() {
            return None;
        }
        micros.sort_unstable();
        let at = |p| Duration::from_micros(percentile_of_sorted(micros, p));
        Some(LatencySummary {
            count: micros.len(),
            p50: at(50.0),
            p99: at(99.0),
            max: at(100.0),
        })
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} p99 {} max {}",
            millis(self.p50),
            millis(self.p99),
            millis(self.max)
        )
    }
}

/// A duration as milliseconds with three significant decimals ("2.315ms").
pub fn millis(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1e3)
}

/// The nearest-rank percentile of an ascending, non-empty slice: the smallest sample such that
/// at least `p` percent of the samples are less than or equal to it.
pub fn percentile_of_sorted(sorted: &[u64], p: f64) -> u64 {
    debug_assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// SplitMix64: seeded per client so a run's key sequence is reproducible.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` for key choice (modulo bias is irrelevant here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_of_sorted(&sorted, 50.0), 50);
        assert_eq!(percentile_of_sorted(&sorted, 99.0), 99);
        assert_eq!(percentile_of_sorted(&sorted, 100.0), 100);
        assert_eq!(percentile_of_sorted(&sorted, 0.0), 1);
        // Ten samples: p99 is the largest (rank ceil(9.9) = 10), p50 the fifth.
        let ten: Vec<u64> = (10..=100).step_by(10).collect();
        assert_eq!(percentile_of_sorted(&ten, 99.0), 100);
        assert_eq!(percentile_of_sorted(&ten, 50.0), 50);
        assert_eq!(percentile_of_sorted(&[7], 50.0), 7);
    }

    #[test]
    fn summary_sorts_its_input() {
        let mut samples = vec![5000, 1000, 3000, 2000, 4000];
        let summary = LatencySummary::from_micros(&mut samples).unwrap();
        assert_eq!(summary.count, 5);
        assert_eq!(summary.p50, Duration::from_millis(3));
        assert_eq!(summary.p99, Duration::from_millis(5));
        assert_eq!(summary.max, Duration::from_millis(5));
        assert_eq!(summary.to_string(), "p50 3.000ms p99 5.000ms max 5.000ms");
        assert!(LatencySummary::from_micros(&mut []).is_none());
    }

    #[test]
    fn prng_is_seeded_and_bounded() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let first: Vec<u64> = (0..8).map(|_| a.below(10)).collect();
        let second: Vec<u64> = (0..8).map(|_| b.below(10)).collect();
        assert_eq!(first, second);
        assert!(first.iter().all(|&k| k < 10));
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }
}
