//! Passive health checking: eject an endpoint after consecutive errors, Envoy-style.
//!
//! Semantics (Envoy's `consecutive_5xx` detector, with weft's probation rule):
//! - `consecutive_errors` errors in a row ([`crate::FailureKind::is_endpoint_error`]: 5xx,
//!   connect failure, reset, timeout) eject the endpoint; any success resets the count.
//!   Answers that arrive while it is ejected (requests sent before) are ignored.
//! - Ejection lasts `base_ejection_time × k` where k is the ejection's number in the current
//!   streak, capped at `max(max_ejection_time, base_ejection_time)` (Envoy: default 300 s).
//! - Afterwards the endpoint is back on probation: while k > 0 a single error ejects it again
//!   with k + 1. Every full `interval` (10 s) it stays un-ejected lowers k by one (Envoy decrements
//!   the multiplier at each healthy interval sweep), so a steady run of good behaviour clears it.
//! - The ejected share is capped: an ejection happens only if `(ejected + 1) / n ≤
//!   max_ejection_percent`, so a 1-endpoint service is never ejected with 50 % and neither is a
//!   third endpoint of 4. Like Envoy ≥ 1.31, `always_eject_one` (default off) allows one
//!   ejection when none is active, whatever the percentage. Refusals are reported as
//!   [`Verdict::Overflow`] and reset the count, so the next attempt needs a fresh error streak.
//! - Ejections end by time alone (no sweep timer): the balancers compare `now` against the
//!   endpoint's ejection deadline.
//!
//! Concurrency: successes (the hot path) are one atomic load (and a store after an error). An
//! error is an atomic increment; only the error that reaches the threshold takes the detector's
//! mutex, which serializes ejections so two concurrent ones cannot overshoot the cap.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::endpoint::{Endpoint, EndpointStats};

/// Per-endpoint detector state, embedded in [`EndpointStats`] so it follows the endpoint
/// across endpoint-set updates.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive: AtomicU32,
    /// Stats-epoch nanoseconds; 0 = never ejected. Read by the balancers on every pick.
    pub(crate) ejected_until: AtomicU64,
    /// Ejections in the current streak (k above); written only under the detector lock.
    multiplier: AtomicU32,
    /// Start of the current decay interval (stats-epoch nanoseconds).
    decay_from: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Errors in a row that eject (the Service's `consecutiveErrors`); 0 disables ejection.
    pub consecutive_errors: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u8,
    pub always_eject_one: bool,
    /// Healthy time that lowers the ejection multiplier by one.
    pub interval: Duration,
}

impl Default for OutlierConfig {
    /// Envoy's defaults, except `max_ejection_percent` 50 as in weft's Service example (Envoy's
    /// 10 % ejects nothing in services under 10 endpoints).
    fn default() -> Self {
        Self {
            consecutive_errors: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            always_eject_one: false,
            interval: Duration::from_secs(10),
        }
    }
}

