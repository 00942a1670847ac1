//! The node-pool controller's I/O: every period, for each NodePool, reconcile the provider's
//! machines with the pool's Node objects, move draining nodes along, ask
//! [`weft_autoscale::nodepool::decide`] what to do, do it, and write the status.
//!
//! Its state lives in the api objects, so a new leader picks up where the old one stopped: a
//! pool node is a Node with `spec.pool`; one being removed carries the annotation
//! `weft.dev/scale-down` (the time its drain began) and `spec.unschedulable`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use weft_api::kinds::instance::Phase;
use weft_api::kinds::node::NodeSpec;
use weft_api::kinds::nodepool::{NodePoolDecision, NodePoolStatus, PoolNode};
use weft_api::{Instance, Node, NodePool, ObjectMeta};
use weft_autoscale::Time;
use weft_autoscale::nodepool::{
    self as pooldecide, Action, NodeState, NodeView, Pending, PoolConfig, PoolMemory, Resources,
};

use super::provider::{NewNode, NodeProvider};
use crate::error::Error;
use crate::metrics::{PoolLabels, PoolScaleLabels};
use crate::runtime::{BY_NODE, Context, ObjectKey, lock};
use crate::scheduler::controller::needs_scheduling;

pub const NAME: &str = "nodepool";
/// Every node of a pool carries this label, with the pool's name.
pub const POOL_LABEL: &str = "weft.dev/pool";
/// On a pool node being drained for removal: when the drain began (RFC 3339).
pub const SCALE_DOWN_ANNOTATION: &str = "weft.dev/scale-down";
/// A node whose agent has not reported ready this long after it was created is given up on.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(180);
/// Instances that have not stopped this long after their node began draining are deleted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
const DECISIONS_KEPT: usize = 10;
/// The scheduler's reason on instances no node has room for.
const UNSCHEDULABLE: &str = "Unschedulable";

/// What the loop remembers between rounds (lost on a leader change, which only restarts the
/// unneeded-time clocks).
struct Memory {
    epoch: Instant,
    pools: HashMap<String, PoolMemory>,
    pending_since: HashMap<ObjectKey, Time>,
}

pub(crate) async fn run(ctx: Arc<Context>) {
    let mut memory =
        Memory { epoch: Instant::now(), pools: HashMap::new(), pending_since: HashMap::new() };
    let mut tick =
        tokio::time::interval(ctx.options.nodepool_period.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pools = ctx.nodepools.list();
        memory.pools.retain(|name, _| pools.iter().any(|p| &p.metadata.name == name));
        if pools.is_empty() {
            continue;
        }
        let now = memory.epoch.elapsed();
        let pending = pending_instances(&ctx, &mut memory.pending_since, now);
        for pool in pools {
            let start = Instant::now();
            let result = reconcile(&ctx, &mut memory, &pool, &pending, now).await;
            let outcome = match result {
                Ok(()) => "ok",
                Err(e) if e.is_conflict() => "conflict",
                Err(e) => {
                    tracing::warn!(pool = %pool.metadata.name, error = %e, "node pool round failed; retrying");
                    "error"
                }
            };
            ctx.metrics.reconciled(NAME, outcome, start.elapsed().as_secs_f64());
        }
    }
}

/// Instances waiting because no node has room, with when each was first seen waiting.
fn pending_instances(
    ctx: &Context,
    since: &mut HashMap<ObjectKey, Time>,
    now: Time,
) -> Vec<Pending> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for i in ctx.instances.list() {
        let waiting =
            needs_scheduling(&i) && i.status.as_ref().is_some_and(|s| s.reason == UNSCHEDULABLE);
        if !waiting {
            continue;
        }
        let key = ObjectKey::of(&*i);
        let first = *since.entry(key.clone()).or_insert(now);
        out.push(Pending {
            name: key.to_string(),
            request: resources(&i.spec.template.resources.requests),
            since: first,
        });
        seen.insert(key);
    }
    since.retain(|k, _| seen.contains(k));
    out
}

