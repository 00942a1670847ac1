//! The scheduler's I/O: bookkeeping fed by the instance and node watches, and the loop that
//! takes Pending instances, places them (see [`placement`](super::placement)) and writes
//! `spec.node` with a compare-and-swap.
//!
//! Decisions are made one after another on one task (each sees the ones before), but their
//! writes go out together: a placement is counted against its node the moment it is decided
//! ("in flight"), so the next decision does not overfill the node while the write travels.
//! A failed write gives the room back and retries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use weft_api::kinds::instance::{InstanceStatus, Phase};
use weft_api::meta::Condition;
use weft_api::{Instance, Node};

use super::placement::{Amount, Cluster, NodeInfo, Policy, Unschedulable};
use crate::error::Error;
use crate::runtime::{Context, ObjectKey, lock};

pub const NAME: &str = "scheduler";
/// Instances decided per round; their writes go out concurrently.
const BATCH: usize = 256;

/// Unbound, not being stopped, not finished.
pub fn needs_scheduling(i: &Instance) -> bool {
    i.spec.node.is_none()
        && !i.spec.terminating
        && !matches!(i.status.as_ref().map(|s| s.phase), Some(Phase::Failed | Phase::Succeeded))
}

/// Whether an instance's requests count against its node: bound and not finished.
fn occupies(i: &Instance) -> Option<(&str, Amount)> {
    let node = i.spec.node.as_deref()?;
    if matches!(i.status.as_ref().map(|s| s.phase), Some(Phase::Failed | Phase::Succeeded)) {
        return None;
    }
    Some((node, Amount::of(&i.spec.template.resources.requests)))
}

pub fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.clone().unwrap_or_default();
    NodeInfo {
        name: n.metadata.name.clone(),
        ready: status.ready,
        unschedulable: n.spec.unschedulable,
        allocatable: Amount::of(&status.allocatable),
    }
}

struct Counted {
    node: String,
    request: Amount,
    /// Decided here, write not answered yet.
    in_flight: bool,
}

/// The scheduler's memory: the cluster as placement sees it and what is counted where.
pub(crate) struct SchedulerState {
    cluster: Cluster,
    counted: HashMap<ObjectKey, Counted>,
    /// Unschedulable instances waiting for the cluster to change.
    parked: HashSet<ObjectKey>,
    /// When each Pending instance was first seen, for the scheduling-duration metric.
    pending_since: HashMap<ObjectKey, Instant>,
}

impl SchedulerState {
    pub fn new(policy: Policy) -> SchedulerState {
        SchedulerState {
            cluster: Cluster::new(policy),
            counted: HashMap::new(),
            parked: HashSet::new(),
            pending_since: HashMap::new(),
        }
    }

    /// An instance as it now is (`None`: gone). Returns whether room was freed somewhere.
    pub fn observe_instance(&mut self, key: &ObjectKey, obj: Option<&Instance>) -> bool {
        match obj {
            Some(i) if needs_scheduling(i) => {
                self.pending_since.entry(key.clone()).or_insert_with(Instant::now);
            }
            _ => {
                self.pending_since.remove(key);
                self.parked.remove(key);
            }
        }
        let want = obj.and_then(occupies);
        match (self.counted.get_mut(key), want) {
            // An older copy of an instance whose binding we are writing: keep our count.
            (Some(c), None) if c.in_flight && obj.is_some() => false,
            (Some(c), Some((node, request))) if c.node == node && c.request == request => {
                c.in_flight = false;
                false
            }
            (_, want) => {
                let freed = self.forget(key);
                if let Some((node, request)) = want {
                    self.cluster.bind(node, request);
                    self.counted.insert(
                        key.clone(),
                        Counted { node: node.to_string(), request, in_flight: false },
                    );
                }
                freed
            }
        }
    }

    /// Stops counting an instance; whether anything was counted.
    fn forget(&mut self, key: &ObjectKey) -> bool {
        match self.counted.remove(key) {
            Some(c) => {
                self.cluster.unbind(&c.node, c.request);
                true
            }
            None => false,
        }
    }

    /// A node as it now is (`None`: gone). Returns whether placement may find more room.
    pub fn observe_node(&mut self, name: &str, node: Option<&Node>) -> bool {
        match node {
            Some(n) => {
                let info = node_info(n);
                let before = self.cluster.node(name).and_then(|u| u.info);
                let changed = before.as_ref() != Some(&info);
                self.cluster.upsert_node(info);
                changed
            }
            None => {
                self.cluster.remove_node(name);
                false
            }
        }
    }

    /// The parked instances, to try again.
    pub fn take_parked(&mut self) -> Vec<ObjectKey> {
        self.parked.drain().collect()
    }

    /// Decides a node for an instance, counting it as in flight.
    fn place(&mut self, key: &ObjectKey, i: &Instance) -> Result<String, Unschedulable> {
        let request = Amount::of(&i.spec.template.resources.requests);
        match self.cluster.place(request) {
            Ok(node) => {
                self.parked.remove(key);
                self.counted.insert(
                    key.clone(),
                    Counted { node: node.to_string(), request, in_flight: true },
                );
                Ok(node.to_string())
            }
            Err(why) => {
                self.parked.insert(key.clone());
                Err(why)
            }
        }
    }

    /// A binding write failed: give its room back.
    fn abandon(&mut self, key: &ObjectKey) {
        if self.counted.get(key).is_some_and(|c| c.in_flight) {
            self.forget(key);
        }
    }
}

