//! The metrics pipeline (DESIGN.md "Autoscaling loop", the collect step): once a second, scrape
//! every running instance's sidecar `/metrics` and every node agent's `/metrics`, turn the
//! counters into per-instance figures ([`rates`]), and keep the latest in [`LiveMetrics`],
//! which the autoscaler (and anyone holding the handle) reads.
//!
//! A failed scrape leaves the instance *without* traffic figures until the next success: the
//! autoscaler then sees no fresh sample and counts the instance as missing, never as idle.
//!
//! [`Scraper`] does not depend on the controllers' caches, so `weft top` uses it directly.

pub mod fetch;
pub mod prom;
pub mod rates;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use weft_api::Instance;
use weft_api::kinds::instance::Phase;
use weft_autoscale::Time;

pub use rates::{Buckets, Traffic};

use crate::runtime::{Context, ObjectKey};

/// How long one scrape may take before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Scrapes in flight at once.
const PARALLEL: usize = 64;

/// Cpu and memory of one instance, from its node's agent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    pub at: Time,
    /// Cores used since the previous scrape (`None` on the first).
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
}

/// The latest figures of one instance.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceFigures {
    pub key: ObjectKey,
    pub deployment: String,
    pub node: Option<String>,
    /// From the sidecar; `None` when the last scrape failed (see `traffic_error`).
    pub traffic: Option<Traffic>,
    pub traffic_error: Option<String>,
    /// From the node's agent; `None` when it failed or does not list the instance.
    pub resources: Option<Resources>,
    pub resources_error: Option<String>,
}

/// What to scrape for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub key: ObjectKey,
    pub deployment: String,
    pub node: Option<String>,
    /// `host:port` of the sidecar's admin listener.
    pub sidecar_admin: Option<String>,
}

impl Target {
    /// An instance worth scraping: running (or ready) and not being stopped.
    pub fn of(i: &Instance) -> Option<Target> {
        let s = i.status.as_ref()?;
        if i.spec.terminating || !(s.phase == Phase::Running || s.ready) {
            return None;
        }
        Some(Target {
            key: ObjectKey::of(i),
            deployment: i.spec.deployment.clone(),
            node: i.spec.node.clone(),
            sidecar_admin: s.sidecar_admin.clone(),
        })
    }
}

/// One scrape's outcome: when it answered and the body, or why it failed.
pub type Answer = Result<(Time, String), String>;

/// Which scrape a task did.
enum Job {
    Sidecar(usize),
    Agent(String),
}

/// Scrapes targets and keeps, per instance, the previous counters to take rates from.
#[derive(Debug)]
pub struct Scraper {
    start: tokio::time::Instant,
    timeout: Duration,
    traffic: HashMap<ObjectKey, rates::TrafficRates>,
    cpu: HashMap<ObjectKey, rates::CpuRate>,
}

impl Scraper {
    /// Times are measured from `start` (share it with whoever reads the figures' `at`).
    pub fn new(start: tokio::time::Instant, timeout: Duration) -> Scraper {
        Scraper { start, timeout, traffic: HashMap::new(), cpu: HashMap::new() }
    }

