//! A real api server in-process, the controllers against it, a fake agent, and watch-driven
//! waiting (no sleeps: every wait re-checks its condition on each change, up to a deadline).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use weft_api::kinds::instance::{InstanceStatus, Phase};
use weft_api::kinds::node::NodeStatus;
use weft_api::kinds::template::ResourceList;
use weft_api::{Instance, Node, ObjectMeta, Resource};
use weft_client::Client;
use weft_client::watcher::{self, Event};
use weft_controllers::{Controllers, Metrics, Options};
use weft_server::{Limits, Server};
use weft_store::embedded::Embedded;

pub struct Platform {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub live: Arc<weft_controllers::scrape::LiveMetrics>,
    stop: Option<oneshot::Sender<()>>,
    stop_controllers: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    controllers: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Platform {
    pub async fn start(options: Options) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path().join("store.redb")).unwrap();
        let server = Server::start(Arc::new(store), Limits::default()).await.unwrap();
        let token = server.ensure_admin_token(dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.await;
            };
            server.serve(listener, signal, Duration::from_secs(1)).await.unwrap();
        });
        let client = Client::new(&url, Some(token)).unwrap();
        let controllers = Controllers::new(client.clone(), options);
        let metrics = controllers.metrics();
        let live = controllers.live_metrics();
        let (stop_controllers, controllers_stopped) = oneshot::channel::<()>();
        let controllers = tokio::spawn(controllers.run(async move {
            let _ = controllers_stopped.await;
        }));
        Platform {
            client,
            metrics,
            live,
            stop: Some(stop),
            stop_controllers: Some(stop_controllers),
            server: Some(server),
            controllers: Some(controllers),
            _dir: dir,
        }
    }

    pub async fn apply(&self, objects: &[Value]) {
        self.client.apply(objects, None, false).await.unwrap();
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop_controllers.take() {
            let _ = s.send(());
        }
        if let Some(c) = self.controllers.take() {
            tokio::time::timeout(Duration::from_secs(5), c).await.unwrap().unwrap();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
    }
}

/// Options for tests: the DESIGN defaults, with short node timeouts.
pub fn options() -> Options {
    Options {
        node_grace: Duration::from_millis(1500),
        eviction_timeout: Duration::from_secs(3),
        ..Options::default()
    }
}

pub fn deployment(name: &str, replicas: i32, version: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {
                "command": ["app", version],
                "ports": [{"name": "http", "port": 8080}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
            },
            "strategy": strategy
        }
    })
}

pub fn service(name: &str) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"deployment": name}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    })
}

/// A local copy of every object of a kind, with a way to wait for a condition on it.
pub struct Mirror<T> {
    state: Arc<Mutex<BTreeMap<String, T>>>,
    changed: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl<T> Drop for Mirror<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Check<T> = Box<dyn FnMut(&BTreeMap<String, T>) + Send>;

impl<T: Resource> Mirror<T> {
    pub fn start(client: &Client) -> Mirror<T> {
        Self::checked(client, Box::new(|_| {}))
    }

    /// Runs `check` on the state after every change (for invariants that must hold throughout).
    pub fn checked(client: &Client, mut check: Check<T>) -> Mirror<T> {
        let state = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, changed) = watch::channel(0u64);
        let st = state.clone();
        let stream = watcher::watcher(client.clone(), T::info(), watcher::Config::default());
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                {
                    let mut s = st.lock().unwrap();
                    match ev {
                        Event::Restarted(items) => {
                            s.clear();
                            for v in items {
                                let o: T = serde_json::from_value(v).unwrap();
                                s.insert(o.metadata().name.clone(), o);
                            }
                        }
                        Event::Applied(v) => {
                            let o: T = serde_json::from_value(v).unwrap();
                            s.insert(o.metadata().name.clone(), o);
                        }
                        Event::Deleted(v) => {
                            let o: T = serde_json::from_value(v).unwrap();
                            s.remove(&o.metadata().name);
                        }
                    }
                    check(&s);
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Mirror { state, changed, task }
    }

    pub fn snapshot(&self) -> BTreeMap<String, T> {
        self.state.lock().unwrap().clone()
    }

    /// Waits until `f` returns `Some`, re-checking on every change; panics after `timeout`
    /// with `what` and the last state.
    pub async fn wait<R>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&BTreeMap<String, T>) -> Option<R>,
    ) -> R {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            if let Some(r) = f(&self.state.lock().unwrap()) {
                return r;
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                let names: Vec<String> = self
                    .state
                    .lock()
                    .unwrap()
                    .values()
                    .map(|o| serde_json::to_string(o).unwrap())
                    .collect();
                panic!("timed out waiting for {what}; state:\n{}", names.join("\n"));
            }
        }
    }
}

pub fn ready(i: &Instance) -> bool {
    i.status.as_ref().is_some_and(|s| s.phase == Phase::Running && s.ready)
}

pub fn active(m: &BTreeMap<String, Instance>, deployment: &str) -> Vec<Instance> {
    m.values().filter(|i| i.spec.deployment == deployment && !i.spec.terminating).cloned().collect()
}

struct NodeCfg {
    alive: bool,
    cpu: String,
    memory: String,
}

