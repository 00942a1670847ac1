use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Balance, Fallback, PickContext, available, fallback};
use crate::endpoint::Endpoint;
use crate::rng::WyRand;

/// Each endpoint in turn. One shared counter, advanced with `fetch_add`: exact rotation from a
/// single task, and from many tasks still exactly one pick per counter value.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues a rotation (the proxy's endpoint-set updates should not restart every
    /// sidecar at endpoint 0).
    pub fn starting_at(position: usize) -> Self {
        Self { next: AtomicUsize::new(position) }
    }

    pub(super) fn position(&self) -> usize {
        self.next.load(Relaxed)
    }
}

impl<K> Balance<K> for RoundRobin {
    fn pick(
        &self,
        endpoints: &[Endpoint<K>],
        ctx: &PickContext<'_>,
        _: &mut WyRand,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let first = self.next.fetch_add(1, Relaxed) % n;
        if available(endpoints, first, ctx.now) {
            return Some(first);
        }
        match fallback(endpoints, ctx) {
            Fallback::Panic => Some(first),
            Fallback::None => None,
            // Taking fresh counter values (rather than walking to the next index) keeps the
            // rotation fair: every available endpoint still gets exactly one value per cycle.
            Fallback::Available(_) => (0..n)
                .map(|_| self.next.fetch_add(1, Relaxed) % n)
                .find(|&i| available(endpoints, i, ctx.now))
                // Other tasks took the values we needed; any available one will do.
                .or_else(|| (0..n).find(|&i| available(endpoints, i, ctx.now))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::balance::test_support::{eject, endpoints};

    #[test]
    fn rotates_fairly() {
        let t0 = Instant::now();
        let eps = endpoints(3, t0);
        let rr = RoundRobin::new();
        let ctx = PickContext::new(t0);
        let mut rng = WyRand::new(0);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&eps, &ctx, &mut rng).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[rr.pick(&eps, &ctx, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts, [1000; 3]);
    }

    #[test]
    fn stays_fair_around_an_ejected_endpoint() {
        let t0 = Instant::now();
        let eps = endpoints(4, t0);
        eject(&eps[1], t0 + Duration::from_secs(1));
        let rr = RoundRobin::new();
        let ctx = PickContext::new(t0);
        let mut rng = WyRand::new(0);
        let mut counts = [0; 4];
        for _ in 0..3000 {
            counts[rr.pick(&eps, &ctx, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 0, 1000, 1000]);
    }
}
