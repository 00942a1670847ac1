//! Command-line flags and the effective configuration they produce.
//!
//! Flags are taken as text and checked here (not by clap) so that every bad value becomes one
//! [`ConfigError`] line naming its flag, and `weft proxy` can exit 64 for it. The sidecar's own
//! settings (listeners, where services come from) are [`crate::sidecar::SidecarConfig`]; the
//! static `--config FILE` is read by [`crate::sidecar::file`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use crate::sidecar::SidecarConfig;

/// Flag defaults, shared by clap (help) and [`ProxyArgs::parse_plain`].
mod defaults {
    pub const SERVICE: &str = "default";
    pub const DIRECTION: &str = "inbound";
    pub const TIMEOUT: &str = "15s";
    pub const CONNECT_TIMEOUT: &str = "5s";
    pub const HEADER_TIMEOUT: &str = "10s";
    pub const IDLE_TIMEOUT: &str = "60s";
    pub const UPSTREAM_IDLE_TIMEOUT: &str = "30s";
    pub const DRAIN_GRACE: &str = "10s";
    pub const MAX_HEADER_BYTES: &str = "65536";
    pub const MAX_HEADERS: &str = "100";
    pub const MAX_IDLE_PER_UPSTREAM: &str = "1024";
    pub const HTTP1: &str = "fast";
    pub const RUNTIME: &str = "per-core";
    pub const HOLD_TIMEOUT: &str = "10s";
    pub const HOLD_QUEUE: &str = "100";
    pub const TRUST_DOMAIN: &str = "weft.local";
    pub const TRACE_SAMPLE_RATIO: &str = "1";
    pub const ACCESS_LOG: &str = "off";
}

/// Where `weft up` puts its gateway when not told otherwise (`weft proxy` has no default: a
/// gateway is asked for by giving `--gateway`).
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:8080";

/// How `weft proxy` explains its modes (`--help`).
pub const HELP: &str = "\
Modes:
  plain reverse proxy   weft proxy --listen ADDR --upstream ADDR[,ADDR...]
  static sidecar        weft proxy --config FILE
  dynamic sidecar       weft proxy --server URL --token T --instance NAME [--namespace NS]
  ingress gateway       weft proxy --gateway ADDR --server URL --token T   (or --config FILE)
  (--server takes a comma-separated list of api servers; for https ones, --ca-file FILE)

Listener flags (both sidecar modes; added to the --config file's, and to the Instance's upstreams):
  --inbound NAME=PUBLIC_ADDR:APP_ADDR[:PROTOCOL]   the instance's port NAME: PUBLIC_ADDR is owned by
        the proxy, APP_ADDR is where the app listens ($PORT); PROTOCOL http (default), http2, grpc
        or tcp. IPv6: NAME=[::1]:31001,[::1]:41001,tcp (commas instead of colons).
  --outbound ADDR          the app's HTTP_PROXY: http://catalog/... or Host: catalog[.NS] routing
  --upstream-port SERVICE[.NS][:PORT]=ADDR   a fixed local port for one service (TCP, gRPC)
  --admin ADDR             /metrics, /ready, /live, /config

Gateway (outside traffic into the mesh; listeners: --gateway and --admin only):
  Every Service, in every namespace, with spec.ingress { host, pathPrefix, port } is a route. A
  request matches when its Host (port ignored, any case) is the route's host (or the route has
  none) and its path is pathPrefix or continues it after a '/'; a host match beats a route
  without host, then the longest prefix wins. It goes to the service's ingress port (else its
  first port) with the service's traffic policy; path and Host are passed on unchanged. No
  match: 404. Metrics carry direction=\"gateway\". A --config file for a gateway holds objects
  (and admin), no listeners.

Examples:
  weft proxy --listen 127.0.0.1:8081 --upstream 127.0.0.1:9001,127.0.0.1:9002
  weft proxy --config sidecar.yaml --admin 127.0.0.1:15000
  WEFT_TOKEN=$(cat proxy.token) weft proxy --server http://127.0.0.1:7070 --instance catalog-7f9c2 \\
      --inbound http=127.0.0.1:31001:127.0.0.1:41001 --outbound 127.0.0.1:15001 \\
      --upstream-port cart.shop:grpc=127.0.0.1:9001 --admin 127.0.0.1:15000
  WEFT_TOKEN=$(cat proxy.token) weft proxy --gateway 127.0.0.1:8080 --server http://127.0.0.1:7070
  weft proxy --gateway 127.0.0.1:8080 --config routes.yaml --admin 127.0.0.1:15000

Exit codes: 0 after a drain, 64 for a bad flag or configuration file, 1 otherwise (e.g. an address
already in use).";

