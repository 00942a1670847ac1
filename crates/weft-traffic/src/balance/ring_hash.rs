use std::hash::{Hash, Hasher};

use super::{Balance, Fallback, PickContext, RingHashConfig, available, fallback};
use crate::endpoint::Endpoint;
use crate::hash::{StableHasher, fmix64, hash_bytes};
use crate::rng::WyRand;

/// Consistent hashing (ketama-style ring): each endpoint owns `vnodes` points on a 64-bit ring,
/// placed by hashing its id with a stable hash (FNV-1a + murmur3 finalizer; see `hash.rs` for why); a key goes to the
/// owner of the first point at or after the key's hash. Removing an endpoint moves only the
/// keys on its points — to the next points' owners — so ≈1/n of keys move and the rest stay.
///
/// Built for one endpoint slice: [`crate::LoadBalancer`] rebuilds it on every set change.
/// Lookups are a binary search over a sorted array (≈log2(160·n) probes). An ejected owner's
/// keys go to the next available owner along the ring, so they spread over the survivors and
/// come back when it returns.
#[derive(Debug, Clone)]
pub struct RingHash {
    /// Sorted ring positions, parallel to `owners` (kept apart so the binary search touches
    /// only the positions).
    points: Box<[u64]>,
    owners: Box<[u32]>,
    /// Size of the endpoint slice the ring was built for.
    endpoints: usize,
}

/// Odd constant spreading vnode indexes before mixing (2^64 / golden ratio).
const VNODE_STEP: u64 = 0x9e37_79b9_7f4a_7c15;

impl RingHash {
    pub fn new<K: Hash>(endpoints: &[Endpoint<K>], config: RingHashConfig) -> Self {
        let n = endpoints.len();
        let vnodes = if n == 0 {
            0
        } else {
            config.vnodes.min(config.max_points / n as u32).max(1) as usize
        };
        let mut ring: Vec<(u64, u32)> = Vec::with_capacity(n * vnodes);
        for (owner, e) in endpoints.iter().enumerate() {
            let mut h = StableHasher::default();
            e.id.hash(&mut h);
            let base = h.finish();
            for v in 0..vnodes as u64 {
                ring.push((fmix64(base.wrapping_add(v.wrapping_mul(VNODE_STEP))), owner as u32));
            }
        }
        // Ties (2^-64 per pair) resolve by owner index so every process builds the same ring.
        ring.sort_unstable();
        let (points, owners) = ring.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        Self { points: points.into(), owners: owners.into(), endpoints: n }
    }

    /// Ring position at or after `hash`, wrapping.
    #[inline]
    fn position(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|&p| p < hash);
        if i == self.points.len() { 0 } else { i }
    }
}

impl<K> Balance<K> for RingHash {
    fn pick(
        &self,
        endpoints: &[Endpoint<K>],
        ctx: &PickContext<'_>,
        rng: &mut WyRand,
    ) -> Option<usize> {
        // A ring built for another slice would index out of bounds: refuse rather than panic
        // in the data plane (LoadBalancer never does this).
        debug_assert_eq!(self.endpoints, endpoints.len(), "ring built for another endpoint set");
        if self.points.is_empty() || self.endpoints != endpoints.len() {
            return None;
        }
        let hash = match ctx.hash_key {
            Some(key) => hash_bytes(key),
            None => rng.next_u64(),
        };
        let start = self.position(hash);
        let owner = self.owners[start] as usize;
        if available(endpoints, owner, ctx.now) {
            return Some(owner);
        }
        match fallback(endpoints, ctx) {
            Fallback::Panic => Some(owner),
            Fallback::None => None,
            Fallback::Available(_) => {
                let len = self.points.len();
                (1..len)
                    .map(|step| self.owners[(start + step) % len] as usize)
                    .find(|&o| available(endpoints, o, ctx.now))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::balance::test_support::{eject, endpoints};

    fn owner_ids(eps: &[Endpoint<String>], keys: &[String], now: Instant) -> Vec<String> {
        let ring = RingHash::new(eps, RingHashConfig::default());
        let mut rng = WyRand::new(0);
        keys.iter()
            .map(|k| {
                let ctx = PickContext::new(now).with_hash_key(k.as_bytes());
                eps[ring.pick(eps, &ctx, &mut rng).unwrap()].id.clone()
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user-{i}")).collect()
    }

    #[test]
    fn same_key_same_endpoint_and_balanced() {
        let t0 = Instant::now();
        let eps = endpoints(10, t0);
        let keys = keys(20_000);
        let a = owner_ids(&eps, &keys, t0);
        // Rebuilt from scratch (another sidecar, another process): identical.
        assert_eq!(a, owner_ids(&eps, &keys, t0));
        let mut share = std::collections::HashMap::new();
        for id in &a {
            *share.entry(id).or_insert(0) += 1;
        }
        assert_eq!(share.len(), 10);
        for (id, n) in share {
            // Ideal 2000 each; 160 vnodes keep every endpoint within ±25 %.
            assert!((1500..2500).contains(&n), "{id}: {n}");
        }
    }

    #[test]
    fn removing_one_of_ten_moves_only_its_keys() {
        let t0 = Instant::now();
        let eps = endpoints(10, t0);
        let keys = keys(20_000);
        let before = owner_ids(&eps, &keys, t0);
        let removed = eps[3].id.clone();
        let fewer: Vec<_> = eps.iter().filter(|e| e.id != removed).cloned().collect();
        let after = owner_ids(&fewer, &keys, t0);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let on_removed = before.iter().filter(|b| **b == removed).count();
        assert_eq!(moved, on_removed, "only keys of the removed endpoint move");
        assert!(moved * 100 < keys.len() * 20, "moved {moved} of {}", keys.len());
        // And adding it back restores the original mapping exactly.
        assert_eq!(owner_ids(&eps, &keys, t0), before);
    }

    #[test]
    fn ejected_owner_spreads_its_keys_and_gets_them_back() {
        let t0 = Instant::now();
        let eps = endpoints(5, t0);
        let keys = keys(5_000);
        let before = owner_ids(&eps, &keys, t0);
        eject(&eps[0], t0 + Duration::from_secs(30));
        let during = owner_ids(&eps, &keys, t0);
        for (b, d) in before.iter().zip(&during) {
            if *b == eps[0].id {
                assert_ne!(d, b);
            } else {
                assert_eq!(d, b, "keys of healthy endpoints stay");
            }
        }
        let heirs: std::collections::HashSet<_> =
            before.iter().zip(&during).filter(|(b, _)| **b == eps[0].id).map(|(_, d)| d).collect();
        assert!(heirs.len() >= 3, "its keys spread: {heirs:?}");
        assert_eq!(owner_ids(&eps, &keys, t0 + Duration::from_secs(30)), before);
    }

    #[test]
    fn without_a_key_picks_spread_by_ring_share() {
        let t0 = Instant::now();
        let eps = endpoints(4, t0);
        let ring = RingHash::new(&eps, RingHashConfig::default());
        let mut rng = WyRand::new(3);
        let mut counts = [0; 4];
        for _ in 0..8000 {
            counts[ring.pick(&eps, &PickContext::new(t0), &mut rng).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| (1500..2500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn ring_size_is_bounded() {
        let t0 = Instant::now();
        let eps = endpoints(2000, t0);
        let ring = RingHash::new(&eps, RingHashConfig::default());
        assert!(ring.points.len() <= 1 << 17);
        assert_eq!(ring.points.len(), 2000 * 65);
    }
}
