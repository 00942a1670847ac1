//! Inbound admission: the policy of the instance's own services, applied by its sidecar before
//! a request reaches the app — token buckets per service and per route (`traffic.rateLimit`,
//! `traffic.routes[].rateLimit`; 429 with `Retry-After`) and the concurrency cap
//! (`traffic.maxConcurrentRequests`; 503).
//!
//! One [`Admission`] per Service that selects the instance; it is kept across snapshot swaps
//! while the Service's traffic section is unchanged, so buckets and counts carry over.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use weft_api::kinds::service::{RateLimit, TrafficPolicy};
use weft_traffic::{Limit, TokenBucket};

use crate::metrics::{ErrorKind, Metrics};
use crate::policy::routes::{RouteMatch, longest};

#[derive(Debug)]
struct Bucket {
    bucket: TokenBucket,
    limited: Counter,
}

impl Bucket {
    fn new(
        metrics: &Metrics,
        service: &str,
        route: &str,
        r: &RateLimit,
        now: Instant,
    ) -> Option<Bucket> {
        // Burst defaults to one second's worth of requests.
        let burst = r
            .burst
            .unwrap_or_else(|| r.requests_per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        Some(Bucket {
            bucket: TokenBucket::new(r.requests_per_second, burst, now).ok()?,
            limited: metrics.rate_limited("inbound", service, route),
        })
    }
}

#[derive(Debug)]
struct Route {
    matcher: RouteMatch,
    bucket: Option<Bucket>,
}

/// One service's inbound policy.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) service: String,
    /// What it was built from (reuse test).
    pub(crate) traffic: TrafficPolicy,
    bucket: Option<Bucket>,
    routes: Vec<Route>,
    concurrency: Option<Limit>,
    over_concurrency: Counter,
}

/// Why a request was refused at the door.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u64>,
}

/// Holds the concurrency slots of an admitted request until it ends.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    held: Vec<Arc<Admission>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        for a in &self.held {
            if let Some(l) = &a.concurrency {
                l.release_raw();
            }
        }
    }
}

impl Admission {
    pub(crate) fn new(
        metrics: &Metrics,
        service: &str,
        traffic: &TrafficPolicy,
        now: Instant,
    ) -> Admission {
        Admission {
            service: service.to_string(),
            traffic: traffic.clone(),
            bucket: traffic
                .rate_limit
                .as_ref()
                .and_then(|r| Bucket::new(metrics, service, "*", r, now)),
            routes: traffic
                .routes
                .iter()
                .filter(|r| r.rate_limit.is_some())
                .map(|r| Route {
                    matcher: RouteMatch::new(&r.path_prefix, &r.methods),
                    bucket: r
                        .rate_limit
                        .as_ref()
                        .and_then(|rl| Bucket::new(metrics, service, &r.path_prefix, rl, now)),
                })
                .collect(),
            concurrency: traffic.max_concurrent_requests.map(|m| Limit::new(u64::from(m))),
            over_concurrency: metrics.circuit_rejected("inbound", service, "concurrency"),
        }
    }

    /// Whether this admission checks anything at all.
    pub(crate) fn is_noop(&self) -> bool {
        self.bucket.is_none() && self.routes.is_empty() && self.concurrency.is_none()
    }
}

/// Admits a request under every admission (all or nothing): concurrency slots first (a request
/// refused for concurrency takes no token), then the buckets of each service and of its most
/// specific route.
pub(crate) fn admit(
    admissions: &[Arc<Admission>],
    method: &str,
    path: &str,
    now: Instant,
) -> Result<Admitted, Refused> {
    let mut admitted = Admitted::default();
    for a in admissions {
        if let Some(l) = &a.concurrency {
            if !l.try_acquire_raw() {
                a.over_concurrency.inc();
                return Err(Refused {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    kind: ErrorKind::Overloaded,
                    message: format!(
                        "service {:?} is serving its maximum of {} concurrent requests \
                         (traffic.maxConcurrentRequests); try again shortly\n",
                        a.service,
                        l.max()
                    ),
                    retry_after: None,
                });
            }
            admitted.held.push(a.clone());
        }
    }
    // Tokens taken so far, refunded if a later bucket refuses.
    let mut taken: Vec<&TokenBucket> = Vec::new();
    for a in admissions {
        let route = longest(&a.routes, |r| &r.matcher, method, path);
        let buckets = [a.bucket.as_ref(), route.and_then(|r| r.bucket.as_ref())];
        for (b, route) in buckets.into_iter().zip([None, route]) {
            let Some(b) = b else { continue };
            if let Err(denied) = b.bucket.try_acquire(now) {
                for t in &taken {
                    t.refund(now);
                }
                b.limited.inc();
                let what = match route {
                    Some(r) => format!("route {:?} of service {:?}", r.matcher.prefix, a.service),
                    None => format!("service {:?}", a.service),
                };
                return Err(Refused {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: ErrorKind::RateLimited,
                    message: format!(
                        "rate limit of {what} reached; retry after {}s\n",
                        denied.retry_after_secs()
                    ),
                    retry_after: Some(denied.retry_after_secs()),
                });
            }
            taken.push(&b.bucket);
        }
    }
    Ok(admitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admission(yaml: &str, now: Instant) -> Arc<Admission> {
        let t: TrafficPolicy = serde_yaml_ng::from_str(yaml).unwrap();
        Arc::new(Admission::new(&Metrics::new(), "catalog", &t, now))
    }

    #[test]
    fn service_and_route_buckets() {
        let t0 = Instant::now();
        let a = [admission(
            "{ rateLimit: { requestsPerSecond: 10, burst: 3 },
               routes: [ { pathPrefix: /search, rateLimit: { requestsPerSecond: 1, burst: 1 } } ] }",
            t0,
        )];
        // The route's single token, then the route refuses while the service still has two.
        assert!(admit(&a, "GET", "/search?q=1", t0).is_ok());
        let r = admit(&a, "GET", "/search", t0).unwrap_err();
        assert_eq!((r.status, r.retry_after), (StatusCode::TOO_MANY_REQUESTS, Some(1)));
        assert!(r.message.contains("route \"/search\""), "{}", r.message);
        // The service token taken for the refused request was refunded.
        assert!(admit(&a, "GET", "/a", t0).is_ok());
        assert!(admit(&a, "GET", "/b", t0).is_ok());
        let r = admit(&a, "GET", "/c", t0).unwrap_err();
        assert!(r.message.starts_with("rate limit of service \"catalog\""), "{}", r.message);
        assert!(admit(&a, "GET", "/c", t0 + Duration::from_millis(100)).is_ok(), "10/s refills");
    }

    #[test]
    fn concurrency_cap_and_release() {
        let t0 = Instant::now();
        let a = [admission("{ maxConcurrentRequests: 2 }", t0)];
        let one = admit(&a, "GET", "/", t0).unwrap();
        let two = admit(&a, "GET", "/", t0).unwrap();
        let r = admit(&a, "GET", "/", t0).unwrap_err();
        assert_eq!((r.status, r.kind), (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Overloaded));
        drop(one);
        assert!(admit(&a, "GET", "/", t0).is_ok());
        drop(two);
        assert!(!a[0].is_noop());
        assert!(admission("{}", t0).is_noop());
    }
}
