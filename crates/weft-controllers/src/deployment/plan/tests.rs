use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use weft_api::kinds::instance::InstanceStatus;

use super::*;
use crate::deployment::status::{AVAILABLE, PROGRESSING};

const GRACE: Duration = Duration::from_secs(20);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn deployment(
    replicas: i32,
    surge: serde_json::Value,
    unavailable: serde_json::Value,
    version: &str,
) -> Deployment {
    let v = json!({
        "apiVersion": "weft/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {
            "replicas": replicas,
            "template": {"command": ["web", version], "labels": {"tier": "front"},
                         "resources": {"requests": {"cpu": "100m"}}},
            "strategy": {"maxSurge": surge, "maxUnavailable": unavailable}
        }
    });
    serde_json::from_value(weft_api::kinds::DEPLOYMENT.normalize(v).unwrap()).unwrap()
}

/// A tiny cluster: the plan's writes applied, plus a scheduler and agent the test drives.
struct World {
    d: Option<Deployment>,
    instances: BTreeMap<String, Instance>,
    nodes: BTreeMap<String, NodeState>,
    now: SystemTime,
    rng: StdRng,
    seq: u64,
}

impl World {
    fn new(d: Deployment) -> World {
        World {
            d: Some(d),
            instances: BTreeMap::new(),
            nodes: [("n1".to_string(), NodeState::Ready)].into(),
            now: t(100),
            rng: StdRng::seed_from_u64(7),
            seq: 0,
        }
    }

    /// An instance of `version`'s template, `state` one of "unbound", "pending", "running",
    /// "ready", "failed".
    fn add(&mut self, name: &str, version: &str, state: &str, created: u64) {
        let d = deployment(1, json!(1), json!(0), version);
        let hash = template_hash(&d.spec.template);
        let mut i = new_instance(&d, "default", &hash, name.to_string());
        i.metadata.creation_timestamp = Some(time::format(t(created)));
        i.metadata.resource_version = Some("1".into());
        set_state(&mut i, state);
        self.instances.insert(name.to_string(), i);
    }

    fn plan(&mut self) -> Plan {
        let list: Vec<Arc<Instance>> = self.instances.values().cloned().map(Arc::new).collect();
        let nodes = self.nodes.clone();
        let lookup = move |n: &str| nodes.get(n).copied().unwrap_or(NodeState::Unknown);
        let o = Observed {
            namespace: "default",
            name: "web",
            deployment: self.d.as_ref(),
            instances: &list,
            node: &lookup,
            now: self.now,
            node_grace: GRACE,
        };
        reconcile(&o, &mut self.rng)
    }

    /// Plans, applies the plan, and describes its writes (status writes left out).
    fn step(&mut self) -> Vec<String> {
        let plan = self.plan();
        let mut out = Vec::new();
        for a in plan.actions {
            match a {
                Action::Create(i) => {
                    out.push("create".to_string());
                    let mut i = *i;
                    self.seq += 1;
                    i.metadata.creation_timestamp = Some(time::format(self.now));
                    i.metadata.resource_version = Some(self.seq.to_string());
                    self.instances.insert(i.metadata.name.clone(), i);
                }
                Action::Terminate { name, why, .. } => {
                    out.push(format!("terminate {name} {why:?}"));
                    self.instances.get_mut(&name).unwrap().spec.terminating = true;
                }
                Action::Delete { name, why, .. } => {
                    out.push(format!("delete {name} {why:?}"));
                    self.instances.remove(&name);
                }
                Action::UpdateStatus(s) => {
                    if let Some(d) = &mut self.d {
                        d.status = Some(s);
                    }
                }
            }
        }
        self.now += Duration::from_secs(1);
        out
    }

    /// The scheduler and agent: every instance bound, every bound one running and ready,
    /// terminating ones gone.
    fn settle(&mut self) {
        self.instances.retain(|_, i| !i.spec.terminating);
        for i in self.instances.values_mut() {
            set_state(i, "ready");
        }
    }

    fn active(&self) -> Vec<&Instance> {
        self.instances.values().filter(|i| !i.spec.terminating).collect()
    }

    fn ready_active(&self) -> usize {
        self.active().into_iter().filter(|i| is_ready(i)).count()
    }

    fn current_hash(&self) -> String {
        template_hash(&self.d.as_ref().unwrap().spec.template)
    }

    fn updated(&self) -> usize {
        let h = self.current_hash();
        self.active().into_iter().filter(|i| i.spec.template_hash == h).count()
    }
}

