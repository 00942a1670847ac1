//! The proxy's shared state and its serve loops.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use weft_api::kinds::template::Protocol;
use weft_traffic::LoadBalancer;

use crate::cluster::{Cluster, Ep};
use crate::config::{Config, Direction};
use crate::dispatch::{ListenerCtx, ListenerKind};
use crate::drain::Drain;
use crate::hold::{Activator, Holds};
use crate::http::server::{Worker, serve_connection};
use crate::listener::BindError;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::routes::{self, BuildEnv, Desired, Snapshot};
use crate::sidecar::Source;
use crate::tls::Conn;

/// How long a stopping proxy waits for its last spans to be sent. The agent gives a sidecar 5 s
/// between SIGTERM and SIGKILL, and the drain comes first.
pub const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// The sidecar's live configuration.
#[derive(Debug)]
pub(crate) struct Sidecar {
    /// Replaced whole by the control plane (or once, from the file); read by every request.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// Set once a complete configuration has been applied.
    pub(crate) synced: AtomicBool,
}

/// What the proxy routes to.
#[derive(Debug)]
pub(crate) enum Mode {
    /// The plain reverse proxy: one fixed cluster.
    Plain(Arc<Cluster>),
    Sidecar(Sidecar),
}

/// A running proxy: configuration, metrics, routes and the drain, shared by every worker.
///
/// Create it with [`Proxy::new`], bind its listeners with [`Proxy::bind`] and serve them with
/// [`Proxy::serve_bound`] once per runtime (they share routes and metrics; each runtime keeps its
/// own connection pool), or use [`Proxy::serve`] / [`Proxy::serve_until`] for the plain proxy on
/// one listener. [`Proxy::serve_admin`] runs the admin listener, [`Proxy::shutdown`] drains.
/// Dynamic sidecars also need [`crate::control::run`] to follow the api server.
#[derive(Debug)]
pub struct Proxy {
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) mode: Mode,
    pub(crate) drain: Arc<Drain>,
    /// Requests waiting for a service with no endpoint.
    pub(crate) holds: Holds,
    /// Tracing and access logs.
    pub(crate) obs: Arc<crate::obs::Obs>,
}

/// Listeners bound for a proxy (see [`Proxy::bind`]).
#[derive(Debug)]
pub struct Listeners {
    pub(crate) list: Vec<(ListenerKind, TcpListener)>,
    /// The admin listener, if configured.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// The bound address of each listener, labelled `listen`, `outbound`, `inbound:NAME`,
    /// `upstream:SERVICE`, `gateway` or `admin` (useful when the configuration asked for port 0).
    pub fn addrs(&self, proxy: &Proxy) -> Vec<(String, SocketAddr)> {
        let side = proxy.config.sidecar.as_ref();
        let mut out: Vec<(String, SocketAddr)> = self
            .list
            .iter()
            .filter_map(|(kind, l)| {
                let label = match kind {
                    ListenerKind::Plain => "listen".to_string(),
                    ListenerKind::Outbound => "outbound".to_string(),
                    ListenerKind::Gateway => "gateway".to_string(),
                    ListenerKind::Inbound(i) => format!("inbound:{}", side?.inbound.get(*i)?.port),
                    ListenerKind::Upstream(i) => {
                        let u = side?.upstream_ports.get(*i)?;
                        match &u.namespace {
                            Some(ns) => format!("upstream:{}.{ns}", u.service),
                            None => format!("upstream:{}", u.service),
                        }
                    }
                };
                Some((label, l.local_addr().ok()?))
            })
            .collect();
        if let Some(a) = self.admin.as_ref().and_then(|a| a.local_addr().ok()) {
            out.push(("admin".into(), a));
        }
        out
    }

    /// The bound address of the listener labelled `label` (see [`Listeners::addrs`]).
    pub fn addr(&self, proxy: &Proxy, label: &str) -> Option<SocketAddr> {
        self.addrs(proxy).into_iter().find(|(l, _)| l == label).map(|(_, a)| a)
    }

    /// Copies of the sockets for another runtime (per-core workers share them).
    pub(crate) fn try_clone_std(&self) -> io::Result<Vec<(ListenerKind, std::net::TcpListener)>> {
        self.list
            .iter()
            .map(|(k, l)| {
                let fd = dup_listener(l)?;
                Ok((*k, fd))
            })
            .collect()
    }
}

/// A duplicate of a tokio listener's socket as a std listener (for another runtime).
fn dup_listener(l: &TcpListener) -> io::Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    let owned = l.as_fd().try_clone_to_owned()?;
    let std = std::net::TcpListener::from(owned);
    std.set_nonblocking(true)?;
    Ok(std)
}

