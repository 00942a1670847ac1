//! Node pools (the Cluster Autoscaler): how many nodes a pool should have, decided from what is
//! pending and what the pool's nodes carry. Pure: the caller gives the cluster as it is, the
//! pool's settings, the memory of earlier calls ([`PoolMemory`]) and `now`.
//!
//! Scale up: instances the scheduler could not place are packed (first fit, largest first)
//! into the free room of ready nodes, then of nodes still coming up, then of new template
//! nodes; the new nodes needed are added at once, capped at `maxNodes`. An instance that would
//! not fit even an empty template node never grows the pool; the decision says why.
//!
//! Scale down: a ready pool node whose instances request less than the threshold of its
//! allocatable (the larger of cpu and memory) for `unneeded_time`, and whose instances would
//! all fit on the other ready nodes, is removed, one at a time, never below `minNodes`, and
//! never while the pool is growing, draining, or has instances waiting for room.

use std::collections::HashMap;
use std::fmt;

use crate::Time;

/// Cpu and memory in the scheduler's units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    pub const fn new(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources { cpu_millis, memory_bytes }
    }

    fn fits_in(&self, free: &Resources) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes
    }

    fn plus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
        }
    }

    fn minus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
        }
    }

    /// The larger of the two shares of `of` this amount takes (a resource `of` lacks counts as
    /// full when requested, empty when not).
    pub fn share_of(&self, of: &Resources) -> f64 {
        let part = |r: u64, a: u64| match (r, a) {
            (0, _) => 0.0,
            (_, 0) => 1.0,
            _ => r as f64 / a as f64,
        };
        part(self.cpu_millis, of.cpu_millis).max(part(self.memory_bytes, of.memory_bytes))
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use weft_api::quantity::Quantity;
        let cpu = Quantity::from_milli(self.cpu_millis);
        write!(f, "cpu {cpu}, memory {}", Quantity::from_bytes_binary(self.memory_bytes))
    }
}

/// The pool's settings, from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    pub min_nodes: u32,
    pub max_nodes: u32,
    /// What a new node offers instances.
    pub template: Resources,
    pub utilization_threshold: f64,
    pub unneeded_time: Time,
    pub scale_up_delay: Time,
    pub scale_down_enabled: bool,
}

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Created by the provider; its agent has not reported ready yet.
    Provisioning,
    Ready,
    /// Not ready, unschedulable, or otherwise not taking instances (a pool node being drained).
    Unavailable,
    /// A pool node being drained for removal.
    Draining,
}

/// A node as the decision sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// Whether it belongs to the pool being decided.
    pub in_pool: bool,
    pub state: NodeState,
    pub allocatable: Resources,
    /// The requests of the instances bound there, one entry per instance.
    pub instances: Vec<Resources>,
}

impl NodeView {
    pub fn requested(&self) -> Resources {
        self.instances.iter().fold(Resources::default(), |a, r| a.plus(*r))
    }

    pub fn utilization(&self) -> f64 {
        self.requested().share_of(&self.allocatable)
    }
}

/// An instance the scheduler found no room for.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub name: String,
    pub request: Resources,
    /// When it was first seen waiting.
    pub since: Time,
}

/// What the decision remembers between calls: since when each node has been unneeded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolMemory {
    pub unneeded_since: HashMap<String, Time>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    None,
    /// Add this many nodes.
    ScaleUp {
        add: u32,
    },
    /// Drain and remove this node.
    ScaleDown {
        node: String,
    },
}

/// The decision, with its reason for people.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolDecision {
    pub action: Action,
    /// Nodes the pool has now (provisioning, ready and draining).
    pub current: u32,
    /// Where it is heading.
    pub desired: u32,
    /// One line: why this action, or why nothing (steady, waiting, capped, too big).
    pub reason: String,
}

