//! NodePool: a group of identical nodes that a provider creates and removes as the workload
//! needs them (the seed's Cluster Autoscaler). Cluster-scoped, like Node.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::template::ResourceList;
use crate::duration::Duration;
use crate::meta::Condition;
use crate::validate::{self, Validator};

/// The most nodes one pool may have: a typo such as `maxNodes: 1000` should not start a
/// thousand agents (or rent a thousand machines).
pub const MAX_NODES: i32 = 100;

/// Providers this api server knows. A cloud provider adds its name here and an implementation
/// of the provider interface (docs/nodepools.md).
pub const PROVIDERS: &[&str] = &["local"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// Who makes the machines: `local` (agent processes on the api server's machine).
    pub provider: String,
    /// Never fewer nodes than this (default 0).
    #[serde(default)]
    pub min_nodes: i32,
    pub max_nodes: i32,
    /// What every node of the pool looks like.
    pub template: NodeTemplate,
    #[serde(default)]
    pub scale_up: NodePoolScaleUp,
    #[serde(default)]
    pub scale_down: NodePoolScaleDown,
}

/// A node of the pool, before it exists: what it offers and how it is labelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeTemplate {
    /// What the machine has (cpu and memory both required).
    pub capacity: ResourceList,
    /// What instances may request; defaults to the capacity.
    #[serde(default)]
    pub allocatable: ResourceList,
    /// Labels every node of the pool carries (`weft.dev/pool` is added).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePoolScaleUp {
    /// Instances pending for less than this do not count yet (default 0s): gives the scheduler
    /// a moment to find room on nodes that are just freeing it.
    #[serde(default)]
    pub delay: Duration,
}

impl Default for NodePoolScaleUp {
    fn default() -> NodePoolScaleUp {
        NodePoolScaleUp { delay: Duration::ZERO }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePoolScaleDown {
    /// A node whose instances request less than this share of its allocatable (the larger of
    /// cpu and memory) is unneeded (default 0.5).
    #[serde(default = "default_threshold")]
    pub utilization_threshold: f64,
    /// How long a node must stay unneeded before it is drained and removed (default 10m).
    #[serde(default = "default_unneeded_time")]
    pub unneeded_time: Duration,
    /// `false` keeps every node the pool has (scale-up still works).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_threshold() -> f64 {
    0.5
}

fn default_unneeded_time() -> Duration {
    Duration::from_secs(600)
}

fn yes() -> bool {
    true
}

impl Default for NodePoolScaleDown {
    fn default() -> NodePoolScaleDown {
        NodePoolScaleDown {
            utilization_threshold: default_threshold(),
            unneeded_time: default_unneeded_time(),
            enabled: true,
        }
    }
}

impl NodePoolSpec {
    pub(crate) fn apply_defaults(&mut self) {
        let t = &mut self.template;
        if t.allocatable.cpu.is_none() {
            t.allocatable.cpu = t.capacity.cpu;
        }
        if t.allocatable.memory.is_none() {
            t.allocatable.memory = t.capacity.memory;
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        if !PROVIDERS.contains(&self.provider.as_str()) {
            v.error(
                "spec.provider",
                format!(
                    "unknown provider {:?} (this server knows: {})",
                    self.provider,
                    PROVIDERS.join(", ")
                ),
            );
        }
        v.check(self.min_nodes >= 0, "spec.minNodes", "must be at least 0");
        v.check(self.max_nodes >= 1, "spec.maxNodes", "must be at least 1");
        v.check(
            self.max_nodes <= MAX_NODES,
            "spec.maxNodes",
            format!("must be at most {MAX_NODES}"),
        );
        if self.min_nodes > self.max_nodes {
            v.error(
                "spec.minNodes",
                format!("{} is more than maxNodes {}", self.min_nodes, self.max_nodes),
            );
        }
        let t = &self.template;
        for (q, name) in [(&t.capacity.cpu, "cpu"), (&t.capacity.memory, "memory")] {
            match q {
                None => v.error(format!("spec.template.capacity.{name}"), "is required"),
                Some(q) if q.is_zero() => {
                    v.error(format!("spec.template.capacity.{name}"), "must be more than 0")
                }
                Some(_) => {}
            }
        }
        for (a, c, name) in [
            (&t.allocatable.cpu, &t.capacity.cpu, "cpu"),
            (&t.allocatable.memory, &t.capacity.memory, "memory"),
        ] {
            if let (Some(a), Some(c)) = (a, c) {
                v.check(
                    a <= c,
                    format!("spec.template.allocatable.{name}"),
                    format!("{a} is more than the capacity {c}"),
                );
                v.check(
                    !a.is_zero(),
                    format!("spec.template.allocatable.{name}"),
                    "must be more than 0",
                );
            }
        }
        validate::labels(v, "spec.template.labels", &t.labels);
        let th = self.scale_down.utilization_threshold;
        v.check(
            th.is_finite() && th > 0.0 && th <= 1.0,
            "spec.scaleDown.utilizationThreshold",
            "must be more than 0 and at most 1",
        );
        v.check(
            self.scale_down.unneeded_time >= Duration::from_secs(1),
            "spec.scaleDown.unneededTime",
            "must be at least 1s",
        );
    }
}

/// What the pool has and what it last decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// The pool's nodes, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PoolNode>,
    /// Nodes the pool has now (any state but gone).
    #[serde(default)]
    pub current: i32,
    /// Nodes the pool is heading for.
    #[serde(default)]
    pub desired: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<NodePoolDecision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<NodePoolDecision>,
    /// Most recent first, bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<NodePoolDecision>,
    /// One line for people: steady, why it grows or shrinks, or why it cannot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolNode {
    pub name: String,
    /// `Provisioning` (created, agent not ready yet), `Ready`, `Draining`, or `Deleting`.
    pub state: String,
    /// Requested share of allocatable (the larger of cpu and memory), 0 to 1.
    #[serde(default)]
    pub utilization: f64,
    /// Instances bound to it.
    #[serde(default)]
    pub instances: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePoolDecision {
    /// RFC 3339.
    pub time: String,
    pub from: i32,
    pub to: i32,
    pub reason: String,
}