impl Proxy {
    /// Builds the shared state; nothing is bound or spawned. A static sidecar's routes are
    /// built here; a dynamic one starts with none (outbound requests get 503 until
    /// [`crate::control::run`] applies the first configuration).
    pub fn new(config: Config) -> Arc<Proxy> {
        let mut metrics = Metrics::new();
        let obs = Arc::new(crate::obs::Obs::new(
            config.obs.clone(),
            crate::obs::resource_of(&config),
            config.direction,
            metrics.registry_mut(),
        ));
        let metrics = Arc::new(metrics);
        let mode = match &config.sidecar {
            None => Mode::Plain(Arc::new(plain_cluster(&config, &metrics))),
            Some(side) => {
                let now = Instant::now();
                let mut desired = Desired {
                    namespace: side.source.namespace().to_string(),
                    ..Desired::default()
                };
                let mut synced = false;
                match &side.source {
                    Source::Static { labels, objects, .. } => {
                        desired.labels = labels.clone();
                        desired.synced = true;
                        synced = true;
                        for o in objects {
                            let rv = o["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|r| r.parse().ok());
                            desired.revision = desired.revision.max(rv.unwrap_or(0));
                            match o["kind"].as_str() {
                                Some("Service") => {
                                    if let Ok(s) = serde_json::from_value(o.clone()) {
                                        desired.services.push(s);
                                    }
                                }
                                Some("Endpoints") => {
                                    if let Ok(e) = serde_json::from_value(o.clone()) {
                                        desired.endpoints.push(e);
                                    }
                                }
                                Some("AuthorizationPolicy") => {
                                    if let Ok(p) = serde_json::from_value(o.clone()) {
                                        desired.authz.push(p);
                                    }
                                }
                                _ => {}
                            }
                        }
                        // A file has no store revision: 1 says "configured".
                        desired.revision = desired.revision.max(1);
                        metrics.config_update(true);
                        metrics.set_config_revision(desired.revision);
                    }
                    Source::Dynamic { labels, template_ports, .. } => {
                        desired.labels = labels.clone();
                        desired.template_ports = template_ports.clone();
                    }
                }
                let env =
                    BuildEnv { sidecar: side, inbound_timeout: config.timeout, metrics: &metrics };
                let snap = routes::build(&desired, &env, None, now);
                Mode::Sidecar(Sidecar {
                    snapshot: ArcSwap::from_pointee(snap),
                    synced: AtomicBool::new(synced),
                })
            }
        };
        Arc::new(Proxy {
            config,
            metrics,
            mode,
            drain: Arc::new(Drain::default()),
            holds: Holds::default(),
            obs,
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

    /// Whether the proxy takes new traffic: not draining, and (sidecar) configured.
    pub fn is_ready(&self) -> bool {
        !self.drain.is_draining()
            && match &self.mode {
                Mode::Plain(_) => true,
                Mode::Sidecar(s) => s.synced.load(Ordering::Relaxed),
            }
    }

    /// The revision of the configuration being served (sidecar; 0 before the first one).
    pub fn config_revision(&self) -> u64 {
        match &self.mode {
            Mode::Plain(_) => 0,
            Mode::Sidecar(s) => s.snapshot.load().revision,
        }
    }

    /// Client connections open now (including WebSocket tunnels and TCP relays).
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

    /// Binds every listener the configuration names (plain: `listen`; sidecar: inbound,
    /// outbound and upstream ports; gateway: `gateway`) and the admin listener. Call inside a
    /// tokio runtime. The error is a [`BindError`] naming the listener and its flag.
    pub fn bind(&self) -> Result<Listeners, BindError> {
        let mut list = Vec::new();
        let bind = |addr: SocketAddr, what: String, flag: &'static str| {
            crate::listener::bind(addr).map_err(|error| BindError { what, flag, addr, error })
        };
        match &self.config.sidecar {
            None => list.push((
                ListenerKind::Plain,
                bind(self.config.listen, "the proxy".into(), "--listen")?,
            )),
            Some(side) => {
                if let Some(a) = side.gateway {
                    list.push((ListenerKind::Gateway, bind(a, "the gateway".into(), "--gateway")?));
                }
                for (i, s) in side.inbound.iter().enumerate() {
                    list.push((
                        ListenerKind::Inbound(i),
                        bind(s.listen, format!("inbound port {}", s.port), "--inbound")?,
                    ));
                }
                if let Some(a) = side.outbound {
                    list.push((
                        ListenerKind::Outbound,
                        bind(a, "the outbound listener".into(), "--outbound")?,
                    ));
                }
                for (i, u) in side.upstream_ports.iter().enumerate() {
                    list.push((
                        ListenerKind::Upstream(i),
                        bind(u.listen, format!("upstream port {}", u.service), "--upstream-port")?,
                    ));
                }
            }
        }
        let admin = self
            .config
            .admin
            .map(|a| bind(a, "the admin listener".into(), "--admin"))
            .transpose()?;
        Ok(Listeners { list, admin })
    }

    /// Serves proxied traffic on `listener`, on the current runtime, until the drain is over
    /// (the plain proxy's one listener).
    pub async fn serve(self: &Arc<Self>, listener: TcpListener) {
        self.serve_listeners(vec![(ListenerKind::Plain, listener)]).await;
    }

    /// Serves every listener in `listeners` (not the admin one: see [`Proxy::serve_admin`]) on
    /// the current runtime until the drain is over.
    pub async fn serve_bound(self: &Arc<Self>, listeners: Listeners) {
        self.serve_listeners(listeners.list).await;
    }

    pub(crate) async fn serve_from_std(
        self: &Arc<Self>,
        list: Vec<(ListenerKind, std::net::TcpListener)>,
    ) {
        let list = list
            .into_iter()
            .filter_map(|(k, l)| Some((k, TcpListener::from_std(l).ok()?)))
            .collect();
        self.serve_listeners(list).await;
    }

    async fn serve_listeners(self: &Arc<Self>, list: Vec<(ListenerKind, TcpListener)>) {
        // The span exporter and the log writer start with the first runtime that serves (once);
        // they end when the proxy is dropped (their queues close), after writing what is queued.
        self.obs.spawn();
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
        let loops = list.into_iter().map(|(kind, listener)| {
            let ctx = Arc::new(self.listener_ctx(kind));
            let worker = worker.clone();
            async move {
                crate::listener::accept_loop(listener, &self.drain, |stream, peer| {
                    self.accept(&worker, &ctx, stream, peer);
                })
                .await;
            }
        });
        futures::future::join_all(loops).await;
        // Draining: the listeners are closed; wait for open connections within the grace period.
        if tokio::time::timeout(self.config.drain_grace, self.drain.all_closed()).await.is_err() {
            self.drain.force();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.drain.all_closed()).await;
        }
        sweeper.abort();
        worker.pool.clear();
    }

    /// Hands an accepted connection to its handler: opaque TCP for `tcp` ports (no protocol
    /// detection, so server-speaks-first protocols start at once), HTTP otherwise.
    fn accept(
        self: &Arc<Self>,
        worker: &Arc<Worker>,
        ctx: &Arc<ListenerCtx>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) {
        if let ListenerKind::Inbound(_) = ctx.kind
            && let Some(mesh) = self.config.mtls.mesh.as_ref().filter(|m| m.enabled())
        {
            // mTLS: the handshake (or the plaintext verdict) happens on the connection's own
            // task, then it is served as any other.
            let (this, worker, ctx, mesh) =
                (self.clone(), worker.clone(), ctx.clone(), mesh.clone());
            tokio::spawn(async move {
                let timeout = this.config.header_timeout;
                if let Some(conn) = mesh.accept(stream, timeout, &this.metrics).await {
                    this.serve_accepted(&worker, &ctx, conn, peer);
                }
            });
            return;
        }
        self.serve_accepted(worker, ctx, Conn::Tcp(stream), peer);
    }

    /// Serves an admitted connection: opaque TCP for `tcp` ports, HTTP otherwise.
    fn serve_accepted(
        self: &Arc<Self>,
        worker: &Arc<Worker>,
        ctx: &Arc<ListenerCtx>,
        stream: Conn,
        peer: SocketAddr,
    ) {
        if let (Mode::Sidecar(s), Some(side)) = (&self.mode, &self.config.sidecar) {
            match ctx.kind {
                ListenerKind::Inbound(i)
                    if side.inbound.get(i).is_some_and(|x| x.protocol == Protocol::Tcp) =>
                {
                    let snap = s.snapshot.load();
                    if let Some(r) = snap.inbound.get(i) {
                        // TCP is authorized once, at accept, on the caller's identity alone.
                        if let Some(authz) = &r.authz
                            && authz.check(stream.peer(), &Default::default()).is_err()
                        {
                            // Closed without a word: a TCP client has no place for a 403.
                            r.cluster.svc().error(crate::metrics::ErrorKind::Forbidden);
                            return;
                        }
                        tokio::spawn(crate::tcp::relay(self.clone(), r.cluster.clone(), stream));
                        return;
                    }
                }
                ListenerKind::Upstream(i) => {
                    let snap = s.snapshot.load();
                    if routes::upstream_protocol(&snap, i) == Protocol::Tcp
                        && let Some(Some(c)) = snap.upstream_ports.get(i)
                    {
                        tokio::spawn(crate::tcp::relay(self.clone(), c.clone(), stream));
                        return;
                    }
                }
                _ => {}
            }
        }
        tokio::spawn(serve_connection(worker.clone(), ctx.clone(), stream, peer));
    }

    fn listener_ctx(&self, kind: ListenerKind) -> ListenerCtx {
        let (direction, service) = match (&self.mode, kind) {
            (Mode::Plain(c), _) => (c.direction, c.service.clone()),
            (Mode::Sidecar(s), ListenerKind::Inbound(i)) => {
                let snap = s.snapshot.load();
                let label = snap
                    .inbound
                    .get(i)
                    .map_or_else(|| "inbound".into(), |r| r.cluster.service.clone());
                (Direction::Inbound, label)
            }
            // Requests that name (or match) no known service are counted under `unknown`.
            (Mode::Sidecar(_), ListenerKind::Gateway) => {
                (Direction::Gateway, "unknown".to_string())
            }
            (Mode::Sidecar(_), _) => (Direction::Outbound, "unknown".to_string()),
        };
        ListenerCtx::new(&self.metrics, kind, direction, &service)
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
        self.flush_telemetry().await;
    }

    /// Starts the span exporter and the access-log writer on the current runtime, if no
    /// runtime has yet. The process's main runtime does so before its workers start, so that
    /// the exporter outlives them and [`Proxy::flush_telemetry`] finds it.
    pub(crate) fn start_telemetry(&self) {
        self.obs.spawn();
    }

    /// Sends the spans still queued (at most [`FLUSH_WITHIN`]), after the drain.
    pub async fn flush_telemetry(&self) {
        self.obs.flush(FLUSH_WITHIN).await;
    }

    /// Serves the admin endpoints (`/metrics`, `/ready`, `/live`, `/config`) on `listener` until
    /// the future is dropped.
    pub async fn serve_admin(self: &Arc<Self>, listener: TcpListener) {
        crate::admin::serve(self.clone(), listener).await;
    }

    /// Sets gauges that are read rather than counted (`weft_circuit_open`), before a scrape.
    pub(crate) fn refresh_gauges(&self) {
        if let Mode::Sidecar(s) = &self.mode {
            for c in s.snapshot.load().clusters() {
                c.policy.refresh_gauge();
            }
        }
    }

    /// Replaces the sidecar's routes (control plane).
    pub(crate) fn apply(&self, desired: &Desired) {
        let (Mode::Sidecar(s), Some(side)) = (&self.mode, &self.config.sidecar) else { return };
        let env = BuildEnv {
            sidecar: side,
            inbound_timeout: self.config.timeout,
            metrics: &self.metrics,
        };
        let prev = s.snapshot.load_full();
        let snap = routes::build(desired, &env, Some(&prev), Instant::now());
        s.snapshot.store(Arc::new(snap));
        if desired.synced {
            s.synced.store(true, Ordering::Relaxed);
        }
        self.metrics.config_update(true);
        self.metrics.set_config_revision(desired.revision);
        self.holds.routes_changed();
    }

    /// Sets who is asked to start an instance of a service that has none while requests for it
    /// are held (dynamic sidecars and gateways ask the api server; see [`crate::hold`]).
    pub fn set_activator(&self, activator: Arc<dyn Activator>) {
        self.holds.set_activator(activator);
    }
}

/// The plain proxy's cluster: the `--upstream` addresses, round-robin, the `--timeout`.
fn plain_cluster(config: &Config, metrics: &Arc<Metrics>) -> Cluster {
    let now = Instant::now();
    let ids: Vec<Ep> = config
        .upstreams
        .iter()
        .map(|u| Ep::new(metrics, config.direction, &config.service, u.addr, u.name.clone()))
        .collect();
    let lb = LoadBalancer::new(weft_traffic::Algorithm::RoundRobin, ids, now);
    let policy = Policy::fixed(metrics, config.direction, &config.service, config.timeout);
    Cluster::new(metrics, config.direction, &config.service, Protocol::Http, lb, Arc::new(policy))
}