/// `weft proxy` command-line arguments.
#[derive(Clone, PartialEq, Eq, clap::Args)]
pub struct ProxyArgs {
    /// Plain mode: address to listen on for proxied traffic, e.g. 127.0.0.1:8081.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Plain reverse-proxy mode: forward every request to these upstreams (round-robin).
    #[arg(long, value_name = "ADDR[,ADDR...]")]
    pub upstream: Option<String>,
    /// Static sidecar mode: services, endpoints, traffic policy and listeners from this YAML
    /// file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// Dynamic sidecar mode: the api server to follow, e.g. http://127.0.0.1:7070.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Api token with the proxy role (dynamic mode).
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Certificates to trust for an https api server (PEM), e.g. the server's api-ca.crt
    /// (dynamic mode).
    #[arg(long, env = "WEFT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<String>,
    /// The Instance this sidecar stands beside (dynamic mode): its labels, namespace and
    /// upstreams are read from the api.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// The instance's namespace (dynamic mode) [default: default].
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Inbound listener for the instance's port NAME (repeatable), e.g.
    /// http=127.0.0.1:31001:127.0.0.1:41001 or db=127.0.0.1:31002:127.0.0.1:41002:tcp.
    #[arg(long, value_name = "NAME=PUBLIC_ADDR:APP_ADDR[:PROTOCOL]")]
    pub inbound: Vec<String>,
    /// Outbound HTTP proxy listener (the app's HTTP_PROXY).
    #[arg(long, value_name = "ADDR")]
    pub outbound: Option<String>,
    /// A fixed local port forwarding to one service (repeatable), e.g. catalog=127.0.0.1:9001
    /// or cart.shop:grpc=127.0.0.1:9002.
    #[arg(long = "upstream-port", value_name = "SERVICE[.NS][:PORT]=ADDR")]
    pub upstream_port: Vec<String>,
    /// Gateway mode: the ingress gateway's listener, e.g. 127.0.0.1:8080 (with --server, or
    /// --config for a static route table).
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
    /// Admin listener serving /metrics, /ready, /live and /config.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Plain mode: service name used in metric labels.
    #[arg(long, env = "WEFT_SERVICE", value_name = "NAME", default_value = defaults::SERVICE)]
    pub service: String,
    /// Plain mode: traffic direction used in metric labels: inbound or outbound.
    #[arg(long, value_name = "DIR", default_value = defaults::DIRECTION)]
    pub direction: String,
    /// Time an upstream has to send response headers before the client gets 504 (sidecar:
    /// inbound requests; outbound ones follow their Service's `traffic.timeout`).
    #[arg(long, value_name = "DURATION", default_value = defaults::TIMEOUT)]
    pub timeout: String,
    /// Time allowed to establish an upstream TCP connection.
    #[arg(long, value_name = "DURATION", default_value = defaults::CONNECT_TIMEOUT)]
    pub connect_timeout: String,
    /// Time a client has to send a complete request head (slow clients are cut).
    #[arg(long, value_name = "DURATION", default_value = defaults::HEADER_TIMEOUT)]
    pub header_timeout: String,
    /// Idle keep-alive time of client connections (keep it above --upstream-idle-timeout).
    #[arg(long, value_name = "DURATION", default_value = defaults::IDLE_TIMEOUT)]
    pub idle_timeout: String,
    /// Idle time after which pooled upstream connections are closed.
    #[arg(long, value_name = "DURATION", default_value = defaults::UPSTREAM_IDLE_TIMEOUT)]
    pub upstream_idle_timeout: String,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "DURATION", default_value = defaults::DRAIN_GRACE)]
    pub drain_grace: String,
    /// Largest request head (request line + headers) accepted; larger ones get 431.
    #[arg(long, value_name = "BYTES", default_value = defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: String,
    /// Most request headers accepted; more get 431.
    #[arg(long, value_name = "N", default_value = defaults::MAX_HEADERS)]
    pub max_headers: String,
    /// Most idle pooled connections kept per upstream (per worker thread).
    #[arg(long, value_name = "N", default_value = defaults::MAX_IDLE_PER_UPSTREAM)]
    pub max_idle_per_upstream: String,
    /// HTTP/1.1 engine: `fast` relays plain requests itself and hands anything else to hyper;
    /// `hyper` sends everything through hyper.
    #[arg(long, value_name = "ENGINE", default_value = defaults::HTTP1)]
    pub http1: String,
    /// Worker threads [default: the CPUs this process may run on].
    #[arg(long, value_name = "N")]
    pub threads: Option<String>,
    /// Runtime layout: `per-core` (one single-threaded runtime per worker thread, each with its
    /// own upstream pool) or `shared` (one work-stealing runtime over all worker threads).
    #[arg(long, value_name = "LAYOUT", default_value = defaults::RUNTIME)]
    pub runtime: String,
    /// Sidecar and gateway: how long a request for a service with no instance (scaled to zero)
    /// is held while one starts, at most its own timeout; then 503.
    #[arg(long, value_name = "DURATION", default_value = defaults::HOLD_TIMEOUT)]
    pub hold_timeout: String,
    /// Sidecar and gateway: most requests held per service at once (more get 503 at once);
    /// 0 holds none.
    #[arg(long, value_name = "N", default_value = defaults::HOLD_QUEUE)]
    pub hold_queue: String,
    /// Sidecar and gateway: mTLS between sidecars. `strict`: inbound ports take only mTLS from
    /// sidecars and gateways with a certificate from the mesh CA; `permissive`: inbound ports
    /// also take plaintext (for migration); `off` (the default; agents pass `strict`):
    /// plaintext. Outbound calls to Service endpoints use mTLS unless `off`. With --server the
    /// identity comes from the api server's CA, and the namespace's MeshConfig (else the one
    /// in weft-system) switches strict/permissive live; this flag is the mode when there is
    /// none, and `off` always wins. Inbound calls are also checked against the namespace's
    /// AuthorizationPolicies (403 when denied).
    #[arg(long, value_name = "MODE")]
    pub mtls: Option<String>,
    /// mTLS with a fixed identity instead of one from the api server's CA: the certificate
    /// chain (PEM) ...
    #[arg(long, value_name = "FILE")]
    pub mtls_cert: Option<String>,
    /// ... its private key (PEM) ...
    #[arg(long, value_name = "FILE")]
    pub mtls_key: Option<String>,
    /// ... and the CA certificate(s) peers must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub mtls_ca: Option<String>,
    /// SPIFFE trust domain of workload identities (spiffe://<domain>/ns/<ns>/svc/<service>).
    #[arg(long, value_name = "DOMAIN", default_value = defaults::TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Export a span per proxied HTTP request over OTLP/HTTP (JSON) to URL/v1/traces, e.g.
    /// http://127.0.0.1:4318 (an OpenTelemetry collector, Jaeger or Tempo) [env:
    /// OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL]. Off
    /// when unset.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Share of the traces this proxy starts (requests without a valid traceparent) that are
    /// sampled, 0 to 1; incoming traces keep their own sampled flag.
    #[arg(long, value_name = "RATIO", default_value = defaults::TRACE_SAMPLE_RATIO)]
    pub trace_sample_ratio: String,
    /// JSON access log, one line per HTTP request: off, stdout, stderr or a file path
    /// (appended to).
    #[arg(long, value_name = "off|stdout|stderr|PATH", default_value = defaults::ACCESS_LOG)]
    pub access_log: String,
}