fn resources(list: &weft_api::kinds::template::ResourceList) -> Resources {
    Resources::new(list.cpu_millis(), list.memory_bytes())
}

/// Instances bound to a node that still occupy it (not finished).
fn bound_to(ctx: &Context, node: &str) -> Vec<Arc<Instance>> {
    ctx.instances
        .by_index(BY_NODE, node)
        .into_iter()
        .filter(|i| {
            !matches!(i.status.as_ref().map(|s| s.phase), Some(Phase::Failed | Phase::Succeeded))
        })
        .collect()
}

fn state_of(n: &Node) -> NodeState {
    if n.metadata.annotations.contains_key(SCALE_DOWN_ANNOTATION) {
        return NodeState::Draining;
    }
    let status = n.status.as_ref();
    if status.is_some_and(|s| s.ready) && !n.spec.unschedulable {
        NodeState::Ready
    } else if status.and_then(|s| s.heartbeat_time.as_ref()).is_none() {
        NodeState::Provisioning
    } else {
        NodeState::Unavailable
    }
}

fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Provisioning => "Provisioning",
        NodeState::Ready => "Ready",
        NodeState::Unavailable => "NotReady",
        NodeState::Draining => "Draining",
    }
}

fn config_of(pool: &NodePool) -> PoolConfig {
    let s = &pool.spec;
    PoolConfig {
        min_nodes: s.min_nodes.max(0) as u32,
        max_nodes: s.max_nodes.max(0) as u32,
        template: resources(&s.template.allocatable),
        utilization_threshold: s.scale_down.utilization_threshold,
        unneeded_time: s.scale_down.unneeded_time.as_std(),
        scale_up_delay: s.scale_up.delay.as_std(),
        scale_down_enabled: s.scale_down.enabled,
    }
}

