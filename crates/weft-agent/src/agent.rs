//! The agent's main loop: register the node, follow the Instances bound to it, run one
//! supervisor per instance, and report usage.
//!
//! Instances are followed with `weft_client::watcher` over all instances, filtered on
//! `spec.node == <name>` here: the api has no field selectors, and the scheduler sets no
//! label for the node. Every agent thus receives every instance event; fine for the node
//! counts weft targets, and the first thing to change (a `node` label set at binding, or a
//! field selector) if clusters grow.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use weft_api::Instance;
use weft_api::kinds::instance::Usage;
use weft_api::quantity::Quantity;
use weft_client::Client;
use weft_client::watcher::{self, Event};

use crate::admin::{self, Admin};
use crate::cgroups::Cgroups;
use crate::error::AgentError;
use crate::metrics::{self, Registry};
use crate::node::{self, NodeInfo};
use crate::options::AgentOptions;
use crate::ports::Allocator;
use crate::state::{self, Saved};
use crate::supervise::{self, Command, Shared};
use crate::{env, logs};

/// The node agent. See [`Agent::run`].
#[derive(Debug)]
pub struct Agent;

/// How long `stop_on_exit` waits for instances beyond their grace periods.
const STOP_SLACK: Duration = Duration::from_secs(15);

struct Handle {
    tx: watch::Sender<Command>,
    uid: String,
    abort: AbortHandle,
}