/// What a recorded error led to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Counted (or ignored because the endpoint is already ejected).
    Counted,
    /// The endpoint was ejected (count it in `weft_endpoint_ejections_total`).
    Ejected(Ejection),
    /// It met the ejection criteria but the cap on the ejected share refused it.
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ejection {
    pub until: Instant,
    pub duration: Duration,
    /// This ejection's number in the current streak (1 for the first).
    pub times: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EndpointHealth {
    Healthy,
    Ejected {
        until: Instant,
    },
    /// Back from ejection; one error ejects it again for `(multiplier + 1) × base`.
    Probation {
        multiplier: u32,
    },
}

/// Outlier detection for one service; share it (`Arc`) between all request tasks.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    ejecting: Mutex<()>,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig) -> Self {
        Self { config, ejecting: Mutex::new(()) }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// A request to this endpoint succeeded (any answer that is not an endpoint error).
    #[inline]
    pub fn record_success(&self, stats: &EndpointStats) {
        let c = &stats.outlier.consecutive;
        // Load first: on the common path nothing is written, so the cache line stays shared.
        if c.load(Relaxed) != 0 {
            c.store(0, Relaxed);
        }
    }

    /// A request to `endpoints[index]` failed with an endpoint error. `endpoints` is the
    /// service's current set, against which the ejected share is capped.
    pub fn record_failure<K>(
        &self,
        endpoints: &[Endpoint<K>],
        index: usize,
        now: Instant,
    ) -> Verdict {
        let Some(endpoint) = endpoints.get(index) else { return Verdict::Counted };
        let stats = &endpoint.stats;
        let st = &stats.outlier;
        if self.config.consecutive_errors == 0 || stats.is_ejected(now) {
            return Verdict::Counted;
        }
        let count = st.consecutive.fetch_add(1, Relaxed).saturating_add(1);
        if count < self.config.consecutive_errors && st.multiplier.load(Relaxed) == 0 {
            return Verdict::Counted;
        }

        let _serialized = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        if stats.is_ejected(now) {
            return Verdict::Counted; // another task ejected it meanwhile
        }
        let now_ns = stats.nanos(now);
        let (multiplier, decay_from) = self.decayed(st, now_ns);
        st.multiplier.store(multiplier, Relaxed);
        st.decay_from.store(decay_from, Relaxed);
        let threshold = if multiplier > 0 { 1 } else { self.config.consecutive_errors };
        if st.consecutive.load(Relaxed) < threshold {
            return Verdict::Counted;
        }
        st.consecutive.store(0, Relaxed);

        let n = endpoints.len();
        let ejected = endpoints.iter().filter(|e| e.stats.is_ejected(now)).count();
        let within_cap = (ejected + 1) * 100 <= usize::from(self.config.max_ejection_percent) * n;
        if !(within_cap || self.config.always_eject_one && ejected == 0) {
            return Verdict::Overflow;
        }

        let times = multiplier.saturating_add(1);
        let cap = self.config.max_ejection_time.max(self.config.base_ejection_time);
        let duration = self.config.base_ejection_time.saturating_mul(times).min(cap);
        let until_ns = now_ns.saturating_add(duration.as_nanos() as u64).max(1);
        st.multiplier.store(times, Relaxed);
        st.decay_from.store(until_ns, Relaxed);
        st.ejected_until.store(until_ns, Relaxed);
        Verdict::Ejected(Ejection { until: stats.instant(until_ns), duration, times })
    }

    /// The multiplier after the healthy intervals elapsed since `decay_from`, and the start of
    /// the interval in progress.
    fn decayed(&self, st: &OutlierState, now_ns: u64) -> (u32, u64) {
        let multiplier = st.multiplier.load(Relaxed);
        let from = st.decay_from.load(Relaxed);
        if multiplier == 0 || now_ns <= from {
            return (multiplier, from);
        }
        let interval = (self.config.interval.as_nanos() as u64).max(1);
        let steps = (now_ns - from) / interval;
        let left = u64::from(multiplier).saturating_sub(steps) as u32;
        (left, from + steps * interval)
    }

    /// For metrics and `/config`: ejected, on probation, or healthy at `now`.
    pub fn health(&self, stats: &EndpointStats, now: Instant) -> EndpointHealth {
        if stats.is_ejected(now) {
            let until = stats.outlier.ejected_until.load(Relaxed);
            return EndpointHealth::Ejected { until: stats.instant(until) };
        }
        match self.decayed(&stats.outlier, stats.nanos(now)).0 {
            0 => EndpointHealth::Healthy,
            multiplier => EndpointHealth::Probation { multiplier },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::endpoints;
    use crate::{Algorithm, LoadBalancer, WyRand};

    const S: Duration = Duration::from_secs(1);

    fn fail_n<K>(
        d: &OutlierDetector,
        eps: &[Endpoint<K>],
        i: usize,
        n: u32,
        now: Instant,
    ) -> Verdict {
        (0..n).map(|_| d.record_failure(eps, i, now)).last().unwrap()
    }

    #[test]
    fn ejects_after_consecutive_errors_only() {
        let t0 = Instant::now();
        let eps = endpoints(4, t0);
        let d = OutlierDetector::new(OutlierConfig::default());
        assert_eq!(fail_n(&d, &eps, 0, 4, t0), Verdict::Counted);
        d.record_success(&eps[0].stats);
        assert_eq!(fail_n(&d, &eps, 0, 4, t0), Verdict::Counted, "a success resets the streak");
        let Verdict::Ejected(e) = d.record_failure(&eps, 0, t0) else { panic!() };
        assert_eq!((e.duration, e.times, e.until), (30 * S, 1, t0 + 30 * S));
        assert!(eps[0].stats.is_ejected(t0 + 29 * S));
        assert!(!eps[0].stats.is_ejected(t0 + 30 * S));
        assert_eq!(d.health(&eps[0].stats, t0), EndpointHealth::Ejected { until: t0 + 30 * S });
        // Late answers while ejected are not held against it.
        assert_eq!(fail_n(&d, &eps, 0, 10, t0 + S), Verdict::Counted);
        assert_eq!(d.health(&eps[1].stats, t0), EndpointHealth::Healthy);
    }

    #[test]
    fn probation_reejects_on_one_error_with_growing_capped_times() {
        let t0 = Instant::now();
        let eps = endpoints(2, t0);
        let d = OutlierDetector::new(OutlierConfig::default());
        let Verdict::Ejected(mut e) = fail_n(&d, &eps, 0, 5, t0) else { panic!() };
        let mut durations = vec![e.duration];
        for _ in 0..12 {
            // Back at the end of the ejection, on probation: one error is enough.
            assert!(matches!(d.health(&eps[0].stats, e.until), EndpointHealth::Probation { .. }));
            let Verdict::Ejected(next) = d.record_failure(&eps, 0, e.until) else { panic!() };
            e = next;
            durations.push(e.duration);
        }
        let secs: Vec<u64> = durations.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300]);
        assert_eq!(e.times, 13);
    }

    #[test]
    fn healthy_intervals_clear_probation() {
        let t0 = Instant::now();
        let eps = endpoints(2, t0);
        let d = OutlierDetector::new(OutlierConfig::default());
        let Verdict::Ejected(e1) = fail_n(&d, &eps, 0, 5, t0) else { panic!() };
        let Verdict::Ejected(e2) = d.record_failure(&eps, 0, e1.until) else { panic!() };
        assert_eq!(e2.times, 2);
        // Returns at e2.until with multiplier 2: 10 s later 1, 20 s later healthy.
        let back = e2.until;
        d.record_success(&eps[0].stats);
        assert_eq!(
            d.health(&eps[0].stats, back + 9 * S),
            EndpointHealth::Probation { multiplier: 2 }
        );
        assert_eq!(
            d.health(&eps[0].stats, back + 10 * S),
            EndpointHealth::Probation { multiplier: 1 }
        );
        assert_eq!(d.health(&eps[0].stats, back + 20 * S), EndpointHealth::Healthy);
        // Still on probation at +15 s: one error ejects for 2 × 30 s (multiplier 1 → 2).
        let Verdict::Ejected(e3) = d.record_failure(&eps, 0, back + 15 * S) else { panic!() };
        assert_eq!((e3.times, e3.duration), (2, 60 * S));
        // After a clean 30 s the streak is over: one error is just counted again.
        let later = e3.until + 30 * S;
        assert_eq!(d.record_failure(&eps, 0, later), Verdict::Counted);
        let Verdict::Ejected(e4) = fail_n(&d, &eps, 0, 4, later) else { panic!() };
        assert_eq!((e4.times, e4.duration), (1, 30 * S));
    }

    #[test]
    fn caps_the_ejected_share() {
        let t0 = Instant::now();
        let eps = endpoints(4, t0);
        let d = OutlierDetector::new(OutlierConfig::default()); // 50 %
        assert!(matches!(fail_n(&d, &eps, 0, 5, t0), Verdict::Ejected(_)));
        assert!(matches!(fail_n(&d, &eps, 1, 5, t0), Verdict::Ejected(_)));
        assert_eq!(fail_n(&d, &eps, 2, 5, t0), Verdict::Overflow, "3 of 4 > 50 %");
        assert!(!eps[2].stats.is_ejected(t0));
        // The refusal reset the streak; once a slot frees up a new streak ejects.
        let t = t0 + 30 * S;
        assert_eq!(fail_n(&d, &eps, 2, 4, t), Verdict::Counted);
        assert!(matches!(d.record_failure(&eps, 2, t), Verdict::Ejected(_)));

        // One endpoint at 50 %: 1/1 > 50 %, never ejected (and a balancer would panic anyway)…
        let one = endpoints(1, t0);
        assert_eq!(fail_n(&d, &one, 0, 5, t0), Verdict::Overflow);
        // …unless always_eject_one, which also overrides 0 %, but only for the first one.
        let d1 = OutlierDetector::new(OutlierConfig {
            always_eject_one: true,
            max_ejection_percent: 0,
            ..OutlierConfig::default()
        });
        assert!(matches!(fail_n(&d1, &one, 0, 5, t0), Verdict::Ejected(_)));
        let three = endpoints(3, t0);
        assert!(matches!(fail_n(&d1, &three, 0, 5, t0), Verdict::Ejected(_)));
        assert_eq!(fail_n(&d1, &three, 1, 5, t0), Verdict::Overflow);
        // consecutive_errors 0 disables detection.
        let off =
            OutlierDetector::new(OutlierConfig { consecutive_errors: 0, ..Default::default() });
        assert_eq!(fail_n(&off, &three, 2, 50, t0), Verdict::Counted);
    }

    #[test]
    fn balancer_avoids_ejected_endpoint_until_it_returns() {
        let t0 = Instant::now();
        let lb = LoadBalancer::new(Algorithm::RoundRobin, ["a", "b", "c"], t0);
        let d = OutlierDetector::new(OutlierConfig::default());
        assert!(matches!(fail_n(&d, lb.endpoints(), 1, 5, t0), Verdict::Ejected(_)));
        let mut rng = WyRand::new(1);
        let ids: Vec<&str> = (0..4).map(|_| lb.pick(t0 + S, None, &mut rng).unwrap().id).collect();
        assert!(!ids.contains(&"b"), "{ids:?}");
        let ids: Vec<&str> =
            (0..3).map(|_| lb.pick(t0 + 30 * S, None, &mut rng).unwrap().id).collect();
        assert!(ids.contains(&"b"), "{ids:?}");
    }
}
