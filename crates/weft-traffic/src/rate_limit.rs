//! Token buckets for inbound rate limits (per service and per route).
//!
//! Implemented as GCRA (the "generic cell rate algorithm"), which behaves exactly like a token
//! bucket of capacity `burst` refilled at `rate` per second, but keeps all its state in one
//! number — the theoretical arrival time (TAT) of the next request at the steady rate — so a
//! decision is a single compare-and-swap on one `AtomicU64`, with no lock and no separate
//! "last refill" timestamp to keep consistent. Tokens available at `now` =
//! `(now + burst·T − TAT) / T` with `T = 1/rate`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::ConfigError;
use crate::nanos_since;

#[derive(Debug)]
pub struct TokenBucket {
    epoch: Instant,
    /// Nanoseconds per token (T).
    interval: u64,
    /// burst·T: how far TAT may run ahead of now.
    tolerance: u64,
    /// Epoch nanoseconds; starts at 0, i.e. the bucket starts full.
    tat: AtomicU64,
}

/// A denied request, with how long until a token is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub retry_after: Duration,
}

impl Denied {
    /// For a 429's `Retry-After` header: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` stored (0 is taken as 1: a bucket that can
    /// hold no token would refuse everything). Starts full.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Result<Self, ConfigError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ConfigError::NotPositive {
                what: "rate limit requestsPerSecond",
                value: rate,
            });
        }
        // `as` saturates, so absurdly low rates become "one token per 584 years", not a panic.
        let interval = ((1e9 / rate).round() as u64).max(1);
        let tolerance = interval.saturating_mul(u64::from(burst.max(1)));
        Ok(Self { epoch: now, interval, tolerance, tat: AtomicU64::new(0) })
    }

    /// Takes one token, or says how long until one is available.
    #[inline]
    pub fn try_acquire(&self, now: Instant) -> Result<(), Denied> {
        let now = nanos_since(self.epoch, now);
        let limit = now.saturating_add(self.tolerance);
        let mut tat = self.tat.load(Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            if next > limit {
                return Err(Denied { retry_after: Duration::from_nanos(next - limit) });
            }
            match self.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Returns a token taken at `now` that went unused (another limit refused the request).
    /// Never fills the bucket beyond `burst`.
    pub fn refund(&self, now: Instant) {
        let now = nanos_since(self.epoch, now);
        let _ = self.tat.fetch_update(Relaxed, Relaxed, |tat| {
            (tat > now).then(|| tat.saturating_sub(self.interval).max(now))
        });
    }

    /// Whole tokens available at `now` (for metrics and tests).
    pub fn available(&self, now: Instant) -> u64 {
        let now = nanos_since(self.epoch, now);
        let tat = self.tat.load(Relaxed).max(now);
        now.saturating_add(self.tolerance).saturating_sub(tat) / self.interval
    }
}

/// Takes a token from every bucket (e.g. route then service) or from none: on a denial the
/// tokens already taken are refunded, so a request refused by the service limit does not also
/// eat its route's budget.
pub fn try_acquire_all(buckets: &[&TokenBucket], now: Instant) -> Result<(), Denied> {
    for (i, bucket) in buckets.iter().enumerate() {
        if let Err(denied) = bucket.try_acquire(now) {
            for taken in &buckets[..i] {
                taken.refund(now);
            }
            return Err(denied);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_rate_with_retry_after() {
        let t0 = Instant::now();
        let b = TokenBucket::new(10.0, 5, t0).unwrap();
        assert_eq!(b.available(t0), 5);
        for _ in 0..5 {
            assert!(b.try_acquire(t0).is_ok());
        }
        let denied = b.try_acquire(t0).unwrap_err();
        assert_eq!(denied.retry_after, 100 * MS);
        assert_eq!(denied.retry_after_secs(), 1, "rounded up, at least 1");
        assert!(b.try_acquire(t0 + 99 * MS).is_err());
        assert_eq!(b.try_acquire(t0 + 100 * MS), Ok(()));
        // Idle time refills, but never beyond the burst.
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 5);
    }

    #[test]
    fn admits_rate_over_time() {
        let t0 = Instant::now();
        let b = TokenBucket::new(500.0, 100, t0).unwrap();
        // 2000 attempts/s for 10 s: burst + 500/s get through.
        let admitted = (0..20_000)
            .filter(|i| b.try_acquire(t0 + Duration::from_micros(500 * i)).is_ok())
            .count();
        assert!((5_095..=5_101).contains(&admitted), "{admitted}");
    }

    #[test]
    fn slow_rate_retry_after_in_whole_seconds() {
        let t0 = Instant::now();
        let b = TokenBucket::new(0.4, 1, t0).unwrap(); // one token per 2.5 s
        assert!(b.try_acquire(t0).is_ok());
        let denied = b.try_acquire(t0 + 100 * MS).unwrap_err();
        assert_eq!(denied.retry_after, 2400 * MS);
        assert_eq!(denied.retry_after_secs(), 3);
        assert_eq!(Denied { retry_after: Duration::from_secs(2) }.retry_after_secs(), 2);
        assert_eq!(Denied { retry_after: Duration::ZERO }.retry_after_secs(), 1);
    }

    #[test]
    fn rejects_bad_rates_and_tolerates_extremes() {
        let t0 = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(TokenBucket::new(rate, 10, t0).is_err(), "{rate}");
        }
        let fast = TokenBucket::new(1e12, 0, t0).unwrap();
        assert!(fast.try_acquire(t0).is_ok());
        let slow = TokenBucket::new(1e-15, u32::MAX, t0).unwrap();
        assert!(slow.try_acquire(t0).is_ok());
    }

    #[test]
    fn all_or_nothing_refunds() {
        let t0 = Instant::now();
        let route = TokenBucket::new(1.0, 3, t0).unwrap();
        let service = TokenBucket::new(1.0, 1, t0).unwrap();
        assert!(try_acquire_all(&[&route, &service], t0).is_ok());
        assert_eq!(route.available(t0), 2);
        let denied = try_acquire_all(&[&route, &service], t0).unwrap_err();
        assert_eq!(denied.retry_after, Duration::from_secs(1));
        assert_eq!(route.available(t0), 2, "route token refunded");
        // A refund cannot overfill.
        route.refund(t0);
        route.refund(t0);
        route.refund(t0);
        assert_eq!(route.available(t0), 3);
    }

    #[test]
    fn concurrent_acquires_never_exceed_the_burst() {
        let t0 = Instant::now();
        let b = std::sync::Arc::new(TokenBucket::new(1.0, 1000, t0).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.try_acquire(t0).is_ok()).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