    /// One round: every target's sidecar and every node agent (`(node, host:port)`) at once,
    /// each bounded by the timeout. Instances no longer listed are forgotten.
    pub async fn scrape(
        &mut self,
        targets: &[Target],
        nodes: &[(String, String)],
    ) -> Vec<InstanceFigures> {
        // Owned requests on spawned tasks: every scrape runs at once (bounded by a semaphore),
        // and each is cut at the timeout, so the round takes about one timeout at worst.
        let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let timeout = self.timeout;
        let start = self.start;
        let mut jobs = tokio::task::JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let addr = t.sidecar_admin.clone();
            let limit = limit.clone();
            jobs.spawn(async move {
                let Some(addr) = addr else {
                    let e = "the instance reports no sidecar admin address".to_string();
                    return (Job::Sidecar(i), Err(e));
                };
                let _permit = limit.acquire_owned().await;
                let r = fetch::get(&addr, "/metrics", timeout).await;
                // Stamped when the answer arrived: rates divide by the real interval.
                let at = tokio::time::Instant::now().saturating_duration_since(start);
                (
                    Job::Sidecar(i),
                    r.map(|body| (at, body)).map_err(|e| format!("sidecar {addr}: {e}")),
                )
            });
        }
        for (node, addr) in nodes {
            let (node, addr) = (node.clone(), addr.clone());
            let limit = limit.clone();
            jobs.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let r = fetch::get(&addr, "/metrics", timeout).await;
                let at = tokio::time::Instant::now().saturating_duration_since(start);
                let r = r
                    .map(|body| (at, body))
                    .map_err(|e| format!("agent of node {node} at {addr}: {e}"));
                (Job::Agent(node), r)
            });
        }
        let mut sidecars = Vec::new();
        let mut agents = Vec::new();
        while let Some(done) = jobs.join_next().await {
            match done {
                Ok((Job::Sidecar(i), r)) => sidecars.push((i, r)),
                Ok((Job::Agent(node), r)) => agents.push((node, r)),
                // A panicking scrape is a bug, but not one to take the pipeline down for.
                Err(e) => tracing::warn!(error = %e, "a scrape task failed"),
            }
        }
        self.ingest(targets, sidecars, agents)
    }

    /// Turns one round's answers into figures (pure apart from the rate bases it keeps):
    /// `sidecars` are `(index in targets, (answered at, body) or why not)`, `agents` the same
    /// per node name.
    pub fn ingest(
        &mut self,
        targets: &[Target],
        sidecars: Vec<(usize, Answer)>,
        agents: Vec<(String, Answer)>,
    ) -> Vec<InstanceFigures> {
        let mut out: Vec<InstanceFigures> = targets
            .iter()
            .map(|t| InstanceFigures {
                key: t.key.clone(),
                deployment: t.deployment.clone(),
                node: t.node.clone(),
                traffic: None,
                traffic_error: None,
                resources: None,
                resources_error: None,
            })
            .collect();
        for (i, r) in sidecars {
            let f = &mut out[i];
            match r.and_then(|(at, body)| {
                prom::parse(&body).map(|s| (at, s)).map_err(|e| format!("sidecar metrics: {e}"))
            }) {
                Ok((at, samples)) => {
                    let counters = rates::SidecarCounters::from_samples(&samples);
                    let tracker = self.traffic.entry(f.key.clone()).or_default();
                    f.traffic = Some(tracker.update(at, counters));
                }
                Err(e) => f.traffic_error = Some(e),
            }
        }
        let mut per_node: HashMap<String, Result<(Time, BTreeMap<_, _>), String>> = HashMap::new();
        for (node, r) in agents {
            let parsed = r.and_then(|(at, body)| {
                prom::parse(&body)
                    .map(|s| (at, rates::agent_counters(&s)))
                    .map_err(|e| format!("agent metrics of node {node}: {e}"))
            });
            per_node.insert(node, parsed);
        }
        for f in &mut out {
            let Some(node) = &f.node else { continue };
            match per_node.get(node) {
                None => f.resources_error = Some(format!("node {node} has no metrics address")),
                Some(Err(e)) => f.resources_error = Some(e.clone()),
                Some(Ok((at, m))) => {
                    let k = (f.key.namespace.clone(), f.key.name.clone());
                    match m.get(&k) {
                        None => {
                            f.resources_error =
                                Some(format!("the agent of node {node} does not list it"))
                        }
                        Some(c) => {
                            let cpu = c.cpu_seconds.and_then(|s| {
                                self.cpu.entry(f.key.clone()).or_default().update(*at, s)
                            });
                            f.resources = Some(Resources {
                                at: *at,
                                cpu_cores: cpu,
                                memory_bytes: c.memory_bytes,
                            });
                        }
                    }
                }
            }
        }
        // Gone instances: drop their bases, so a name coming back starts afresh.
        let listed: std::collections::HashSet<&ObjectKey> =
            targets.iter().map(|t| &t.key).collect();
        self.traffic.retain(|k, _| listed.contains(k));
        self.cpu.retain(|k, _| listed.contains(k));
        out
    }
}

/// The latest figures of every scraped instance, shared (read-only to everyone but the
/// pipeline). Times are [`Time`] since [`LiveMetrics::start`].
#[derive(Debug)]
pub struct LiveMetrics {
    start: tokio::time::Instant,
    figures: RwLock<BTreeMap<ObjectKey, InstanceFigures>>,
}

impl Default for LiveMetrics {
    fn default() -> Self {
        LiveMetrics::new()
    }
}

impl LiveMetrics {
    pub fn new() -> LiveMetrics {
        LiveMetrics { start: tokio::time::Instant::now(), figures: RwLock::default() }
    }

    /// The epoch of every `at`.
    pub fn start(&self) -> tokio::time::Instant {
        self.start
    }

    /// Now, on the figures' clock.
    pub fn now(&self) -> Time {
        tokio::time::Instant::now().saturating_duration_since(self.start)
    }

    /// Replaces everything with one round's figures (instances not in it are gone).
    pub fn replace(&self, round: Vec<InstanceFigures>) {
        let map = round.into_iter().map(|f| (f.key.clone(), f)).collect();
        *self.figures.write().unwrap_or_else(|p| p.into_inner()) = map;
    }