async fn reconcile(
    ctx: &Context,
    memory: &mut Memory,
    pool: &NodePool,
    pending: &[Pending],
    now: Time,
) -> Result<(), Error> {
    let name = pool.metadata.name.as_str();
    let provider = lock(&ctx.node_providers).get(pool.spec.provider.as_str()).cloned();
    let Some(provider) = provider else {
        let message = format!(
            "provider {:?} is not running on this server (the controllers' leader runs the \
             providers it was built with)",
            pool.spec.provider
        );
        return write_status(ctx, pool, None, message, Vec::new(), 0, 0).await;
    };
    let mut notes = Vec::new();
    let wall = SystemTime::now();

    // The provider's machines against the pool's Node objects.
    let machines: HashSet<String> = match provider.list(name).await {
        Ok(m) => m.into_iter().collect(),
        Err(e) => {
            let message = format!("provider {}: listing nodes failed: {e}", provider.name());
            return write_status(ctx, pool, None, message, Vec::new(), 0, 0).await;
        }
    };
    let in_pool = |n: &Node| n.spec.pool.as_deref() == Some(name);
    for n in ctx.nodes.list().into_iter().filter(|n| in_pool(n)) {
        let node = n.metadata.name.as_str();
        let state = state_of(&n);
        let age = crate::time::age(n.metadata.creation_timestamp.as_deref(), wall);
        let stuck = state == NodeState::Provisioning && age.is_some_and(|a| a > PROVISION_TIMEOUT);
        if !machines.contains(node) {
            // A pool node without a machine: its agent is gone (the server restarted, or the
            // process died). Clean up; the pool makes a new one if it is still needed.
            tracing::warn!(pool = name, node, "pool node has no machine any more; removing it");
            notes.push(format!("node {node} lost its machine and was removed"));
            remove_node(ctx, name, node, None).await?;
        } else if stuck {
            tracing::warn!(pool = name, node, "pool node never became ready; replacing it");
            notes.push(format!(
                "node {node} was not ready {}s after it was created; removed",
                PROVISION_TIMEOUT.as_secs()
            ));
            remove_node(ctx, name, node, Some(&*provider)).await?;
        } else if state == NodeState::Draining {
            drain(ctx, name, &n, &*provider, wall).await?;
        }
    }
    let known: HashSet<String> = ctx
        .nodes
        .list()
        .into_iter()
        .filter(|n| in_pool(n))
        .map(|n| n.metadata.name.clone())
        .collect();
    for m in machines.difference(&known) {
        // A machine whose Node was deleted (by someone, or before a crash): give it back.
        tracing::info!(pool = name, node = %m, "machine without a node; deleting it");
        if let Err(e) = provider.delete(name, m).await {
            notes.push(format!("deleting the machine of {m}: {e}"));
        }
    }

    // Decide.
    let nodes: Vec<NodeView> = ctx
        .nodes
        .list()
        .iter()
        .map(|n| NodeView {
            name: n.metadata.name.clone(),
            in_pool: in_pool(n),
            state: state_of(n),
            allocatable: resources(&n.status.clone().unwrap_or_default().allocatable),
            instances: bound_to(ctx, &n.metadata.name)
                .iter()
                .map(|i| resources(&i.spec.template.resources.requests))
                .collect(),
        })
        .map(|mut v| {
            if v.state == NodeState::Provisioning {
                // Not registered yet: what its pool's template promises.
                let node = ctx.nodes.get(&ObjectKey::new("", &v.name));
                let template = node
                    .and_then(|n| n.spec.pool.clone())
                    .and_then(|p| ctx.nodepools.get(&ObjectKey::new("", p)))
                    .map(|p| resources(&p.spec.template.allocatable));
                v.allocatable = template.unwrap_or_default();
            }
            v
        })
        .collect();
    let config = config_of(pool);
    let pool_memory = memory.pools.entry(name.to_string()).or_default();
    let d = pooldecide::decide(&config, &nodes, pending, pool_memory, now);
    let mut decision = None;
    match &d.action {
        Action::None => {}
        Action::ScaleUp { add } => {
            let mut added = 0;
            for _ in 0..*add {
                match add_node(ctx, pool, &*provider).await {
                    Ok(node) => {
                        added += 1;
                        tracing::info!(pool = name, node, reason = %d.reason, "scaling up");
                    }
                    Err(e) => {
                        notes.push(e);
                        break;
                    }
                }
            }
            if added > 0 {
                ctx.metrics
                    .pool_scale
                    .get_or_create(&PoolScaleLabels { pool: name.to_string(), direction: "up" })
                    .inc_by(added);
                let from = d.desired as i32 - *add as i32;
                decision = Some(NodePoolDecision {
                    time: crate::time::format(wall),
                    from,
                    to: from + added as i32,
                    reason: d.reason.clone(),
                });
            }
        }
        Action::ScaleDown { node } => {
            start_drain(ctx, node, wall).await?;
            ctx.metrics
                .pool_scale
                .get_or_create(&PoolScaleLabels { pool: name.to_string(), direction: "down" })
                .inc();
            tracing::info!(pool = name, node = %node, reason = %d.reason, "scaling down: draining");
            decision = Some(NodePoolDecision {
                time: crate::time::format(wall),
                from: d.desired as i32 + 1,
                to: d.desired as i32,
                reason: d.reason.clone(),
            });
        }
    }

    let mut listed: Vec<PoolNode> = ctx
        .nodes
        .list()
        .iter()
        .filter(|n| in_pool(n))
        .map(|n| {
            let view = nodes.iter().find(|v| v.name == n.metadata.name);
            PoolNode {
                name: n.metadata.name.clone(),
                state: state_name(state_of(n)).to_string(),
                utilization: view.map_or(0.0, |v| (v.utilization() * 100.0).round() / 100.0),
                instances: view.map_or(0, |v| v.instances.len() as u32),
            }
        })
        .collect();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let current = listed.len() as i32;
    let labels = PoolLabels { pool: name.to_string() };
    ctx.metrics.pool_nodes.get_or_create(&labels).set(i64::from(current));
    ctx.metrics.pool_desired.get_or_create(&labels).set(i64::from(d.desired));
    let mut message = d.reason.clone();
    for n in notes {
        message.push_str("; ");
        message.push_str(&n);
    }
    write_status(ctx, pool, decision, message, listed, current, d.desired as i32).await
}

