//! Traffic policy as the data path applies it: a Service's `traffic` section turned into the
//! weft-traffic machinery (retry policy and budget, circuit-breaker limits, outlier detection)
//! plus timeouts and per-route overrides.
//!
//! A [`Policy`] carries state (breaker counts, budget, ejection streaks), so a snapshot rebuild
//! keeps the previous `Arc<Policy>` whenever the Service's traffic section did not change.

pub(crate) mod authz;
pub(crate) mod routes;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use weft_api::kinds::service::{LoadBalancer as LbName, TrafficPolicy};
use weft_traffic::{
    Algorithm, CircuitBreaker, OutlierConfig, OutlierDetector, RetryBudget, RetryBudgetConfig,
    RetryOn, RetryPolicy,
};

use crate::config::Direction;
use crate::metrics::Metrics;
use routes::RouteMatch;

/// A route's overall timeout override (`traffic.routes[].timeout`).
#[derive(Debug)]
pub(crate) struct RouteTimeout {
    pub(crate) matcher: RouteMatch,
    pub(crate) timeout: Duration,
}

/// Handles of the policy metrics of one service.
#[derive(Debug)]
pub(crate) struct PolicyMetrics {
    pub(crate) retries: Counter,
    /// Refusals by limit: connections, pending, requests.
    pub(crate) rejected: [Counter; 3],
    pub(crate) circuit_open: Gauge,
}

impl PolicyMetrics {
    fn new(metrics: &Metrics, direction: Direction, service: &str) -> PolicyMetrics {
        let d = direction.as_str();
        PolicyMetrics {
            retries: metrics.retries(d, service),
            rejected: ["connections", "pending", "requests"]
                .map(|l| metrics.circuit_rejected(d, service, l)),
            circuit_open: metrics.circuit_open(d, service),
        }
    }
}

/// Which circuit-breaker limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Connections = 0,
    Pending = 1,
    Requests = 2,
}

impl Limit {
    pub(crate) fn field(self) -> &'static str {
        match self {
            Limit::Connections => "maxConnections",
            Limit::Pending => "maxPendingRequests",
            Limit::Requests => "maxRequests",
        }
    }
}

/// How calls through one cluster are made.
#[derive(Debug)]
pub(crate) struct Policy {
    /// The Service's traffic section this was built from (`None`: the plain proxy's or an
    /// inbound listener's fixed policy).
    pub(crate) traffic: Option<TrafficPolicy>,
    /// Overall deadline, retries included.
    pub(crate) timeout: Duration,
    pub(crate) per_try: Option<Duration>,
    pub(crate) route_timeouts: Vec<RouteTimeout>,
    pub(crate) retry: RetryPolicy,
    /// Present when retries are enabled.
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) outlier: OutlierDetector,
    /// The ring-hash header, lower case.
    pub(crate) hash_header: Option<String>,
    /// Created on first use, like the cluster's (most services are never called from here).
    metrics: OnceLock<PolicyMetrics>,
    registry: Arc<Metrics>,
    direction: Direction,
    service: String,
}

impl Policy {
    /// No retries, no breaker, no ejection: the plain reverse proxy and inbound listeners (the
    /// calling sidecar applies the callee's policy; inbound enforces admission only).
    pub(crate) fn fixed(
        metrics: &Arc<Metrics>,
        direction: Direction,
        service: &str,
        timeout: Duration,
    ) -> Policy {
        Policy {
            traffic: None,
            timeout,
            per_try: None,
            route_timeouts: Vec::new(),
            retry: RetryPolicy { max_retries: 0, on: RetryOn::NONE },
            budget: None,
            breaker: None,
            outlier: OutlierDetector::new(OutlierConfig {
                consecutive_errors: 0,
                ..OutlierConfig::default()
            }),
            hash_header: None,
            metrics: OnceLock::new(),
            registry: metrics.clone(),
            direction,
            service: service.to_string(),
        }
    }

