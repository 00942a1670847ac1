//! Per-endpoint state shared by the balancers and the outlier detector.
//!
//! One [`EndpointStats`] lives behind an `Arc` for as long as its endpoint id stays in the
//! service's endpoint set; [`crate::LoadBalancer::update`] carries it over when the set changes,
//! so latency history, in-flight counts and ejections survive discovery updates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::nanos_since;
use crate::outlier::OutlierState;

/// An endpoint in a balancer's set: a stable caller-chosen id (address, instance name…) and
/// its shared statistics.
#[derive(Debug, Clone)]
pub struct Endpoint<K> {
    pub id: K,
    pub stats: Arc<EndpointStats>,
}

/// Bit pattern (a NaN) meaning "no latency sample yet".
const NO_SAMPLE: u64 = u64::MAX;

/// Lock-free counters for one endpoint. Reads on the pick path are plain atomic loads; writes
/// happen once at request start and once at request end.
///
/// The latency estimate is a peak-sensitive EWMA (Finagle / linkerd "peak EWMA"): a sample above
/// the current estimate replaces it at once, a lower one is blended in with a weight that grows
/// with the time since the previous sample, and with no new samples the estimate decays toward
/// zero with time constant `decay` — so an endpoint that was slow is eventually probed again
/// instead of being shunned forever.
#[derive(Debug)]
pub struct EndpointStats {
    epoch: Instant,
    decay_ns: f64,
    in_flight: AtomicU64,
    /// f64 nanoseconds as bits, or [`NO_SAMPLE`].
    ewma: AtomicU64,
    /// Nanoseconds since `epoch` of the last sample.
    ewma_stamp: AtomicU64,
    pub(crate) outlier: OutlierState,
}

impl EndpointStats {
    /// `decay` is the EWMA time constant (linkerd and Finagle use 10 s).
    pub fn new(now: Instant, decay: Duration) -> Self {
        Self {
            epoch: now,
            decay_ns: (decay.as_nanos() as f64).max(1.0),
            in_flight: AtomicU64::new(0),
            ewma: AtomicU64::new(NO_SAMPLE),
            ewma_stamp: AtomicU64::new(0),
            outlier: OutlierState::default(),
        }
    }

    #[inline]
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        nanos_since(self.epoch, now)
    }

    #[inline]
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Requests sent to this endpoint and not yet finished.
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Counts a request as in flight. Pair with [`Self::end`], or use [`Self::track`].
    #[inline]
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// Ends a request started with [`Self::begin`]; `latency` is recorded when the endpoint
    /// answered (pass `None` for cancelled requests, which say nothing about the endpoint).
    #[inline]
    pub fn end(&self, now: Instant, latency: Option<Duration>) {
        // Saturating, so a stray extra `end` cannot wrap the count to 2^64 and starve the
        // endpoint forever.
        let _ = self.in_flight.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
        if let Some(latency) = latency {
            self.observe_latency(now, latency);
        }
    }

    /// [`Self::begin`] with a guard: dropping it without [`InFlight::finish`] (the request
    /// future was cancelled) still decrements the count.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.begin();
        InFlight { stats: Some(Arc::clone(self)) }
    }

    /// Records a latency sample (see the type docs for the peak-EWMA rule).
    pub fn observe_latency(&self, now: Instant, latency: Duration) {
        let now_ns = self.nanos(now);
        let rtt = latency.as_nanos() as f64;
        let mut current = self.ewma.load(Relaxed);
        loop {
            let next = if current == NO_SAMPLE {
                rtt
            } else {
                let w = self.decay_weight(now_ns, self.ewma_stamp.load(Relaxed));
                let decayed = f64::from_bits(current) * w;
                if rtt > decayed { rtt } else { decayed + rtt * (1.0 - w) }
            };
            match self.ewma.compare_exchange_weak(current, next.to_bits(), Relaxed, Relaxed) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        // Value and stamp are two atomics, not one: a reader between the two stores decays the
        // fresh value over the previous gap. The error is exp(-gap/decay) with gaps of
        // microseconds against a 10 s constant, far below the noise of latency itself.
        self.ewma_stamp.fetch_max(now_ns, Relaxed);
    }

    #[inline]
    fn decay_weight(&self, now_ns: u64, stamp: u64) -> f64 {
        let elapsed = now_ns.saturating_sub(stamp);
        if elapsed == 0 { 1.0 } else { (-(elapsed as f64) / self.decay_ns).exp() }
    }

    /// The latency estimate in nanoseconds decayed to `now`, or `None` without samples.
    #[inline]
    pub(crate) fn latency_ns(&self, now: Instant) -> Option<f64> {
        let bits = self.ewma.load(Relaxed);
        if bits == NO_SAMPLE {
            return None;
        }
        let w = self.decay_weight(self.nanos(now), self.ewma_stamp.load(Relaxed));
        Some(f64::from_bits(bits) * w)
    }

    /// The latency estimate decayed to `now`, or `None` before the first sample.
    pub fn latency_estimate(&self, now: Instant) -> Option<Duration> {
        self.latency_ns(now).map(|ns| Duration::from_nanos(ns as u64))
    }

    /// Whether the outlier detector has this endpoint ejected at `now`.
    #[inline]
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.outlier.ejected_until.load(Relaxed);
        until != 0 && self.nanos(now) < until
    }
}

/// An in-flight request on one endpoint; see [`EndpointStats::track`].
#[derive(Debug)]
pub struct InFlight {
    stats: Option<Arc<EndpointStats>>,
}

impl InFlight {
    /// The request got an answer after `latency`.
    pub fn finish(mut self, now: Instant, latency: Duration) {
        if let Some(stats) = self.stats.take() {
            stats.end(now, Some(latency));
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(stats) = self.stats.take() {
            // `now` only matters with a latency sample.
            stats.end(stats.epoch, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn peak_then_decay() {
        let t0 = Instant::now();
        let s = EndpointStats::new(t0, Duration::from_secs(10));
        assert_eq!(s.latency_estimate(t0), None);
        s.observe_latency(t0, 10 * MS);
        assert_eq!(s.latency_estimate(t0), Some(10 * MS));
        // A peak replaces the estimate at once.
        s.observe_latency(t0 + MS, 200 * MS);
        let est = s.latency_ns(t0 + MS).unwrap();
        assert!((est - 200e6).abs() < 1.0, "{est}");
        // Without samples it decays with e^(-t/10s): after 10 s, 200 ms × 0.368 = 73.6 ms.
        let est = s.latency_ns(t0 + MS + Duration::from_secs(10)).unwrap();
        assert!((est - 73.58e6).abs() < 0.1e6, "{est}");
        // A lower sample is blended in by the time since the last one (5 s: weight e^-0.5).
        let t = t0 + MS + Duration::from_secs(5);
        s.observe_latency(t, 10 * MS);
        let w = (-0.5f64).exp();
        let est = s.latency_ns(t).unwrap();
        assert!((est - (200e6 * w + 10e6 * (1.0 - w))).abs() < 1.0, "{est}");
    }

    #[test]
    fn guard_counts_and_cancellation() {
        let t0 = Instant::now();
        let s = Arc::new(EndpointStats::new(t0, Duration::from_secs(10)));
        let a = s.track();
        let b = s.track();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.latency_estimate(t0), None, "a cancelled request records no latency");
        b.finish(t0, 5 * MS);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.latency_estimate(t0), Some(5 * MS));
        s.end(t0, None);
        assert_eq!(s.in_flight(), 0, "an extra end saturates at zero");
    }
}