/// What one round decided for one instance.
enum Decision {
    Bind(Arc<Instance>, String),
    Unschedulable(Arc<Instance>, Unschedulable),
}

/// The scheduling loop: rounds of decisions, each round's writes concurrent.
pub(crate) async fn run(ctx: Arc<Context>) {
    while let Some(batch) = ctx.queues.scheduling.next_batch(BATCH).await {
        let start = Instant::now();
        let mut decisions = Vec::new();
        {
            let mut state = lock(&ctx.scheduler);
            for key in &batch {
                let Some(i) = ctx.instances.get(key) else { continue };
                if !needs_scheduling(&i) || state.counted.get(key).is_some_and(|c| c.in_flight) {
                    continue;
                }
                decisions.push(match state.place(key, &i) {
                    Ok(node) => Decision::Bind(i, node),
                    Err(why) => Decision::Unschedulable(i, why),
                });
            }
        }
        let writes = futures::stream::iter(decisions)
            .map(|d| {
                let ctx = ctx.clone();
                async move { write(&ctx, d).await }
            })
            .buffer_unordered(ctx.options.max_concurrent_writes.max(1))
            .collect::<Vec<_>>()
            .await;
        let failed = writes.iter().filter(|r| r.is_err()).count();
        for key in &batch {
            ctx.queues.scheduling.done(key);
        }
        ctx.metrics.reconciled(
            NAME,
            if failed == 0 { "ok" } else { "error" },
            start.elapsed().as_secs_f64(),
        );
    }
}

async fn write(ctx: &Context, decision: Decision) -> Result<(), Error> {
    match decision {
        Decision::Bind(i, node) => {
            let key = ObjectKey::of(&*i);
            let mut bound = (*i).clone();
            bound.spec.node = Some(node.clone());
            match ctx.client.put(&bound).await {
                Ok(written) => {
                    ctx.metrics.attempt("scheduled");
                    ctx.metrics.wrote(NAME, "bound");
                    if let Some(since) = lock(&ctx.scheduler).pending_since.remove(&key) {
                        ctx.metrics.scheduling_duration.observe(since.elapsed().as_secs_f64());
                    }
                    tracing::debug!(instance = %key, node, "bound");
                    let was_unschedulable =
                        written.status.as_ref().is_some_and(|s| s.reason == UNSCHEDULABLE);
                    ctx.wrote_instance(written.clone());
                    ctx.queues.scheduling.forget(&key);
                    if was_unschedulable {
                        clear_unschedulable(ctx, written, &node).await;
                    }
                    Ok(())
                }
                Err(e) => {
                    let e = Error::api(format!("binding instance {key} to node {node}"), e);
                    lock(&ctx.scheduler).abandon(&key);
                    if e.is_conflict() {
                        ctx.metrics.attempt("conflict");
                    } else {
                        ctx.metrics.attempt("error");
                        tracing::warn!(error = %e, "binding failed; retrying");
                    }
                    // The current copy may be counted differently than the in-flight one was.
                    let current = ctx.instances.get(&key);
                    let freed = lock(&ctx.scheduler).observe_instance(&key, current.as_deref());
                    if freed {
                        let parked = lock(&ctx.scheduler).take_parked();
                        ctx.queues.scheduling.add_all(parked);
                    }
                    ctx.queues.scheduling.add_rate_limited(key);
                    Err(e)
                }
            }
        }
        Decision::Unschedulable(i, why) => {
            ctx.metrics.attempt("unschedulable");
            let message = why.to_string();
            let current = i.status.clone().unwrap_or_default();
            if current.reason == UNSCHEDULABLE && current.message == message {
                return Ok(());
            }
            let key = ObjectKey::of(&*i);
            tracing::debug!(instance = %key, %message, "unschedulable");
            let mut next = (*i).clone();
            next.status = Some(InstanceStatus {
                phase: Phase::Pending,
                reason: UNSCHEDULABLE.to_string(),
                message: message.clone(),
                conditions: vec![scheduled_condition(false, UNSCHEDULABLE, &message, &current)],
                ..current
            });
            match ctx.client.put_status(&next).await {
                Ok(written) => {
                    ctx.metrics.wrote(NAME, "status");
                    ctx.wrote_instance(written);
                    Ok(())
                }
                Err(e) => {
                    let e = Error::api(format!("reporting instance {key} unschedulable"), e);
                    if !e.is_conflict() {
                        tracing::warn!(error = %e, "status write failed");
                    }
                    // Parked already; the next change (or resync) tries again.
                    Err(e)
                }
            }
        }
    }
}

const UNSCHEDULABLE: &str = "Unschedulable";

fn scheduled_condition(ok: bool, reason: &str, message: &str, prev: &InstanceStatus) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = prev
        .conditions
        .iter()
        .find(|c| c.kind == "Scheduled" && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| crate::time::format(std::time::SystemTime::now()));
    Condition {
        kind: "Scheduled".to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: Some(since),
    }
}

/// After binding an instance that was reported unschedulable, say it is scheduled now (unless
/// its agent has already written a newer status).
async fn clear_unschedulable(ctx: &Context, mut i: Instance, node: &str) {
    let prev = i.status.clone().unwrap_or_default();
    let message = format!("bound to node {node}");
    i.status = Some(InstanceStatus {
        reason: String::new(),
        message: String::new(),
        conditions: vec![scheduled_condition(true, "Scheduled", &message, &prev)],
        ..prev
    });
    if let Ok(written) = ctx.client.put_status(&i).await {
        ctx.wrote_instance(written);
    }
}
