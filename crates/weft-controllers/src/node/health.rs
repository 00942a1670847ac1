//! Node health decisions, over explicit times.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use weft_api::kinds::node::NodeStatus;
use weft_api::meta::Condition;
use weft_api::{Instance, Node};

use crate::time;

pub const READY: &str = "Ready";
pub const HEARTBEAT_LOST: &str = "NodeHeartbeatLost";

/// What to do about a node's heartbeat.
#[derive(Clone, Debug, PartialEq)]
pub enum HeartbeatCheck {
    /// Fresh; look again after this long if nothing arrives.
    Fresh { recheck_after: Duration },
    /// Stale: write this status (ready false, condition Ready=False NodeHeartbeatLost).
    MarkNotReady(Box<NodeStatus>),
    /// Already not ready; nothing to write.
    NotReady,
}

/// When the node was last heard from: its heartbeat, else its creation. `None` when neither
/// can be read (then it is given the benefit of the doubt).
fn last_seen(node: &Node) -> Option<SystemTime> {
    let hb = node.status.as_ref().and_then(|s| s.heartbeat_time.as_deref());
    hb.or(node.metadata.creation_timestamp.as_deref()).and_then(time::parse)
}

/// Checks a node's heartbeat against the grace period.
pub fn check_heartbeat(node: &Node, now: SystemTime, grace: Duration) -> HeartbeatCheck {
    let status = node.status.clone().unwrap_or_default();
    if !status.ready {
        return HeartbeatCheck::NotReady;
    }
    let Some(seen) = last_seen(node) else {
        return HeartbeatCheck::Fresh { recheck_after: grace };
    };
    let age = now.duration_since(seen).unwrap_or_default();
    if age < grace {
        return HeartbeatCheck::Fresh { recheck_after: grace - age };
    }
    let mut next = status;
    next.ready = false;
    let message = format!(
        "no heartbeat for {}s (last {}); instances here will be replaced",
        age.as_secs(),
        time::format(seen)
    );
    let cond = Condition {
        kind: READY.to_string(),
        status: "False".to_string(),
        reason: HEARTBEAT_LOST.to_string(),
        message,
        last_transition_time: Some(time::format(now)),
    };
    match next.conditions.iter_mut().find(|c| c.kind == READY) {
        Some(c) => *c = cond,
        None => next.conditions.push(cond),
    }
    HeartbeatCheck::MarkNotReady(Box::new(next))
}

/// Instances to delete outright because their node has been gone or NotReady for `timeout`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Eviction {
    /// `(name, resourceVersion)` of each instance to delete.
    pub delete: Vec<(String, Option<String>)>,
    /// When to look again (the node is lost, but not for long enough yet).
    pub recheck_after: Option<Duration>,
}

