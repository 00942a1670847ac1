//! Prometheus metrics, with label sets resolved before the hot path.
//!
//! Families are registered once; a request only touches pre-resolved handles (an atomic add, a
//! histogram observe): per service the in-flight gauge, the duration histograms by status class
//! and the error counters; per upstream one lazily created counter per common status code (other
//! codes look their series up). Policy metrics (rate limiting, circuit breaking, ejections,
//! retries) get their handles when a configuration snapshot is built; the control plane's own
//! (`weft_config_updates_total`, `weft_config_revision`) are global.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    service: String,
    upstream: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    direction: &'static str,
    service: String,
    upstream: String,
    grpc_status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    direction: &'static str,
    service: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    direction: &'static str,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpLabels {
    direction: &'static str,
    service: String,
    peer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    direction: &'static str,
    service: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    direction: &'static str,
    service: String,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    direction: &'static str,
    service: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldLabels {
    direction: &'static str,
    service: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    direction: &'static str,
    service: String,
    kind: &'static str,
}

/// Why the proxy answered on its own or cut a connection (`weft_proxy_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Unparsable request (hyper answered 400 or 414).
    BadRequest,
    /// Request head over the size or count limit (431).
    HeaderTooLarge,
    /// Client did not send a complete request head in time (connection closed).
    HeaderTimeout,
    /// Upstream refused or did not accept the connection (502).
    UpstreamConnect,
    /// Upstream sent no response head in time (504).
    UpstreamTimeout,
    /// Upstream failed before a response head (502).
    UpstreamError,
    /// Upstream failed after the response head: the client connection was aborted.
    UpstreamReset,
    /// Client went away before the response was complete.
    ClientAbort,
    /// Request this mode does not proxy (e.g. CONNECT: 405).
    Unsupported,
    /// Outbound request naming no known service or port (503); gateway request matching no
    /// ingress route (404).
    NoRoute,
    /// The service has no ready endpoint (503).
    NoEndpoint,
    /// Over a circuit-breaker limit or the inbound concurrency cap (503).
    Overloaded,
    /// Over the inbound rate limit (429).
    RateLimited,
    /// Held for a service with no endpoint until the hold timeout (503).
    HoldTimeout,
    /// Refused because the service's hold queue was full (503).
    HoldQueueFull,
    /// Denied by authorization policy at the inbound sidecar (403).
    Forbidden,
}