/// Decides one step for a pool. `nodes` is every node of the cluster (instances on nodes outside
/// the pool may absorb pending instances and drained ones).
pub fn decide(
    config: &PoolConfig,
    nodes: &[NodeView],
    pending: &[Pending],
    memory: &mut PoolMemory,
    now: Time,
) -> PoolDecision {
    let pool: Vec<&NodeView> = nodes.iter().filter(|n| n.in_pool).collect();
    let current = pool.len() as u32;
    let draining = pool.iter().filter(|n| n.state == NodeState::Draining).count() as u32;
    let provisioning = pool.iter().filter(|n| n.state == NodeState::Provisioning).count() as u32;
    // Nodes being drained are on their way out: they do not count toward min or max.
    let staying = current - draining;
    let decision = |action: Action, desired: u32, reason: String| PoolDecision {
        action,
        current,
        desired,
        reason,
    };
    memory.unneeded_since.retain(|name, _| pool.iter().any(|n| &n.name == name));

    if staying < config.min_nodes {
        let add = config.min_nodes - staying;
        memory.unneeded_since.clear();
        return decision(
            Action::ScaleUp { add },
            staying + add,
            format!("below minNodes {}: adding {add}", config.min_nodes),
        );
    }

    // Scale up.
    let waiting: Vec<&Pending> =
        pending.iter().filter(|p| now.saturating_sub(p.since) >= config.scale_up_delay).collect();
    let (too_big, fitting): (Vec<&Pending>, Vec<&Pending>) =
        waiting.into_iter().partition(|p| !p.request.fits_in(&config.template));
    let too_big_note = too_big.first().map(|p| {
        let more = if too_big.len() > 1 {
            format!(" (and {} more)", too_big.len() - 1)
        } else {
            String::new()
        };
        format!(
            "instance {} requests {}, more than a pool node offers ({}){more}",
            p.name, p.request, config.template
        )
    });
    let need = new_nodes_needed(config, nodes, &fitting);
    if need > 0 {
        memory.unneeded_since.clear();
        let room = config.max_nodes.saturating_sub(staying);
        let add = need.min(room);
        let what = format!(
            "{} pending instance{} need{} {need} more node{}",
            fitting.len(),
            plural(fitting.len() as u32),
            if fitting.len() == 1 { "s" } else { "" },
            plural(need)
        );
        let mut reason = if add == 0 {
            format!("{what}, but the pool is at maxNodes {}", config.max_nodes)
        } else if add < need {
            format!("{what}; adding {add} (maxNodes {})", config.max_nodes)
        } else {
            format!("{what}; adding {add}")
        };
        if let Some(note) = &too_big_note {
            reason.push_str("; ");
            reason.push_str(note);
        }
        let action = if add > 0 { Action::ScaleUp { add } } else { Action::None };
        return decision(action, staying + add, reason);
    }
    if !fitting.is_empty() {
        // They will fit on nodes that are coming up or have room: wait for the scheduler.
        memory.unneeded_since.clear();
        let mut reason = format!(
            "{} pending instance{} will fit on nodes that are ready or coming up",
            fitting.len(),
            plural(fitting.len() as u32)
        );
        if let Some(note) = &too_big_note {
            reason.push_str("; ");
            reason.push_str(note);
        }
        return decision(Action::None, staying, reason);
    }

    // Scale down.
    let ready_pool: Vec<&NodeView> =
        pool.iter().copied().filter(|n| n.state == NodeState::Ready).collect();
    for n in &ready_pool {
        if n.utilization() < config.utilization_threshold {
            memory.unneeded_since.entry(n.name.clone()).or_insert(now);
        } else {
            memory.unneeded_since.remove(&n.name);
        }
    }
    memory.unneeded_since.retain(|name, _| ready_pool.iter().any(|n| &n.name == name));
    let steady = |extra: Option<String>| {
        let mut r = format!("{staying} node{} steady", plural(staying));
        for e in extra.iter().chain(too_big_note.iter()) {
            r.push_str("; ");
            r.push_str(e);
        }
        r
    };
    if draining > 0 || provisioning > 0 || !config.scale_down_enabled {
        let why = if draining > 0 {
            "draining a node".to_string()
        } else if provisioning > 0 {
            format!("{provisioning} node{} coming up", plural(provisioning))
        } else {
            "scale-down disabled".to_string()
        };
        return decision(Action::None, staying, steady(Some(why)));
    }
    if staying > config.max_nodes {
        // maxNodes was lowered: remove the least used node, whatever its use.
        if let Some(n) = least_used(&ready_pool) {
            return decision(
                Action::ScaleDown { node: n.name.clone() },
                staying - 1,
                format!("above maxNodes {}: removing node {}", config.max_nodes, n.name),
            );
        }
    }
    if staying <= config.min_nodes {
        return decision(Action::None, staying, steady(None));
    }
    let mut candidates: Vec<&NodeView> = ready_pool
        .iter()
        .copied()
        .filter(|n| {
            memory
                .unneeded_since
                .get(&n.name)
                .is_some_and(|since| now.saturating_sub(*since) >= config.unneeded_time)
        })
        .collect();
    candidates.sort_by(|a, b| {
        a.utilization().total_cmp(&b.utilization()).then_with(|| a.name.cmp(&b.name))
    });
    let mut blocked = None;
    for n in candidates {
        if fits_elsewhere(n, nodes) {
            let unneeded = now.saturating_sub(memory.unneeded_since[&n.name]);
            memory.unneeded_since.remove(&n.name);
            return decision(
                Action::ScaleDown { node: n.name.clone() },
                staying - 1,
                format!(
                    "node {} requested {:.0}% of its allocatable (under {:.0}%) for {}s; its {} instance{} fit elsewhere",
                    n.name,
                    n.utilization() * 100.0,
                    config.utilization_threshold * 100.0,
                    unneeded.as_secs(),
                    n.instances.len(),
                    plural(n.instances.len() as u32)
                ),
            );
        }
        blocked.get_or_insert_with(|| {
            format!("node {} is unneeded but its instances fit nowhere else", n.name)
        });
    }
    let waiting = ready_pool.iter().filter(|n| memory.unneeded_since.contains_key(&n.name)).count();
    let note = blocked.or_else(|| {
        (waiting > 0).then(|| {
            format!(
                "{waiting} node{} under {:.0}% requested, removed after {}s",
                plural(waiting as u32),
                config.utilization_threshold * 100.0,
                config.unneeded_time.as_secs()
            )
        })
    });
    decision(Action::None, staying, steady(note))
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn least_used<'a>(nodes: &[&'a NodeView]) -> Option<&'a NodeView> {
    nodes.iter().copied().min_by(|a, b| {
        a.utilization().total_cmp(&b.utilization()).then_with(|| a.name.cmp(&b.name))
    })
}