    /// A Service's policy for its callers (a sidecar's outbound listener, or the gateway:
    /// `direction` labels the metrics). The Service passed `weft_api` validation, so the values
    /// are in range; anything the traffic crate still refuses falls back to its default.
    pub(crate) fn outbound(
        metrics: &Arc<Metrics>,
        direction: Direction,
        service: &str,
        traffic: &TrafficPolicy,
        now: Instant,
    ) -> Policy {
        let conditions: Vec<String> = traffic.retries.on.iter().map(|c| c.to_string()).collect();
        let on = RetryOn::parse(&conditions).unwrap_or(RetryOn::NONE);
        let retry = RetryPolicy { max_retries: traffic.retries.attempts, on };
        let budget = (retry.max_retries > 0)
            .then(|| {
                RetryBudget::new(
                    RetryBudgetConfig {
                        ratio: f64::from(traffic.retries.budget_percent) / 100.0,
                        min_per_sec: traffic.retries.min_retries_per_second,
                        ..RetryBudgetConfig::default()
                    },
                    now,
                )
                .ok()
            })
            .flatten();
        let cb = &traffic.circuit_breaker;
        let outlier = OutlierConfig {
            consecutive_errors: cb.consecutive_errors,
            base_ejection_time: cb.ejection_time.as_std(),
            max_ejection_percent: u8::try_from(cb.max_ejection_percent.min(100)).unwrap_or(100),
            ..OutlierConfig::default()
        };
        Policy {
            traffic: Some(traffic.clone()),
            timeout: traffic.timeout.as_std(),
            per_try: traffic.per_try_timeout.map(|d| d.as_std()),
            route_timeouts: traffic
                .routes
                .iter()
                .filter_map(|r| {
                    let timeout = r.timeout?.as_std();
                    Some(RouteTimeout {
                        matcher: RouteMatch::new(&r.path_prefix, &r.methods),
                        timeout,
                    })
                })
                .collect(),
            retry,
            budget,
            breaker: Some(CircuitBreaker::new(
                u64::from(cb.max_connections),
                u64::from(cb.max_pending_requests),
                u64::from(cb.max_requests),
            )),
            outlier: OutlierDetector::new(outlier),
            hash_header: match traffic.load_balancer {
                LbName::RingHash => traffic.hash_header.as_ref().map(|h| h.to_ascii_lowercase()),
                _ => None,
            },
            metrics: OnceLock::new(),
            registry: metrics.clone(),
            direction,
            service: service.to_string(),
        }
    }

    pub(crate) fn metrics(&self) -> &PolicyMetrics {
        self.metrics
            .get_or_init(|| PolicyMetrics::new(&self.registry, self.direction, &self.service))
    }

    /// The overall timeout for a request (a matching route's override, else the service's).
    #[inline]
    pub(crate) fn timeout_for(&self, method: &str, path: &str) -> Duration {
        if self.route_timeouts.is_empty() {
            return self.timeout;
        }
        routes::longest(&self.route_timeouts, |r| &r.matcher, method, path)
            .map_or(self.timeout, |r| r.timeout)
    }

    /// Whether a failed attempt is retried: the policy allows it (safe method or not sent, a
    /// listed condition, attempts left) and the budget has a token. Counts the retry.
    pub(crate) fn retry(
        &self,
        method: &str,
        failure: weft_traffic::FailureKind,
        attempt: u32,
        now: Instant,
    ) -> bool {
        if !weft_traffic::retry_allowed(method, failure, attempt, &self.retry) {
            return false;
        }
        let granted = self.budget.as_ref().is_some_and(|b| b.try_withdraw(now));
        if granted {
            self.metrics().retries.inc();
        }
        granted
    }

    /// A new request through this policy: it adds to the retry budget.
    #[inline]
    pub(crate) fn request_started(&self, now: Instant) {
        if let Some(b) = &self.budget {
            b.deposit(now);
        }
    }

    /// Takes a slot of `limit`; `false` (and counted) when the breaker refuses.
    #[inline]
    pub(crate) fn acquire(&self, limit: Limit) -> bool {
        let Some(b) = &self.breaker else { return true };
        let l = match limit {
            Limit::Connections => &b.connections,
            Limit::Pending => &b.pending,
            Limit::Requests => &b.requests,
        };
        let ok = l.try_acquire_raw();
        if !ok {
            self.metrics().rejected[limit as usize].inc();
        }
        ok
    }

    #[inline]
    pub(crate) fn release(&self, limit: Limit) {
        if let Some(b) = &self.breaker {
            match limit {
                Limit::Connections => b.connections.release_raw(),
                Limit::Pending => b.pending.release_raw(),
                Limit::Requests => b.requests.release_raw(),
            }
        }
    }