impl std::fmt::Debug for ProxyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Everything but the token.
        f.debug_struct("ProxyArgs")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("config", &self.config)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("instance", &self.instance)
            .field("namespace", &self.namespace)
            .field("inbound", &self.inbound)
            .field("outbound", &self.outbound)
            .field("upstream_port", &self.upstream_port)
            .field("gateway", &self.gateway)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Default for ProxyArgs {
    fn default() -> Self {
        ProxyArgs {
            listen: None,
            upstream: None,
            config: None,
            server: None,
            token: None,
            ca_file: None,
            instance: None,
            namespace: None,
            inbound: Vec::new(),
            outbound: None,
            upstream_port: Vec::new(),
            gateway: None,
            admin: None,
            service: defaults::SERVICE.into(),
            direction: defaults::DIRECTION.into(),
            timeout: defaults::TIMEOUT.into(),
            connect_timeout: defaults::CONNECT_TIMEOUT.into(),
            header_timeout: defaults::HEADER_TIMEOUT.into(),
            idle_timeout: defaults::IDLE_TIMEOUT.into(),
            upstream_idle_timeout: defaults::UPSTREAM_IDLE_TIMEOUT.into(),
            drain_grace: defaults::DRAIN_GRACE.into(),
            max_header_bytes: defaults::MAX_HEADER_BYTES.into(),
            max_headers: defaults::MAX_HEADERS.into(),
            max_idle_per_upstream: defaults::MAX_IDLE_PER_UPSTREAM.into(),
            http1: defaults::HTTP1.into(),
            threads: None,
            runtime: defaults::RUNTIME.into(),
            hold_timeout: defaults::HOLD_TIMEOUT.into(),
            hold_queue: defaults::HOLD_QUEUE.into(),
            mtls: None,
            mtls_cert: None,
            mtls_key: None,
            mtls_ca: None,
            trust_domain: defaults::TRUST_DOMAIN.into(),
            otlp_endpoint: None,
            trace_sample_ratio: defaults::TRACE_SAMPLE_RATIO.into(),
            access_log: defaults::ACCESS_LOG.into(),
        }
    }
}