/// First fit, largest first: the order the Cluster Autoscaler's estimator uses, within a
/// node or two of optimal for the shapes instances have.
fn by_size_desc(requests: &mut [Resources]) {
    requests.sort_by(|a, b| b.cmp(a));
}

/// How many new template nodes the fitting pending instances need, after the free room of
/// ready nodes and of pool nodes still coming up (as empty template nodes).
fn new_nodes_needed(config: &PoolConfig, nodes: &[NodeView], pending: &[&Pending]) -> u32 {
    if pending.is_empty() {
        return 0;
    }
    let mut free: Vec<Resources> = nodes
        .iter()
        .filter_map(|n| match n.state {
            NodeState::Ready => Some(n.allocatable.minus(n.requested())),
            // Another pool's node coming up counts with what its template promises (the
            // caller fills it in), so two pools do not both grow for the same instances.
            NodeState::Provisioning if n.in_pool => Some(config.template.minus(n.requested())),
            NodeState::Provisioning => Some(n.allocatable.minus(n.requested())),
            _ => None,
        })
        .collect();
    let existing = free.len();
    let mut requests: Vec<Resources> = pending.iter().map(|p| p.request).collect();
    by_size_desc(&mut requests);
    for r in requests {
        match free.iter_mut().find(|f| r.fits_in(f)) {
            Some(f) => *f = f.minus(r),
            None => free.push(config.template.minus(r)),
        }
    }
    (free.len() - existing) as u32
}

