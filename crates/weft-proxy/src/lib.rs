//! weft's sidecar proxy: the data plane.
//!
//! Phase 1 is the plain reverse proxy, `weft proxy --listen ADDR --upstream ADDR[,ADDR...]`: every
//! request on the listener goes to one of the upstreams (HTTP/1.1 with a keep-alive pool, h2c with
//! gRPC trailers, WebSocket upgrades), with forwarding headers, limits, timeouts, Prometheus
//! metrics on an admin listener and a graceful drain.
//!
//! Where to start:
//! - [`main_from_args`] / [`main`] are what `weft proxy` runs: flags, one single-threaded runtime
//!   per core, signals, drain, exit codes (`runtime`).
//! - [`plain::serve`] runs the proxy on a listener you bound (tests bind port 0), on the current
//!   runtime, until a shutdown future completes; [`Proxy`] is the same with the parts exposed.
//! - A request's path: `listener` accepts → `http::server` detects HTTP/1 or h2c and drives the
//!   connection under a watchdog (`http::watchdog`: header, idle and response timeouts, drain).
//!   Plain HTTP/1.1 requests take `http::fast`, which relays bytes itself; anything else goes to
//!   hyper and `http::forward` (header rules in `http::headers`, `http::upgrade` for WebSocket,
//!   `http::body` for the response and its bookkeeping). Both pick an upstream with `balance`,
//!   take connections from `pool` and record [`metrics`].

mod admin;
mod balance;
pub mod config;
mod drain;
mod http;
mod listener;
pub mod metrics;
pub mod plain;
mod pool;
mod proxy;
mod rng;
mod runtime;

pub use config::{Config, ConfigError, ProxyArgs};
pub use proxy::Proxy;
pub use runtime::{main, main_from_args};

/// Runs the proxy on the current tokio runtime until SIGTERM/SIGINT, then drains.
///
/// `weft proxy` uses [`main`], which owns its runtimes and exit codes; this is for embedding the
/// proxy into a process that already runs tokio (e.g. `weft up`).
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let config = Config::from_args(&args)?;
    runtime::run_embedded(config).await
}