/// Plays the agent for its nodes: registers them, heartbeats, and runs (instantly) every
/// instance bound to a live node: Running, ready, with an address and a public port per
/// template port; terminating ones are deleted.
pub struct FakeAgent {
    client: Client,
    nodes: Arc<Mutex<BTreeMap<String, NodeCfg>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn heartbeat(client: &Client, name: &str, cpu: &str, memory: &str) {
    let alloc =
        ResourceList { cpu: Some(cpu.parse().unwrap()), memory: Some(memory.parse().unwrap()) };
    let current = match client.get::<Node>(None, name).await {
        Ok(n) => n,
        Err(_) => {
            client.put(&Node::new(ObjectMeta::named(name), Default::default())).await.unwrap()
        }
    };
    let mut next = current.clone();
    next.metadata.resource_version = None;
    next.status = Some(NodeStatus {
        address: "127.0.0.1".into(),
        capacity: alloc.clone(),
        allocatable: alloc,
        heartbeat_time: Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        ready: true,
        ..current.status.clone().unwrap_or_default()
    });
    // Conditions written by the node controller are the agent's to clear once it is back.
    if let Some(s) = next.status.as_mut() {
        s.conditions.clear();
    }
    let _ = client.put_status(&next).await;
}

impl FakeAgent {
    pub async fn start(client: &Client, nodes: &[(&str, &str, &str)]) -> FakeAgent {
        let mut agent = FakeAgent {
            client: client.clone(),
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
            tasks: Vec::new(),
        };
        for (name, cpu, mem) in nodes {
            agent.add_node(name, cpu, mem).await;
        }
        let client = client.clone();
        let cfg = agent.nodes.clone();
        agent.tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let live: Vec<(String, String, String)> = cfg
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, c)| c.alive)
                    .map(|(n, c)| (n.clone(), c.cpu.clone(), c.memory.clone()))
                    .collect();
                for (n, cpu, mem) in live {
                    heartbeat(&client, &n, &cpu, &mem).await;
                }
            }
        }));
        let client = agent.client.clone();
        let cfg = agent.nodes.clone();
        agent.tasks.push(tokio::spawn(run_instances(client, cfg)));
        agent
    }

    pub async fn add_node(&self, name: &str, cpu: &str, memory: &str) {
        self.nodes.lock().unwrap().insert(
            name.to_string(),
            NodeCfg { alive: true, cpu: cpu.to_string(), memory: memory.to_string() },
        );
        heartbeat(&self.client, name, cpu, memory).await;
    }

    /// The node's agent "dies": no more heartbeats, no more work on its instances.
    pub fn kill(&self, name: &str) {
        if let Some(c) = self.nodes.lock().unwrap().get_mut(name) {
            c.alive = false;
        }
    }
}

async fn run_instances(client: Client, nodes: Arc<Mutex<BTreeMap<String, NodeCfg>>>) {
    let stream = watcher::watcher(client.clone(), Instance::info(), watcher::Config::default());
    futures::pin_mut!(stream);
    let busy: Arc<Mutex<HashSet<(String, bool)>>> = Arc::default();
    let ports: Arc<Mutex<HashMap<String, BTreeMap<String, u16>>>> = Arc::default();
    let next_port = Arc::new(std::sync::atomic::AtomicU16::new(20_000));
    while let Some(ev) = stream.next().await {
        let items = match ev {
            Ok(Event::Restarted(items)) => items,
            Ok(Event::Applied(v)) => vec![v],
            _ => continue,
        };
        for v in items {
            let i: Instance = serde_json::from_value(v).unwrap();
            let Some(node) = i.spec.node.clone() else { continue };
            if !nodes.lock().unwrap().get(&node).is_some_and(|c| c.alive) {
                continue;
            }
            let terminating = i.spec.terminating;
            if !terminating && ready(&i) {
                continue;
            }
            let job = (i.metadata.name.clone(), terminating);
            if !busy.lock().unwrap().insert(job.clone()) {
                continue;
            }
            let client = client.clone();
            let busy = busy.clone();
            let ports = ports.clone();
            let next_port = next_port.clone();
            tokio::spawn(async move {
                let ns = i.metadata.namespace_or_default().to_string();
                if terminating {
                    let _ = client.delete::<Instance>(Some(&ns), &i.metadata.name).await;
                } else {
                    let public = ports
                        .lock()
                        .unwrap()
                        .entry(i.metadata.name.clone())
                        .or_insert_with(|| {
                            i.spec
                                .template
                                .ports
                                .iter()
                                .map(|p| {
                                    let n = next_port
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    (p.name.clone(), n)
                                })
                                .collect()
                        })
                        .clone();
                    let mut next = i.clone();
                    next.metadata.resource_version = None;
                    next.status = Some(InstanceStatus {
                        phase: Phase::Running,
                        ready: true,
                        address: "127.0.0.1".into(),
                        ports: public,
                        ..InstanceStatus::default()
                    });
                    let _ = client.put_status(&next).await;
                }
                busy.lock().unwrap().remove(&job);
            });
        }
    }
}

/// Milliseconds as a short text.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The `p`-th percentile of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((samples.len() as f64 * p / 100.0).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[idx]
}

/// When each instance was first seen, first seen bound, first seen ready (test-side clock).
#[derive(Default)]
pub struct Timeline {
    pub seen: HashMap<String, (Instant, Option<Instant>, Option<Instant>)>,
}

impl Timeline {
    pub fn record(&mut self, state: &BTreeMap<String, Instance>) {
        let now = Instant::now();
        for (name, i) in state {
            let e = self.seen.entry(name.clone()).or_insert((now, None, None));
            if i.spec.node.is_some() && e.1.is_none() {
                e.1 = Some(now);
            }
            if ready(i) && e.2.is_none() {
                e.2 = Some(now);
            }
        }
    }
}
