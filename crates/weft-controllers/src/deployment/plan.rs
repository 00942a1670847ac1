//! The deployment controller's decision: from a deployment and its instances as they are now,
//! the writes that move them toward what the deployment asks for. Pure: the clock, node health
//! and randomness come in as arguments, and calling it again on the same inputs plans the same
//! writes (level-triggered), so a lost write is simply planned again.
//!
//! The rules (DESIGN.md "Instances", Kubernetes' rolling update):
//! - Instances that are terminating, `Failed`/`Succeeded`, or on a lost node do not count.
//!   Failed ones and those on lost nodes are marked terminating, and a replacement is made.
//!   A node is lost when it is NotReady (the node controller waits out the heartbeat grace
//!   before saying so) or unknown for longer than the grace.
//! - New-template instances are created up to `replicas`, never taking the count of instances
//!   that count above `replicas + maxSurge`.
//! - Old-template instances are marked terminating while at least `replicas - maxUnavailable`
//!   stay ready, and never more than `total - minAvailable - (new ones not ready yet)`, the
//!   Kubernetes bound that keeps a rollout of broken new instances from eating the old ones.
//! - Instances on a node being drained for removal (a node pool's scale-down) are replaced
//!   like old-template ones: surge first, then stop within the same bounds. A deployment
//!   whose replicas all sit on that node never goes dark, unless its strategy has no surge.
//! - Scale-down removes, first, instances not scheduled, then not running, then not ready,
//!   then the newest.
//! - An instance with no node has no agent to stop it: it is deleted instead of marked.
//! - Without the deployment (deleted), every instance it made is marked terminating.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use weft_api::kinds::deployment::DeploymentStatus;
use weft_api::kinds::instance::{InstanceSpec, Phase};
use weft_api::{Deployment, Instance, ObjectMeta};

use super::hash::{instance_name, template_hash};
use super::status::status_for;
use crate::time;

/// The label every instance carries with its deployment's name.
pub const DEPLOYMENT_LABEL: &str = "deployment";

/// What the deployment controller knows of a node, for deciding whether its instances are lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    /// Marked NotReady by the node controller (heartbeats stopped for longer than the grace).
    NotReady,
    /// No such node: deleted, or not seen yet.
    Unknown,
    /// Ready, but cordoned to be removed (`weft.dev/scale-down`): its instances move elsewhere.
    Draining,
}

/// Everything the decision depends on.
pub struct Observed<'a> {
    pub namespace: &'a str,
    /// The deployment's name (the instances' `spec.deployment`).
    pub name: &'a str,
    /// `None` when the deployment is gone.
    pub deployment: Option<&'a Deployment>,
    /// Every instance whose `spec.deployment` is `name`, in `namespace`.
    pub instances: &'a [Arc<Instance>],
    pub node: &'a dyn Fn(&str) -> NodeState,
    pub now: SystemTime,
    /// How long an instance may sit on an unknown node before it is replaced.
    pub node_grace: Duration,
}

/// Why an instance is being stopped (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// More instances than `replicas`.
    ScaleDown,
    /// Replaced by one of the current template.
    Rollout,
    /// `Failed` or `Succeeded`: it will not run again where it is.
    Finished,
    /// Its node is NotReady or gone.
    NodeLost,
    /// Its deployment is gone.
    Orphaned,
    /// Already terminating, but it has no node whose agent could finish the job.
    Unbound,
    /// Replaced elsewhere because its node is being drained for removal.
    NodeDrained,
}

/// One write.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Create(Box<Instance>),
    /// Set `spec.terminating` (compare-and-swap on `resource_version`).
    Terminate {
        name: String,
        resource_version: Option<String>,
        why: Why,
    },
    /// Delete outright (only instances no agent will stop: those without a node).
    Delete {
        name: String,
        resource_version: Option<String>,
        why: Why,
    },
    UpdateStatus(DeploymentStatus),
}

/// The writes to make, and when to look again even if nothing changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub requeue_after: Option<Duration>,
}

impl Plan {
    fn stop(&mut self, i: &Instance, why: Why) {
        let name = i.metadata.name.clone();
        let resource_version = i.metadata.resource_version.clone();
        self.actions.push(if i.spec.node.is_none() {
            Action::Delete { name, resource_version, why }
        } else {
            Action::Terminate { name, resource_version, why }
        });
    }

    fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |a| a.min(after)));
    }

    /// Names created by this plan.
    pub fn created(&self) -> impl Iterator<Item = &Instance> {
        self.actions.iter().filter_map(|a| match a {
            Action::Create(i) => Some(&**i),
            _ => None,
        })
    }
}

/// Running and passing readiness.
pub fn is_ready(i: &Instance) -> bool {
    i.status.as_ref().is_some_and(|s| s.ready && s.phase == Phase::Running)
}

fn phase(i: &Instance) -> Phase {
    i.status.as_ref().map_or(Phase::Pending, |s| s.phase)
}

/// Which instance goes first on scale-down: lower goes first.
fn removal_rank(i: &Instance) -> u8 {
    if i.spec.node.is_none() {
        0
    } else if phase(i) != Phase::Running {
        1
    } else if !is_ready(i) {
        2
    } else {
        3
    }
}

