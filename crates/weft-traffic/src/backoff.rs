use std::time::Duration;

use crate::rng::WyRand;

/// Exponential backoff with full jitter between retries: the n-th retry waits a uniform random
/// time in `[0, min(max, base × 2^(n-1))]` (Envoy's scheme, AWS's "full jitter"). The jitter is
/// what matters: retries from many callers hit by the same failure spread out instead of
/// arriving as a synchronized wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// Envoy's defaults: 25 ms base, 10 × base cap.
    fn default() -> Self {
        Self::new(Duration::from_millis(25), Duration::from_millis(250))
    }
}

impl Backoff {
    /// `max` below `base` is raised to `base`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base) }
    }

    /// Upper bound of the n-th retry's delay (n ≥ 1).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(31);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before the n-th retry (1 = first retry).
    pub fn delay(&self, retry: u32, rng: &mut WyRand) -> Duration {
        self.ceiling(retry).mul_f64(rng.next_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::default();
        let ceilings: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250]);
        assert_eq!(b.ceiling(u32::MAX), 250 * MS);
        assert_eq!(b.ceiling(0), 25 * MS);
        assert_eq!(Backoff::new(100 * MS, MS).ceiling(3), 100 * MS);
    }

    #[test]
    fn jitter_is_uniform_below_the_ceiling_and_deterministic() {
        let b = Backoff::default();
        let mut rng = WyRand::new(9);
        let delays: Vec<Duration> = (0..10_000).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d < 100 * MS));
        let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
        assert!((45 * MS..55 * MS).contains(&mean), "{mean:?}");
        assert_eq!(b.delay(2, &mut WyRand::new(1)), b.delay(2, &mut WyRand::new(1)));
    }
}
