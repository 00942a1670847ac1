//! weft's sidecar proxy and ingress gateway: the data plane.
//!
//! Four modes, one data path:
//! - plain reverse proxy: `weft proxy --listen ADDR --upstream ADDR[,ADDR...]`;
//! - static sidecar: `weft proxy --config FILE` (services, endpoints, policy and listeners from
//!   a YAML file, see [`sidecar::file`]);
//! - dynamic sidecar: `weft proxy --server URL --token T --instance NAME` (the api server's
//!   Services and Endpoints, followed by watch, see [`control`]);
//! - ingress gateway: `weft proxy --gateway ADDR --server URL --token T` (or `--config FILE`):
//!   outside traffic routed by Host and path to the Services with `spec.ingress`, through the
//!   same clusters and policy as a sidecar's outbound requests (`sidecar::gateway`; metrics
//!   labelled `direction="gateway"`). [`run_until`] embeds it (`weft up`).
//!
//! A sidecar has inbound listeners (the instance's public ports → the app, with its services'
//! rate limits and concurrency cap), an outbound listener (the app's `HTTP_PROXY`: requests are
//! routed by absolute-form target or `Host` to a service, balanced, retried within a budget,
//! timed out, circuit-broken, with outlier ejection), fixed local ports per upstream service
//! (HTTP, gRPC or opaque TCP), and an admin listener.
//!
//! Where to start:
//! - [`main_from_args`] / [`main`] are what `weft proxy` runs: flags ([`config`], [`sidecar`]),
//!   one single-threaded runtime per core, signals, drain, exit codes (`runtime`).
//! - [`Proxy`] is the shared state: [`Proxy::new`], [`Proxy::bind`], [`Proxy::serve_bound`];
//!   [`plain::serve`] runs the plain proxy on a listener you bound (tests bind port 0).
//! - Configuration: `routes` builds an immutable snapshot (clusters per service port, inbound
//!   routes, upstream ports) from Services and Endpoints; the sidecar swaps it atomically
//!   (`arc-swap`) and requests keep the clusters they started with. A `cluster` is endpoints +
//!   weft-traffic balancer + `policy` (timeouts, retries and budget, breaker, outlier
//!   detection); `sidecar::inbound` is admission (token buckets, concurrency),
//!   `sidecar::outbound` resolves service names.
//! - A request's path: `listener` accepts → opaque TCP ports go to `tcp`; others to
//!   `http::server`, which detects HTTP/1 or h2c and drives the connection under a watchdog
//!   (`http::watchdog`: header, idle and response deadlines, drain). Plain HTTP/1.1 requests take
//!   `http::fast`, which relays bytes itself; anything else goes to hyper and `http::forward`
//!   (header rules in `http::headers`, `http::upgrade` for WebSocket, `http::body` for the
//!   response and its bookkeeping). Both ask `dispatch` where a request goes (by listener:
//!   plain, inbound, outbound, upstream port or gateway), pick endpoints from the cluster, take
//!   connections from `pool` and record [`metrics`].
//! - [`fuzzing`] exposes the request parser and router to the fuzz target in `fuzz/`.

mod admin;
mod cluster;
pub mod config;
pub mod control;
mod dispatch;
mod drain;
pub mod fuzzing;
pub mod hold;
mod http;
mod listener;
pub mod metrics;
mod obs;
pub mod plain;
mod policy;
mod pool;
mod proxy;
mod rng;
mod routes;
mod runtime;
pub mod sidecar;
mod tcp;
mod tls;

pub use config::{Config, ConfigError, DEFAULT_GATEWAY, ProxyArgs};
pub use listener::BindError;
pub use obs::{AccessLog, ObsConfig};
pub use proxy::{Listeners, Proxy};
pub use runtime::{main, main_from_args};
pub use tls::MtlsMode;

#[doc(hidden)]
pub use policy::authz::BenchTable as AuthzBenchTable;

/// Runs the proxy on the current tokio runtime until SIGTERM/SIGINT, then drains.
///
/// `weft proxy` uses [`main`], which owns its runtimes and exit codes; this is for a process
/// that already runs tokio and wants the proxy's signal handling. To stop it yourself, use
/// [`run_until`].
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    runtime::trust_ca_file(&args);
    let config = Config::from_args(&args)?;
    runtime::run_embedded(config, runtime::Stop::Signals).await
}

/// Runs the proxy (any mode; `weft up` runs the gateway) on the current tokio runtime until
/// `shutdown` resolves, then drains: listeners close, idle connections close, requests in
/// flight get `--drain-grace` to finish. Installs no signal handlers. Returns when the drain is
/// over; the admin listener and the control-plane watches end with it.
///
/// Errors: a [`ConfigError`] for bad flags (exit 64 material), a [`BindError`] for an address
/// that cannot be listened on (both findable with `downcast_ref`), each one line.
pub async fn run_until(
    args: ProxyArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Config::from_args(&args)?;
    runtime::run_embedded(config, runtime::Stop::When(Box::pin(shutdown))).await
}
