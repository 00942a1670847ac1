//! Plain reverse-proxy mode: a fixed list of upstreams from the command line.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::proxy::Proxy;

/// Runs the plain reverse proxy on `listener`, on the current runtime, until `shutdown`
/// completes; then drains (in-flight requests get `config.drain_grace`) and returns the proxy
/// (for its metrics).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Arc<Proxy> {
    let proxy = Proxy::new(config);
    proxy.serve_until(listener, shutdown).await;
    proxy
}
