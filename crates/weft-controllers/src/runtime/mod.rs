//! Running the controllers: caches fed by watches, work queues, workers, periodic resync.
//!
//! One watch per kind (Deployments, Instances, Services, Endpoints, Nodes, Autoscalers) feeds a
//! [`Cache`]; every change is fanned out at once ([`dispatch`]) to the keys it concerns in each
//! controller's [`Queue`]; workers take keys and reconcile them level-triggered (from the
//! caches, never from the event). Nothing on the hot path waits on a timer: an instance
//! created is seen by the scheduler's watch and bound within one round trip.

pub mod cache;
pub(crate) mod dispatch;
pub mod queue;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use weft_api::{Autoscaler, Deployment, Endpoints, Instance, Node, NodePool, Resource, Service};
use weft_client::Client;
use weft_client::watcher::{self, Mode};

pub use cache::{Cache, Change, ObjectKey};
pub use queue::Queue;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::nodepool::{NodeProvider, Providers};
use crate::scheduler::Policy;
use crate::scheduler::controller::SchedulerState;
use crate::scrape::LiveMetrics;
use crate::{autoscaler, deployment, endpoints, node, nodepool, scheduler, scrape};

/// Instance index: `namespace/deployment`.
pub const BY_DEPLOYMENT: &str = "deployment";
/// Instance index: node name.
pub const BY_NODE: &str = "node";

/// How the controllers behave.
#[derive(Clone, Debug)]
pub struct Options {
    /// How the scheduler chooses among nodes that fit.
    pub scheduler: Policy,
    /// A node without a heartbeat for this long is marked NotReady and its instances are
    /// replaced (DESIGN.md: 20 s).
    pub node_grace: Duration,
    /// Instances still bound to a node NotReady or gone for this long are deleted outright.
    pub eviction_timeout: Duration,
    /// Every key is reconciled at least this often, whatever the watches say.
    pub resync: Duration,
    /// Workers per controller (the scheduler has one: its decisions are sequential).
    pub workers: usize,
    /// Writes one reconcile (or one scheduling batch) has in flight at once.
    pub max_concurrent_writes: usize,
    /// How the watches follow changes.
    pub watch_mode: Mode,
    /// How often every running instance's sidecar and every agent is scraped (DESIGN.md
    /// "Autoscaling loop": every second); the autoscalers decide after each round.
    pub scrape_interval: Duration,
    /// A scrape not answered within this counts as failed (the instance's metrics as missing).
    pub scrape_timeout: Duration,
    /// Autoscaler status is written at once when replicas, mode, conditions or decisions
    /// change; figures and messages alone refresh at most this often (each write is a store
    /// revision and a watch event for every watcher).
    pub autoscaler_status_period: Duration,
    /// How often each node pool is reconciled (decide, drain steps, status).
    pub nodepool_period: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scheduler: Policy::Spread,
            node_grace: Duration::from_secs(20),
            eviction_timeout: Duration::from_secs(300),
            resync: Duration::from_secs(30),
            workers: 4,
            max_concurrent_writes: 64,
            watch_mode: Mode::Auto,
            scrape_interval: Duration::from_secs(1),
            scrape_timeout: scrape::DEFAULT_TIMEOUT,
            autoscaler_status_period: Duration::from_secs(10),
            nodepool_period: Duration::from_secs(1),
        }
    }
}

/// The work queues, one per controller.
pub(crate) struct Queues {
    pub deployments: Queue<ObjectKey>,
    pub endpoints: Queue<ObjectKey>,
    pub nodes: Queue<String>,
    pub scheduling: Queue<ObjectKey>,
}

impl Queues {
    fn all_closed(&self) {
        self.deployments.close();
        self.endpoints.close();
        self.nodes.close();
        self.scheduling.close();
    }
}

