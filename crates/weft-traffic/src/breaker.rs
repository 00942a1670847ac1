//! Circuit breaking by admission limits (Envoy's cluster circuit breakers): caps on concurrent
//! connections, requests waiting for a connection, and requests in flight. Over a limit the
//! proxy fails fast (503) instead of queueing, which protects both the upstream and the
//! caller's memory when the upstream slows down.
//!
//! Each limit is one atomic counter. Acquisition is a compare-and-swap loop, so unlike Envoy's
//! check-then-increment the limit is exact even under races.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A cap on something concurrent.
#[derive(Debug)]
pub struct Limit {
    max: u64,
    used: AtomicU64,
}

impl Limit {
    pub const fn new(max: u64) -> Self {
        Self { max, used: AtomicU64::new(0) }
    }

    /// A slot, released when the permit drops; `None` over the limit. The permit borrows the
    /// limit, which an `async` block may hold across `.await`s of its own.
    #[inline]
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        // `then`, not `then_some`: an eagerly built Permit would be dropped on refusal and
        // release a slot it never took.
        self.try_acquire_raw().then(|| Permit { limit: self })
    }

    /// Takes a slot without a guard; the caller must [`Self::release_raw`] it (for slots whose
    /// lifetime is not a scope, e.g. a pooled connection).
    #[inline]
    pub fn try_acquire_raw(&self) -> bool {
        self.used.fetch_update(Relaxed, Relaxed, |u| (u < self.max).then_some(u + 1)).is_ok()
    }

    #[inline]
    pub fn release_raw(&self) {
        let _ = self.used.fetch_update(Relaxed, Relaxed, |u| u.checked_sub(1));
    }

    pub fn in_use(&self) -> u64 {
        self.used.load(Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Whether the next acquisition would be refused.
    pub fn is_full(&self) -> bool {
        self.in_use() >= self.max
    }
}

#[derive(Debug)]
#[must_use = "dropping the permit releases the slot at once"]
pub struct Permit<'a> {
    limit: &'a Limit,
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.limit.release_raw();
    }
}

/// The three limits of a Service's `circuitBreaker` (connection / pending / request).
#[derive(Debug)]
pub struct CircuitBreaker {
    pub connections: Limit,
    pub pending: Limit,
    pub requests: Limit,
}

impl CircuitBreaker {
    pub const fn new(max_connections: u64, max_pending: u64, max_requests: u64) -> Self {
        Self {
            connections: Limit::new(max_connections),
            pending: Limit::new(max_pending),
            requests: Limit::new(max_requests),
        }
    }

    /// Whether any limit is reached (the `weft_circuit_open` gauge).
    pub fn is_open(&self) -> bool {
        self.connections.is_full() || self.pending.is_full() || self.requests.is_full()
    }
}

impl Default for CircuitBreaker {
    /// Envoy's defaults (and weft's Service example): 1024 each.
    fn default() -> Self {
        Self::new(1024, 1024, 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_admit_up_to_max_and_release_on_drop() {
        let b = CircuitBreaker::new(2, 1, 3);
        let r: Vec<_> = (0..3).map(|_| b.requests.try_acquire().unwrap()).collect();
        assert!(b.requests.try_acquire().is_none());
        assert!(b.is_open());
        drop(r);
        assert_eq!(b.requests.in_use(), 0);
        assert!(!b.is_open());

        let p = b.pending.try_acquire().unwrap();
        assert!(b.pending.try_acquire().is_none());
        drop(p);
        assert!(b.pending.try_acquire().is_some());

        assert!(b.connections.try_acquire_raw() && b.connections.try_acquire_raw());
        assert!(!b.connections.try_acquire_raw());
        b.connections.release_raw();
        assert!(b.connections.try_acquire_raw());
        b.connections.release_raw();
        b.connections.release_raw();
        b.connections.release_raw();
        assert_eq!(b.connections.in_use(), 0, "extra releases saturate");
    }

    #[test]
    fn zero_limit_rejects_everything() {
        assert!(Limit::new(0).try_acquire().is_none());
    }

    #[test]
    fn exact_under_contention() {
        let limit = std::sync::Arc::new(Limit::new(100));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let limit = limit.clone();
                std::thread::spawn(move || {
                    let mut max_seen = 0;
                    for _ in 0..20_000 {
                        if let Some(_p) = limit.try_acquire() {
                            max_seen = max_seen.max(limit.in_use());
                        }
                    }
                    max_seen
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap() <= 100);
        }
        assert_eq!(limit.in_use(), 0);
    }
}
