//! Choosing an upstream for a request.
//!
//! The data path only sees [`Balancer::pick`]; the weft-traffic algorithms (least-request,
//! p2c-ewma, ring-hash) become further variants fed by `on_complete`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The balancing algorithm over a fixed set of `n` upstreams.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Each upstream in turn.
    RoundRobin { next: AtomicUsize, n: usize },
}

impl Balancer {
    pub(crate) fn round_robin(n: usize) -> Balancer {
        Balancer::RoundRobin { next: AtomicUsize::new(0), n: n.max(1) }
    }

    /// The index of the upstream for the next request.
    #[inline]
    pub(crate) fn pick(&self) -> usize {
        match self {
            Balancer::RoundRobin { next, n } => {
                if *n == 1 {
                    0
                } else {
                    next.fetch_add(1, Ordering::Relaxed) % n
                }
            }
        }
    }

    /// Feedback once a request to `upstream` finished (used by load-aware algorithms).
    #[inline]
    pub(crate) fn on_complete(&self, _upstream: usize, _ok: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::round_robin(3);
        let picks: Vec<_> = (0..6).map(|_| b.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let one = Balancer::round_robin(1);
        assert_eq!((one.pick(), one.pick()), (0, 0));
    }
}