/// What every controller shares.
pub(crate) struct Context {
    pub client: Client,
    pub options: Options,
    pub metrics: Arc<Metrics>,
    pub deployments: Cache<Deployment>,
    pub instances: Cache<Instance>,
    pub services: Cache<Service>,
    pub endpoints: Cache<Endpoints>,
    pub nodes: Cache<Node>,
    pub autoscalers: Cache<Autoscaler>,
    pub nodepools: Cache<NodePool>,
    /// The node providers this process can run, by name.
    pub node_providers: Mutex<Providers>,
    /// The latest per-instance figures, written by the scrape loop.
    pub live: Arc<LiveMetrics>,
    /// Signalled after each scrape round: the autoscalers decide on fresh figures.
    pub autoscale_tick: tokio::sync::Notify,
    pub queues: Queues,
    pub scheduler: Mutex<SchedulerState>,
    pub rng: Mutex<StdRng>,
    /// Nodes found missing while instances were bound to them, and since when.
    pub missing_nodes: Mutex<std::collections::HashMap<String, std::time::SystemTime>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Context {
    fn new(client: Client, options: Options, metrics: Arc<Metrics>) -> Context {
        let queues = Queues {
            deployments: Queue::new(metrics.queue_gauge(deployment::controller::NAME)),
            endpoints: Queue::new(metrics.queue_gauge(endpoints::controller::NAME)),
            nodes: Queue::new(metrics.queue_gauge(node::controller::NAME)),
            scheduling: Queue::new(metrics.queue_gauge(scheduler::controller::NAME)),
        };
        Context {
            client,
            scheduler: Mutex::new(SchedulerState::new(options.scheduler)),
            options,
            metrics,
            deployments: Cache::default(),
            instances: Cache::new(vec![
                (BY_DEPLOYMENT, |i: &Instance| {
                    (!i.spec.deployment.is_empty()).then(|| {
                        format!("{}/{}", i.metadata.namespace_or_default(), i.spec.deployment)
                    })
                }),
                (BY_NODE, |i: &Instance| i.spec.node.clone()),
            ]),
            services: Cache::default(),
            endpoints: Cache::default(),
            nodes: Cache::default(),
            autoscalers: Cache::default(),
            nodepools: Cache::default(),
            node_providers: Mutex::default(),
            live: Arc::new(LiveMetrics::new()),
            autoscale_tick: tokio::sync::Notify::new(),
            queues,
            rng: Mutex::new(StdRng::from_entropy()),
            missing_nodes: Mutex::default(),
        }
    }

    /// Records an instance we wrote and tells everyone who cares.
    pub fn wrote_instance(&self, obj: Instance) {
        if let Some(change) = self.instances.write_through(obj) {
            dispatch::instance(self, &change);
        }
    }

    /// Records a deployment we wrote (e.g. scaled) and queues it for the deployment controller.
    pub fn wrote_deployment(&self, obj: Deployment) {
        if let Some(change) = self.deployments.write_through(obj) {
            dispatch::deployment(self, &change);
        }
    }

    /// Records an instance we deleted (the answer carries the deletion's revision).
    pub fn deleted_instance(&self, obj: &Instance) {
        let key = ObjectKey::of(obj);
        let rev = obj.metadata.revision().unwrap_or(0);
        if let Some(change) = self.instances.remove_through(&key, rev) {
            dispatch::instance(self, &change);
        }
    }

    /// `DELETE` with an optional resourceVersion precondition; returns the object as it was,
    /// with the deletion's revision. (weft-client's `delete` has no precondition.)
    pub async fn delete_at<T: Resource>(
        &self,
        key: &ObjectKey,
        resource_version: Option<&str>,
    ) -> Result<T, weft_client::ClientError> {
        let mut path = weft_client::path(T::info(), key.ns(), Some(&key.name));
        if let Some(rv) = resource_version {
            path.push_str("?resourceVersion=");
            path.push_str(rv);
        }
        let (_, body) = self.client.call(http::Method::DELETE, &path, None).await?;
        serde_json::from_slice(&body).map_err(|e| {
            weft_client::ClientError::Protocol(format!("decoding the deleted {}: {e}", T::KIND))
        })
    }

    /// Queues every key of every controller (at start and every `resync`).
    pub fn resync(&self) {
        let q = &self.queues;
        q.deployments.add_all(self.deployments.keys());
        q.endpoints.add_all(self.services.keys());
        q.endpoints.add_all(self.endpoints.keys());
        q.nodes.add_all(self.nodes.keys().into_iter().map(|k| k.name));
        for i in self.instances.list() {
            if !i.spec.deployment.is_empty() {
                q.deployments
                    .add(ObjectKey::new(i.metadata.namespace_or_default(), &i.spec.deployment));
            }
            if let Some(n) = &i.spec.node {
                q.nodes.add(n.clone());
            }
            if scheduler::controller::needs_scheduling(&i) {
                q.scheduling.add(ObjectKey::of(&*i));
            }
        }
    }
}

/// The control loops, ready to run against one api server.
pub struct Controllers {
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Controllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controllers").field("options", &self.ctx.options).finish_non_exhaustive()
    }
}

impl Controllers {
    /// Controllers acting through `client` (which needs an admin token).
    pub fn new(client: Client, options: Options) -> Controllers {
        Controllers::with_metrics(client, options, Arc::new(Metrics::new()))
    }

    /// Like [`Controllers::new`], recording into `metrics`: one set of metrics that outlives
    /// the controllers, e.g. across leadership terms, served by the api server's `/metrics`.
    pub fn with_metrics(client: Client, options: Options, metrics: Arc<Metrics>) -> Controllers {
        Controllers { ctx: Arc::new(Context::new(client, options, metrics)) }
    }

    /// Lets node pools whose `spec.provider` is `provider.name()` grow and shrink through it.
    /// Without a provider, such pools only report that it is missing.
    pub fn with_node_provider(self, provider: Arc<dyn NodeProvider>) -> Controllers {
        lock(&self.ctx.node_providers).insert(provider.name(), provider);
        self
    }

    /// The controllers' metrics; keep the handle to serve them (`encode`, `registry`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// The latest per-instance figures (requests/s, in-flight, latency, cpu, memory) from the
    /// metrics pipeline; keep the handle to read them while the controllers run.
    pub fn live_metrics(&self) -> Arc<LiveMetrics> {
        self.ctx.live.clone()
    }