/// Orders instances for removal: not scheduled, not running, not ready, then newest first
/// (names break ties, so the order is total).
fn sort_for_removal(list: &mut [&Arc<Instance>]) {
    list.sort_by(|a, b| {
        removal_rank(a)
            .cmp(&removal_rank(b))
            .then_with(|| {
                let ta = a.metadata.creation_timestamp.as_deref().and_then(time::parse);
                let tb = b.metadata.creation_timestamp.as_deref().and_then(time::parse);
                tb.cmp(&ta)
            })
            .then_with(|| b.metadata.name.cmp(&a.metadata.name))
    });
}

/// The absolute surge and unavailability for `replicas`. Both 0 would stall a rollout;
/// validation forbids writing that, but percentages can round to it, and then one instance
/// may be unavailable, as Kubernetes does.
pub fn rollout_bounds(d: &Deployment) -> (i32, i32) {
    let r = d.spec.replicas.max(0);
    let surge = d.spec.strategy.surge_for(r).max(0);
    let mut unavailable = d.spec.strategy.unavailable_for(r).max(0).min(r);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// Plans the writes for one deployment. `rng` picks the random part of new instance names.
pub fn reconcile(o: &Observed<'_>, rng: &mut dyn RngCore) -> Plan {
    let mut plan = Plan::default();
    let Some(d) = o.deployment else {
        for i in o.instances.iter() {
            if !i.spec.terminating {
                plan.stop(i, Why::Orphaned);
            } else if i.spec.node.is_none() {
                plan.stop(i, Why::Unbound);
            }
        }
        return plan;
    };
    let hash = template_hash(&d.spec.template);
    let replicas = d.spec.replicas.max(0) as usize;
    let (surge, unavailable) = rollout_bounds(d);
    let max_total = replicas + surge as usize;
    let min_available = replicas.saturating_sub(unavailable as usize);

    // Sort out the instances that do not count.
    let mut active: Vec<&Arc<Instance>> = Vec::new();
    let mut drained: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for i in o.instances.iter() {
        if i.spec.terminating {
            if i.spec.node.is_none() {
                plan.stop(i, Why::Unbound);
            }
            continue;
        }
        if matches!(phase(i), Phase::Failed | Phase::Succeeded) {
            plan.stop(i, Why::Finished);
            continue;
        }
        if let Some(node) = &i.spec.node {
            match (o.node)(node) {
                NodeState::Ready => {}
                NodeState::Draining => {
                    drained.insert(i.metadata.name.as_str());
                }
                NodeState::NotReady => {
                    plan.stop(i, Why::NodeLost);
                    continue;
                }
                NodeState::Unknown => {
                    // The node may simply not have reached our cache yet; give it the grace,
                    // counted from the instance's creation.
                    let age = time::age(i.metadata.creation_timestamp.as_deref(), o.now)
                        .unwrap_or(o.node_grace);
                    if age >= o.node_grace {
                        plan.stop(i, Why::NodeLost);
                        continue;
                    }
                    plan.requeue(o.node_grace - age);
                }
            }
        }
        active.push(i);
    }
    let (mut new, mut old): (Vec<_>, Vec<_>) = active
        .iter()
        .copied()
        .partition(|i| i.spec.template_hash == hash && !drained.contains(i.metadata.name.as_str()));

    // Scale up the new template, within replicas + surge.
    let room = max_total.saturating_sub(active.len());
    let creates = replicas.saturating_sub(new.len()).min(room);
    let mut taken: std::collections::HashSet<String> =
        o.instances.iter().map(|i| i.metadata.name.clone()).collect();
    for _ in 0..creates {
        let name = loop {
            let n = instance_name(o.name, &hash, rng);
            if taken.insert(n.clone()) {
                break n;
            }
        };
        plan.actions.push(Action::Create(Box::new(new_instance(d, o.namespace, &hash, name))));
    }

    // Scale down the new template past replicas.
    if new.len() > replicas {
        sort_for_removal(&mut new);
        for i in new.drain(..new.len() - replicas).collect::<Vec<_>>() {
            plan.stop(i, Why::ScaleDown);
        }
    }

    // Replace old-template instances, keeping minAvailable ready.
    if !old.is_empty() {
        let new_unavailable = new.iter().filter(|i| !is_ready(i)).count() + creates;
        let total = new.len() + creates + old.len();
        let mut budget = total.saturating_sub(min_available + new_unavailable);
        let mut available = new.iter().chain(old.iter()).filter(|i| is_ready(i)).count();
        sort_for_removal(&mut old);
        for i in old {
            if budget == 0 {
                break;
            }
            if is_ready(i) {
                if available <= min_available {
                    continue;
                }
                available -= 1;
            }
            budget -= 1;
            let drain = drained.contains(i.metadata.name.as_str());
            plan.stop(i, if drain { Why::NodeDrained } else { Why::Rollout });
        }
    }

    let status = status_for(d, &hash, o.instances, unavailable, o.now);
    if d.status.as_ref() != Some(&status) {
        plan.actions.push(Action::UpdateStatus(status));
    }
    plan
}

/// A new instance of the deployment's template.
pub fn new_instance(d: &Deployment, namespace: &str, hash: &str, name: String) -> Instance {
    let mut labels = d.spec.template.labels.clone();
    labels.insert(DEPLOYMENT_LABEL.to_string(), d.metadata.name.clone());
    let meta = ObjectMeta {
        name,
        namespace: Some(namespace.to_string()),
        labels,
        ..ObjectMeta::default()
    };
    Instance::new(
        meta,
        InstanceSpec {
            deployment: d.metadata.name.clone(),
            template_hash: hash.to_string(),
            node: None,
            terminating: false,
            template: d.spec.template.clone(),
        },
    )
}

#[cfg(test)]
mod tests;
