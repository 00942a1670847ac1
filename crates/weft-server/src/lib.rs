//! weft's api server: the declarative api over HTTP (REST, watch push, long-poll pull),
//! bearer-token auth with roles, admission (defaults + validation from `weft-api`), and a watch
//! cache so that many watchers cost one store watch.
//!
//! Start with [`Server::start`] over any [`weft_store::Store`], then [`Server::serve`] on a
//! listener. [`http`] holds the routes, [`objects`] the api semantics (usable in-process by
//! controllers), [`watch`] and [`cache`] the notify paths, [`auth`] tokens and roles.

pub mod activate;
pub mod audit;
pub mod auth;
pub mod ca;
pub mod ca_root;
pub mod cache;
pub mod dashboard;
pub mod error;
pub mod http;
pub mod keys;
pub mod logs;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod serve;
pub mod state;
pub mod stored;
pub mod tls;
pub mod watch;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weft_store::Store;

pub use state::{AppState, Limits};

/// A running api server's shared parts, ready to serve.
pub struct Server {
    state: Arc<AppState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    compactor: JoinHandle<()>,
}

impl Server {
    /// Loads tokens, fills the watch cache from the store and starts compaction.
    pub async fn start(store: Arc<dyn Store>, limits: Limits) -> Result<Server, error::Error> {
        let auth = auth::Auth::start(store.clone()).await?;
        let cache = cache::WatchCache::start(store.clone(), limits.history).await?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let compactor = tokio::spawn(compact_forever(store.clone(), limits.history as u64));
        let state = Arc::new(AppState {
            store,
            auth,
            cache,
            metrics: Arc::new(metrics::Metrics::new()),
            limits,
            locks: state::KeyLocks::default(),
            shutdown: shutdown_rx,
            ca: std::sync::OnceLock::new(),
            extra_metrics: Default::default(),
            audit: std::sync::OnceLock::new(),
        });
        Ok(Server { state, tls: None, shutdown, compactor })
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Loads the workload certificate authority from `<data_dir>/ca.key` and `ca.crt`, creating
    /// them at first start, and serves `POST /api/v1/certificates` with it (certificates valid
    /// for `ttl`, identities in `trust_domain`). Returns whether a new root was created.
    pub async fn enable_ca(
        &self,
        data_dir: &Path,
        trust_domain: &str,
        ttl: Duration,
    ) -> Result<bool, weft_ca::CaError> {
        let now = std::time::SystemTime::now();
        let (ca, created) =
            ca_root::cluster_root(self.state.store.as_ref(), data_dir, trust_domain, now).await?;
        let _ = self.state.ca.set(ca::CaService { ca, trust_domain: trust_domain.into(), ttl });
        Ok(created)
    }

    /// Serves TLS only, with `identity`'s certificate ([`tls`]).
    pub fn enable_tls(&mut self, identity: &tls::Identity) -> Result<(), tls::TlsError> {
        self.tls = Some(tls::server_config(identity)?);
        Ok(())
    }

    /// The workload CA, once enabled (for issuing the api server's own certificate).
    pub fn ca(&self) -> Option<&weft_ca::Ca> {
        self.state.ca.get().map(|c| &c.ca)
    }

    /// Serves another registry's metrics on `/metrics` too: `encode` is called on every scrape
    /// and returns Prometheus/OpenMetrics text.
    pub fn add_metrics(&self, encode: impl Fn() -> String + Send + Sync + 'static) {
        self.state.extra_metrics.add(encode);
    }

    /// Starts the audit log of writes ([`audit`]); every write from now on is recorded.
    pub fn enable_audit(&self, options: audit::AuditOptions) -> std::io::Result<()> {
        let log = audit::AuditLog::start(options, &self.state.metrics)?;
        let _ = self.state.audit.set(log);
        Ok(())
    }

    /// Makes sure `<data_dir>/admin.token` holds a working admin token; returns it.
    pub async fn ensure_admin_token(&self, data_dir: &Path) -> Result<String, error::Error> {
        self.state.auth.ensure_admin_token(data_dir).await
    }

    /// Serves until `signal` completes, then stops accepting, ends watch streams and waits up to
    /// `grace` for requests in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<()> {
        let router = self.router();
        let shutdown = self.shutdown.clone();
        let cache = self.state.cache.clone();
        let signal = async move {
            signal.await;
            // Watch streams and long-polls never end by themselves; tell them to.
            let _ = shutdown.send(true);
            cache.close();
        };
        serve::serve(listener, router, signal, grace, self.tls.clone()).await;
        self.compactor.abort();
        Ok(())
    }
}

/// Keeps the store's history to about `keep` revisions, so it does not grow without end.
async fn compact_forever(store: Arc<dyn Store>, keep: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let (Ok(current), Ok(compacted)) =
            (store.current_revision().await, store.compacted_revision().await)
        else {
            continue;
        };
        // A little slack so that steady writes do not cause a compaction every tick.
        if current > compacted + keep + keep / 10 {
            let to = current - keep;
            match store.compact(to).await {
                Ok(()) => tracing::debug!(revision = to, "compacted store history"),
                Err(e) => tracing::warn!(error = %e, "compaction failed"),
            }
        }
    }
}
