//! Service: a stable name for a set of instances, and the traffic policy sidecars apply to
//! calls to it.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::template::{PortRef, Protocol};

/// Annotation the api server sets (RFC 3339, milliseconds) when a proxy holds a request for the
/// service while it has no ready instance (`POST …/services/{name}/activate`); the autoscaler
/// controller follows it to scale the service's deployments from zero at once.
pub const ACTIVATION_ANNOTATION: &str = "weft.dev/activation-requested";
use crate::duration::Duration;
use crate::validate::{self, Validator};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Instances whose labels include all of these belong to the service
    /// (e.g. `deployment: catalog`).
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub traffic: TrafficPolicy,
    /// Expose the service on the ingress gateway: requests whose Host and path match go to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
}

/// A gateway route. The most specific match wins: a host match over any host, then the longest
/// path prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ingress {
    /// Host to match (`shop.localhost`); any host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "root")]
    pub path_prefix: String,
    /// The service port to send to (name or number); the first port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
}

fn root() -> String {
    "/".to_string()
}

impl ServiceSpec {
    pub(crate) fn validate(&self, v: &mut Validator) {
        if self.selector.is_empty() {
            v.error("spec.selector", "must select instances, e.g. {deployment: <name>}");
        }
        validate::labels(v, "spec.selector", &self.selector);
        if self.ports.is_empty() {
            v.error("spec.ports", "needs at least one port");
        }
        let mut names = BTreeMap::new();
        let mut numbers = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            let field = format!("spec.ports[{i}]");
            match &p.name {
                Some(n) => {
                    if let Err(e) = validate::dns_label(n) {
                        v.error(format!("{field}.name"), e);
                    }
                    if let Some(j) = names.insert(n.clone(), i) {
                        v.error(
                            format!("{field}.name"),
                            format!("{n:?} is already used by ports[{j}]"),
                        );
                    }
                }
                None if self.ports.len() > 1 => {
                    v.error(format!("{field}.name"), "is required when a service has several ports")
                }
                None => {}
            }
            if p.port == 0 {
                v.error(format!("{field}.port"), "must be between 1 and 65535");
            }
            if let Some(j) = numbers.insert(p.port, i) {
                v.error(
                    format!("{field}.port"),
                    format!("{} is already used by ports[{j}]", p.port),
                );
            }
        }
        self.traffic.validate(v);
        if let Some(ing) = &self.ingress {
            v.check(
                ing.path_prefix.starts_with('/'),
                "spec.ingress.pathPrefix",
                "must start with '/'",
            );
            if let Some(h) = &ing.host
                && let Err(e) = validate::dns_subdomain(h.split(':').next().unwrap_or(h))
            {
                v.error("spec.ingress.host", e);
            }
            if let Some(p) = &ing.port {
                let known = self.ports.iter().any(|sp| match p {
                    PortRef::Number(n) => sp.port == *n,
                    PortRef::Name(n) => sp.name.as_deref() == Some(n.as_str()),
                });
                v.check(
                    known,
                    "spec.ingress.port",
                    format!("{p} is not one of the service's ports"),
                );
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when the service has more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port callers use (`http://catalog:80/`, or plain `http://catalog/` for 80).
    pub port: u16,
    /// The instance port it maps to, by name or number. Defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<PortRef>,
    #[serde(default)]
    pub protocol: Protocol,
}

impl ServicePort {
    pub fn target(&self) -> PortRef {
        self.target_port.clone().unwrap_or(PortRef::Number(self.port))
    }
}

/// RPC governance the caller's sidecar applies (balancing, timeouts, retries, breaking) and
/// the callee's sidecar enforces (rate limit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Header whose value is hashed for `ring-hash` (e.g. `x-user-id`). Required for ring-hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_header: Option<String>,
    /// Overall deadline for a call, retries included (504 past it).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Deadline for each attempt; defaults to the overall timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default)]
    pub retries: RetryPolicy,
    /// Per instance, enforced by its inbound sidecar (429 past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// Inbound: most requests one instance serves at once; more get 503 at once rather than
    /// queueing. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    /// Overrides for some paths, matched by longest `pathPrefix` (and `methods`, when given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RoutePolicy>,
}

/// Policy for requests whose path starts with `pathPrefix`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutePolicy {
    pub path_prefix: String,
    /// Only these methods (e.g. `[GET, HEAD]`); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Inbound, per instance, in addition to the service's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Replaces the service's overall timeout for these requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

impl Default for TrafficPolicy {
    fn default() -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: LoadBalancer::default(),
            hash_header: None,
            timeout: default_timeout(),
            per_try_timeout: None,
            retries: RetryPolicy::default(),
            rate_limit: None,
            circuit_breaker: CircuitBreaker::default(),
            max_concurrent_requests: None,
            routes: Vec::new(),
        }
    }
}

