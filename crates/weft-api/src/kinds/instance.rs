//! Instance: one running copy of a deployment's template, on one node. Created by the
//! deployment controller, bound by the scheduler, run and reported on by the agent.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::template::Template;
use crate::meta::Condition;
use crate::quantity::Quantity;
use crate::validate::{self, Validator};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The deployment that owns this instance.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
    /// Hash of the template this instance was made from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template_hash: String,
    /// The node it runs on; empty until the scheduler binds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Set by the deployment controller to stop the instance gracefully: it leaves its
    /// services' endpoints at once, then its agent drains, stops the app (SIGTERM, grace
    /// period, SIGKILL) and its sidecar, and deletes the object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminating: bool,
    pub template: Template,
}

impl InstanceSpec {
    /// The service name of the instance's mTLS identity: the template's `identity`, else its
    /// deployment's name, else (a bare instance) `name`.
    pub fn identity_service<'a>(&'a self, name: &'a str) -> &'a str {
        match (&self.template.identity, self.deployment.as_str()) {
            (Some(id), _) => id,
            (None, "") => name,
            (None, d) => d,
        }
    }

    pub(crate) fn apply_defaults(&mut self) {
        self.template.resources.apply_defaults();
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        if !self.deployment.is_empty()
            && let Err(e) = validate::dns_label(&self.deployment)
        {
            v.error("spec.deployment", e);
        }
        if let Some(n) = &self.node
            && let Err(e) = validate::dns_subdomain(n)
        {
            v.error("spec.node", e);
        }
        self.template.validate(v, "spec.template");
    }
}

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Not yet placed on a node, or placed and not yet started.
    #[default]
    Pending,
    /// The process was started; it may not be ready yet.
    Starting,
    /// Running (see `ready` for whether it takes traffic).
    Running,
    /// Being stopped.
    Terminating,
    /// Exited 0 and will not be restarted.
    Succeeded,
    /// Failed and will not be restarted here.
    Failed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Passing readiness: in its services' endpoints.
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restarts: u32,
    /// A CamelCase word for why it is in this state (e.g. `Unschedulable`, `CrashLoopBackOff`, `OOMKilled`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// One line for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The address its public ports are reachable on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Public port per template port name (owned by the sidecar's inbound listener).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// The sidecar's admin address (`/metrics`, `/ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_admin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Resource use as the agent measured it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Usage {
    /// Cores in use, averaged over the agent's last interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// How the app's last run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// e.g. `OOMKilled`, `Error`, `Completed`, `LivenessFailed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_the_templates_else_the_deployments_else_the_instances_name() {
        let spec = |deployment: &str, identity: Option<&str>| {
            let mut s: InstanceSpec = serde_json::from_value(serde_json::json!({
                "deployment": deployment, "template": {"command": ["web"]}
            }))
            .unwrap();
            s.template.identity = identity.map(str::to_string);
            s
        };
        assert_eq!(spec("api-v2", Some("api")).identity_service("api-v2-x"), "api");
        assert_eq!(spec("api-v2", None).identity_service("api-v2-x"), "api-v2");
        assert_eq!(spec("", None).identity_service("bare"), "bare");
    }
}