    /// The configured value of `limit` (for messages).
    pub(crate) fn max(&self, limit: Limit) -> u64 {
        self.breaker.as_ref().map_or(u64::MAX, |b| match limit {
            Limit::Connections => b.connections.max(),
            Limit::Pending => b.pending.max(),
            Limit::Requests => b.requests.max(),
        })
    }

    /// Sets `weft_circuit_open` from the limits now (called at scrape time).
    pub(crate) fn refresh_gauge(&self) {
        let open = self.breaker.as_ref().is_some_and(CircuitBreaker::is_open);
        if open || self.metrics.get().is_some() {
            self.metrics().circuit_open.set(i64::from(open));
        }
    }
}

/// The weft-traffic algorithm for a Service's `loadBalancer`.
pub(crate) fn algorithm(name: LbName) -> Algorithm {
    match name {
        LbName::RoundRobin => Algorithm::RoundRobin,
        LbName::LeastRequest => Algorithm::LeastRequest,
        LbName::P2cEwma => Algorithm::P2cEwma(weft_traffic::EwmaConfig::default()),
        LbName::RingHash => Algorithm::RingHash(weft_traffic::RingHashConfig::default()),
    }
}

/// The Service's name for an algorithm (`/config`).
pub(crate) fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "round-robin",
        Algorithm::LeastRequest => "least-request",
        Algorithm::P2cEwma(_) => "p2c-ewma",
        Algorithm::RingHash(_) => "ring-hash",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(yaml: &str) -> TrafficPolicy {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn outbound_policy_from_a_service() {
        let m = Arc::new(Metrics::new());
        let t = traffic(
            "{ timeout: 2s, perTryTimeout: 500ms, retries: { attempts: 3, on: [connect-failure, 503] },
               circuitBreaker: { maxRequests: 7, consecutiveErrors: 2, ejectionTime: 5s },
               routes: [ { pathPrefix: /slow, timeout: 10s }, { pathPrefix: /slow/x, methods: [POST], timeout: 1s } ] }",
        );
        let now = Instant::now();
        let p = Policy::outbound(&m, Direction::Outbound, "catalog", &t, now);
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.per_try, Some(Duration::from_millis(500)));
        assert_eq!(p.timeout_for("GET", "/slow/x?q"), Duration::from_secs(10));
        assert_eq!(p.timeout_for("POST", "/slow/x"), Duration::from_secs(1));
        assert_eq!(p.timeout_for("GET", "/fast"), Duration::from_secs(2));
        assert_eq!(p.max(Limit::Requests), 7);
        assert_eq!(p.outlier.config().consecutive_errors, 2);
        use weft_traffic::FailureKind::*;
        assert!(p.retry("GET", Status(503), 1, now));
        assert!(p.retry("POST", ConnectFailure, 1, now), "never sent: safe for any method");
        assert!(!p.retry("POST", Status(503), 1, now), "the upstream may have acted");
        assert!(!p.retry("GET", Status(500), 1, now), "not a listed condition");
        assert!(!p.retry("GET", Status(503), 4, now), "attempts used up");
        assert_eq!(p.metrics().retries.get(), 2);
        // The breaker counts and refuses.
        for _ in 0..7 {
            assert!(p.acquire(Limit::Requests));
        }
        assert!(!p.acquire(Limit::Requests));
        assert_eq!(p.metrics().rejected[Limit::Requests as usize].get(), 1);
        p.refresh_gauge();
        assert_eq!(p.metrics().circuit_open.get(), 1);
        p.release(Limit::Requests);
        p.refresh_gauge();
        assert_eq!(p.metrics().circuit_open.get(), 0);
    }

    #[test]
    fn retry_budget_limits_retries() {
        let m = Arc::new(Metrics::new());
        let t = traffic(
            "{ retries: { attempts: 1, on: [503], budgetPercent: 0, minRetriesPerSecond: 1 } }",
        );
        let now = Instant::now();
        let p = Policy::outbound(&m, Direction::Outbound, "x", &t, now);
        let granted = (0..50)
            .filter(|_| {
                p.request_started(now);
                p.retry("GET", weft_traffic::FailureKind::Status(503), 1, now)
            })
            .count();
        assert_eq!(granted, 10, "1/s over the 10 s window, nothing from 0 %");
        let none = Policy::fixed(&m, Direction::Inbound, "y", Duration::from_secs(1));
        assert!(!none.retry("GET", weft_traffic::FailureKind::ConnectFailure, 1, now));
        assert!(none.acquire(Limit::Connections), "no breaker: no limit");
    }
}
