//! A cluster: the endpoints behind one service port (or the plain proxy's upstreams, or an
//! inbound listener's app), the balancer over them, the policy that governs calls to them and
//! the metric handles they report to.
//!
//! Clusters live in configuration snapshots and are immutable apart from atomics; a request
//! holds an `Arc<Cluster>` from routing to its end, so a snapshot swap never changes a request
//! in flight. What must outlive swaps (per-endpoint statistics, breaker counts, budgets) is
//! carried into the next snapshot by [`crate::routes`].

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use weft_api::kinds::template::Protocol;
use weft_traffic::{Algorithm, Endpoint, EndpointStats, LoadBalancer, Verdict, WyRand};

use crate::config::Direction;
use crate::metrics::{Metrics, ServiceMetrics, UpstreamMetrics};
use crate::policy::Policy;

/// One endpoint's address and its metric handles.
#[derive(Debug)]
pub(crate) struct EndpointInfo {
    pub(crate) addr: SocketAddr,
    /// The address as text: the `upstream` label, and `Host` for a request that came without.
    pub(crate) name: String,
    pub(crate) metrics: UpstreamMetrics,
    /// Created on the first ejection (a series per endpoint of every service would crowd
    /// `/metrics` with endpoints this instance never calls).
    ejections: OnceLock<Counter>,
}

/// An endpoint id for the balancer: equal when the address is.
#[derive(Debug, Clone)]
pub(crate) struct Ep(pub(crate) Arc<EndpointInfo>);

impl PartialEq for Ep {
    fn eq(&self, other: &Ep) -> bool {
        self.0.addr == other.0.addr
    }
}

impl Eq for Ep {}

impl Hash for Ep {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.addr.hash(state);
    }
}

impl Ep {
    pub(crate) fn new(
        metrics: &Metrics,
        direction: Direction,
        service: &str,
        addr: SocketAddr,
        name: String,
    ) -> Ep {
        Ep(Arc::new(EndpointInfo {
            addr,
            metrics: metrics.upstream(direction.as_str(), service, &name),
            ejections: OnceLock::new(),
            name,
        }))
    }
}

thread_local! {
    /// One generator per worker thread: picks never contend on shared random state.
    static RNG: RefCell<WyRand> = RefCell::new(WyRand::new(crate::rng::next_u64()));
}

/// The endpoints behind one name and how calls to them are made.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) direction: Direction,
    /// The `service` metric label (`catalog`, or `catalog.prod` outside the own namespace).
    pub(crate) service: String,
    pub(crate) protocol: Protocol,
    pub(crate) lb: LoadBalancer<Ep>,
    pub(crate) policy: Arc<Policy>,
    /// The Service behind an outbound or gateway cluster (namespace, name): what a request
    /// held for it waits for (`hold`).
    pub(crate) target: Option<crate::hold::ServiceId>,
    /// Tells apart the Services whose endpoints may share an address: under mTLS a pooled
    /// connection was verified for one Service's identity and serves only that one (0: none).
    pub(crate) peer_tag: u64,
    metrics: Arc<Metrics>,
    /// Created on first use: a dynamic sidecar knows every service of the cluster, and most
    /// are never called from this instance (no series for them).
    svc: OnceLock<ServiceMetrics>,
    local: OnceLock<UpstreamMetrics>,
}

impl Cluster {
    pub(crate) fn new(
        metrics: &Arc<Metrics>,
        direction: Direction,
        service: &str,
        protocol: Protocol,
        lb: LoadBalancer<Ep>,
        policy: Arc<Policy>,
    ) -> Cluster {
        Cluster {
            direction,
            service: service.to_string(),
            protocol,
            lb,
            policy,
            target: None,
            peer_tag: 0,
            metrics: metrics.clone(),
            svc: OnceLock::new(),
            local: OnceLock::new(),
        }
    }

    /// The metrics registry (mTLS counters).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The cluster of a Service's port (outbound and gateway).
    pub(crate) fn for_service(mut self, namespace: &str, name: &str) -> Cluster {
        self.target = Some((namespace.to_string(), name.to_string()));
        use std::hash::BuildHasher;
        self.peer_tag =
            std::collections::hash_map::RandomState::new().hash_one((namespace, name)) | 1;
        self
    }

