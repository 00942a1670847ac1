//! weft's sidecar proxy: the data plane.
//!
//! Three modes, one data path:
//! - plain reverse proxy: `weft proxy --listen ADDR --upstream ADDR[,ADDR...]`;
//! - static sidecar: `weft proxy --config FILE` (services, endpoints, policy and listeners from
//!   a YAML file, see [`sidecar::file`]);
//! - dynamic sidecar: `weft proxy --server URL --token T --instance NAME` (the api server's
//!   Services and Endpoints, followed by watch, see [`control`]).
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
//!   response and its bookkeeping). Both ask `dispatch` where a request goes, pick endpoints
//!   from the cluster, take connections from `pool` and record [`metrics`].
//! - [`fuzzing`] exposes the request parser and router to the fuzz target in `fuzz/`.

mod admin;
mod cluster;
pub mod config;
pub mod control;
mod dispatch;
mod drain;
pub mod fuzzing;
mod http;
mod listener;
pub mod metrics;
pub mod plain;
mod policy;
mod pool;
mod proxy;
mod rng;
mod routes;
mod runtime;
pub mod sidecar;
mod tcp;

pub use config::{Config, ConfigError, ProxyArgs};
pub use proxy::{Listeners, Proxy};
pub use runtime::{main, main_from_args};

/// Runs the proxy on the current tokio runtime until SIGTERM/SIGINT, then drains.
///
/// `weft proxy` uses [`main`], which owns its runtimes and exit codes; this is for embedding the
/// proxy into a process that already runs tokio (e.g. `weft up`).
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let config = Config::from_args(&args)?;
    runtime::run_embedded(config).await
}
