//! The proxy's shared state and its serve loops.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::balance::Balancer;
use crate::config::Config;
use crate::drain::Drain;
use crate::http::server::{Worker, serve_connection};
use crate::metrics::{Metrics, ServiceMetrics, UpstreamMetrics};

/// One upstream endpoint with its pre-resolved metric handles.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) metrics: UpstreamMetrics,
    /// The address as text: `Host` / `:authority` for the rare request that came without one.
    pub(crate) name: String,
}

/// A running proxy: configuration, metrics, upstreams and the drain, shared by every worker.
///
/// Create it with [`Proxy::new`], call [`Proxy::serve`] once per runtime (they share the
/// upstream set and metrics; each keeps its own connection pool), [`Proxy::serve_admin`] for the
/// admin listener, and [`Proxy::shutdown`] to drain.
#[derive(Debug)]
pub struct Proxy {
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) svc: ServiceMetrics,
    pub(crate) upstreams: Box<[Upstream]>,
    pub(crate) balancer: Balancer,
    pub(crate) drain: Arc<Drain>,
}

impl Proxy {
    /// Builds the shared state; nothing is bound or spawned.
    pub fn new(config: Config) -> Arc<Proxy> {
        let metrics = Metrics::new();
        let direction = config.direction.as_str();
        let svc = metrics.service(direction, &config.service);
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream {
                metrics: metrics.upstream(direction, &config.service, &u.name),
                name: u.addr.to_string(),
            })
            .collect();
        Arc::new(Proxy {
            balancer: Balancer::round_robin(config.upstreams.len()),
            config,
            metrics,
            svc,
            upstreams,
            drain: Arc::new(Drain::default()),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the proxy takes new traffic (false once draining).
    pub fn is_ready(&self) -> bool {
        !self.drain.is_draining()
    }

    /// Client connections open now (including WebSocket tunnels).
    pub fn open_connections(&self) -> usize {
        self.drain.open_connections()
    }

    /// Starts the drain: `/ready` answers 503, listeners stop accepting, idle connections close
    /// and busy ones close after their current response; [`Proxy::serve`] returns when all are
    /// closed or the grace period is over.
    pub fn shutdown(&self) {
        self.drain.start();
    }

    /// Ends the grace period now: connections still open are closed.
    pub fn force_shutdown(&self) {
        self.drain.force();
    }

    /// Serves proxied traffic on `listener`, on the current runtime, until the drain is over.
    pub async fn serve(self: &Arc<Self>, listener: TcpListener) {
        let worker = Arc::new(Worker::new(self.clone()));
        let sweeper = tokio::spawn({
            let worker = worker.clone();
            async move {
                let every = worker.pool.sweep_interval();
                loop {
                    tokio::time::sleep(every).await;
                    worker.pool.sweep(Instant::now());
                }
            }
        });
        crate::listener::accept_loop(listener, &self.drain, |stream, peer| {
            tokio::spawn(serve_connection(worker.clone(), stream, peer));
        })
        .await;
        // Draining: the listener is closed; wait for open connections within the grace period.
        if tokio::time::timeout(self.config.drain_grace, self.drain.all_closed()).await.is_err() {
            self.drain.force();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.drain.all_closed()).await;
        }
        sweeper.abort();
        worker.pool.clear();
    }

    /// Serves proxied traffic on `listener` until `shutdown` completes, then drains.
    pub async fn serve_until(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        let trigger = async {
            tokio::select! {
                () = shutdown => self.shutdown(),
                () = self.drain.signaled() => {}
            }
        };
        tokio::join!(trigger, self.serve(listener));
    }

    /// Serves the admin endpoints (`/metrics`, `/ready`, `/live`, `/config`) on `listener` until
    /// the future is dropped.
    pub async fn serve_admin(self: &Arc<Self>, listener: TcpListener) {
        crate::admin::serve(self.clone(), listener).await;
    }
}
