use std::time::Duration;

use super::{Balance, PickContext, p2c};
use crate::endpoint::Endpoint;
use crate::rng::WyRand;

/// Power of two choices on peak-EWMA latency × (in-flight + 1) — linkerd's and Finagle's
/// default. Latency alone would pile load on the fastest endpoint until it slows down; the
/// in-flight factor makes the cost rise the moment requests queue there. Endpoints without
/// samples cost the `prior`, so new endpoints get traffic without being flooded.
#[derive(Debug, Clone, Copy)]
pub struct P2cEwma {
    prior_ns: f64,
}

impl P2cEwma {
    pub fn new(prior: Duration) -> Self {
        Self { prior_ns: prior.as_nanos() as f64 }
    }
}

impl Default for P2cEwma {
    fn default() -> Self {
        Self::new(super::EwmaConfig::default().prior)
    }
}

impl<K> Balance<K> for P2cEwma {
    #[inline]
    fn pick(
        &self,
        endpoints: &[Endpoint<K>],
        ctx: &PickContext<'_>,
        rng: &mut WyRand,
    ) -> Option<usize> {
        p2c(endpoints, ctx, rng, |s| {
            s.latency_ns(ctx.now).unwrap_or(self.prior_ns) * (s.in_flight() + 1) as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::balance::test_support::endpoints;

    const MS: Duration = Duration::from_millis(1);

    /// Runs `picks` requests, one per millisecond of simulated time, each answered at once with
    /// `latency[i]`; returns the final time and the pick counts.
    fn run(
        eps: &[Endpoint<String>],
        lb: &P2cEwma,
        rng: &mut WyRand,
        mut now: Instant,
        picks: usize,
        latency: &[Duration],
    ) -> (Instant, Vec<usize>) {
        let mut counts = vec![0; eps.len()];
        for _ in 0..picks {
            now += MS;
            let i = lb.pick(eps, &PickContext::new(now), rng).unwrap();
            counts[i] += 1;
            eps[i].stats.observe_latency(now, latency[i]);
        }
        (now, counts)
    }

    #[test]
    fn shifts_away_from_a_slow_endpoint_and_recovers_after_decay() {
        let t0 = Instant::now();
        let eps = endpoints(3, t0);
        let lb = P2cEwma::default();
        let mut rng = WyRand::new(5);
        let slow = [10 * MS, 10 * MS, 500 * MS];
        let (now, counts) = run(&eps, &lb, &mut rng, t0, 2000, &slow);
        // One 500 ms sample makes endpoint 2 lose every pair until its estimate decays below
        // 10 ms: 10 s × ln(50) ≈ 39 s, longer than these 2 s.
        assert!(counts[2] * 100 < 2000, "slow share {counts:?}");
        assert!(counts[2] <= 3, "{counts:?}");

        // Endpoint 2 is healthy again. Its estimate decays during a minute of silence,
        // and since low samples blend in, it wins pairs again and takes its share back.
        let fast = [10 * MS; 3];
        let (_, counts) = run(&eps, &lb, &mut rng, now + Duration::from_secs(60), 3000, &fast);
        assert!(counts[2] > 800, "recovered share {counts:?}");
    }

    #[test]
    fn prior_makes_new_endpoints_cost_30ms() {
        let t0 = Instant::now();
        let eps = endpoints(2, t0);
        let lb = P2cEwma::default();
        let mut rng = WyRand::new(6);
        // Endpoint 0 measured at 20 ms beats the unmeasured endpoint 1 (prior 30 ms) …
        eps[0].stats.observe_latency(t0, 20 * MS);
        for _ in 0..10 {
            assert_eq!(lb.pick(&eps, &PickContext::new(t0), &mut rng), Some(0));
        }
        // … but at 40 ms it loses to it.
        eps[0].stats.observe_latency(t0, 40 * MS);
        for _ in 0..10 {
            assert_eq!(lb.pick(&eps, &PickContext::new(t0), &mut rng), Some(1));
        }
    }

    #[test]
    fn in_flight_multiplies_cost() {
        let t0 = Instant::now();
        let eps = endpoints(2, t0);
        let lb = P2cEwma::default();
        let mut rng = WyRand::new(7);
        eps[0].stats.observe_latency(t0, 10 * MS);
        eps[1].stats.observe_latency(t0, 25 * MS);
        assert_eq!(lb.pick(&eps, &PickContext::new(t0), &mut rng), Some(0));
        // 10 ms × 3 in flight = 30 ms > 25 ms × 1.
        eps[0].stats.begin();
        eps[0].stats.begin();
        assert_eq!(lb.pick(&eps, &PickContext::new(t0), &mut rng), Some(1));
    }
}