impl TrafficPolicy {
    fn validate(&self, v: &mut Validator) {
        let p = "spec.traffic";
        match (&self.load_balancer, &self.hash_header) {
            (LoadBalancer::RingHash, None) => v.error(
                format!("{p}.hashHeader"),
                "is required with loadBalancer: ring-hash (the header whose value picks the instance)",
            ),
            (LoadBalancer::RingHash, Some(h)) if !is_header_name(h) => {
                v.error(format!("{p}.hashHeader"), format!("{h:?} is not a valid header name"))
            }
            (lb, Some(_)) if *lb != LoadBalancer::RingHash => v.error(
                format!("{p}.hashHeader"),
                "only applies to loadBalancer: ring-hash",
            ),
            _ => {}
        }
        v.check(!self.timeout.is_zero(), format!("{p}.timeout"), "must be more than 0s");
        if let Some(t) = &self.per_try_timeout {
            v.check(!t.is_zero(), format!("{p}.perTryTimeout"), "must be more than 0s");
            v.check(
                *t <= self.timeout,
                format!("{p}.perTryTimeout"),
                format!("{t} is longer than the overall timeout {}", self.timeout),
            );
        }
        self.retries.validate(v, &format!("{p}.retries"));
        if let Some(r) = &self.rate_limit {
            let ok = r.requests_per_second.is_finite() && r.requests_per_second > 0.0;
            v.check(ok, format!("{p}.rateLimit.requestsPerSecond"), "must be more than 0");
            if let Some(b) = r.burst {
                v.check(b >= 1, format!("{p}.rateLimit.burst"), "must be at least 1");
            }
        }
        self.circuit_breaker.validate(v, &format!("{p}.circuitBreaker"));
        if let Some(m) = self.max_concurrent_requests {
            v.check(m >= 1, format!("{p}.maxConcurrentRequests"), "must be at least 1");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let f = format!("{p}.routes[{i}]");
            v.check(
                r.path_prefix.starts_with('/'),
                format!("{f}.pathPrefix"),
                "must start with '/'",
            );
            for (j, m) in r.methods.iter().enumerate() {
                let ok = !m.is_empty() && m.bytes().all(|c| c.is_ascii_uppercase());
                v.check(
                    ok,
                    format!("{f}.methods[{j}]"),
                    format!("{m:?} is not an HTTP method (use e.g. GET)"),
                );
            }
            let mut methods = r.methods.clone();
            methods.sort();
            if !seen.insert((r.path_prefix.clone(), methods)) {
                v.error(
                    format!("{f}.pathPrefix"),
                    format!("{:?} with these methods is already routed", r.path_prefix),
                );
            }
            if let Some(rl) = &r.rate_limit {
                let ok = rl.requests_per_second.is_finite() && rl.requests_per_second > 0.0;
                v.check(ok, format!("{f}.rateLimit.requestsPerSecond"), "must be more than 0");
                if let Some(b) = rl.burst {
                    v.check(b >= 1, format!("{f}.rateLimit.burst"), "must be at least 1");
                }
            }
            if let Some(t) = &r.timeout {
                v.check(!t.is_zero(), format!("{f}.timeout"), "must be more than 0s");
            }
        }
    }
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    RoundRobin,
    /// Power of two choices by in-flight requests.
    LeastRequest,
    /// Power of two choices by peak-EWMA latency × (in-flight + 1).
    #[default]
    P2cEwma,
    /// Consistent hashing on `hashHeader`, for affinity.
    RingHash,
}

impl LoadBalancer {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancer::RoundRobin => "round-robin",
            LoadBalancer::LeastRequest => "least-request",
            LoadBalancer::P2cEwma => "p2c-ewma",
            LoadBalancer::RingHash => "ring-hash",
        }
    }
}

impl fmt::Display for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retries happen only when safe: idempotent methods, or failures before the request was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Extra attempts after the first (0 disables retries).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// What to retry on: `connect-failure`, `reset`, `5xx`, `gateway-error` (502/503/504),
    /// or a status code such as 503. Default `[connect-failure, reset, 503]`: `reset` because
    /// a callee whose app dies mid-request answers with a mark the caller reads as a reset
    /// (retried for idempotent methods only), as it reads a refused connect to a restarting
    /// app as `connect-failure`.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// Retries may add at most this percent of requests (plus `minRetriesPerSecond`).
    #[serde(default = "default_budget")]
    pub budget_percent: u32,
    #[serde(default = "default_min_retries")]
    pub min_retries_per_second: u32,
}

fn default_attempts() -> u32 {
    2
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Status(503)]
}
fn default_budget() -> u32 {
    20
}
fn default_min_retries() -> u32 {
    10
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: default_attempts(),
            on: default_retry_on(),
            budget_percent: default_budget(),
            min_retries_per_second: default_min_retries(),
        }
    }
}

impl RetryPolicy {
    fn validate(&self, v: &mut Validator, p: &str) {
        v.check(self.attempts <= 10, format!("{p}.attempts"), "must be at most 10");
        v.check(self.budget_percent <= 100, format!("{p}.budgetPercent"), "must be at most 100");
    }
}