fn set_state(i: &mut Instance, state: &str) {
    let (node, phase, ready) = match state {
        "unbound" => (None, Phase::Pending, false),
        "pending" => (Some("n1"), Phase::Pending, false),
        "running" => (Some("n1"), Phase::Running, false),
        "ready" => (Some("n1"), Phase::Running, true),
        "failed" => (Some("n1"), Phase::Failed, false),
        other => panic!("unknown state {other}"),
    };
    i.spec.node = node.map(str::to_string);
    i.status = Some(InstanceStatus { phase, ready, ..InstanceStatus::default() });
}

fn world_with_old(
    replicas: i32,
    surge: serde_json::Value,
    unavailable: serde_json::Value,
) -> World {
    let mut w = World::new(deployment(replicas, surge, unavailable, "v2"));
    for n in 0..replicas {
        w.add(&format!("old-{n}"), "v1", "ready", n as u64);
    }
    w
}

/// Runs a rollout to the end: after every plan, the agent readies one new instance or removes
/// the terminating ones, as a real agent would, one change at a time. Returns the sequence.
fn roll(w: &mut World, surge: usize, unavailable: usize) -> Vec<String> {
    let r = w.d.as_ref().unwrap().spec.replicas as usize;
    let mut log = Vec::new();
    for _ in 0..100 {
        let step = w.step();
        assert!(w.active().len() <= r + surge, "over replicas + surge after {step:?}");
        assert!(w.ready_active() + unavailable >= r, "under minAvailable after {step:?}");
        log.extend(step);
        // One change from the outside world per round.
        if let Some(name) =
            w.instances.values().find(|i| i.spec.terminating).map(|i| i.metadata.name.clone())
        {
            w.instances.remove(&name);
            log.push("(gone)".into());
        } else if let Some(i) = w.instances.values_mut().find(|i| !is_ready(i)) {
            set_state(i, "ready");
            log.push("(ready)".into());
        } else if w.updated() == r && w.active().len() == r && w.step().is_empty() {
            return log;
        }
    }
    panic!("rollout did not converge: {log:?}");
}

