use super::{Balance, PickContext, p2c};
use crate::endpoint::Endpoint;
use crate::rng::WyRand;

/// Power of two choices on in-flight requests (Envoy's `LEAST_REQUEST` with `choice_count: 2`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastRequest;

impl<K> Balance<K> for LeastRequest {
    #[inline]
    fn pick(
        &self,
        endpoints: &[Endpoint<K>],
        ctx: &PickContext<'_>,
        rng: &mut WyRand,
    ) -> Option<usize> {
        p2c(endpoints, ctx, rng, |s| s.in_flight())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::balance::test_support::endpoints;

    #[test]
    fn prefers_fewer_in_flight() {
        let t0 = Instant::now();
        let eps = endpoints(3, t0);
        for _ in 0..10 {
            eps[0].stats.begin();
        }
        eps[1].stats.begin();
        let ctx = PickContext::new(t0);
        let mut rng = WyRand::new(3);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[LeastRequest.pick(&eps, &ctx, &mut rng).unwrap()] += 1;
        }
        // The busiest endpoint loses every pair it is in; the idle one wins every pair.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!((900..1100).contains(&counts[1]), "{counts:?}");
        assert!((1900..2100).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn balances_live_load() {
        // Requests that stay in flight: picks should keep the counts level.
        let t0 = Instant::now();
        let eps = endpoints(5, t0);
        let ctx = PickContext::new(t0);
        let mut rng = WyRand::new(4);
        for _ in 0..500 {
            let i = LeastRequest.pick(&eps, &ctx, &mut rng).unwrap();
            eps[i].stats.begin();
        }
        let loads: Vec<u64> = eps.iter().map(|e| e.stats.in_flight()).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 3, "{loads:?}");
    }
}
