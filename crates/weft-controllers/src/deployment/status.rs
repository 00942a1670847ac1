//! A deployment's status: counts and the `Available` and `Progressing` conditions.

use std::sync::Arc;
use std::time::SystemTime;

use weft_api::kinds::deployment::DeploymentStatus;
use weft_api::kinds::instance::Phase;
use weft_api::meta::Condition;
use weft_api::{Deployment, Instance};

use super::plan::is_ready;
use crate::time;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";

/// The status describing `instances` (all of the deployment's, terminating ones included).
/// `unavailable` is the resolved maxUnavailable.
pub fn status_for(
    d: &Deployment,
    hash: &str,
    instances: &[Arc<Instance>],
    unavailable: i32,
    now: SystemTime,
) -> DeploymentStatus {
    let replicas = d.spec.replicas.max(0);
    let live: Vec<&Arc<Instance>> = instances.iter().filter(|i| !i.spec.terminating).collect();
    let count = |f: &dyn Fn(&Instance) -> bool| live.iter().filter(|i| f(i)).count() as i32;
    let updated = |i: &Instance| i.spec.template_hash == hash;
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation.unwrap_or(0),
        replicas: live.len() as i32,
        updated_replicas: count(&updated),
        ready_replicas: count(&is_ready),
        available_replicas: count(&|i| updated(i) && is_ready(i)),
        template_hash: hash.to_string(),
        conditions: Vec::new(),
    };
    let min_available = (replicas - unavailable).max(0);
    let available = if status.ready_replicas >= min_available {
        condition(
            AVAILABLE,
            true,
            "MinimumInstancesAvailable",
            format!(
                "{} of {replicas} instances ready (at least {min_available} needed)",
                status.ready_replicas
            ),
        )
    } else {
        condition(
            AVAILABLE,
            false,
            "MinimumInstancesUnavailable",
            format!(
                "{} of {replicas} instances ready (at least {min_available} needed)",
                status.ready_replicas
            ),
        )
    };
    // A new instance that cannot be placed or run says more than any count.
    let stuck = live.iter().filter(|i| updated(i)).find_map(|i| {
        let s = i.status.as_ref()?;
        if s.reason == "Unschedulable" {
            Some(("Unschedulable", i, s))
        } else if s.phase == Phase::Failed {
            Some(("InstanceFailed", i, s))
        } else {
            None
        }
    });
    let progressing = if let Some((reason, i, s)) = stuck {
        let detail = if s.message.is_empty() { &s.reason } else { &s.message };
        condition(PROGRESSING, false, reason, format!("instance {}: {detail}", i.metadata.name))
    } else if status.updated_replicas == replicas
        && status.available_replicas == replicas
        && status.replicas == replicas
    {
        condition(
            PROGRESSING,
            true,
            "NewInstancesAvailable",
            format!("template {hash} is rolled out: {replicas} of {replicas} instances available"),
        )
    } else {
        condition(
            PROGRESSING,
            true,
            "Updating",
            format!(
                "{} of {replicas} instances on template {hash}, {} available, {} in all",
                status.updated_replicas, status.available_replicas, status.replicas
            ),
        )
    };
    let previous = d.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = [available, progressing]
        .into_iter()
        .map(|mut c| {
            // The transition time moves only when the condition's status flips.
            c.last_transition_time = match previous.iter().find(|p| p.kind == c.kind) {
                Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                    p.last_transition_time.clone()
                }
                _ => Some(time::format(now)),
            };
            c
        })
        .collect();
    DeploymentStatus { conditions, ..status }
}

fn condition(kind: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        kind: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: None,
    }
}