impl ProxyArgs {
    /// Reads `--flag value` / `--flag=value` arguments (after the subcommand name) without clap,
    /// whose code would add over half a megabyte to the resident memory of a long-running
    /// process. Returns `None` for anything it does not take (help, an unknown or repeated
    /// flag, a missing value): clap then parses the same arguments and explains the problem.
    /// The `parse_plain_matches_clap` test keeps both in agreement.
    pub fn parse_plain(args: &[String]) -> Option<ProxyArgs> {
        let mut out = ProxyArgs::default();
        if let Ok(service) = std::env::var("WEFT_SERVICE") {
            out.service = service;
        }
        if let Ok(token) = std::env::var("WEFT_TOKEN") {
            out.token = Some(token);
        }
        if let Ok(ca) = std::env::var("WEFT_CA_FILE") {
            out.ca_file = Some(ca);
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let flag = arg.strip_prefix("--")?;
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n, v.to_string()),
                None => (flag, it.next()?.clone()),
            };
            if value.starts_with('-') && !flag.contains('=') {
                return None;
            }
            // Repeatable flags.
            match name {
                "inbound" => {
                    out.inbound.push(value);
                    continue;
                }
                "upstream-port" => {
                    out.upstream_port.push(value);
                    continue;
                }
                _ => {}
            }
            if seen.contains(&name) {
                return None;
            }
            seen.push(name);
            let slot = match name {
                "listen" => {
                    out.listen = Some(value);
                    continue;
                }
                "upstream" => {
                    out.upstream = Some(value);
                    continue;
                }
                "admin" => {
                    out.admin = Some(value);
                    continue;
                }
                "config" | "server" | "token" | "ca-file" | "instance" | "namespace"
                | "outbound" | "gateway" | "mtls" | "mtls-cert" | "mtls-key" | "mtls-ca" => {
                    let slot = match name {
                        "ca-file" => &mut out.ca_file,
                        "mtls" => &mut out.mtls,
                        "mtls-cert" => &mut out.mtls_cert,
                        "mtls-key" => &mut out.mtls_key,
                        "mtls-ca" => &mut out.mtls_ca,
                        "config" => &mut out.config,
                        "server" => &mut out.server,
                        "token" => &mut out.token,
                        "instance" => &mut out.instance,
                        "namespace" => &mut out.namespace,
                        "gateway" => &mut out.gateway,
                        _ => &mut out.outbound,
                    };
                    *slot = Some(value);
                    continue;
                }
                "threads" => {
                    out.threads = Some(value);
                    continue;
                }
                "otlp-endpoint" => {
                    out.otlp_endpoint = Some(value);
                    continue;
                }
                "service" => &mut out.service,
                "direction" => &mut out.direction,
                "timeout" => &mut out.timeout,
                "connect-timeout" => &mut out.connect_timeout,
                "header-timeout" => &mut out.header_timeout,
                "idle-timeout" => &mut out.idle_timeout,
                "upstream-idle-timeout" => &mut out.upstream_idle_timeout,
                "drain-grace" => &mut out.drain_grace,
                "max-header-bytes" => &mut out.max_header_bytes,
                "max-headers" => &mut out.max_headers,
                "max-idle-per-upstream" => &mut out.max_idle_per_upstream,
                "http1" => &mut out.http1,
                "runtime" => &mut out.runtime,
                "hold-timeout" => &mut out.hold_timeout,
                "hold-queue" => &mut out.hold_queue,
                "trust-domain" => &mut out.trust_domain,
                "trace-sample-ratio" => &mut out.trace_sample_ratio,
                "access-log" => &mut out.access_log,
                _ => return None,
            };
            *slot = value;
        }
        Some(out)
    }
}

/// `--otlp-endpoint` (else the OpenTelemetry environment variables), `--trace-sample-ratio`,
/// `--access-log`.
fn obs_from_args(args: &ProxyArgs) -> Result<crate::obs::ObsConfig, ConfigError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let (base, full) = match &args.otlp_endpoint {
        Some(e) => (Some(e.clone()), None),
        None => (env("OTEL_EXPORTER_OTLP_ENDPOINT"), env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
    };
    let otlp_traces = crate::obs::traces_url(base.as_deref(), full.as_deref())
        .map_err(|e| bad("otlp-endpoint", e))?;
    let ratio = args
        .trace_sample_ratio
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| {
            bad(
                "trace-sample-ratio",
                format!("'{}' is not a number from 0 to 1", args.trace_sample_ratio),
            )
        })?;
    let access_log =
        crate::obs::AccessLog::parse(&args.access_log).map_err(|e| bad("access-log", e))?;
    Ok(crate::obs::ObsConfig { otlp_traces, trace_sample_ratio: ratio, access_log })
}

/// A flag with a value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {message}")]
pub struct ConfigError {
    /// The flag's name without dashes.
    pub flag: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

pub(crate) fn bad(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { flag, message: message.into() }
}

/// Which side of the instance the proxy stands on; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic coming to the instance's service.
    Inbound,
    /// Traffic the instance sends to other services.
    Outbound,
    /// Traffic from outside the mesh, through the ingress gateway. Its own label (not
    /// `inbound`) so that dashboards and the autoscaler, which read an instance's `inbound`
    /// series, never count a request twice: once at the gateway and once at the instance.
    Gateway,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Gateway => "gateway",
        }
    }
}

/// How worker threads run their tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeLayout {
    /// One current-thread runtime per worker, each accepting on the shared listener.
    PerCore,
    /// One multi-thread runtime with `threads` workers.
    Shared,
}

/// One upstream endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    /// The address as given on the command line (the `upstream` metric label).
    pub name: String,
    /// The resolved address connected to.
    pub addr: SocketAddr,
}