impl Agent {
    /// Runs the agent until `shutdown` completes.
    ///
    /// Fails at once for bad options (`AgentError::Config`), an unusable data dir or admin
    /// address, or a token the server refuses; an unreachable server is retried (and said
    /// so) until it answers. On shutdown instances are left running for the next agent
    /// unless `options.stop_on_exit`.
    pub async fn run(
        options: AgentOptions,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AgentError> {
        options.validate()?;
        let root = options.data_dir.join("agent");
        let instances_dir = root.join("instances");
        let logs_dir = root.join("logs");
        for d in [&instances_dir, &logs_dir] {
            std::fs::create_dir_all(d)
                .map_err(|source| AgentError::DataDir { path: d.clone(), source })?;
        }
        // Older agents kept one proxy token for all their sidecars; each sidecar now gets its
        // own, bound to its instance. Do not leave the old secret lying about.
        for old in ["node-proxy.token", "proxy.token"] {
            let _ = std::fs::remove_file(root.join(old));
        }
        let client = Client::new(&options.server, Some(options.token.clone()))
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let cgroups = Cgroups::detect(options.cgroups, &options.name);
        match &cgroups {
            Cgroups::Off { why } => tracing::warn!(
                node = %options.name,
                "instances run without cpu and memory limits: cgroups are not usable here ({why})"
            ),
            c => tracing::info!(node = %options.name, "cgroups: {}", c.describe()),
        }
        let listener =
            tokio::net::TcpListener::bind(options.admin_listen).await.map_err(|source| {
                AgentError::Admin { addr: options.admin_listen.to_string(), source }
            })?;
        let admin_addr = listener.local_addr().map_err(|source| AgentError::Admin {
            addr: options.admin_listen.to_string(),
            source,
        })?;
        let metrics_address = if admin_addr.ip().is_unspecified() {
            std::net::SocketAddr::new(options.address, admin_addr.port()).to_string()
        } else {
            admin_addr.to_string()
        };
        let capacity = node::capacity(&options.capacity);
        let allocatable = node::allocatable(&capacity, &options.reserved);
        let info = NodeInfo {
            name: options.name.clone(),
            address: options.address.to_string(),
            capacity,
            allocatable: allocatable.clone(),
            metrics_address,
            cgroups: cgroups.enabled(),
        };

        tokio::pin!(shutdown);
        // Register, retrying while the server is unreachable; a refused token is fatal.
        let mut delay = Duration::from_millis(200);
        let mut said = false;
        loop {
            let attempt = async {
                let file = root.join(format!("node-{}.token", info.name));
                let own = node::credential(&client, &options.server, &file, &info.name).await?;
                node::register(&own, &info).await.map(|()| own)
            };
            tokio::select! {
                _ = &mut shutdown => {
                    if options.stop_on_exit {
                        stop_leftovers(state::load_all(&instances_dir), &logs_dir).await;
                    }
                    return Ok(());
                }
                r = attempt => match r {
                    Ok(own) => break Self::serve(options, own, info, cgroups, allocatable, listener, instances_dir, logs_dir, shutdown).await,
                    Err(e) if node::fatal(&e) => return Err(AgentError::Unauthorized(e.to_string())),
                    Err(e) => {
                        if !said {
                            tracing::warn!(node = %info.name, "cannot register the node yet (retrying): {e}");
                            said = true;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve(
        options: AgentOptions,
        client: Client,
        info: NodeInfo,
        cgroups: Cgroups,
        allocatable: weft_api::kinds::template::ResourceList,
        listener: tokio::net::TcpListener,
        instances_dir: std::path::PathBuf,
        logs_dir: std::path::PathBuf,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), AgentError> {
        tracing::info!(node = %info.name, admin = %info.metrics_address, "agent registered; running instances bound to it");
        let registry = Arc::new(Registry::default());
        let sh = Arc::new(Shared {
            client: client.clone(),
            opts: options.clone(),
            alloc: Mutex::new(Allocator::new()),
            cgroups,
            allocatable,
            registry: registry.clone(),
            inherited_env: env::inherited(&options.extra_path),
            instances_dir: instances_dir.clone(),
            logs_dir: logs_dir.clone(),
        });
        // Everything spawned here is owned by these sets: dropping the agent's future (a
        // killed agent) aborts them all, leaving the instances' processes alone.
        let mut tasks = JoinSet::new();
        tasks.spawn(admin::serve(
            listener,
            Arc::new(Admin { registry: registry.clone(), logs_dir: logs_dir.clone() }),
        ));
        tasks.spawn(node::heartbeat(client.clone(), info.clone(), options.heartbeat_period));
        tasks.spawn(usage_loop(registry.clone(), options.usage_period));
        tasks.spawn(rotate_loop(registry.clone(), options.log_max_bytes, options.log_files));

        let mut sups: JoinSet<String> = JoinSet::new();
        let mut handles: HashMap<String, Handle> = HashMap::new();
        // A new object under the name of one still being stopped waits here.
        let mut waiting: HashMap<String, Arc<Instance>> = HashMap::new();
        let mut saved: Option<Vec<(std::path::PathBuf, Result<Saved, String>)>> =
            Some(state::load_all(&instances_dir));
        let mut events = Box::pin(watcher::watcher(
            client.clone(),
            &weft_api::kinds::INSTANCE,
            watcher::Config::default(),
        ));
        let mut complained = false;

        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = sups.join_next() => {
                    let key = match done {
                        Ok(k) => k,
                        Err(e) => {
                            // A supervisor panicked: find which by its task id; the instance
                            // is picked up again on the next event for it.
                            tracing::error!("an instance supervisor failed: {e}");
                            let id = e.id();
                            match handles.iter().find(|(_, h)| h.abort.id() == id) {
                                Some((k, _)) => k.clone(),
                                None => continue,
                            }
                        }
                    };
                    handles.remove(&key);
                    if let Some(inst) = waiting.remove(&key) {
                        start(&sh, &mut sups, &mut handles, inst, None);
                    }
                }
                ev = events.next() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        Err(e) => {
                            if !complained {
                                tracing::warn!("watching instances failed (retrying): {e}");
                                complained = true;
                            }
                        }
                        Ok(Event::Restarted(items)) => {
                            complained = false;
                            let mine: Vec<Arc<Instance>> = items.into_iter().filter_map(|v| decode(v, &options.name)).map(Arc::new).collect();
                            if let Some(saved) = saved.take() {
                                // First list: adopt what an earlier agent left, clean up the rest.
                                for (dir, s) in saved {
                                    match s {
                                        Ok(s) => {
                                            let bound = mine.iter().find(|i| {
                                                key_of(i) == state::key(&s.namespace, &s.name)
                                                    && i.metadata.uid.as_deref().unwrap_or_default() == s.uid
                                            });
                                            match bound {
                                                Some(inst) if !handles.contains_key(&key_of(inst)) => {
                                                    start(&sh, &mut sups, &mut handles, inst.clone(), Some(s));
                                                }
                                                _ => {
                                                    tasks.spawn(supervise::clean_leftover(dir, logs_dir.clone(), Some(s)));
                                                }
                                            }
                                        }
                                        Err(why) => {
                                            tracing::warn!("forgetting unreadable instance state ({why})");
                                            tasks.spawn(supervise::clean_leftover(dir, logs_dir.clone(), None));
                                        }
                                    }
                                }
                            }
                            // Anything supervised but no longer listed was deleted meanwhile.
                            for (key, h) in &handles {
                                if !mine.iter().any(|i| &key_of(i) == key) {
                                    h.tx.send_replace(Command::Gone);
                                }
                            }
                            for inst in mine {
                                apply(&sh, &mut sups, &mut handles, &mut waiting, inst);
                            }
                        }
                        Ok(Event::Applied(v)) => {
                            complained = false;
                            match decode(v.clone(), &options.name) {
                                Some(inst) => apply(&sh, &mut sups, &mut handles, &mut waiting, Arc::new(inst)),
                                None => {
                                    // Not (or no longer) ours: stop it if we run it.
                                    if let Some(key) = key_of_value(&v)
                                        && let Some(h) = handles.get(&key)
                                        && uid_of_value(&v) == h.uid
                                    {
                                        h.tx.send_replace(Command::Gone);
                                    }
                                }
                            }
                        }
                        Ok(Event::Deleted(v)) => {
                            if let Some(key) = key_of_value(&v) {
                                if let Some(h) = handles.get(&key)
                                    && uid_of_value(&v) == h.uid
                                {
                                    h.tx.send_replace(Command::Gone);
                                }
                                if waiting.get(&key).is_some_and(|w| w.metadata.uid.as_deref().unwrap_or_default() == uid_of_value(&v)) {
                                    waiting.remove(&key);
                                }
                            }
                        }
                    }
                }
            }
        }

        // Shutdown.
        let stop = options.stop_on_exit;
        tracing::info!(
            node = %info.name,
            "agent stopping; {} {} instance(s)",
            if stop { "stopping" } else { "leaving running" },
            handles.len()
        );
        for h in handles.values() {
            h.tx.send_replace(Command::Shutdown { stop });
        }
        if stop && let Some(saved) = saved.take() {
            // Stopped before the first list said what to adopt: stop it all.
            stop_leftovers(saved, &logs_dir).await;
        }
        let limit = if stop {
            max_grace(&registry) + options.drain_delay + STOP_SLACK
        } else {
            Duration::from_secs(5)
        };
        let all_done = async { while sups.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all_done).await.is_err() {
            tracing::warn!(node = %info.name, "some instances did not stop within {limit:?}");
        }
        if stop {
            node::mark_not_ready(&client, &info).await;
            sh.cgroups.remove_node_dirs();
        }
        tasks.abort_all();
        Ok(())
    }
}

/// Stops every process an earlier agent left (an agent told to leave nothing behind that
/// never got to adopt them).
async fn stop_leftovers(
    saved: Vec<(std::path::PathBuf, Result<Saved, String>)>,
    logs_dir: &std::path::Path,
) {
    let all = saved
        .into_iter()
        .map(|(dir, s)| supervise::clean_leftover(dir, logs_dir.to_path_buf(), s.ok()));
    futures::future::join_all(all).await;
}

/// Starts a supervisor for `inst`.
fn start(
    sh: &Arc<Shared>,
    sups: &mut JoinSet<String>,
    handles: &mut HashMap<String, Handle>,
    inst: Arc<Instance>,
    saved: Option<Saved>,
) {
    let key = key_of(&inst);
    let uid = inst.metadata.uid.clone().unwrap_or_default();
    let (tx, fut) = supervise::supervise(sh.clone(), inst, saved);
    let k = key.clone();
    let abort = sups.spawn(async move {
        fut.await;
        k
    });
    handles.insert(key, Handle { tx, uid, abort });
}

/// A new or changed instance bound here: pass it to its supervisor, or start one.
fn apply(
    sh: &Arc<Shared>,
    sups: &mut JoinSet<String>,
    handles: &mut HashMap<String, Handle>,
    waiting: &mut HashMap<String, Arc<Instance>>,
    inst: Arc<Instance>,
) {
    let key = key_of(&inst);
    let uid = inst.metadata.uid.clone().unwrap_or_default();
    match handles.get(&key) {
        Some(h) if h.uid == uid => {
            h.tx.send_replace(Command::Run(inst));
        }
        Some(h) => {
            // Same name, new object: the old one was deleted (its event may have been
            // missed). Stop the old, start the new once it is gone.
            h.tx.send_replace(Command::Gone);
            waiting.insert(key, inst);
        }
        // (A new supervisor of an instance that is already terminating deletes it at once.)
        None => start(sh, sups, handles, inst, None),
    }
}

fn key_of(i: &Instance) -> String {
    state::key(i.metadata.namespace_or_default(), &i.metadata.name)
}

fn key_of_value(v: &Value) -> Option<String> {
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or(weft_api::DEFAULT_NAMESPACE);
    Some(state::key(ns, name))
}

fn uid_of_value(v: &Value) -> String {
    v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The Instance in `v` if it is bound to `node`. An object that does not decode is skipped
/// with a warning: the api server validated it, so this means the agent is older than the
/// server.
fn decode(v: Value, node: &str) -> Option<Instance> {
    if v.pointer("/spec/node").and_then(Value::as_str) != Some(node) {
        return None;
    }
    match serde_json::from_value::<Instance>(v) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(node, "skipping an instance this agent cannot read: {e}");
            None
        }
    }
}

/// The longest grace period of the instances running here.
fn max_grace(registry: &Registry) -> Duration {
    registry.list().iter().map(|s| s.grace).max().unwrap_or_default()
}

/// Refreshes `status.usage` of every instance every `period`: cores averaged over the
/// interval and memory in use (see `worth_writing` for when it is written).
async fn usage_loop(registry: Arc<Registry>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let list = registry.list();
        let Ok((list, measured)) = tokio::task::spawn_blocking(move || {
            let m = metrics::measure(&list);
            (list, m)
        })
        .await
        else {
            continue;
        };
        let now = Instant::now();
        for (s, m) in list.iter().zip(measured) {
            let mut last = s.last_cpu.lock().unwrap_or_else(|e| e.into_inner());
            let cores = match (m.cpu_seconds, *last) {
                (Some(c), Some((t, prev))) if c >= prev => {
                    let dt = now.duration_since(t).as_secs_f64();
                    (dt > 0.0).then(|| (c - prev) / dt)
                }
                _ => None,
            };
            *last = m.cpu_seconds.map(|c| (now, c));
            drop(last);
            let usage = Usage {
                cpu: cores.map(|c| Quantity::from_milli((c * 1000.0).round() as u64)),
                memory: m.memory_bytes.map(|b| Quantity::from_bytes_binary(b / 1024 * 1024)),
            };
            let usage = (usage.cpu.is_some() || usage.memory.is_some()).then_some(usage);
            s.status.update(|st| {
                // Only for running apps: a stopped one has no usage.
                if st.pid.is_none() {
                    st.usage = None;
                } else if worth_writing(st.usage.as_ref(), usage.as_ref()) {
                    st.usage = usage;
                }
            });
        }
    }
}

/// Whether new usage figures differ enough from the ones in the status to write them: cpu by
/// 5m or more, memory by 1 MiB or 5 %, whichever is more. Keeps idle instances from costing a
/// status write (and a watch event to every watcher) per usage period.
fn worth_writing(old: Option<&Usage>, new: Option<&Usage>) -> bool {
    let (Some(old), Some(new)) = (old, new) else { return old.is_some() != new.is_some() };
    let cpu = |u: &Usage| u.cpu.map(|q| q.as_milli_ceil());
    let mem = |u: &Usage| u.memory.map(|q| q.as_units_ceil());
    let cpu_moved = match (cpu(old), cpu(new)) {
        (Some(a), Some(b)) => a.abs_diff(b) >= 5,
        (a, b) => a.is_some() != b.is_some(),
    };
    let mem_moved = match (mem(old), mem(new)) {
        (Some(a), Some(b)) => a.abs_diff(b) >= (a / 20).max(1 << 20),
        (a, b) => a.is_some() != b.is_some(),
    };
    cpu_moved || mem_moved
}

/// Rotates every instance's logs past the size limit (checked every second).
async fn rotate_loop(registry: Arc<Registry>, max_bytes: u64, keep: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dirs: Vec<_> = registry.list().iter().map(|s| s.log_dir.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for d in dirs {
                for f in [logs::APP_LOG, logs::SIDECAR_LOG] {
                    if let Err(e) = logs::rotate_if_needed(&d.join(f), max_bytes, keep) {
                        tracing::warn!("cannot rotate {}: {e}", d.join(f).display());
                    }
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_written_when_it_moves() {
        let u = |cpu: u64, mem: u64| Usage {
            cpu: Some(Quantity::from_milli(cpu)),
            memory: Some(Quantity::from_bytes_binary(mem)),
        };
        assert!(worth_writing(None, Some(&u(0, 1024))));
        assert!(!worth_writing(Some(&u(10, 100 << 20)), Some(&u(12, 101 << 20))));
        assert!(worth_writing(Some(&u(10, 100 << 20)), Some(&u(15, 100 << 20))));
        assert!(worth_writing(Some(&u(10, 100 << 20)), Some(&u(10, 106 << 20))));
        assert!(worth_writing(Some(&u(10, 1 << 20)), None));
    }
}