/// Whether every instance of `node` fits into the free room of the other ready nodes.
fn fits_elsewhere(node: &NodeView, nodes: &[NodeView]) -> bool {
    let mut free: Vec<Resources> = nodes
        .iter()
        .filter(|n| n.name != node.name && n.state == NodeState::Ready)
        .map(|n| n.allocatable.minus(n.requested()))
        .collect();
    let mut requests = node.instances.clone();
    by_size_desc(&mut requests);
    requests.into_iter().all(|r| match free.iter_mut().find(|f| r.fits_in(f)) {
        Some(f) => {
            *f = f.minus(r);
            true
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    fn secs(s: u64) -> Time {
        Time::from_secs(s)
    }

    fn config() -> PoolConfig {
        PoolConfig {
            min_nodes: 0,
            max_nodes: 3,
            template: Resources::new(2000, 2048 * MI),
            utilization_threshold: 0.5,
            unneeded_time: secs(60),
            scale_up_delay: secs(0),
            scale_down_enabled: true,
        }
    }

    fn node(name: &str, in_pool: bool, cpu: u64, instances: &[u64]) -> NodeView {
        NodeView {
            name: name.into(),
            in_pool,
            state: NodeState::Ready,
            allocatable: Resources::new(cpu, 2048 * MI),
            instances: instances.iter().map(|c| Resources::new(*c, 64 * MI)).collect(),
        }
    }

    fn pending(n: usize, cpu: u64) -> Vec<Pending> {
        (0..n)
            .map(|i| Pending {
                name: format!("web-{i}"),
                request: Resources::new(cpu, 64 * MI),
                since: secs(0),
            })
            .collect()
    }

    #[test]
    fn packs_pending_instances_onto_template_nodes() {
        // A full 1-cpu home node; four 700m instances: two per 2-cpu template node.
        let nodes = vec![node("home", false, 1000, &[900])];
        let mut m = PoolMemory::default();
        let d = decide(&config(), &nodes, &pending(4, 700), &mut m, secs(1));
        assert_eq!(d.action, Action::ScaleUp { add: 2 }, "{}", d.reason);
        assert_eq!(d.desired, 2);
        assert!(d.reason.contains("4 pending instances need 2 more nodes"), "{}", d.reason);
    }

    #[test]
    fn uses_free_room_and_nodes_coming_up_first() {
        let mut coming = node("pool-a", true, 2000, &[]);
        coming.state = NodeState::Provisioning;
        let nodes = vec![node("home", false, 1000, &[300]), coming];
        let mut m = PoolMemory::default();
        // 700m fits home's free 700m, two more fit the node coming up.
        let d = decide(&config(), &nodes, &pending(3, 700), &mut m, secs(1));
        assert_eq!(d.action, Action::None, "{}", d.reason);
        assert!(d.reason.contains("will fit on nodes that are ready or coming up"), "{}", d.reason);
    }

    #[test]
    fn capped_at_max_nodes() {
        let nodes = vec![node("home", false, 1000, &[1000])];
        let mut m = PoolMemory::default();
        let d = decide(&config(), &nodes, &pending(10, 1500), &mut m, secs(1));
        assert_eq!(d.action, Action::ScaleUp { add: 3 });
        assert!(d.reason.contains("adding 3 (maxNodes 3)"), "{}", d.reason);
        let full: Vec<NodeView> = std::iter::once(node("home", false, 1000, &[1000]))
            .chain((0..3).map(|i| node(&format!("p{i}"), true, 2000, &[1500])))
            .collect();
        let d = decide(&config(), &full, &pending(7, 1500), &mut m, secs(1));
        assert_eq!(d.action, Action::None);
        assert!(d.reason.contains("at maxNodes 3"), "{}", d.reason);
    }

    #[test]
    fn too_big_for_the_template_never_grows_the_pool() {
        let nodes = vec![node("home", false, 1000, &[])];
        let mut m = PoolMemory::default();
        let d = decide(&config(), &nodes, &pending(1, 4000), &mut m, secs(1));
        assert_eq!(d.action, Action::None);
        assert_eq!(d.desired, 0);
        assert!(
            d.reason.contains("instance web-0 requests cpu 4, memory 64Mi, more than a pool node offers (cpu 2, memory 2Gi)"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn scale_up_delay_holds_fresh_pending_instances() {
        let nodes = vec![node("home", false, 1000, &[1000])];
        let c = PoolConfig { scale_up_delay: secs(10), ..config() };
        let mut m = PoolMemory::default();
        assert_eq!(decide(&c, &nodes, &pending(1, 500), &mut m, secs(5)).action, Action::None);
        assert_eq!(
            decide(&c, &nodes, &pending(1, 500), &mut m, secs(10)).action,
            Action::ScaleUp { add: 1 }
        );
    }

    #[test]
    fn min_nodes_is_kept() {
        let c = PoolConfig { min_nodes: 2, ..config() };
        let mut m = PoolMemory::default();
        let d = decide(&c, &[node("home", false, 1000, &[])], &[], &mut m, secs(0));
        assert_eq!(d.action, Action::ScaleUp { add: 2 });
        // Two idle pool nodes at min: never removed.
        let nodes = vec![node("p0", true, 2000, &[]), node("p1", true, 2000, &[])];
        for t in [0, 100, 1000] {
            assert_eq!(decide(&c, &nodes, &[], &mut m, secs(t)).action, Action::None);
        }
    }

    #[test]
    fn removes_an_underused_node_after_unneeded_time_one_at_a_time() {
        let nodes = vec![
            node("home", false, 1000, &[200]),
            node("p0", true, 2000, &[1500]),
            node("p1", true, 2000, &[300]),
            node("p2", true, 2000, &[]),
        ];
        let c = config();
        let mut m = PoolMemory::default();
        assert_eq!(decide(&c, &nodes, &[], &mut m, secs(0)).action, Action::None);
        let d = decide(&c, &nodes, &[], &mut m, secs(59));
        assert_eq!(d.action, Action::None);
        assert!(
            d.reason.contains("2 nodes under 50% requested, removed after 60s"),
            "{}",
            d.reason
        );
        let d = decide(&c, &nodes, &[], &mut m, secs(60));
        // The emptiest first.
        assert_eq!(d.action, Action::ScaleDown { node: "p2".into() }, "{}", d.reason);
        assert_eq!(d.desired, 2);
        // While p2 drains, nothing else goes.
        let mut draining = nodes.clone();
        draining[3].state = NodeState::Draining;
        let d = decide(&c, &draining, &[], &mut m, secs(61));
        assert_eq!(d.action, Action::None);
        assert!(d.reason.contains("draining a node"), "{}", d.reason);
        // p2 gone: p1 has been unneeded since 0 and its 300m fits home.
        let d = decide(&c, &nodes[..3], &[], &mut m, secs(62));
        assert_eq!(d.action, Action::ScaleDown { node: "p1".into() }, "{}", d.reason);
    }

    #[test]
    fn busy_again_restarts_the_clock() {
        let c = config();
        let mut m = PoolMemory::default();
        let idle = vec![node("home", false, 1000, &[]), node("p0", true, 2000, &[100])];
        let busy = vec![node("home", false, 1000, &[]), node("p0", true, 2000, &[1500])];
        decide(&c, &idle, &[], &mut m, secs(0));
        decide(&c, &busy, &[], &mut m, secs(50));
        assert_eq!(decide(&c, &idle, &[], &mut m, secs(70)).action, Action::None);
        assert_eq!(
            decide(&c, &idle, &[], &mut m, secs(130)).action,
            Action::ScaleDown { node: "p0".into() }
        );
    }

    #[test]
    fn keeps_a_node_whose_instances_fit_nowhere_else() {
        let c = config();
        let mut m = PoolMemory::default();
        let nodes = vec![node("home", false, 1000, &[800]), node("p0", true, 2000, &[900])];
        decide(&c, &nodes, &[], &mut m, secs(0));
        let d = decide(&c, &nodes, &[], &mut m, secs(100));
        assert_eq!(d.action, Action::None);
        assert!(d.reason.contains("fit nowhere else"), "{}", d.reason);
    }

    #[test]
    fn no_scale_down_while_instances_wait() {
        let c = config();
        let mut m = PoolMemory::default();
        let nodes = vec![node("home", false, 1000, &[1000]), node("p0", true, 2000, &[1500])];
        decide(&c, &nodes, &[], &mut m, secs(0));
        let d = decide(&c, &nodes, &pending(1, 400), &mut m, secs(100));
        assert_eq!(d.action, Action::None, "{}", d.reason);
        assert!(m.unneeded_since.is_empty());
    }

    #[test]
    fn lowered_max_removes_the_least_used() {
        let c = PoolConfig { max_nodes: 1, ..config() };
        let mut m = PoolMemory::default();
        let nodes = vec![node("p0", true, 2000, &[1500]), node("p1", true, 2000, &[1200])];
        let d = decide(&c, &nodes, &[], &mut m, secs(0));
        assert_eq!(d.action, Action::ScaleDown { node: "p1".into() }, "{}", d.reason);
    }

    #[test]
    fn disabled_scale_down_keeps_nodes() {
        let c = PoolConfig { scale_down_enabled: false, ..config() };
        let mut m = PoolMemory::default();
        let nodes = vec![node("home", false, 1000, &[]), node("p0", true, 2000, &[])];
        for t in [0, 1000] {
            assert_eq!(decide(&c, &nodes, &[], &mut m, secs(t)).action, Action::None);
        }
    }
}
