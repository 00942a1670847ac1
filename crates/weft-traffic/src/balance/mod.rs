//! Load balancing: pick one endpoint of a service for a request.
//!
//! [`LoadBalancer`] is an immutable snapshot of a service's endpoint set plus the chosen
//! algorithm. Picks take `&self` and are lock-free, so one snapshot is shared by every request
//! task (e.g. in an `ArcSwap` or an `RwLock<Arc<_>>` the proxy replaces on discovery updates,
//! building the new one with [`LoadBalancer::update`], which keeps each surviving endpoint's
//! statistics). What picks read — in-flight counts, latency estimates, ejections — lives in each
//! endpoint's [`EndpointStats`] atomics, written by the request tasks
//! themselves. Randomness comes from a caller-owned [`WyRand`] (one per worker thread).
//!
//! Ejected endpoints (see [`crate::OutlierDetector`]) are skipped. If fewer than the panic
//! threshold (Envoy's `healthy_panic_threshold`, default 50 %) of the endpoints are available,
//! the balancer ignores ejections and picks among all of them, so a mass ejection — usually a
//! sign that the caller or the network is at fault — spreads load instead of crushing the few
//! survivors. The availability count costs O(n), so it is only taken when a pick's candidate
//! turns out to be ejected. `pick` returns `None` only for an empty set, or when every endpoint
//! is ejected and the panic threshold is 0.

mod least_request;
mod p2c_ewma;
mod ring_hash;
mod round_robin;

pub use least_request::LeastRequest;
pub use p2c_ewma::P2cEwma;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;

use std::collections::HashMap;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::endpoint::{Endpoint, EndpointStats};
use crate::error::ConfigError;
use crate::rng::WyRand;

/// A balancing algorithm over an endpoint slice. Implementations keep only lock-free state, so
/// `pick` takes `&self` and runs concurrently from any number of tasks.
pub trait Balance<K>: Send + Sync {
    /// The index in `endpoints` to send this request to; see the module docs for ejections.
    fn pick(
        &self,
        endpoints: &[Endpoint<K>],
        ctx: &PickContext<'_>,
        rng: &mut WyRand,
    ) -> Option<usize>;
}

/// What a pick may depend on besides the endpoints.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    pub now: Instant,
    /// Ring-hash key (e.g. a header's value); ignored by the other algorithms. Ring-hash
    /// without a key picks a random ring position.
    pub hash_key: Option<&'a [u8]>,
    /// Below this share of available endpoints, ejections are ignored (percent, 0 disables).
    pub panic_threshold: u8,
}

impl PickContext<'_> {
    pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;

    pub fn new(now: Instant) -> Self {
        PickContext { now, hash_key: None, panic_threshold: Self::DEFAULT_PANIC_THRESHOLD }
    }

    pub fn with_hash_key(self, key: &[u8]) -> PickContext<'_> {
        PickContext { hash_key: Some(key), ..self }
    }
}

/// p2c-ewma settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EwmaConfig {
    /// Time constant of the latency estimate's decay.
    pub decay: Duration,
    /// Latency assumed for an endpoint with no samples yet.
    pub prior: Duration,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        Self { decay: Duration::from_secs(10), prior: Duration::from_millis(30) }
    }
}

/// ring-hash settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingHashConfig {
    /// Ring points per endpoint. Fixed rather than derived from the endpoint count, so adding
    /// or removing one endpoint leaves every other endpoint's points where they were and only
    /// ≈1/n of keys move. 160 (ketama's figure) keeps each endpoint's share within about ±10 %.
    pub vnodes: u32,
    /// Bound on the whole ring (12 bytes per point); above `max_points / vnodes` endpoints each
    /// endpoint gets fewer points.
    pub max_points: u32,
}

impl Default for RingHashConfig {
    fn default() -> Self {
        Self { vnodes: 160, max_points: 1 << 17 }
    }
}

/// Which balancer a service uses (the Service's `traffic.loadBalancer`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency × (in-flight + 1).
    P2cEwma(EwmaConfig),
    /// Consistent hashing of [`PickContext::hash_key`].
    RingHash(RingHashConfig),
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::P2cEwma(EwmaConfig::default())
    }
}

impl FromStr for Algorithm {
    type Err = ConfigError;