/// Writes a Node for the pool and asks the provider for its machine. Returns the node's name,
/// or why it could not.
async fn add_node(
    ctx: &Context,
    pool: &NodePool,
    provider: &dyn NodeProvider,
) -> Result<String, String> {
    let pool_name = pool.metadata.name.clone();
    let suffix: String = {
        let mut rng = lock(&ctx.rng);
        (0..5)
            .map(|_| {
                let c = rng.gen_range(0..36u8);
                if c < 10 { (b'0' + c) as char } else { (b'a' + c - 10) as char }
            })
            .collect()
    };
    let node_name = format!("{pool_name}-{suffix}");
    let mut labels: BTreeMap<String, String> = pool.spec.template.labels.clone();
    labels.insert(POOL_LABEL.to_string(), pool_name.clone());
    let mut meta = ObjectMeta::named(&node_name);
    meta.labels = labels.clone();
    let node = Node::new(meta, NodeSpec { unschedulable: false, pool: Some(pool_name.clone()) });
    let written =
        ctx.client.put(&node).await.map_err(|e| format!("creating the Node {node_name}: {e}"))?;
    ctx.metrics.wrote(NAME, "created");
    if let Some(change) = ctx.nodes.write_through(written) {
        crate::runtime::dispatch::node(ctx, &change);
    }
    let new = NewNode {
        pool: pool_name.clone(),
        name: node_name.clone(),
        capacity: pool.spec.template.capacity.clone(),
        allocatable: pool.spec.template.allocatable.clone(),
        labels,
    };
    if let Err(e) = provider.create(&new).await {
        let _ = delete_node_object(ctx, &node_name).await;
        return Err(format!("provider {} could not create node {node_name}: {e}", provider.name()));
    }
    Ok(node_name)
}

/// Marks a node unschedulable and draining (the annotation says since when).
async fn start_drain(ctx: &Context, node: &str, now: SystemTime) -> Result<(), Error> {
    let Some(current) = ctx.nodes.get(&ObjectKey::new("", node)) else {
        return Err(Error::Stale(format!("node {node}")));
    };
    let mut next = (*current).clone();
    next.spec.unschedulable = true;
    next.metadata.annotations.insert(SCALE_DOWN_ANNOTATION.to_string(), crate::time::format(now));
    let written =
        ctx.client.put(&next).await.map_err(|e| Error::api(format!("cordoning node {node}"), e))?;
    ctx.metrics.wrote(NAME, "cordoned");
    if let Some(change) = ctx.nodes.write_through(written) {
        crate::runtime::dispatch::node(ctx, &change);
    }
    Ok(())
}

/// One step of a drain: stop the node's bare instances; those of deployments are replaced by
/// their deployments, surge first (see `deployment::plan`), so that a service whose replicas all
/// sit here keeps serving. Once none is left, or the drain has taken too long, remove the
/// machine and the Node.
async fn drain(
    ctx: &Context,
    pool: &str,
    node: &Node,
    provider: &dyn NodeProvider,
    now: SystemTime,
) -> Result<(), Error> {
    let name = node.metadata.name.as_str();
    let bound = bound_to(ctx, name);
    let began = node.metadata.annotations.get(SCALE_DOWN_ANNOTATION).map(String::as_str);
    let overdue = crate::time::age(began, now).is_some_and(|a| a > DRAIN_TIMEOUT);
    if bound.is_empty() || overdue {
        return remove_node(ctx, pool, name, Some(provider)).await;
    }
    for i in bound.iter().filter(|i| !i.spec.terminating && i.spec.deployment.is_empty()) {
        let mut next = (**i).clone();
        next.spec.terminating = true;
        let key = ObjectKey::of(&**i);
        let written = ctx
            .client
            .put(&next)
            .await
            .map_err(|e| Error::api(format!("draining instance {key} from node {name}"), e))?;
        ctx.metrics.wrote(NAME, "terminating");
        ctx.wrote_instance(written);
    }
    Ok(())
}