impl ErrorKind {
    const ALL: [ErrorKind; 16] = [
        ErrorKind::BadRequest,
        ErrorKind::HeaderTooLarge,
        ErrorKind::HeaderTimeout,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamError,
        ErrorKind::UpstreamReset,
        ErrorKind::ClientAbort,
        ErrorKind::Unsupported,
        ErrorKind::NoRoute,
        ErrorKind::NoEndpoint,
        ErrorKind::Overloaded,
        ErrorKind::RateLimited,
        ErrorKind::HoldTimeout,
        ErrorKind::HoldQueueFull,
        ErrorKind::Forbidden,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::HeaderTooLarge => "header_too_large",
            ErrorKind::HeaderTimeout => "header_timeout",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamError => "upstream_error",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::ClientAbort => "client_abort",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NoEndpoint => "no_endpoint",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::HoldTimeout => "hold_timeout",
            ErrorKind::HoldQueueFull => "hold_queue_full",
            ErrorKind::Forbidden => "forbidden",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// gRPC status names by code (0..=16); anything else is "unknown".
const GRPC_STATUS: [&str; 18] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "other",
];

/// Status codes with a pre-resolved counter per upstream; others look their series up.
const COMMON_CODES: [u16; 16] =
    [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504];

/// The registry and the metric families.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    grpc: Family<GrpcLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<ServiceLabels, Gauge>,
    tcp: Family<TcpLabels, Gauge>,
    errors: Family<ErrorLabels, Counter>,
    rate_limited: Family<RouteLabels, Counter>,
    circuit_open: Family<ServiceLabels, Gauge>,
    circuit_rejected: Family<LimitLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    config_updates: Family<ResultLabels, Counter>,
    config_revision: Gauge,
    held: Family<HeldLabels, Counter>,
    mtls: Family<MtlsLabels, Counter>,
    cert_expiry: Gauge,
    authz: Family<AuthzLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    service: String,
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MtlsLabels {
    side: &'static str,
    result: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let grpc = Family::<GrpcLabels, Counter>::default();
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let in_flight = Family::<ServiceLabels, Gauge>::default();
        let tcp = Family::<TcpLabels, Gauge>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "weft_requests",
            "Requests proxied, by upstream and HTTP status code",
            requests.clone(),
        );
        registry.register(
            "weft_request_duration_seconds",
            "Time from request head to the end of the response, by status class",
            durations.clone(),
        );
        registry.register(
            "weft_requests_in_flight",
            "Requests being proxied now",
            in_flight.clone(),
        );
        registry.register(
            "weft_tcp_connections",
            "Open TCP connections, by peer (downstream clients, upstreams)",
            tcp.clone(),
        );
        registry.register(
            "weft_proxy_errors",
            "Requests answered by the proxy itself or connections it cut, by reason",
            errors.clone(),
        );
        registry.register(
            "weft_grpc_responses",
            "gRPC responses proxied, by upstream and grpc-status",
            grpc.clone(),
        );
        let rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "weft_rate_limited",
            "Requests refused with 429 by the inbound rate limit, by route (* for the service's own limit)",
            rate_limited.clone(),
        );
        let circuit_open = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "weft_circuit_open",
            "1 while a circuit-breaker limit of the service is reached (read at scrape time)",
            circuit_open.clone(),
        );
        let circuit_rejected = Family::<LimitLabels, Counter>::default();
        registry.register(
            "weft_circuit_rejected",
            "Requests refused with 503 by a circuit-breaker limit or the inbound concurrency cap",
            circuit_rejected.clone(),
        );
        let ejections = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "weft_endpoint_ejections",
            "Endpoints ejected by outlier detection (consecutive errors)",
            ejections.clone(),
        );
        let retries = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "weft_retries",
            "Retried attempts, within the retry budget",
            retries.clone(),
        );
        let config_updates = Family::<ResultLabels, Counter>::default();
        registry.register(
            "weft_config_updates",
            "Configuration updates from the control plane or file: applied, or rejected as invalid",
            config_updates.clone(),
        );
        let config_revision = Gauge::default();
        registry.register(
            "weft_config_revision",
            "Store revision of the configuration being served (0: none yet)",
            config_revision.clone(),
        );
        let held = Family::<HeldLabels, Counter>::default();
        registry.register(
            "weft_held_requests",
            "Requests held for a service with no endpoint (scale from zero), by how the hold \
             ended: released (to an endpoint), timeout, queue_full, or cancelled (client gone)",
            held.clone(),
        );
        let mtls = Family::<MtlsLabels, Counter>::default();
        registry.register(
            "weft_mtls_connections",
            "Mesh connections by side (inbound: accepted on an inbound port; outbound: opened \
             to another sidecar) and result: mtls, plaintext (permissive or off), \
             refused_plaintext (strict), refused_handshake (no, bad or expired certificate, \
             wrong identity)",
            mtls.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register(
            "weft_mtls_certificate_expiry_seconds",
            "Unix time at which the sidecar's workload certificate expires (0: none)",
            cert_expiry.clone(),
        );
        let authz = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "weft_authz_decisions",
            "Authorization decisions of the inbound sidecar by target service, deciding policy \
             (namespace/name, or (default) when none matched) and result (allow, deny); calls \
             to a service without policies under an allow default are not counted",
            authz.clone(),
        );
        Metrics {
            authz,
            mtls,
            cert_expiry,
            held,
            registry,
            requests,
            grpc,
            durations,
            in_flight,
            tcp,
            errors,
            rate_limited,
            circuit_open,
            circuit_rejected,
            ejections,
            retries,
            config_updates,
            config_revision,
        }
    }

    /// For families registered outside this module (tracing and access logs, `crate::obs`).
    pub(crate) fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition (OpenMetrics) of every family.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn service(&self, direction: &'static str, service: &str) -> ServiceMetrics {
        let svc = ServiceLabels { direction, service: service.to_string() };
        let durations = CLASSES.map(|class| {
            self.durations
                .get_or_create(&DurationLabels { direction, service: service.to_string(), class })
                .clone()
        });
        let errors = ErrorKind::ALL.map(|kind| {
            self.errors
                .get_or_create(&ErrorLabels {
                    direction,
                    service: service.to_string(),
                    kind: kind.as_str(),
                })
                .clone()
        });
        let tcp = |peer| {
            self.tcp
                .get_or_create(&TcpLabels { direction, service: service.to_string(), peer })
                .clone()
        };
        ServiceMetrics {
            in_flight: self.in_flight.get_or_create(&svc).clone(),
            durations,
            errors,
            downstream_connections: tcp("downstream"),
            upstream_connections: tcp("upstream"),
        }
    }

    pub(crate) fn upstream(
        &self,
        direction: &'static str,
        service: &str,
        upstream: &str,
    ) -> UpstreamMetrics {
        UpstreamMetrics {
            direction,
            service: service.to_string(),
            upstream: upstream.to_string(),
            requests: self.requests.clone(),
            grpc: self.grpc.clone(),
            codes: std::array::from_fn(|_| OnceLock::new()),
            grpc_codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub(crate) fn rate_limited(
        &self,
        direction: &'static str,
        service: &str,
        route: &str,
    ) -> Counter {
        let l = RouteLabels { direction, service: service.into(), route: route.into() };
        self.rate_limited.get_or_create(&l).clone()
    }

    pub(crate) fn circuit_open(&self, direction: &'static str, service: &str) -> Gauge {
        let l = ServiceLabels { direction, service: service.into() };
        self.circuit_open.get_or_create(&l).clone()
    }

    pub(crate) fn circuit_rejected(
        &self,
        direction: &'static str,
        service: &str,
        limit: &'static str,
    ) -> Counter {
        let l = LimitLabels { direction, service: service.into(), limit };
        self.circuit_rejected.get_or_create(&l).clone()
    }

    pub(crate) fn ejections(
        &self,
        direction: &'static str,
        service: &str,
        upstream: &str,
    ) -> Counter {
        let l = EndpointLabels { direction, service: service.into(), upstream: upstream.into() };
        self.ejections.get_or_create(&l).clone()
    }

    pub(crate) fn retries(&self, direction: &'static str, service: &str) -> Counter {
        let l = ServiceLabels { direction, service: service.into() };
        self.retries.get_or_create(&l).clone()
    }

    /// A request held for `service` ended (`released`, `timeout`, `queue_full`, `cancelled`).
    pub(crate) fn held(&self, direction: &'static str, service: &str, result: &'static str) {
        let l = HeldLabels { direction, service: service.into(), result };
        self.held.get_or_create(&l).inc();
    }

    /// A configuration update was applied (`true`) or rejected as invalid.
    pub(crate) fn config_update(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.config_updates.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a mesh connection (see `weft_mtls_connections_total`).
    pub(crate) fn mtls(&self, side: &'static str, result: &'static str) {
        self.mtls.get_or_create(&MtlsLabels { side, result }).inc();
    }

    /// The counter of one authorization outcome (handles are resolved when policies change,
    /// not per request).
    pub(crate) fn authz_decision(&self, service: &str, policy: &str, allow: bool) -> Counter {
        let result = if allow { "allow" } else { "deny" };
        let l = AuthzLabels { service: service.into(), policy: policy.into(), result };
        self.authz.get_or_create(&l).clone()
    }

    /// Records when the workload certificate expires.
    pub(crate) fn set_cert_expiry(&self, unix: u64) {
        self.cert_expiry.set(i64::try_from(unix).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_config_revision(&self, revision: u64) {
        self.config_revision.set(i64::try_from(revision).unwrap_or(i64::MAX));
    }
}

/// Pre-resolved handles for one (direction, service).
#[derive(Debug)]
pub(crate) struct ServiceMetrics {
    pub(crate) in_flight: Gauge,
    durations: [Histogram; 5],
    errors: [Counter; ErrorKind::ALL.len()],
    pub(crate) downstream_connections: Gauge,
    pub(crate) upstream_connections: Gauge,
}

impl ServiceMetrics {
    #[inline]
    pub(crate) fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }

    #[inline]
    pub(crate) fn observe(&self, status: u16, start: Instant, end: Instant) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.durations[class].observe(end.saturating_duration_since(start).as_secs_f64());
    }
}

/// Counters for one upstream, created on first use per status code.
#[derive(Debug)]
pub(crate) struct UpstreamMetrics {
    direction: &'static str,
    service: String,
    upstream: String,
    requests: Family<RequestLabels, Counter>,
    grpc: Family<GrpcLabels, Counter>,
    codes: [OnceLock<Counter>; COMMON_CODES.len()],
    grpc_codes: [OnceLock<Counter>; GRPC_STATUS.len()],
}

impl UpstreamMetrics {
    /// The `service` label.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Counts one response with this HTTP status.
    #[inline]
    pub(crate) fn response(&self, status: u16) {
        let code = status.clamp(100, 599);
        let series = || {
            self.requests
                .get_or_create(&RequestLabels {
                    direction: self.direction,
                    service: self.service.clone(),
                    upstream: self.upstream.clone(),
                    code,
                })
                .clone()
        };
        match COMMON_CODES.iter().position(|&c| c == code) {
            Some(i) => self.codes[i].get_or_init(series).inc(),
            None => series().inc(),
        };
    }

    /// Counts one gRPC response with this `grpc-status` value.
    pub(crate) fn grpc_status(&self, value: &[u8]) {
        let idx = match value {
            [d @ b'0'..=b'9'] => usize::from(d - b'0'),
            [b'1', d @ b'0'..=b'6'] => 10 + usize::from(d - b'0'),
            _ => GRPC_STATUS.len() - 1,
        };
        self.grpc_codes[idx]
            .get_or_init(|| {
                self.grpc
                    .get_or_create(&GrpcLabels {
                        direction: self.direction,
                        service: self.service.clone(),
                        upstream: self.upstream.clone(),
                        grpc_status: GRPC_STATUS[idx],
                    })
                    .clone()
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_pre_resolved_series() {
        let m = Metrics::new();
        let s = m.service("inbound", "shop");
        let u = m.upstream("inbound", "shop", "127.0.0.1:1");
        u.response(200);
        u.response(200);
        u.response(503);
        u.grpc_status(b"14");
        s.error(ErrorKind::BadRequest);
        s.observe(200, Instant::now(), Instant::now());
        let text = m.encode();
        assert!(text.contains(
            r#"weft_requests_total{direction="inbound",service="shop",upstream="127.0.0.1:1",code="200"} 2"#
        ), "{text}");
        assert!(text.contains(r#"code="503"} 1"#), "{text}");
        assert!(text.contains(r#"grpc_status="14"} 1"#), "{text}");
        assert!(text.contains(r#"weft_proxy_errors_total{direction="inbound",service="shop",kind="bad_request"} 1"#), "{text}");
        assert!(text.contains(r#"weft_request_duration_seconds_count{direction="inbound",service="shop",class="2xx"} 1"#), "{text}");
    }
}
