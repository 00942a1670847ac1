//! What an instance runs: the template a Deployment stamps out and an Instance carries.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::Duration;
use crate::quantity::Quantity;
use crate::validate::{self, Validator};

/// A process to run, with its ports, resources and health checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    /// Labels put on every instance (in addition to `deployment: <name>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Program and arguments, run without a shell. A bare program name is looked up on the
    /// agent's PATH.
    pub command: Vec<String>,
    /// Environment variables. Numbers and booleans are accepted and kept as text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "env_map")]
    #[schemars(with = "BTreeMap<String, EnvValueSchema>")]
    pub env: BTreeMap<String, String>,
    /// Working directory; defaults to the instance's own directory under the agent's data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Ports the app serves. The app listens on `$PORT` (the first port) or `$PORT_<NAME>`;
    /// its sidecar owns the public port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Whether the instance should receive traffic. Failing readiness takes it out of its
    /// services' endpoints; it is not restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    /// Whether the instance is alive. Failing liveness restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    /// Fixed local ports for clients that cannot use `HTTP_PROXY` (TCP, gRPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,
    /// How long the app has to exit after SIGTERM before it is killed.
    #[serde(default = "default_grace")]
    pub termination_grace_period: Duration,
    /// The service name in this workload's mTLS identity
    /// (`spiffe://<trust-domain>/ns/<namespace>/svc/<identity>`), which authorization policies
    /// name in `from`. Defaults to the deployment's name. Give the deployments behind one
    /// Service under other names (a canary `api-v2` beside `api`) that Service's name, so that
    /// policies see them as one caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvValueSchema {
    Text(String),
    Number(f64),
    Bool(bool),
}

fn env_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

impl Template {
    pub(crate) fn validate(&self, v: &mut Validator, path: &str) {
        validate::labels(v, &format!("{path}.labels"), &self.labels);
        match self.command.first() {
            None => v.error(format!("{path}.command"), "must name a program to run"),
            Some(p) if p.trim().is_empty() => {
                v.error(format!("{path}.command[0]"), "the program name is empty")
            }
            _ => {}
        }
        for name in self.env.keys() {
            if !validate::env_name(name) {
                v.error(
                    format!("{path}.env[{name:?}]"),
                    "not a valid environment variable name (letters, digits and '_', not starting with a digit)",
                );
            }
        }
        let mut names = BTreeMap::new();
        let mut numbers = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            let field = format!("{path}.ports[{i}]");
            if let Err(e) = validate::dns_label(&p.name) {
                v.error(format!("{field}.name"), e);
            }
            if p.port == 0 {
                v.error(format!("{field}.port"), "must be between 1 and 65535");
            }
            if let Some(j) = names.insert(p.name.as_str(), i) {
                v.error(
                    format!("{field}.name"),
                    format!("{:?} is already used by ports[{j}]", p.name),
                );
            }
            if let Some(j) = numbers.insert(p.port, i) {
                v.error(
                    format!("{field}.port"),
                    format!("{} is already used by ports[{j}]", p.port),
                );
            }
        }
        if let Some(id) = &self.identity
            && let Err(e) = validate::dns_label(id)
        {
            v.error(format!("{path}.identity"), e);
        }
        self.resources.validate(v, &format!("{path}.resources"));
        for (probe, name) in [(&self.readiness, "readiness"), (&self.liveness, "liveness")] {
            if let Some(p) = probe {
                p.validate(v, &format!("{path}.{name}"), &self.ports);
            }
        }
        let mut local = BTreeMap::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let field = format!("{path}.upstreams[{i}]");
            if let Err(e) = validate::dns_label(&u.service) {
                v.error(format!("{field}.service"), e);
            }
            if let Some(ns) = &u.namespace
                && let Err(e) = validate::dns_label(ns)
            {
                v.error(format!("{field}.namespace"), e);
            }
            if u.local_port == 0 {
                v.error(format!("{field}.localPort"), "must be between 1 and 65535");
            }
            if let Some(j) = local.insert(u.local_port, i) {
                v.error(
                    format!("{field}.localPort"),
                    format!("{} is already used by upstreams[{j}]", u.local_port),
                );
            }
        }
    }

    /// The port a name or number refers to.
    pub fn port(&self, r: &PortRef) -> Option<&ContainerPort> {
        match r {
            PortRef::Name(n) => self.ports.iter().find(|p| &p.name == n),
            PortRef::Number(n) => self.ports.iter().find(|p| p.port == *n),
        }
    }
}

/// A port the app serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPort {
    /// How services refer to the port, e.g. `http`.
    pub name: String,
    /// The port the app declares; the agent maps it to a free local port.
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// How the sidecar speaks to a port. Declared, never sniffed, so server-speaks-first
/// protocols never stall on detection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (and HTTP/2 when the client asks for it with prior knowledge).
    #[default]
    Http,
    /// HTTP/2 cleartext (h2c) end to end.
    Http2,
    /// gRPC: HTTP/2 with trailers; `grpc-status` is read for metrics.
    Grpc,
    /// Opaque TCP: bytes are relayed, only connections are counted.
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port by name (`http`) or by number (`8080`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => s.serialize_u16(*n),
            PortRef::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => {
                u16::try_from(n).ok().filter(|n| *n > 0).map(PortRef::Number).ok_or_else(|| {
                    serde::de::Error::custom(format!("port {n} is not between 1 and 65535"))
                })
            }
            Raw::Name(s) => match s.parse::<u16>() {
                Ok(n) if n > 0 => Ok(PortRef::Number(n)),
                _ if s.is_empty() => Err(serde::de::Error::custom("port name is empty")),
                _ => Ok(PortRef::Name(s)),
            },
        }
    }
}