/// The effective configuration (served as JSON on the admin listener's `/config`).
///
/// `listen`, `upstreams`, `service` and `direction` describe the plain reverse proxy; in sidecar
/// and gateway modes (`sidecar` is set) listeners and services come from [`SidecarConfig`]
/// instead, and the remaining fields (timeouts, limits, threads) apply to every listener.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Plain mode: where proxied traffic is accepted.
    pub listen: SocketAddr,
    /// Plain mode: where it goes.
    pub upstreams: Vec<UpstreamConfig>,
    /// Sidecar and gateway modes: listeners and where services, endpoints and policy come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarConfig>,
    /// The admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// Metric label `service`.
    pub service: String,
    /// Metric label `direction`.
    pub direction: Direction,
    /// Until upstream response headers.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Upstream TCP connect.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Client request head.
    #[serde(serialize_with = "ser_duration")]
    pub header_timeout: Duration,
    /// Client keep-alive idle.
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// Pooled upstream connection idle.
    #[serde(serialize_with = "ser_duration")]
    pub upstream_idle_timeout: Duration,
    /// Drain grace period.
    #[serde(serialize_with = "ser_duration")]
    pub drain_grace: Duration,
    /// Request head size limit.
    pub max_header_bytes: usize,
    /// Request header count limit.
    pub max_headers: usize,
    /// Idle pool size limit per upstream and worker.
    pub max_idle_per_upstream: usize,
    /// Whether plain HTTP/1.1 requests take the fast path.
    pub http1_fast_path: bool,
    /// Worker threads.
    pub threads: usize,
    /// Runtime layout.
    pub runtime: RuntimeLayout,
    /// Most time a request for a service with no endpoint is held (sidecar and gateway).
    #[serde(serialize_with = "ser_duration")]
    pub hold_timeout: Duration,
    /// Most requests held per service; 0 holds none.
    pub hold_queue: usize,
    /// mTLS between sidecars.
    pub mtls: MtlsConfig,
    /// Tracing (OTLP export, sampling) and the access log.
    pub obs: crate::obs::ObsConfig,
}

/// How a sidecar or gateway authenticates mesh connections (see `--mtls`).
#[derive(Debug, Clone, Serialize)]
pub struct MtlsConfig {
    pub mode: crate::tls::MtlsMode,
    pub trust_domain: String,
    /// A fixed identity from files (`--mtls-cert`, `--mtls-key`, `--mtls-ca`) instead of one
    /// signed by the api server's CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<MtlsFiles>,
    /// The identity in force, once obtained (before the listeners start).
    #[serde(skip)]
    pub(crate) mesh: Option<std::sync::Arc<crate::tls::Mesh>>,
    /// How the identity is renewed (dynamic mode).
    #[serde(skip)]
    pub(crate) enrolment: Option<crate::tls::Enrolment>,
}

/// The files of a fixed mTLS identity.
#[derive(Debug, Clone, Serialize)]
pub struct MtlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl MtlsConfig {
    /// mTLS off.
    pub fn off() -> MtlsConfig {
        MtlsConfig {
            mode: crate::tls::MtlsMode::Off,
            trust_domain: defaults::TRUST_DOMAIN.into(),
            files: None,
            mesh: None,
            enrolment: None,
        }
    }

    fn from_args(args: &ProxyArgs, dynamic: bool) -> Result<MtlsConfig, ConfigError> {
        use crate::tls::MtlsMode;
        let mode = match args.mtls.as_deref() {
            None => MtlsMode::Off,
            Some("strict") => MtlsMode::Strict,
            Some("permissive") => MtlsMode::Permissive,
            Some("off") => MtlsMode::Off,
            Some(other) => {
                return Err(bad("mtls", format!("'{other}' is not strict, permissive or off")));
            }
        };
        let files = match (&args.mtls_cert, &args.mtls_key, &args.mtls_ca) {
            (None, None, None) => None,
            (Some(c), Some(k), Some(a)) => {
                Some(MtlsFiles { cert: c.into(), key: k.into(), ca: a.into() })
            }
            _ => {
                return Err(bad(
                    "mtls-cert",
                    "--mtls-cert, --mtls-key and --mtls-ca go together (a fixed identity)",
                ));
            }
        };
        if mode != MtlsMode::Off && files.is_none() && !dynamic {
            return Err(bad(
                "mtls",
                "needs an identity: follow an api server (--server), which signs one, or give \
                 --mtls-cert, --mtls-key and --mtls-ca",
            ));
        }
        let trust_domain = args.trust_domain.trim().to_string();
        if weft_ca::SpiffeId::parse(&format!("spiffe://{trust_domain}/ns/a/svc/b")).is_none() {
            return Err(bad("trust-domain", "must be a domain name such as weft.local"));
        }
        Ok(MtlsConfig { mode, trust_domain, files, mesh: None, enrolment: None })
    }
}