    /// Whether the cluster has any endpoint, ejected or not.
    #[inline]
    pub(crate) fn has_endpoints(&self) -> bool {
        !self.lb.endpoints().is_empty()
    }

    /// The service's metric handles.
    #[inline]
    pub(crate) fn svc(&self) -> &ServiceMetrics {
        self.svc.get_or_init(|| self.metrics.service(self.direction.as_str(), &self.service))
    }

    /// Requests the proxy answered itself (refused, no endpoint): `upstream="local"`.
    #[inline]
    pub(crate) fn local(&self) -> &UpstreamMetrics {
        self.local
            .get_or_init(|| self.metrics.upstream(self.direction.as_str(), &self.service, "local"))
    }

    /// The endpoint for the next attempt. Endpoints in `avoid` (already tried by this request)
    /// are skipped when another pick finds a different one: a retry should go elsewhere.
    #[inline]
    pub(crate) fn pick(
        &self,
        now: Instant,
        hash_key: Option<&[u8]>,
        avoid: &[SocketAddr],
    ) -> Option<&Endpoint<Ep>> {
        RNG.with_borrow_mut(|rng| {
            let first = self.lb.pick(now, hash_key, rng)?;
            if avoid.is_empty() || self.lb.endpoints().len() == 1 {
                return Some(first);
            }
            let mut pick = first;
            for _ in 0..4 {
                if !avoid.contains(&pick.id.0.addr) {
                    return Some(pick);
                }
                // Without a key: ring-hash with one would land on the same point again.
                pick = self.lb.pick(now, None, rng)?;
            }
            // Every pick was tried already; any available endpoint not yet tried will do.
            Some(
                self.lb
                    .endpoints()
                    .iter()
                    .find(|e| !avoid.contains(&e.id.0.addr) && !e.stats.is_ejected(now))
                    .unwrap_or(pick),
            )
        })
    }

    /// Whether requests should feed latency samples to the balancer (only p2c-ewma reads them:
    /// the others skip the floating-point work).
    #[inline]
    pub(crate) fn samples_latency(&self) -> bool {
        matches!(self.lb.algorithm(), Algorithm::P2cEwma(_))
    }

    /// An answer that was not an endpoint error: the error streak ends.
    #[inline]
    pub(crate) fn record_success(&self, ep: &Endpoint<Ep>) {
        self.policy.outlier.record_success(&ep.stats);
    }

    /// An endpoint error (5xx, connect failure, reset, timeout): counts toward ejection.
    pub(crate) fn record_failure(&self, ep: &Endpoint<Ep>, now: Instant) {
        if self.policy.outlier.config().consecutive_errors == 0 {
            return;
        }
        let eps = self.lb.endpoints();
        let Some(index) = eps.iter().position(|e| Arc::ptr_eq(&e.stats, &ep.stats)) else {
            return;
        };
        if let Verdict::Ejected(e) = self.policy.outlier.record_failure(eps, index, now) {
            let info = &ep.id.0;
            info.ejections
                .get_or_init(|| {
                    self.metrics.ejections(self.direction.as_str(), &self.service, &info.name)
                })
                .inc();
            eprintln!(
                "weft proxy: ejected {} from {} for {:?} after consecutive errors (ejection #{})",
                ep.id.0.name, self.service, e.duration, e.times
            );
        }
    }
}

/// Counts a request in flight on an endpoint (least-request and p2c read it) until dropped;
/// `answered` adds the latency sample p2c-ewma learns from.
pub(crate) struct InFlight<'a> {
    stats: &'a EndpointStats,
    at: Instant,
    latency: Option<Duration>,
}

impl<'a> InFlight<'a> {
    #[inline]
    pub(crate) fn begin(stats: &'a EndpointStats, at: Instant) -> InFlight<'a> {
        stats.begin();
        InFlight { stats, at, latency: None }
    }

    /// The endpoint answered `latency` after the attempt began (recorded when it ends).
    #[inline]
    pub(crate) fn answered(&mut self, latency: Duration) {
        self.latency = Some(latency);
    }
}

impl Drop for InFlight<'_> {
    #[inline]
    fn drop(&mut self) {
        // The sample's time is when the answer came; without a sample `end` ignores it.
        let when = self.at + self.latency.unwrap_or_default();
        self.stats.end(when, self.latency);
    }
}