/// Decides evictions for the instances bound to one node. `node` is `None` when it is gone;
/// `missing_since` is when the controller first found it gone.
pub fn evictions(
    node: Option<&Node>,
    missing_since: Option<SystemTime>,
    instances: &[Arc<Instance>],
    now: SystemTime,
    timeout: Duration,
) -> Eviction {
    let lost_since = match node {
        Some(n) if n.status.as_ref().is_some_and(|s| s.ready) => return Eviction::default(),
        Some(n) => last_seen(n),
        None => missing_since,
    };
    if instances.is_empty() {
        return Eviction::default();
    }
    let Some(since) = lost_since else {
        return Eviction { delete: Vec::new(), recheck_after: Some(timeout) };
    };
    let lost_for = now.duration_since(since).unwrap_or_default();
    if lost_for < timeout {
        return Eviction { delete: Vec::new(), recheck_after: Some(timeout - lost_for) };
    }
    Eviction {
        delete: instances
            .iter()
            .map(|i| (i.metadata.name.clone(), i.metadata.resource_version.clone()))
            .collect(),
        recheck_after: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GRACE: Duration = Duration::from_secs(20);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn node(ready: bool, heartbeat: Option<u64>) -> Node {
        let mut status = json!({"ready": ready, "address": "127.0.0.1",
            "allocatable": {"cpu": "2"}, "conditions": [{"type": "Ready", "status": "True"}]});
        if let Some(h) = heartbeat {
            status["heartbeatTime"] = json!(time::format(t(h)));
        }
        serde_json::from_value(json!({
            "apiVersion": "weft/v1", "kind": "Node",
            "metadata": {"name": "n1", "creationTimestamp": time::format(t(0))},
            "status": status
        }))
        .unwrap()
    }

    fn instance(name: &str) -> Arc<Instance> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "weft/v1", "kind": "Instance",
                "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"},
                "spec": {"node": "n1", "template": {"command": ["x"]}}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn fresh_heartbeats_are_rechecked_when_the_grace_would_end() {
        let n = node(true, Some(100));
        assert_eq!(
            check_heartbeat(&n, t(105), GRACE),
            HeartbeatCheck::Fresh { recheck_after: Duration::from_secs(15) }
        );
        // A heartbeat from the future (clock skew) is fresh.
        assert_eq!(
            check_heartbeat(&n, t(90), GRACE),
            HeartbeatCheck::Fresh { recheck_after: GRACE }
        );
    }

    #[test]
    fn stale_heartbeats_mark_the_node_not_ready() {
        let n = node(true, Some(100));
        let HeartbeatCheck::MarkNotReady(s) = check_heartbeat(&n, t(125), GRACE) else {
            panic!("expected NotReady")
        };
        assert!(!s.ready);
        assert_eq!(s.address, "127.0.0.1", "the rest of the status is kept");
        assert_eq!(s.conditions.len(), 1, "the Ready condition is replaced, not added");
        let c = &s.conditions[0];
        assert_eq!(
            (c.kind.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "False", HEARTBEAT_LOST)
        );
        assert_eq!(
            c.message,
            "no heartbeat for 25s (last 2023-11-14T22:15:00Z); instances here will be replaced"
        );
        assert_eq!(c.last_transition_time.as_deref(), Some(time::format(t(125)).as_str()));
        assert_eq!(
            check_heartbeat(&node(false, Some(100)), t(500), GRACE),
            HeartbeatCheck::NotReady
        );
    }

    #[test]
    fn a_node_that_never_heartbeat_counts_from_creation() {
        let n = node(true, None);
        assert!(matches!(check_heartbeat(&n, t(10), GRACE), HeartbeatCheck::Fresh { .. }));
        assert!(matches!(check_heartbeat(&n, t(20), GRACE), HeartbeatCheck::MarkNotReady(_)));
    }

    #[test]
    fn instances_are_evicted_after_the_timeout() {
        let timeout = Duration::from_secs(300);
        let list = [instance("a"), instance("b")];
        // Ready nodes keep theirs.
        assert_eq!(
            evictions(Some(&node(true, Some(0))), None, &list, t(1000), timeout),
            Eviction::default()
        );
        // NotReady: counted from the last heartbeat.
        let down = node(false, Some(100));
        assert_eq!(
            evictions(Some(&down), None, &list, t(200), timeout),
            Eviction { delete: vec![], recheck_after: Some(Duration::from_secs(200)) }
        );
        let e = evictions(Some(&down), None, &list, t(400), timeout);
        assert_eq!(
            e.delete,
            [("a".to_string(), Some("7".to_string())), ("b".to_string(), Some("7".to_string()))]
        );
        // Gone: counted from when it was found missing.
        assert_eq!(
            evictions(None, Some(t(50)), &list, t(100), timeout).recheck_after,
            Some(Duration::from_secs(250))
        );
        assert_eq!(evictions(None, Some(t(50)), &list, t(350), timeout).delete.len(), 2);
        // Nothing bound: nothing to do.
        assert_eq!(evictions(None, Some(t(0)), &[], t(1000), timeout), Eviction::default());
    }
}
