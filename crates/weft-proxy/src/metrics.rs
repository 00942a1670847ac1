//! Prometheus metrics, with label sets resolved before the hot path.
//!
//! Families are registered once; a request only touches pre-resolved handles (an atomic add, a
//! histogram observe): per service the in-flight gauge, the duration histograms by status class
//! and the error counters; per upstream one lazily created counter per status code.

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
    peer: &'static str,
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
}

impl ErrorKind {
    const ALL: [ErrorKind; 9] = [
        ErrorKind::BadRequest,
        ErrorKind::HeaderTooLarge,
        ErrorKind::HeaderTimeout,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamError,
        ErrorKind::UpstreamReset,
        ErrorKind::ClientAbort,
        ErrorKind::Unsupported,
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
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// gRPC status names by code (0..=16); anything else is "unknown".
const GRPC_STATUS: [&str; 18] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "other",
];

/// The registry and the metric families.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    grpc: Family<GrpcLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<ServiceLabels, Gauge>,
    tcp: Family<TcpLabels, Gauge>,
    errors: Family<ErrorLabels, Counter>,
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
        Metrics { registry, requests, grpc, durations, in_flight, tcp, errors }
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
        let tcp = |peer| self.tcp.get_or_create(&TcpLabels { direction, peer }).clone();
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
            codes: (100..600).map(|_| OnceLock::new()).collect(),
            grpc_codes: std::array::from_fn(|_| OnceLock::new()),
        }
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
    codes: Box<[OnceLock<Counter>]>,
    grpc_codes: [OnceLock<Counter>; GRPC_STATUS.len()],
}

impl UpstreamMetrics {
    /// Counts one response with this HTTP status.
    #[inline]
    pub(crate) fn response(&self, status: u16) {
        let code = status.clamp(100, 599);
        self.codes[usize::from(code - 100)]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        direction: self.direction,
                        service: self.service.clone(),
                        upstream: self.upstream.clone(),
                        code,
                    })
                    .clone()
            })
            .inc();
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