impl Config {
    /// A configuration with the defaults, listening on `listen` and forwarding to `upstreams`.
    pub fn new(listen: SocketAddr, upstreams: &[SocketAddr]) -> Config {
        Config {
            listen,
            upstreams: upstreams
                .iter()
                .map(|a| UpstreamConfig { name: a.to_string(), addr: *a })
                .collect(),
            sidecar: None,
            admin: None,
            service: "default".into(),
            direction: Direction::Inbound,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_idle_per_upstream: 1024,
            http1_fast_path: true,
            threads: 1,
            runtime: RuntimeLayout::PerCore,
            hold_timeout: Duration::from_secs(10),
            hold_queue: 100,
            mtls: MtlsConfig::off(),
            obs: crate::obs::ObsConfig::default(),
        }
    }

    /// A sidecar configuration with the defaults.
    pub fn sidecar(sidecar: SidecarConfig) -> Config {
        let mut c = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), &[]);
        c.sidecar = Some(sidecar);
        c
    }

    /// Checks the flags (and the `--config` file) and builds the configuration.
    pub fn from_args(args: &ProxyArgs) -> Result<Config, ConfigError> {
        let (listen, upstreams, sidecar, admin) = match &args.upstream {
            Some(upstream) => Self::plain_mode(args, upstream).map(|(l, u, a)| (l, u, None, a))?,
            None => {
                if args.listen.is_some() {
                    return Err(bad(
                        "listen",
                        "is for the plain reverse proxy (with --upstream); a sidecar listens \
                         with --inbound, --outbound and --upstream-port, a gateway with --gateway",
                    ));
                }
                let (sidecar, admin) = SidecarConfig::from_args(args)?;
                (SocketAddr::from(([127, 0, 0, 1], 0)), Vec::new(), Some(sidecar), admin)
            }
        };
        let service = args.service.trim();
        if service.is_empty() || service.chars().any(|c| c.is_control()) {
            return Err(bad("service", "must be a non-empty name"));
        }
        let direction = match args.direction.as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            other => {
                return Err(bad("direction", format!("'{other}' is neither inbound nor outbound")));
            }
        };
        let threads = match &args.threads {
            Some(t) => parse_count("threads", t, 1, 1024)?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let runtime = match args.runtime.as_str() {
            "per-core" => RuntimeLayout::PerCore,
            "shared" => RuntimeLayout::Shared,
            other => {
                return Err(bad("runtime", format!("'{other}' is neither per-core nor shared")));
            }
        };
        let http1_fast_path = match args.http1.as_str() {
            "fast" => true,
            "hyper" => false,
            other => return Err(bad("http1", format!("'{other}' is neither fast nor hyper"))),
        };
        let config = Config {
            listen,
            upstreams,
            sidecar,
            admin,
            service: service.to_string(),
            direction,
            timeout: parse_duration("timeout", &args.timeout)?,
            connect_timeout: parse_duration("connect-timeout", &args.connect_timeout)?,
            header_timeout: parse_duration("header-timeout", &args.header_timeout)?,
            idle_timeout: parse_duration("idle-timeout", &args.idle_timeout)?,
            upstream_idle_timeout: parse_duration(
                "upstream-idle-timeout",
                &args.upstream_idle_timeout,
            )?,
            drain_grace: parse_duration("drain-grace", &args.drain_grace)?,
            // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
            max_header_bytes: parse_count(
                "max-header-bytes",
                &args.max_header_bytes,
                1024,
                16 << 20,
            )?,
            max_headers: parse_count("max-headers", &args.max_headers, 1, 10_000)?,
            max_idle_per_upstream: parse_count(
                "max-idle-per-upstream",
                &args.max_idle_per_upstream,
                0,
                1 << 20,
            )?,
            http1_fast_path,
            threads,
            runtime,
            hold_timeout: parse_duration("hold-timeout", &args.hold_timeout)?,
            hold_queue: parse_count("hold-queue", &args.hold_queue, 0, 1 << 20)?,
            mtls: MtlsConfig::from_args(args, args.server.is_some())?,
            obs: obs_from_args(args)?,
        };
        Ok(config)
    }

    /// `--listen` and `--upstream`; the sidecar flags do not go with them.
    fn plain_mode(
        args: &ProxyArgs,
        upstream: &str,
    ) -> Result<(SocketAddr, Vec<UpstreamConfig>, Option<SocketAddr>), ConfigError> {
        if args.gateway.is_some() {
            return Err(bad(
                "gateway",
                "does not go with --upstream: the plain reverse proxy forwards everything to its \
                 upstreams; a gateway routes by the Services' spec.ingress (--server or --config)",
            ));
        }
        for (flag, given) in [
            ("config", args.config.is_some()),
            ("server", args.server.is_some()),
            ("instance", args.instance.is_some()),
            ("inbound", !args.inbound.is_empty()),
            ("outbound", args.outbound.is_some()),
            ("upstream-port", !args.upstream_port.is_empty()),
        ] {
            if given {
                return Err(bad(
                    flag,
                    "is a sidecar flag and does not go with --upstream (the plain reverse proxy)",
                ));
            }
        }
        let listen = args
            .listen
            .as_deref()
            .ok_or_else(|| bad("listen", "is required, e.g. --listen 127.0.0.1:8081"))?;
        let listen = parse_addr("listen", listen)?;
        let mut upstreams = Vec::new();
        for part in upstream.split(',') {
            let part = part.trim();
            upstreams.push(UpstreamConfig {
                name: part.to_string(),
                addr: parse_addr("upstream", part)?,
            });
        }
        let admin = args.admin.as_deref().map(|a| parse_addr("admin", a)).transpose()?;
        if admin == Some(listen) && listen.port() != 0 {
            return Err(bad("admin", "must differ from --listen"));
        }
        Ok((listen, upstreams, admin))
    }
}

