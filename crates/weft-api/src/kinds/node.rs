//! Node: a machine an agent runs instances on. Registered and kept fresh by the agent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::template::ResourceList;
use crate::meta::Condition;
use crate::validate::Validator;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// No new instances are placed here (existing ones keep running). Set for draining.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
    /// The node pool the node belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl NodeSpec {
    pub(crate) fn validate(&self, v: &mut Validator) {
        if let Some(p) = &self.pool
            && let Err(e) = crate::validate::dns_label(p)
        {
            v.error("spec.pool", e);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeStatus {
    /// Where other nodes reach this node's instances (an IP address).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// What the machine has.
    #[serde(default)]
    pub capacity: ResourceList,
    /// What instances may request (capacity minus what the system keeps).
    #[serde(default)]
    pub allocatable: ResourceList,
    /// RFC 3339 time of the agent's last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<String>,
    #[serde(default)]
    pub ready: bool,
    /// Whether the agent can enforce cpu and memory limits with cgroups on this node.
    #[serde(default)]
    pub cgroups: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// The agent's admin listener (`/metrics` with per-instance cpu and memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