/// A condition worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connection could not be opened (or a pooled one was closed before the request
    /// was sent).
    ConnectFailure,
    /// The connection was reset before a response arrived.
    Reset,
    /// Any 5xx response.
    Server5xx,
    /// 502, 503 or 504.
    GatewayError,
    /// This status code.
    Status(u16),
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryOn::ConnectFailure => f.write_str("connect-failure"),
            RetryOn::Reset => f.write_str("reset"),
            RetryOn::Server5xx => f.write_str("5xx"),
            RetryOn::GatewayError => f.write_str("gateway-error"),
            RetryOn::Status(s) => write!(f, "{s}"),
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryOn::Status(code) => s.serialize_u16(*code),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(i64),
            Text(String),
        }
        let status = |n: i64| {
            u16::try_from(n)
                .ok()
                .filter(|n| (100..=599).contains(n))
                .map(RetryOn::Status)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("{n} is not an HTTP status code (100-599)"))
                })
        };
        match Raw::deserialize(d)? {
            Raw::Code(n) => status(n),
            Raw::Text(s) => match s.as_str() {
                "connect-failure" => Ok(RetryOn::ConnectFailure),
                "reset" => Ok(RetryOn::Reset),
                "5xx" => Ok(RetryOn::Server5xx),
                "gateway-error" => Ok(RetryOn::GatewayError),
                other => match other.parse::<i64>() {
                    Ok(n) => status(n),
                    Err(_) => Err(serde::de::Error::custom(format!(
                        "unknown retry condition {other:?} (use connect-failure, reset, 5xx, gateway-error or a status code)"
                    ))),
                },
            },
        }
    }
}

impl JsonSchema for RetryOn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetryOn".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "connect-failure, reset, 5xx, gateway-error, or an HTTP status code.",
            "oneOf": [
                { "type": "string", "enum": ["connect-failure", "reset", "5xx", "gateway-error"] },
                { "type": "integer", "minimum": 100, "maximum": 599 }
            ]
        })
    }
}

/// Token bucket: `requestsPerSecond` refill, `burst` capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    pub requests_per_second: f64,
    /// Defaults to one second's worth of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Limits that shed load before it queues, and ejection of failing instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    #[serde(default = "default_limit")]
    pub max_connections: u32,
    #[serde(default = "default_limit")]
    pub max_pending_requests: u32,
    #[serde(default = "default_limit")]
    pub max_requests: u32,
    /// Consecutive errors (5xx, connect failures) that eject an instance (0 disables ejection).
    #[serde(default = "default_consecutive")]
    pub consecutive_errors: u32,
    /// Base ejection time; it grows with each repeated ejection.
    #[serde(default = "default_ejection")]
    pub ejection_time: Duration,
    /// At most this share of a service's instances is ejected at once.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_percent: u32,
}

fn default_limit() -> u32 {
    1024
}
fn default_consecutive() -> u32 {
    5
}
fn default_ejection() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection() -> u32 {
    50
}

impl Default for CircuitBreaker {
    fn default() -> CircuitBreaker {
        CircuitBreaker {
            max_connections: default_limit(),
            max_pending_requests: default_limit(),
            max_requests: default_limit(),
            consecutive_errors: default_consecutive(),
            ejection_time: default_ejection(),
            max_ejection_percent: default_max_ejection(),
        }
    }
}

impl CircuitBreaker {
    fn validate(&self, v: &mut Validator, p: &str) {
        for (value, name) in [
            (self.max_connections, "maxConnections"),
            (self.max_pending_requests, "maxPendingRequests"),
            (self.max_requests, "maxRequests"),
        ] {
            v.check(value >= 1, format!("{p}.{name}"), "must be at least 1");
        }
        v.check(
            self.max_ejection_percent <= 100,
            format!("{p}.maxEjectionPercent"),
            "must be at most 100",
        );
        if self.consecutive_errors > 0 {
            v.check(
                !self.ejection_time.is_zero(),
                format!("{p}.ejectionTime"),
                "must be more than 0s",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_mixed_list() {
        let v: Vec<RetryOn> =
            serde_json::from_str(r#"["connect-failure", 503, "5xx", "502"]"#).unwrap();
        assert_eq!(
            v,
            vec![
                RetryOn::ConnectFailure,
                RetryOn::Status(503),
                RetryOn::Server5xx,
                RetryOn::Status(502)
            ]
        );
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"["connect-failure",503,"5xx",502]"#);
        let e = serde_json::from_str::<RetryOn>(r#""sometimes""#).unwrap_err().to_string();
        assert!(e.contains("unknown retry condition"), "{e}");
        assert!(serde_json::from_str::<RetryOn>("99").is_err());
    }

    #[test]
    fn default_retries_cover_an_app_that_dies() {
        let p: RetryPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, RetryPolicy::default());
        assert_eq!(serde_json::to_string(&p.on).unwrap(), r#"["connect-failure","reset",503]"#);
    }

    #[test]
    fn header_names() {
        assert!(is_header_name("x-user-id"));
        assert!(!is_header_name("x user"));
        assert!(!is_header_name(""));
    }
}