    /// The YAML names, with default settings.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Ok(match s {
            "round-robin" => Algorithm::RoundRobin,
            "least-request" => Algorithm::LeastRequest,
            "p2c-ewma" => Algorithm::P2cEwma(EwmaConfig::default()),
            "ring-hash" => Algorithm::RingHash(RingHashConfig::default()),
            other => return Err(ConfigError::UnknownAlgorithm(other.to_owned())),
        })
    }
}

#[derive(Debug)]
enum Strategy {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    P2cEwma(P2cEwma),
    RingHash(RingHash),
}

/// A service's endpoint set with its balancer: see the module docs.
#[derive(Debug)]
pub struct LoadBalancer<K> {
    algorithm: Algorithm,
    panic_threshold: u8,
    endpoints: Vec<Endpoint<K>>,
    strategy: Strategy,
}

impl<K: Hash + Eq + Clone> LoadBalancer<K> {
    /// A balancer over `ids` (duplicates are dropped; order is kept and matters only to
    /// round-robin).
    pub fn new(algorithm: Algorithm, ids: impl IntoIterator<Item = K>, now: Instant) -> Self {
        Self::build(algorithm, PickContext::DEFAULT_PANIC_THRESHOLD, ids, now, |_| None, 0)
    }

    /// The same balancer over a new endpoint set: endpoints whose id was already present keep
    /// their statistics (latency, in-flight, ejection), new ones start fresh.
    pub fn update(&self, ids: impl IntoIterator<Item = K>, now: Instant) -> Self {
        let old: HashMap<&K, &Arc<EndpointStats>> =
            self.endpoints.iter().map(|e| (&e.id, &e.stats)).collect();
        let rr_next = match &self.strategy {
            Strategy::RoundRobin(rr) => rr.position(),
            _ => 0,
        };
        Self::build(
            self.algorithm,
            self.panic_threshold,
            ids,
            now,
            |id| old.get(id).map(|s| Arc::clone(s)),
            rr_next,
        )
    }

    /// Overrides the panic threshold (percent of endpoints that must be available for
    /// ejections to be honoured; 0 never panics, 100 ignores ejection unless all are healthy).
    pub fn with_panic_threshold(mut self, percent: u8) -> Self {
        self.panic_threshold = percent.min(100);
        self
    }

    fn build(
        algorithm: Algorithm,
        panic_threshold: u8,
        ids: impl IntoIterator<Item = K>,
        now: Instant,
        existing: impl Fn(&K) -> Option<Arc<EndpointStats>>,
        rr_next: usize,
    ) -> Self {
        let decay = match algorithm {
            Algorithm::P2cEwma(c) => c.decay,
            _ => EwmaConfig::default().decay,
        };
        let mut seen = std::collections::HashSet::new();
        let endpoints: Vec<Endpoint<K>> = ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .map(|id| {
                let stats =
                    existing(&id).unwrap_or_else(|| Arc::new(EndpointStats::new(now, decay)));
                Endpoint { id, stats }
            })
            .collect();
        let strategy = match algorithm {
            Algorithm::RoundRobin => Strategy::RoundRobin(RoundRobin::starting_at(rr_next)),
            Algorithm::LeastRequest => Strategy::LeastRequest(LeastRequest),
            Algorithm::P2cEwma(c) => Strategy::P2cEwma(P2cEwma::new(c.prior)),
            Algorithm::RingHash(c) => Strategy::RingHash(RingHash::new(&endpoints, c)),
        };
        LoadBalancer { algorithm, panic_threshold, endpoints, strategy }
    }
}

impl<K> LoadBalancer<K> {
    /// The endpoint for a request. `hash_key` is only used by ring-hash.
    #[inline]
    pub fn pick(
        &self,
        now: Instant,
        hash_key: Option<&[u8]>,
        rng: &mut WyRand,
    ) -> Option<&Endpoint<K>> {
        let ctx = PickContext { now, hash_key, panic_threshold: self.panic_threshold };
        let eps = &self.endpoints[..];
        let i = match &self.strategy {
            Strategy::RoundRobin(b) => b.pick(eps, &ctx, rng),
            Strategy::LeastRequest(b) => b.pick(eps, &ctx, rng),
            Strategy::P2cEwma(b) => b.pick(eps, &ctx, rng),
            Strategy::RingHash(b) => b.pick(eps, &ctx, rng),
        }?;
        eps.get(i)
    }