#[test]
fn first_rollout_creates_replicas_named_after_the_deployment() {
    let mut w = World::new(deployment(3, json!(1), json!(0), "v1"));
    let plan = w.plan();
    let created: Vec<&Instance> = plan.created().collect();
    assert_eq!(created.len(), 3);
    let hash = w.current_hash();
    for i in &created {
        assert!(
            i.metadata.name.starts_with(&format!("web-{}-", &hash[..5])),
            "{}",
            i.metadata.name
        );
        assert_eq!(i.metadata.labels.get("deployment").map(String::as_str), Some("web"));
        assert_eq!(i.metadata.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(i.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(i.spec.deployment, "web");
        assert_eq!(i.spec.template_hash, hash);
        assert_eq!(i.spec.node, None);
        assert!(!i.spec.terminating);
    }
    let names: std::collections::HashSet<_> = created.iter().map(|i| &i.metadata.name).collect();
    assert_eq!(names.len(), 3);
}

#[test]
fn surge_one_unavailable_zero_goes_one_by_one() {
    let mut w = world_with_old(3, json!(1), json!(0));
    assert_eq!(w.step(), ["create"]);
    assert_eq!(w.step(), Vec::<String>::new(), "the new one is not ready yet");
    w.settle();
    assert_eq!(w.step(), ["terminate old-2 Rollout"], "newest old first");
    assert_eq!(w.step(), ["create"], "a terminating instance no longer counts");
    assert_eq!(w.step(), Vec::<String>::new());
    w.settle();
    assert_eq!(w.step(), ["terminate old-1 Rollout"]);
    assert_eq!(w.step(), ["create"]);
    w.settle();
    assert_eq!(w.step(), ["terminate old-0 Rollout"]);
    w.settle();
    assert_eq!(w.step(), Vec::<String>::new());
    assert_eq!(w.updated(), 3);
}

#[test]
fn surge_one_unavailable_zero_exact_sequence_as_instances_become_ready() {
    let mut w = world_with_old(3, json!(1), json!(0));
    let log = roll(&mut w, 1, 0);
    assert_eq!(
        log,
        [
            "create",
            "(ready)",
            "terminate old-2 Rollout",
            "(gone)",
            "create",
            "(ready)",
            "terminate old-1 Rollout",
            "(gone)",
            "create",
            "(ready)",
            "terminate old-0 Rollout",
            "(gone)"
        ]
    );
}

#[test]
fn surge_zero_unavailable_one_stops_before_starting() {
    let mut w = world_with_old(3, json!(0), json!(1));
    let log = roll(&mut w, 0, 1);
    assert_eq!(
        log,
        [
            "terminate old-2 Rollout",
            "(gone)",
            "create",
            "(ready)",
            "terminate old-1 Rollout",
            "(gone)",
            "create",
            "(ready)",
            "terminate old-0 Rollout",
            "(gone)",
            "create",
            "(ready)"
        ]
    );
}

#[test]
fn percentages_round_surge_up_and_unavailable_down() {
    // 10 replicas, 25%: surge 3 (2.5 up), unavailable 2 (2.5 down).
    let mut w = world_with_old(10, json!("25%"), json!("25%"));
    let first = w.step();
    assert_eq!(first.iter().filter(|a| *a == "create").count(), 3);
    assert_eq!(first.iter().filter(|a| a.starts_with("terminate")).count(), 2);
    let mut w = world_with_old(10, json!("25%"), json!("25%"));
    roll(&mut w, 3, 2);
    // 1 replica, 25%: surge 1, unavailable 0.
    let mut w = world_with_old(1, json!("25%"), json!("25%"));
    assert_eq!(w.step(), ["create"]);
    // Percentages that both round to 0 still let the rollout move (one unavailable).
    let mut w = world_with_old(3, json!("0%"), json!("10%"));
    assert_eq!(w.step(), ["terminate old-2 Rollout"]);
}

#[test]
fn surge_and_unavailable_together_create_and_stop_in_one_step() {
    let mut w = world_with_old(3, json!(1), json!(1));
    assert_eq!(w.step(), ["create", "terminate old-2 Rollout"]);
    let mut w = world_with_old(4, json!(2), json!(1));
    roll(&mut w, 2, 1);
}

#[test]
fn broken_new_template_does_not_eat_the_old_instances() {
    let mut w = world_with_old(3, json!(1), json!(0));
    assert_eq!(w.step(), ["create"]);
    // The new instance never becomes ready.
    let new = w.instances.values_mut().find(|i| !i.metadata.name.starts_with("old")).unwrap();
    set_state(new, "running");
    for _ in 0..5 {
        assert_eq!(w.step(), Vec::<String>::new());
    }
    assert_eq!(w.active().len(), 4);
}

#[test]
fn unready_old_instances_go_first_without_touching_availability() {
    let mut w = world_with_old(3, json!(1), json!(0));
    set_state(w.instances.get_mut("old-0").unwrap(), "running");
    assert_eq!(w.step(), ["create"]);
    w.settle(); // the new one and old-0 are ready now
    set_state(w.instances.get_mut("old-1").unwrap(), "running");
    // total 4, new ready: budget 1; old-1 is not ready, so it goes first.
    assert_eq!(w.step(), ["terminate old-1 Rollout"]);
}

#[test]
fn scale_down_prefers_unscheduled_then_not_running_then_not_ready_then_newest() {
    let mut w = World::new(deployment(5, json!(1), json!(0), "v1"));
    w.add("a-ready-old", "v1", "ready", 1);
    w.add("b-ready-new", "v1", "ready", 9);
    w.add("c-running", "v1", "running", 2);
    w.add("d-pending", "v1", "pending", 3);
    w.add("e-unbound", "v1", "unbound", 4);
    assert_eq!(w.step(), Vec::<String>::new());
    w.d.as_mut().unwrap().spec.replicas = 1;
    assert_eq!(
        w.step(),
        [
            "delete e-unbound ScaleDown",
            "terminate d-pending ScaleDown",
            "terminate c-running ScaleDown",
            "terminate b-ready-new ScaleDown"
        ]
    );
}

#[test]
fn scale_to_zero_and_back() {
    let mut w = World::new(deployment(3, json!(1), json!(0), "v1"));
    assert_eq!(w.step(), ["create", "create", "create"]);
    w.settle();
    assert_eq!(w.step(), Vec::<String>::new());
    w.d.as_mut().unwrap().spec.replicas = 0;
    assert_eq!(w.step().iter().filter(|a| a.starts_with("terminate")).count(), 3);
    w.settle();
    assert!(w.instances.is_empty());
    assert_eq!(w.step(), Vec::<String>::new());
    let s = w.d.as_ref().unwrap().status.clone().unwrap();
    assert_eq!((s.replicas, s.ready_replicas), (0, 0));
    w.d.as_mut().unwrap().spec.replicas = 3;
    assert_eq!(w.step(), ["create", "create", "create"]);
}

#[test]
fn scale_down_during_a_rollout_keeps_availability() {
    let mut w = world_with_old(6, json!(2), json!(0));
    assert_eq!(w.step(), ["create", "create"]);
    w.d.as_mut().unwrap().spec.replicas = 2;
    // New ones over replicas? No: 2 new, 2 replicas. Old ones: min available 2, the two new
    // are not ready, so the old can only go down to the bound total - 2 - 2 = 4.
    let step = w.step();
    assert_eq!(step.iter().filter(|a| a.starts_with("terminate old")).count(), 4, "{step:?}");
    w.settle();
    assert_eq!(w.step().len(), 2, "the remaining old ones go once the new are ready");
    w.settle();
    assert_eq!(w.active().len(), 2);
    assert_eq!(w.updated(), 2);
}

#[test]
fn failed_instances_are_replaced() {
    let mut w = World::new(deployment(2, json!(1), json!(0), "v1"));
    w.add("a", "v1", "ready", 1);
    w.add("b", "v1", "failed", 2);
    assert_eq!(w.step(), ["terminate b Finished", "create"]);
    let mut w = World::new(deployment(1, json!(1), json!(0), "v1"));
    w.add("a", "v1", "failed", 1);
    w.instances.get_mut("a").unwrap().spec.node = None;
    assert_eq!(w.step(), ["delete a Finished", "create"]);
}

#[test]
fn instances_on_lost_nodes_are_replaced() {
    let mut w = World::new(deployment(2, json!(1), json!(0), "v1"));
    w.add("a", "v1", "ready", 1);
    w.add("b", "v1", "ready", 2);
    w.instances.get_mut("b").unwrap().spec.node = Some("n2".into());
    w.nodes.insert("n2".into(), NodeState::NotReady);
    assert_eq!(w.step(), ["terminate b NodeLost", "create"]);
    // Surge is not spent on the replacement: the lost one does not count.
    assert_eq!(w.active().len(), 2);
}

#[test]
fn unknown_nodes_get_the_grace_from_creation() {
    let mut w = World::new(deployment(1, json!(1), json!(0), "v1"));
    w.add("a", "v1", "ready", 95);
    w.instances.get_mut("a").unwrap().spec.node = Some("new-node".into());
    // Created 5 s ago on a node we have not seen: wait, and look again when the grace ends.
    let plan = w.plan();
    assert!(plan.actions.iter().all(|a| matches!(a, Action::UpdateStatus(_))));
    assert_eq!(plan.requeue_after, Some(GRACE - Duration::from_secs(5)));
    w.now = t(95) + GRACE;
    assert_eq!(w.step(), ["terminate a NodeLost", "create"]);
}

#[test]
fn a_deleted_deployment_terminates_what_it_made() {
    let mut w = World::new(deployment(3, json!(1), json!(0), "v1"));
    w.add("a", "v1", "ready", 1);
    w.add("b", "v1", "unbound", 2);
    w.add("c", "v1", "ready", 3);
    w.instances.get_mut("c").unwrap().spec.terminating = true;
    w.d = None;
    assert_eq!(w.step(), ["terminate a Orphaned", "delete b Orphaned"]);
    assert_eq!(w.step(), Vec::<String>::new(), "terminating ones are the agent's now");
}

#[test]
fn terminating_instances_without_a_node_are_deleted() {
    let mut w = World::new(deployment(1, json!(1), json!(0), "v1"));
    w.add("a", "v1", "ready", 1);
    w.add("b", "v1", "unbound", 2);
    w.instances.get_mut("b").unwrap().spec.terminating = true;
    assert_eq!(w.step(), ["delete b Unbound"]);
}

#[test]
fn writes_carry_the_resource_version_they_were_decided_on() {
    let mut w = World::new(deployment(0, json!(1), json!(0), "v1"));
    w.add("a", "v1", "ready", 1);
    w.instances.get_mut("a").unwrap().metadata.resource_version = Some("42".into());
    let plan = w.plan();
    assert!(plan.actions.contains(&Action::Terminate {
        name: "a".into(),
        resource_version: Some("42".into()),
        why: Why::ScaleDown
    }));
}

#[test]
fn status_counts_and_conditions() {
    let mut w = world_with_old(3, json!(1), json!(0));
    w.step();
    let s = w.d.as_ref().unwrap().status.clone().unwrap();
    assert_eq!(s.observed_generation, 1);
    assert_eq!(s.template_hash, w.current_hash());
    assert_eq!(
        (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas),
        (3, 0, 3, 0)
    );
    let cond =
        |s: &DeploymentStatus, k: &str| s.conditions.iter().find(|c| c.kind == k).cloned().unwrap();
    assert_eq!(cond(&s, AVAILABLE).status, "True");
    assert_eq!(cond(&s, PROGRESSING).reason, "Updating");
    let available_since = cond(&s, AVAILABLE).last_transition_time;
    roll(&mut w, 1, 0);
    let s = w.d.as_ref().unwrap().status.clone().unwrap();
    assert_eq!(
        (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas),
        (3, 3, 3, 3)
    );
    assert_eq!(cond(&s, PROGRESSING).reason, "NewInstancesAvailable");
    assert_eq!(cond(&s, AVAILABLE).last_transition_time, available_since, "never flipped");
    // Nothing changed: no status write.
    assert!(w.plan().actions.is_empty());
}

#[test]
fn status_says_why_a_rollout_is_stuck() {
    let mut w = World::new(deployment(1, json!(1), json!(0), "v1"));
    w.step();
    let i = w.instances.values_mut().next().unwrap();
    i.status = Some(InstanceStatus {
        reason: "Unschedulable".into(),
        message: "0/1 nodes can run it: 1 lacks cpu (needs 100m, most free 0)".into(),
        ..InstanceStatus::default()
    });
    let name = i.metadata.name.clone();
    w.step();
    let s = w.d.as_ref().unwrap().status.clone().unwrap();
    let p = s.conditions.iter().find(|c| c.kind == PROGRESSING).unwrap();
    assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", "Unschedulable"));
    assert_eq!(
        p.message,
        format!("instance {name}: 0/1 nodes can run it: 1 lacks cpu (needs 100m, most free 0)")
    );
    let a = s.conditions.iter().find(|c| c.kind == AVAILABLE).unwrap();
    assert_eq!((a.status.as_str(), a.reason.as_str()), ("False", "MinimumInstancesUnavailable"));
}

/// Puts every instance on node `n2`, which a node pool is draining.
fn on_draining_node(w: &mut World) {
    for i in w.instances.values_mut() {
        i.spec.node = Some("n2".into());
    }
    w.nodes.insert("n2".into(), NodeState::Draining);
}

#[test]
fn a_drained_nodes_only_replica_is_replaced_before_it_stops() {
    let mut w = World::new(deployment(1, json!(1), json!(0), "v1"));
    w.add("web-a", "v1", "ready", 0);
    on_draining_node(&mut w);
    assert_eq!(w.step(), ["create"], "surge first");
    assert_eq!(w.step(), Vec::<String>::new(), "the old one serves until the new one is ready");
    let new = w.instances.keys().find(|n| *n != "web-a").unwrap().clone();
    set_state(w.instances.get_mut(&new).unwrap(), "running");
    assert_eq!(w.step(), Vec::<String>::new(), "running is not ready");
    set_state(w.instances.get_mut(&new).unwrap(), "ready");
    assert_eq!(w.step(), ["terminate web-a NodeDrained"]);
    w.instances.remove("web-a");
    assert_eq!(w.step(), Vec::<String>::new());
}

#[test]
fn a_drain_moves_every_replica_within_the_rollout_bounds() {
    let mut w = World::new(deployment(3, json!(1), json!(0), "v1"));
    for n in 0..3 {
        w.add(&format!("web-{n}"), "v1", "ready", n);
    }
    on_draining_node(&mut w);
    // `roll` checks replicas + surge and minAvailable after every step; ready ones land on n1.
    let log = roll(&mut w, 1, 0);
    assert_eq!(log.iter().filter(|l| l.ends_with("NodeDrained")).count(), 3, "{log:?}");
    assert!(w.active().iter().all(|i| i.spec.node.as_deref() == Some("n1")), "{log:?}");
}

#[test]
fn without_surge_a_drain_stops_first_as_the_strategy_says() {
    let mut w = World::new(deployment(2, json!(0), json!(1), "v1"));
    w.add("web-a", "v1", "ready", 0);
    w.add("web-b", "v1", "ready", 1);
    on_draining_node(&mut w);
    let step = w.step();
    assert_eq!(step.len(), 1, "{step:?}");
    assert!(step[0].ends_with("NodeDrained"), "{step:?}");
    let log = roll(&mut w, 0, 1);
    assert!(w.active().iter().all(|i| i.spec.node.as_deref() == Some("n1")), "{log:?}");
}

#[test]
fn a_draining_node_changes_nothing_for_instances_elsewhere() {
    let mut w = World::new(deployment(2, json!(1), json!(0), "v1"));
    w.add("web-a", "v1", "ready", 0);
    w.add("web-b", "v1", "ready", 1);
    w.nodes.insert("n2".into(), NodeState::Draining);
    assert_eq!(w.step(), Vec::<String>::new());
}