    pub fn get(&self, key: &ObjectKey) -> Option<InstanceFigures> {
        self.figures.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Every instance's figures, in key order.
    pub fn snapshot(&self) -> Vec<InstanceFigures> {
        self.figures.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// The pipeline: scrapes every `interval` into `ctx.live`, until the task is dropped. A round
/// never takes much more than the scrape timeout, and a slow round delays the next rather than
/// piling rounds up.
pub(crate) async fn run(ctx: Arc<Context>) {
    let live = ctx.live.clone();
    let mut scraper = Scraper::new(live.start(), ctx.options.scrape_timeout);
    let mut tick =
        tokio::time::interval(ctx.options.scrape_interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets: Vec<Target> =
            ctx.instances.list().iter().filter_map(|i| Target::of(i)).collect();
        let nodes: Vec<(String, String)> = ctx
            .nodes
            .list()
            .iter()
            .filter_map(|n| {
                let addr = n.status.as_ref()?.metrics_address.clone()?;
                Some((n.metadata.name.clone(), addr))
            })
            .collect();
        let round = scraper.scrape(&targets, &nodes).await;
        let failed = round.iter().filter(|f| f.traffic.is_none()).count();
        if failed > 0 {
            tracing::debug!(failed, of = round.len(), "some sidecar scrapes failed");
        }
        live.replace(round);
        ctx.autoscale_tick.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Time {
        Duration::from_secs(s)
    }

    fn target(name: &str) -> Target {
        Target {
            key: ObjectKey::new("default", name),
            deployment: "web".into(),
            node: Some("n1".into()),
            sidecar_admin: Some("127.0.0.1:1".into()),
        }
    }

    fn sidecar(at: u64, requests: u64, in_flight: u64) -> Answer {
        Ok((
            secs(at),
            format!(
                "weft_requests_total{{direction=\"inbound\",service=\"web\",upstream=\"a\",code=\"200\"}} {requests}\n\
weft_requests_in_flight{{direction=\"inbound\",service=\"web\"}} {in_flight}\n"
            ),
        ))
    }

    fn agent(at: u64, rows: &[(&str, f64, f64)]) -> Answer {
        let mut text = String::new();
        for (name, cpu, mem) in rows {
            text.push_str(&format!(
                "weft_instance_cpu_seconds_total{{namespace=\"default\",instance=\"{name}\",deployment=\"web\"}} {cpu}\n\
weft_instance_memory_bytes{{namespace=\"default\",instance=\"{name}\",deployment=\"web\"}} {mem}\n"
            ));
        }
        Ok((secs(at), text))
    }

    fn rps(f: &InstanceFigures) -> Option<f64> {
        f.traffic.as_ref()?.rps
    }

    /// Simulated rounds: instances that fail, vanish and come back, and a restarted sidecar.
    #[test]
    fn rounds_with_failures_resets_and_instances_coming_and_going() {
        let mut s = Scraper::new(tokio::time::Instant::now(), DEFAULT_TIMEOUT);
        let both = [target("a"), target("b")];
        let n1 = |at, rows: &[(&str, f64, f64)]| vec![("n1".to_string(), agent(at, rows))];

        let r = s.ingest(
            &both,
            vec![(0, sidecar(0, 100, 1)), (1, sidecar(0, 50, 2))],
            n1(0, &[("a", 10.0, 1e6), ("b", 5.0, 2e6)]),
        );
        assert_eq!(rps(&r[0]), None, "no rate from one scrape");
        assert_eq!(r[0].traffic.as_ref().unwrap().in_flight, 1.0);
        assert_eq!(r[1].resources.unwrap().memory_bytes, Some(2e6));
        assert_eq!(r[1].resources.unwrap().cpu_cores, None);

        // b's sidecar does not answer: b has no traffic figures (missing, not zero).
        let r = s.ingest(
            &both,
            vec![(0, sidecar(1, 110, 1)), (1, Err("sidecar 127.0.0.1:1: no answer".into()))],
            n1(1, &[("a", 10.5, 1e6), ("b", 5.25, 2e6)]),
        );
        assert_eq!(rps(&r[0]), Some(10.0));
        assert_eq!(r[1].traffic, None);
        assert!(r[1].traffic_error.as_deref().unwrap().contains("no answer"));
        assert_eq!(r[0].resources.unwrap().cpu_cores, Some(0.5));

        // b answers again: its rate covers the whole gap since its last answer.
        let r = s.ingest(
            &both,
            vec![(0, sidecar(2, 0, 0)), (1, sidecar(3, 80, 2))],
            n1(2, &[("a", 10.5, 1e6)]),
        );
        assert_eq!(rps(&r[0]), Some(0.0), "a's sidecar restarted and has served nothing since");
        assert_eq!(rps(&r[1]), Some(10.0), "30 requests over 3 s");
        assert!(r[1].resources.is_none() && r[1].resources_error.is_some(), "agent lost b");

        // b goes away, then a new b appears: it starts from a fresh base.
        let r = s.ingest(&both[..1], vec![(0, sidecar(3, 5, 0))], n1(3, &[]));
        assert_eq!(r.len(), 1);
        assert_eq!(rps(&r[0]), Some(5.0));
        let r = s.ingest(&both, vec![(0, sidecar(4, 5, 0)), (1, sidecar(4, 7, 0))], vec![]);
        assert_eq!(rps(&r[1]), None, "a new instance has no base yet");
        assert!(r[1].resources_error.as_deref().unwrap().contains("no metrics address"));

        // A page that does not parse is a failed scrape, not zeros.
        let r = s.ingest(&both, vec![(0, Ok((secs(5), "<html>".into())))], vec![]);
        assert_eq!(r[0].traffic, None);
        assert!(r[0].traffic_error.as_deref().unwrap().contains("line 1"));
    }
}