    pub fn endpoints(&self) -> &[Endpoint<K>] {
        &self.endpoints
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether picks at `now` ignore ejections (fewer than the threshold available); O(n),
    /// for metrics.
    pub fn in_panic(&self, now: Instant) -> bool {
        let available = count_available(&self.endpoints, now);
        panicking(available, self.endpoints.len(), self.panic_threshold)
    }
}

// Shared by the algorithms: the ejection handling described in the module docs.

#[inline]
fn available<K>(endpoints: &[Endpoint<K>], i: usize, now: Instant) -> bool {
    !endpoints[i].stats.is_ejected(now)
}

fn count_available<K>(endpoints: &[Endpoint<K>], now: Instant) -> usize {
    endpoints.iter().filter(|e| !e.stats.is_ejected(now)).count()
}

#[inline]
fn panicking(available: usize, total: usize, threshold: u8) -> bool {
    available * 100 < total * usize::from(threshold)
}

/// Where a pick whose first choice was ejected may go instead.
enum Fallback {
    /// Below the panic threshold: keep the first choice regardless.
    Panic,
    /// Choose among the `n` available endpoints.
    Available(usize),
    /// Nothing available and panic disabled.
    None,
}

fn fallback<K>(endpoints: &[Endpoint<K>], ctx: &PickContext<'_>) -> Fallback {
    let n = count_available(endpoints, ctx.now);
    if panicking(n, endpoints.len(), ctx.panic_threshold) {
        Fallback::Panic
    } else if n == 0 {
        Fallback::None
    } else {
        Fallback::Available(n)
    }
}

/// Index of the `k`-th available endpoint (0-based), O(n).
fn nth_available<K>(endpoints: &[Endpoint<K>], k: usize, now: Instant) -> Option<usize> {
    (0..endpoints.len()).filter(|&i| available(endpoints, i, now)).nth(k)
}

/// Power of two choices: two distinct random endpoints, the one with the lower `cost` wins.
/// Mitzenmacher's result: almost the balance of scanning for the minimum at O(1) cost, and
/// without the herding that "always pick the global minimum" causes across many sidecars.
#[inline]
fn p2c<K, C: PartialOrd>(
    endpoints: &[Endpoint<K>],
    ctx: &PickContext<'_>,
    rng: &mut WyRand,
    cost: impl Fn(&EndpointStats) -> C,
) -> Option<usize> {
    let n = endpoints.len();
    let better = |a: usize, b: usize| {
        if cost(&endpoints[b].stats) < cost(&endpoints[a].stats) { b } else { a }
    };
    match n {
        0 => return None,
        1 => {
            return match available(endpoints, 0, ctx.now) {
                true => Some(0),
                false => match fallback(endpoints, ctx) {
                    Fallback::Panic => Some(0),
                    _ => None,
                },
            };
        }
        _ => {}
    }
    let (a, b) = two_distinct(rng, n);
    if available(endpoints, a, ctx.now) && available(endpoints, b, ctx.now) {
        return Some(better(a, b));
    }
    match fallback(endpoints, ctx) {
        Fallback::Panic => Some(better(a, b)),
        Fallback::None => None,
        Fallback::Available(1) => nth_available(endpoints, 0, ctx.now),
        Fallback::Available(m) => {
            let (ka, kb) = two_distinct(rng, m);
            let a = nth_available(endpoints, ka, ctx.now)?;
            let b = nth_available(endpoints, kb, ctx.now)?;
            Some(better(a, b))
        }
    }
}

/// Two distinct uniform indices in `0..n`, `n >= 2`.
#[inline]
fn two_distinct(rng: &mut WyRand, n: usize) -> (usize, usize) {
    let a = rng.below(n);
    let mut b = rng.below(n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn endpoints(n: usize, now: Instant) -> Vec<Endpoint<String>> {
        (0..n)
            .map(|i| Endpoint {
                id: format!("10.0.0.{i}:8080"),
                stats: Arc::new(EndpointStats::new(now, Duration::from_secs(10))),
            })
            .collect()
    }

    /// Ejects endpoint `i` until `until` (bypassing the detector's bookkeeping).
    pub fn eject<K>(e: &Endpoint<K>, until: Instant) {
        let ns = e.stats.nanos(until);
        e.stats.outlier.ejected_until.store(ns, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    fn all() -> [Algorithm; 4] {
        ["round-robin", "least-request", "p2c-ewma", "ring-hash"].map(|s| s.parse().unwrap())
    }

    #[test]
    fn parse_names() {
        assert_eq!("round-robin".parse::<Algorithm>().unwrap(), Algorithm::RoundRobin);
        assert_eq!(Algorithm::default(), Algorithm::P2cEwma(EwmaConfig::default()));
        assert!(matches!(
            "random".parse::<Algorithm>(),
            Err(ConfigError::UnknownAlgorithm(s)) if s == "random"
        ));
    }

    #[test]
    fn zero_endpoints_pick_none() {
        let t0 = Instant::now();
        let mut rng = WyRand::new(1);
        for alg in all() {
            let lb = LoadBalancer::<String>::new(alg, [], t0);
            assert!(lb.pick(t0, Some(b"k"), &mut rng).is_none(), "{alg:?}");
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped_and_panic_mode_uses_all() {
        let t0 = Instant::now();
        let mut rng = WyRand::new(2);
        for alg in all() {
            let lb = LoadBalancer::new(alg, (0..4).map(|i| format!("e{i}")), t0);
            eject(&lb.endpoints()[1], t0 + Duration::from_secs(30));
            for i in 0..400 {
                let key = format!("key-{i}");
                let e = lb.pick(t0, Some(key.as_bytes()), &mut rng).unwrap();
                assert_ne!(e.id, "e1", "{alg:?}");
            }
            assert!(!lb.in_panic(t0));
            // 3 of 4 ejected: 25 % available < 50 % → picks spread over all four again.
            eject(&lb.endpoints()[2], t0 + Duration::from_secs(30));
            eject(&lb.endpoints()[3], t0 + Duration::from_secs(30));
            assert!(lb.in_panic(t0));
            let mut seen = std::collections::HashSet::new();
            for i in 0..400 {
                let key = format!("key-{i}");
                seen.insert(lb.pick(t0, Some(key.as_bytes()), &mut rng).unwrap().id.clone());
            }
            assert_eq!(seen.len(), 4, "{alg:?}: {seen:?}");
            // Panic disabled: only e0 serves; with all ejected, nothing does.
            let strict = lb.update((0..4).map(|i| format!("e{i}")), t0).with_panic_threshold(0);
            for i in 0..100 {
                let key = format!("key-{i}");
                assert_eq!(strict.pick(t0, Some(key.as_bytes()), &mut rng).unwrap().id, "e0");
            }
            eject(&strict.endpoints()[0], t0 + Duration::from_secs(30));
            assert!(strict.pick(t0, Some(b"k"), &mut rng).is_none(), "{alg:?}");
            // Ejection ends by time alone.
            let later = t0 + Duration::from_secs(31);
            assert!(!lb.in_panic(later));
            assert!(strict.pick(later, Some(b"k"), &mut rng).is_some());
        }
    }

    #[test]
    fn shared_between_threads() {
        // The proxy's shape: one snapshot, many tasks, one generator per thread.
        let t0 = Instant::now();
        for alg in all() {
            let lb = Arc::new(LoadBalancer::new(alg, 0..8, t0));
            let threads: Vec<_> = (0..4u64)
                .map(|seed| {
                    let lb = Arc::clone(&lb);
                    std::thread::spawn(move || {
                        let mut rng = WyRand::new(seed);
                        for i in 0..5_000u64 {
                            let now = t0 + Duration::from_micros(i);
                            let key = i.to_le_bytes();
                            let e = lb.pick(now, Some(&key), &mut rng).unwrap();
                            let guard = e.stats.track();
                            guard.finish(now, Duration::from_millis(1 + i % 7));
                        }
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            assert!(lb.endpoints().iter().all(|e| e.stats.in_flight() == 0), "{alg:?}");
        }
    }

    #[test]
    fn update_keeps_stats_of_surviving_ids() {
        let t0 = Instant::now();
        let lb = LoadBalancer::new(Algorithm::default(), ["a", "b", "c"], t0);
        lb.endpoints()[1].stats.begin();
        lb.endpoints()[1].stats.observe_latency(t0, Duration::from_millis(7));
        let lb2 = lb.update(["b", "d", "b"], t0);
        assert_eq!(lb2.endpoints().iter().map(|e| e.id).collect::<Vec<_>>(), ["b", "d"]);
        assert!(Arc::ptr_eq(&lb.endpoints()[1].stats, &lb2.endpoints()[0].stats));
        assert_eq!(lb2.endpoints()[0].stats.in_flight(), 1);
        assert_eq!(lb2.endpoints()[1].stats.latency_estimate(t0), None);
    }
}