/// Gives the machine back (when there is a provider to ask), deletes what is still bound to
/// the node, then the Node.
async fn remove_node(
    ctx: &Context,
    pool: &str,
    node: &str,
    provider: Option<&dyn NodeProvider>,
) -> Result<(), Error> {
    if let Some(p) = provider {
        p.delete(pool, node).await.map_err(|e| {
            Error::Stale(format!("node {node} (provider {} could not delete it: {e})", p.name()))
        })?;
    }
    for i in ctx.instances.by_index(BY_NODE, node) {
        let key = ObjectKey::of(&*i);
        match ctx.delete_at::<Instance>(&key, None).await {
            Ok(gone) => ctx.deleted_instance(&gone),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::api(format!("deleting instance {key} of node {node}"), e)),
        }
    }
    delete_node_object(ctx, node).await?;
    ctx.metrics.wrote(NAME, "deleted");
    Ok(())
}

async fn delete_node_object(ctx: &Context, node: &str) -> Result<(), Error> {
    match ctx.delete_at::<Node>(&ObjectKey::new("", node), None).await {
        Ok(gone) => {
            let rev = gone.metadata.revision().unwrap_or(0);
            if let Some(change) = ctx.nodes.remove_through(&ObjectKey::new("", node), rev) {
                crate::runtime::dispatch::node(ctx, &change);
            }
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Error::api(format!("deleting node {node}"), e)),
    }
}

async fn write_status(
    ctx: &Context,
    pool: &NodePool,
    decision: Option<NodePoolDecision>,
    message: String,
    nodes: Vec<PoolNode>,
    current: i32,
    desired: i32,
) -> Result<(), Error> {
    let old = pool.status.clone().unwrap_or_default();
    let mut next = NodePoolStatus {
        nodes,
        current,
        desired,
        message,
        last_scale_up: old.last_scale_up.clone(),
        last_scale_down: old.last_scale_down.clone(),
        decisions: old.decisions.clone(),
        conditions: old.conditions.clone(),
    };
    if let Some(d) = decision {
        if d.to > d.from {
            next.last_scale_up = Some(d.clone());
        } else {
            next.last_scale_down = Some(d.clone());
        }
        next.decisions.insert(0, d);
        next.decisions.truncate(DECISIONS_KEPT);
    }
    if next == old {
        return Ok(());
    }
    let mut obj = pool.clone();
    obj.status = Some(next);
    let written = ctx.client.put_status(&obj).await.map_err(|e| {
        Error::api(format!("writing the status of node pool {}", pool.metadata.name), e)
    })?;
    ctx.metrics.wrote(NAME, "status");
    ctx.nodepools.write_through(written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use weft_api::kinds::node::NodeStatus;

    use super::*;

    fn node(ready: bool, heartbeat: bool, unschedulable: bool, draining: bool) -> Node {
        let mut n = Node::new(
            ObjectMeta::named("burst-abcde"),
            NodeSpec { unschedulable, pool: Some("burst".into()) },
        );
        if draining {
            n.metadata
                .annotations
                .insert(SCALE_DOWN_ANNOTATION.into(), "2026-01-01T00:00:00Z".into());
        }
        n.status = Some(NodeStatus {
            ready,
            heartbeat_time: heartbeat.then(|| "2026-01-01T00:00:00Z".to_string()),
            ..NodeStatus::default()
        });
        n
    }

    #[test]
    fn node_states_come_from_the_objects() {
        assert_eq!(state_of(&node(false, false, false, false)), NodeState::Provisioning);
        assert_eq!(state_of(&node(true, true, false, false)), NodeState::Ready);
        assert_eq!(state_of(&node(false, true, false, false)), NodeState::Unavailable);
        // Cordoned by someone else: not ready for instances, but not ours to remove.
        assert_eq!(state_of(&node(true, true, true, false)), NodeState::Unavailable);
        // The annotation wins: a drain survives a leader change.
        assert_eq!(state_of(&node(true, true, true, true)), NodeState::Draining);
    }
}