pub(crate) fn parse_addr(flag: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected = "expected HOST:PORT, e.g. 127.0.0.1:8080";
    if text.is_empty() || !text.contains(':') {
        return Err(bad(flag, format!("'{text}' is not an address ({expected})")));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => {
            addrs.next().ok_or_else(|| bad(flag, format!("'{text}' resolves to no address")))
        }
        Err(_) => Err(bad(flag, format!("'{text}' is not an address that resolves ({expected})"))),
    }
}

fn parse_count(
    flag: &'static str,
    text: &str,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    match text.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(flag, format!("'{text}' is not a whole number from {min} to {max}"))),
    }
}

/// Parses `250ms`, `15s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(flag: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        bad(flag, format!("'{text}' is not a duration (expected e.g. 500ms, 15s, 2m)"))
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(bad(flag, format!("'{text}' has an unknown unit (use ms, s, m or h)")));
        }
    };
    if d.is_zero() || d > Duration::from_secs(366 * 24 * 3600) {
        return Err(bad(flag, format!("'{text}' must be above zero and below a year")));
    }
    Ok(d)
}

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// `15s`, or `250ms` when not whole seconds (what [`parse_duration`] reads).
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(upstream: &str) -> ProxyArgs {
        ProxyArgs {
            listen: Some("127.0.0.1:0".into()),
            upstream: Some(upstream.into()),
            ..ProxyArgs::default()
        }
    }

    fn clap_parse(args: &[&str]) -> Result<ProxyArgs, clap::Error> {
        use clap::{Args, FromArgMatches};
        let cmd = ProxyArgs::augment_args(clap::Command::new("proxy"));
        let m = cmd.try_get_matches_from(std::iter::once("proxy").chain(args.iter().copied()))?;
        ProxyArgs::from_arg_matches(&m)
    }

    #[test]
    fn parse_plain_matches_clap() {
        let lines: &[&[&str]] = &[
            &[],
            &["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2,127.0.0.1:3"],
            &["--listen=127.0.0.1:1", "--upstream=x", "--admin", "127.0.0.1:9", "--threads", "2"],
            &[
                "--config",
                "sidecar.yaml",
                "--inbound",
                "http=127.0.0.1:1:127.0.0.1:2",
                "--inbound=db=127.0.0.1:3:127.0.0.1:4:tcp",
                "--upstream-port",
                "cart.shop=9001",
                "--outbound",
                "127.0.0.1:5",
                "--server",
                "http://127.0.0.1:7070",
                "--token",
                "weft_x",
                "--instance",
                "web-1",
                "--namespace",
                "shop",
            ],
            &["--gateway", "127.0.0.1:8080", "--server=http://127.0.0.1:7070", "--admin", "x"],
            &["--gateway", "127.0.0.1:8080", "--server", "https://a:7070", "--ca-file", "ca.crt"],
            &[
                "--service",
                "shop",
                "--direction",
                "outbound",
                "--timeout",
                "1s",
                "--connect-timeout",
                "2s",
                "--header-timeout",
                "3s",
                "--idle-timeout",
                "4s",
                "--upstream-idle-timeout",
                "5s",
                "--drain-grace",
                "6s",
                "--max-header-bytes",
                "9000",
                "--max-headers",
                "7",
                "--max-idle-per-upstream",
                "8",
                "--http1",
                "hyper",
                "--runtime",
                "shared",
                "--otlp-endpoint",
                "http://127.0.0.1:4318",
                "--trace-sample-ratio",
                "0.5",
                "--access-log=stderr",
            ],
        ];
        for line in lines {
            let owned: Vec<String> = line.iter().map(|s| s.to_string()).collect();
            assert_eq!(ProxyArgs::parse_plain(&owned), Some(clap_parse(line).unwrap()), "{line:?}");
        }
        // What the plain reader leaves to clap, clap rejects or answers (help).
        for line in [
            &["--help"][..],
            &["--nope", "1"],
            &["--listen"],
            &["--listen", "a", "--listen", "b"],
            &["-h"],
        ] {
            let owned: Vec<String> = line.iter().map(|s| s.to_string()).collect();
            assert_eq!(ProxyArgs::parse_plain(&owned), None, "{line:?}");
            assert!(clap_parse(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn tracing_and_access_log_flags() {
        let with = |extra: &[&str]| {
            let mut line = vec!["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"];
            line.extend_from_slice(extra);
            Config::from_args(&clap_parse(&line).unwrap())
        };
        let c = with(&[
            "--otlp-endpoint",
            "http://127.0.0.1:4318/",
            "--trace-sample-ratio",
            "0.25",
            "--access-log",
            "/tmp/a.log",
        ])
        .unwrap();
        assert_eq!(c.obs.otlp_traces.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        assert_eq!(c.obs.trace_sample_ratio, 0.25);
        assert_eq!(c.obs.access_log, crate::obs::AccessLog::File("/tmp/a.log".into()));
        for (extra, flag) in [
            (&["--otlp-endpoint", "https://collector:4318"][..], "otlp-endpoint"),
            (&["--otlp-endpoint", "collector:4318"][..], "otlp-endpoint"),
            (&["--trace-sample-ratio", "2"][..], "trace-sample-ratio"),
            (&["--trace-sample-ratio=-0.1"][..], "trace-sample-ratio"),
            (&["--trace-sample-ratio", "half"][..], "trace-sample-ratio"),
            (&["--access-log", ""][..], "access-log"),
        ] {
            let e = with(extra).unwrap_err();
            assert_eq!(e.flag, flag, "{extra:?}: {e}");
        }
    }

    #[test]
    fn gateway_flags() {
        let gw = |extra: &[&str]| {
            let mut line = vec!["--gateway", "127.0.0.1:8080"];
            line.extend_from_slice(extra);
            Config::from_args(&clap_parse(&line).unwrap())
        };
        let c = gw(&["--server", "http://127.0.0.1:7070/", "--token", "t"]).unwrap();
        let side = c.sidecar.unwrap();
        assert_eq!(side.gateway, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(matches!(
            &side.source,
            crate::sidecar::Source::Dynamic { instance: None, server, .. } if server == "http://127.0.0.1:7070"
        ));
        assert!(side.inbound.is_empty() && side.outbound.is_none());
        for (extra, flag, says) in [
            (&[][..], "gateway", "--server URL"),
            (&["--server", "http://127.0.0.1:1"][..], "token", "WEFT_TOKEN"),
            (
                &["--upstream", "127.0.0.1:1", "--listen", "127.0.0.1:2"][..],
                "gateway",
                "--upstream",
            ),
            (
                &["--server", "http://h:1", "--token", "t", "--instance", "i"][..],
                "instance",
                "every namespace",
            ),
            (
                &["--server", "http://h:1", "--token", "t", "--namespace", "n"][..],
                "namespace",
                "every namespace",
            ),
            (
                &["--server", "http://h:1", "--token", "t", "--outbound", "127.0.0.1:1"][..],
                "outbound",
                "--gateway",
            ),
            (
                &["--config", "x.yaml", "--inbound", "http=127.0.0.1:1:127.0.0.1:2"][..],
                "inbound",
                "--gateway",
            ),
            (
                &["--server", "http://h:1", "--token", "t", "--admin", "127.0.0.1:8080"][..],
                "gateway",
                "already used by --admin",
            ),
            (
                &["--server", "http://h:1", "--token", "t", "--listen", "127.0.0.1:1"][..],
                "listen",
                "--gateway",
            ),
        ] {
            let e = gw(extra).unwrap_err();
            assert_eq!(e.flag, flag, "{extra:?}: {e}");
            assert!(e.to_string().contains(says), "{extra:?}: {e}");
        }
        let e = Config::from_args(
            &clap_parse(&["--gateway", "nowhere", "--server", "http://h:1", "--token", "t"])
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.flag, "gateway", "{e}");
        // A gateway's file holds objects, not a sidecar's listeners.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.yaml");
        std::fs::write(&path, "outbound: { listen: 127.0.0.1:0 }\n").unwrap();
        let e = gw(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert_eq!(e.flag, "config");
        assert!(e.to_string().contains("outbound: is a sidecar listener"), "{e}");
        std::fs::write(&path, "admin: 127.0.0.1:0\nobjects: []\n").unwrap();
        let c = gw(&["--config", path.to_str().unwrap()]).unwrap();
        assert!(c.sidecar.unwrap().is_gateway());
        assert_eq!(Direction::Gateway.as_str(), "gateway");
    }

    #[test]
    fn upstream_list_parses() {
        let c = Config::from_args(&args("127.0.0.1:1, 127.0.0.1:2")).unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[1].name, "127.0.0.1:2");
    }

    #[test]
    fn bad_upstream_names_the_flag() {
        for bad in ["", "nope", "127.0.0.1", "127.0.0.1:99999", "1.2.3.4:1,,"] {
            let e = Config::from_args(&args(bad)).unwrap_err();
            assert_eq!(e.flag, "upstream", "{bad}");
            assert!(e.to_string().starts_with("--upstream: "), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("t", "250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("t", "15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("t", "2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "0s", "s", "1d", "-1s", "1.5s"] {
            assert!(parse_duration("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_serializes() {
        let c = Config::from_args(&args("127.0.0.1:1")).unwrap();
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["timeout"], "15s");
        assert_eq!(j["upstreams"][0]["addr"], "127.0.0.1:1");
    }
}