/// Resource requests (what the scheduler reserves) and limits (what the agent enforces).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }

    /// Kubernetes' rule: a limit without a request requests the limit.
    pub(crate) fn apply_defaults(&mut self) {
        if self.requests.cpu.is_none() {
            self.requests.cpu = self.limits.cpu;
        }
        if self.requests.memory.is_none() {
            self.requests.memory = self.limits.memory;
        }
    }

    fn validate(&self, v: &mut Validator, path: &str) {
        for (req, lim, name) in [
            (&self.requests.cpu, &self.limits.cpu, "cpu"),
            (&self.requests.memory, &self.limits.memory, "memory"),
        ] {
            if let (Some(r), Some(l)) = (req, lim)
                && r > l
            {
                v.error(
                    format!("{path}.requests.{name}"),
                    format!("request {r} is more than the limit {l}"),
                );
            }
        }
        if let Some(l) = &self.limits.memory
            && l.is_zero()
        {
            v.error(format!("{path}.limits.memory"), "must be more than 0");
        }
        if let Some(l) = &self.limits.cpu
            && l.is_zero()
        {
            v.error(format!("{path}.limits.cpu"), "must be more than 0");
        }
    }
}

/// Amounts of cpu (cores: `1`, `0.5`, `250m`) and memory (bytes: `64Mi`, `1G`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl ResourceList {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }

    /// Cpu in millicores (0 when unset).
    pub fn cpu_millis(&self) -> u64 {
        self.cpu.as_ref().map_or(0, Quantity::as_milli_ceil)
    }

    /// Memory in bytes (0 when unset).
    pub fn memory_bytes(&self) -> u64 {
        self.memory.as_ref().map_or(0, Quantity::as_units_ceil)
    }
}

/// A health check. Exactly one of `http`, `tcp` and `exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    /// Healthy when `GET path` answers 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// Healthy when a TCP connection opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// Healthy when the command exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    #[serde(default)]
    pub initial_delay_seconds: u32,
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Consecutive failures before the probe counts as failed.
    #[serde(default = "default_failures")]
    pub failure_threshold: u32,
    /// Consecutive successes before the probe counts as passed again.
    #[serde(default = "default_successes")]
    pub success_threshold: u32,
}

fn default_period() -> u32 {
    10
}
fn default_timeout() -> u32 {
    1
}
fn default_failures() -> u32 {
    3
}
fn default_successes() -> u32 {
    1
}

impl Probe {
    fn validate(&self, v: &mut Validator, path: &str, ports: &[ContainerPort]) {
        let kinds = [self.http.is_some(), self.tcp.is_some(), self.exec.is_some()];
        match kinds.iter().filter(|k| **k).count() {
            0 => v.error(path, "needs one of http, tcp or exec"),
            1 => {}
            _ => v.error(path, "give only one of http, tcp or exec"),
        }
        let port_exists = |r: &PortRef| match r {
            PortRef::Name(n) => ports.iter().any(|p| &p.name == n),
            PortRef::Number(n) => ports.iter().any(|p| p.port == *n),
        };
        if let Some(h) = &self.http {
            if !h.path.starts_with('/') {
                v.error(format!("{path}.http.path"), "must start with '/'");
            }
            match &h.port {
                Some(p) if !port_exists(p) => v.error(
                    format!("{path}.http.port"),
                    format!("{p} is not one of the template's ports"),
                ),
                None if ports.is_empty() => v.error(
                    format!("{path}.http"),
                    "the template declares no ports to probe; add ports or use an exec probe",
                ),
                _ => {}
            }
        }
        if let Some(t) = &self.tcp {
            match &t.port {
                Some(p) if !port_exists(p) => v.error(
                    format!("{path}.tcp.port"),
                    format!("{p} is not one of the template's ports"),
                ),
                None if ports.is_empty() => v.error(
                    format!("{path}.tcp"),
                    "the template declares no ports to probe; add ports or use an exec probe",
                ),
                _ => {}
            }
        }
        if let Some(e) = &self.exec
            && e.command.first().is_none_or(|c| c.trim().is_empty())
        {
            v.error(format!("{path}.exec.command"), "must name a program to run");
        }
        v.check(self.period_seconds >= 1, format!("{path}.periodSeconds"), "must be at least 1");
        v.check(self.timeout_seconds >= 1, format!("{path}.timeoutSeconds"), "must be at least 1");
        v.check(
            self.failure_threshold >= 1,
            format!("{path}.failureThreshold"),
            "must be at least 1",
        );
        v.check(
            self.success_threshold >= 1,
            format!("{path}.successThreshold"),
            "must be at least 1",
        );
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    pub path: String,
    /// Defaults to the first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpProbe {
    /// Defaults to the first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecProbe {
    pub command: Vec<String>,
}

/// A fixed local port on which the sidecar forwards to a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upstream {
    pub service: String,
    /// Defaults to the instance's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The service port (name or number); defaults to its first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// Where the app connects: `<WEFT_IP>:<localPort>` under an agent (each instance has its
    /// own loopback address, also given as `WEFT_UPSTREAM_<SERVICE>`), `127.0.0.1:<localPort>`
    /// for a sidecar started by hand.
    pub local_port: u16,
}
