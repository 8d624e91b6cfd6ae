//! Reconnection delays: exponential from 100 ms to 2 s, with "equal jitter" (half the delay
//! fixed, half random) so members that lost a peer together do not reconnect in lockstep.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The first delay after a failure.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(2);

/// Delays between connection attempts to one peer.
#[derive(Debug)]
pub(crate) struct Backoff {
    ceiling: Duration,
    rng: StdRng,
}

impl Backoff {
    /// Seeded, so a test (or a replay of a log) sees the same delays.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            ceiling: MIN_DELAY,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt: in `[ceiling / 2, ceiling]`, after which the
    /// ceiling doubles up to [`MAX_DELAY`].
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(MAX_DELAY);
        let half = ceiling / 2;
        let jitter_nanos = self.rng.random_range(0..=half.as_nanos() as u64);
        half + Duration::from_nanos(jitter_nanos)
    }

    /// After a successful connection the next failure starts from the minimum again.
    pub(crate) fn reset(&mut self) {
        self.ceiling = MIN_DELAY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_with_bounded_jitter() {
        let mut backoff = Backoff::new(7);
        let ceilings = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for ceiling_ms in ceilings {
            let ceiling = Duration::from_millis(ceiling_ms);
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= MIN_DELAY);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_seeds_differ() {
        let delays = |seed| {
            let mut backoff = Backoff::new(seed);
            (0..6).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }
}