    /// Runs every loop until `shutdown` resolves. Watches and writes retry on their own, so
    /// nothing here ends the loops early.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let ctx = self.ctx;
        let mut tasks = JoinSet::new();
        tasks.spawn(inform(ctx.clone(), |c| &c.deployments, dispatch::deployment));
        tasks.spawn(inform(ctx.clone(), |c| &c.instances, dispatch::instance));
        tasks.spawn(inform(ctx.clone(), |c| &c.services, dispatch::service));
        tasks.spawn(inform(ctx.clone(), |c| &c.endpoints, dispatch::endpoints));
        tasks.spawn(inform(ctx.clone(), |c| &c.nodes, dispatch::node));
        // The autoscaler loop reads the cache on its own clock: no fan-out needed.
        tasks.spawn(inform(ctx.clone(), |c| &c.autoscalers, |_, _| {}));
        tasks.spawn(inform(ctx.clone(), |c| &c.nodepools, |_, _| {}));
        let started = ctx.clone();
        tasks.spawn(async move {
            // Deciding from a partial view would be wrong (e.g. collecting the instances of a
            // deployment not listed yet): wait for every first list.
            started.deployments.wait_synced().await;
            started.instances.wait_synced().await;
            started.services.wait_synced().await;
            started.endpoints.wait_synced().await;
            started.nodes.wait_synced().await;
            started.autoscalers.wait_synced().await;
            started.nodepools.wait_synced().await;
            tracing::info!(
                deployments = started.deployments.len(),
                instances = started.instances.len(),
                services = started.services.len(),
                nodes = started.nodes.len(),
                "controllers synced; reconciling"
            );
            let mut workers = JoinSet::new();
            let n = started.options.workers.max(1);
            for _ in 0..n {
                workers.spawn(work(
                    started.clone(),
                    deployment::controller::NAME,
                    |c| &c.queues.deployments,
                    |c, k| Box::pin(async move { deployment::controller::reconcile(&c, &k).await }),
                ));
                workers.spawn(work(
                    started.clone(),
                    endpoints::controller::NAME,
                    |c| &c.queues.endpoints,
                    |c, k| Box::pin(async move { endpoints::controller::reconcile(&c, &k).await }),
                ));
            }
            workers.spawn(work(
                started.clone(),
                node::controller::NAME,
                |c| &c.queues.nodes,
                |c, k| Box::pin(async move { node::controller::reconcile(&c, &k).await }),
            ));
            workers.spawn(scheduler::controller::run(started.clone()));
            workers.spawn(scrape::run(started.clone()));
            workers.spawn(autoscaler::controller::run(started.clone()));
            workers.spawn(nodepool::controller::run(started.clone()));
            let mut tick =
                tokio::time::interval(started.options.resync.max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                started.resync();
            }
        });
        shutdown.await;
        ctx.queues.all_closed();
        tasks.shutdown().await;
    }
}

/// Follows one kind into its cache, fanning each change out.
async fn inform<T: Resource>(
    ctx: Arc<Context>,
    cache: fn(&Context) -> &Cache<T>,
    on_change: fn(&Context, &Change<T>),
) {
    let config = watcher::Config { mode: ctx.options.watch_mode, ..watcher::Config::default() };
    let stream = watcher::watcher(ctx.client.clone(), T::info(), config);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                for change in cache(&ctx).apply(event) {
                    on_change(&ctx, &change);
                }
            }
            Err(e) => tracing::warn!(kind = T::KIND, error = %e, "watch interrupted; resuming"),
        }
    }
}

type Reconcile<K> =
    fn(
        Arc<Context>,
        K,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Duration>, Error>> + Send>>;

/// One worker: takes keys from a queue and reconciles them, retrying failures with backoff
/// and honouring the "look again after" each reconcile may ask for.
async fn work<K: Clone + Eq + std::hash::Hash + std::fmt::Display + Send + 'static>(
    ctx: Arc<Context>,
    name: &'static str,
    queue: fn(&Context) -> &Queue<K>,
    reconcile: Reconcile<K>,
) {
    while let Some(batch) = queue(&ctx).next_batch(1).await {
        for key in batch {
            let start = Instant::now();
            let result = reconcile(ctx.clone(), key.clone()).await;
            let q = queue(&ctx);
            let outcome = match result {
                Ok(after) => {
                    q.forget(&key);
                    if let Some(after) = after {
                        q.add_after(key.clone(), after);
                    }
                    "ok"
                }
                Err(e) if e.is_conflict() => {
                    tracing::debug!(controller = name, %key, error = %e, "lost a race; retrying");
                    q.add_rate_limited(key.clone());
                    "conflict"
                }
                Err(e) => {
                    tracing::warn!(controller = name, %key, error = %e, "reconcile failed; retrying");
                    q.add_rate_limited(key.clone());
                    "error"
                }
            };
            ctx.metrics.reconciled(name, outcome, start.elapsed().as_secs_f64());
            q.done(&key);
        }
    }
}
