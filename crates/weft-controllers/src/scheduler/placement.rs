//! Placement: which node an instance goes to. Pure bookkeeping and arithmetic, no I/O, no clock.
//!
//! Filter (node ready, not unschedulable, allocatable minus what is bound there fits the
//! request) → score → pick, as DESIGN.md "Scheduling" says. Scores are taken *after* placing
//! the instance, as Kubernetes' LeastAllocated/MostAllocated do: the mean over cpu and memory
//! of the node's free share of its allocatable. Spread picks the highest free share, bin-pack
//! the lowest (the most requested node that still fits). Ties go to the node with fewer
//! (spread) or more (bin-pack) instances, so instances that request nothing still spread or
//! pack, then to the smaller name.
//!
//! Speed: nodes with the same allocatable shape form a class, kept in a `BTreeSet` ordered by
//! score. Within a class the score after placing a request differs from the score before by a
//! constant (the request's share of that shape), so one order serves every request and the
//! best node of a class is the first one in order that fits; bin-pack even starts the scan at
//! the least free space that could fit. A cluster has few shapes (machine types), so placing
//! costs O(shapes · log nodes) in the common case instead of O(nodes). Only a failure scans
//! every node, to explain itself, and the explanation is cached until the cluster changes.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use weft_api::kinds::template::ResourceList;
use weft_api::quantity::Quantity;

/// Cpu and memory, in the units the scheduler counts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Amount {
    pub const ZERO: Amount = Amount { cpu_millis: 0, memory_bytes: 0 };

    pub fn new(cpu_millis: u64, memory_bytes: u64) -> Amount {
        Amount { cpu_millis, memory_bytes }
    }

    /// The amounts a resource list names (unset counts as 0).
    pub fn of(list: &ResourceList) -> Amount {
        Amount { cpu_millis: list.cpu_millis(), memory_bytes: list.memory_bytes() }
    }

    /// Whether `self` fits in `free`.
    pub fn fits_in(&self, free: &Amount) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes
    }

    pub fn saturating_add(self, o: Amount) -> Amount {
        Amount {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
        }
    }

    pub fn saturating_sub(self, o: Amount) -> Amount {
        Amount {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
        }
    }
}

/// How to choose among the nodes that fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Least requested share first: load spreads evenly (the default).
    #[default]
    Spread,
    /// Most requested share that still fits: fills nodes one by one, leaving others empty.
    BinPack,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s.to_ascii_lowercase().as_str() {
            "spread" => Ok(Policy::Spread),
            "binpack" | "bin-pack" => Ok(Policy::BinPack),
            _ => Err(format!("unknown scheduler policy {s:?} (use spread or binpack)")),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Spread => "spread",
            Policy::BinPack => "binpack",
        })
    }
}

/// What the scheduler needs to know about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    pub allocatable: Amount,
}

/// A node's bookkeeping, as [`Cluster::node`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUsage {
    /// `None` when instances are bound to a node the scheduler does not know (yet, or any more).
    pub info: Option<NodeInfo>,
    /// Sum of the requests of the instances bound there.
    pub requested: Amount,
    pub instances: u32,
}

/// Why nothing fits, per cause; prints as DESIGN.md's message:
/// `0/3 nodes can run it: 2 lack cpu (needs 500m, most free 200m), 1 is unschedulable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes known.
    pub nodes: usize,
    pub not_ready: usize,
    pub unschedulable: usize,
    pub lack_cpu: Option<Shortage>,
    pub lack_memory: Option<Shortage>,
}

/// Ready, schedulable nodes short of one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortage {
    pub nodes: usize,
    /// What the instance requests.
    pub needs: u64,
    /// The most any of those nodes has free.
    pub most_free: u64,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes can run it: ", self.nodes)?;
        if self.nodes == 0 {
            return f.write_str("no node has registered");
        }
        let cpu = |q: u64| Quantity::from_milli(q).to_string();
        let mem = |q: u64| Quantity::from_bytes_binary(q).to_string();
        let lack = |what: &str, s: &Shortage, show: &dyn Fn(u64) -> String| {
            let verb = if s.nodes == 1 { "lacks" } else { "lack" };
            let (needs, free) = (show(s.needs), show(s.most_free));
            format!("{} {verb} {what} (needs {needs}, most free {free})", s.nodes)
        };
        // (count, fixed order for equal counts, text)
        let mut causes: Vec<(usize, u8, String)> = Vec::new();
        if let Some(s) = &self.lack_cpu {
            causes.push((s.nodes, 0, lack("cpu", s, &cpu)));
        }
        if let Some(s) = &self.lack_memory {
            causes.push((s.nodes, 1, lack("memory", s, &mem)));
        }
        let be = |n: usize| if n == 1 { "is" } else { "are" };
        if self.not_ready > 0 {
            causes.push((
                self.not_ready,
                2,
                format!("{} {} not ready", self.not_ready, be(self.not_ready)),
            ));
        }
        if self.unschedulable > 0 {
            let n = self.unschedulable;
            causes.push((n, 3, format!("{n} {} unschedulable", be(n))));
        }
        causes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let texts: Vec<&str> = causes.iter().map(|c| c.2.as_str()).collect();
        f.write_str(&texts.join(", "))
    }
}

impl std::error::Error for Unschedulable {}

/// Position of a node in its class's order. Fields compare in order; `name` is unique, so
/// `free` never takes part and only rides along to make the fit check free of lookups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    rank: u128,
    tie: u32,
    name: Arc<str>,
    free: Amount,
}

/// Nodes of one allocatable shape.
#[derive(Default)]
struct Class {
    nodes: BTreeSet<Key>,
}

struct Slot {
    info: Option<NodeInfo>,
    requested: Amount,
    instances: u32,
    /// Where the node sits in its class, when it is a candidate at all.
    key: Option<Key>,
}

/// The scheduler's view of the cluster: nodes, what is bound to each, and the score index.
pub struct Cluster {
    policy: Policy,
    slots: HashMap<Arc<str>, Slot>,
    classes: HashMap<Amount, Class>,
    /// Bumped on every change, so a cached explanation knows when it is stale.
    generation: u64,
    /// Explanations by request, valid while `generation` equals `explained_at`.
    explained: HashMap<Amount, Unschedulable>,
    explained_at: u64,
    empty_name: Arc<str>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("policy", &self.policy)
            .field("nodes", &self.slots.len())
            .field("shapes", &self.classes.len())
            .finish()
    }
}

/// The within-class order value of a free amount: a positive multiple of the mean free share
/// (fc/ac + fm/am) for this shape, exact in integers.
fn free_key(free: Amount, alloc: Amount) -> u128 {
    let (fc, fm) = (u128::from(free.cpu_millis), u128::from(free.memory_bytes));
    let (ac, am) = (u128::from(alloc.cpu_millis), u128::from(alloc.memory_bytes));
    match (ac, am) {
        (0, 0) => 0,
        (0, _) => fm,
        (_, 0) => fc,
        _ => fc * am + fm * ac,
    }
}

/// Mean free share after placing, for comparing nodes of different shapes. A resource the node
/// has none of counts as fully used.
fn free_share(free: Amount, alloc: Amount) -> f64 {
    let part = |f: u64, a: u64| if a == 0 { 0.0 } else { f as f64 / a as f64 };
    (part(free.cpu_millis, alloc.cpu_millis) + part(free.memory_bytes, alloc.memory_bytes)) / 2.0
}

impl Cluster {
    pub fn new(policy: Policy) -> Cluster {
        Cluster {
            policy,
            slots: HashMap::new(),
            classes: HashMap::new(),
            generation: 0,
            explained: HashMap::new(),
            explained_at: 0,
            empty_name: Arc::from(""),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Nodes known (registered), not counting names only seen as binding targets.
    pub fn nodes(&self) -> usize {
        self.slots.values().filter(|s| s.info.is_some()).count()
    }

    pub fn node(&self, name: &str) -> Option<NodeUsage> {
        self.slots.get(name).map(|s| NodeUsage {
            info: s.info.clone(),
            requested: s.requested,
            instances: s.instances,
        })
    }

    /// Adds a node or updates what is known about it; what is bound there stays.
    pub fn upsert_node(&mut self, node: NodeInfo) {
        let name: Arc<str> = match self.slots.get_key_value(node.name.as_str()) {
            Some((_, s)) if s.info.as_ref() == Some(&node) => return,
            Some((k, _)) => k.clone(),
            None => Arc::from(node.name.as_str()),
        };
        self.unindex(&name);
        let slot = self.slots.entry(name.clone()).or_insert(Slot {
            info: None,
            requested: Amount::ZERO,
            instances: 0,
            key: None,
        });
        slot.info = Some(node);
        self.reindex(&name);
    }

    /// Forgets a node. Instances still bound to it keep being counted against its name, in
    /// case it comes back before they are gone.
    pub fn remove_node(&mut self, name: &str) {
        let Some((key, _)) = self.slots.get_key_value(name) else { return };
        let key = key.clone();
        self.unindex(&key);
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.info = None;
            if slot.instances == 0 {
                self.slots.remove(&key);
            }
        }
        self.generation += 1;
    }

    /// Counts an instance's requests against a node.
    pub fn bind(&mut self, node: &str, request: Amount) {
        let name = match self.slots.get_key_value(node) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(node);
                self.slots.insert(
                    k.clone(),
                    Slot { info: None, requested: Amount::ZERO, instances: 0, key: None },
                );
                k
            }
        };
        self.unindex(&name);
        if let Some(slot) = self.slots.get_mut(&name) {
            slot.requested = slot.requested.saturating_add(request);
            slot.instances += 1;
        }
        self.reindex(&name);
    }

    /// Stops counting an instance's requests against a node.
    pub fn unbind(&mut self, node: &str, request: Amount) {
        let Some((name, _)) = self.slots.get_key_value(node) else { return };
        let name = name.clone();
        self.unindex(&name);
        let mut drop_slot = false;
        if let Some(slot) = self.slots.get_mut(&name) {
            slot.requested = slot.requested.saturating_sub(request);
            slot.instances = slot.instances.saturating_sub(1);
            drop_slot = slot.info.is_none() && slot.instances == 0;
        }
        if drop_slot {
            self.slots.remove(&name);
            self.generation += 1;
        } else {
            self.reindex(&name);
        }
    }

    fn unindex(&mut self, name: &Arc<str>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let Some(key) = slot.key.take() else { return };
        let Some(info) = &slot.info else { return };
        let shape = info.allocatable;
        if let Some(class) = self.classes.get_mut(&shape) {
            class.nodes.remove(&key);
            if class.nodes.is_empty() {
                self.classes.remove(&shape);
            }
        }
    }

    fn reindex(&mut self, name: &Arc<str>) {
        self.generation += 1;
        let policy = self.policy;
        let Some(slot) = self.slots.get_mut(name) else { return };
        let Some(info) = &slot.info else { return };
        if !info.ready || info.unschedulable {
            return;
        }
        let shape = info.allocatable;
        let free = shape.saturating_sub(slot.requested);
        let fk = free_key(free, shape);
        let key = match policy {
            Policy::Spread => {
                Key { rank: u128::MAX - fk, tie: slot.instances, name: name.clone(), free }
            }
            Policy::BinPack => {
                Key { rank: fk, tie: u32::MAX - slot.instances, name: name.clone(), free }
            }
        };
        slot.key = Some(key.clone());
        self.classes.entry(shape).or_default().nodes.insert(key);
    }

    /// The best node for a request, without binding it.
    pub fn choose(&self, request: &Amount) -> Option<Arc<str>> {
        let mut best: Option<(f64, &Key)> = None;
        for (shape, class) in &self.classes {
            if !request.fits_in(shape) {
                continue;
            }
            let found = match self.policy {
                Policy::Spread => class.nodes.iter().find(|k| request.fits_in(&k.free)),
                Policy::BinPack => {
                    // A node that fits has at least the request free, so its key is at least
                    // the request's; nodes below that (the full ones) are skipped wholesale.
                    let lower = Key {
                        rank: free_key(*request, *shape),
                        tie: 0,
                        name: self.empty_name.clone(),
                        free: Amount::ZERO,
                    };
                    class.nodes.range(lower..).find(|k| request.fits_in(&k.free))
                }
            };
            let Some(key) = found else { continue };
            let score = free_share(key.free.saturating_sub(*request), *shape);
            let better = match best {
                None => true,
                Some((best_score, best_key)) => {
                    let by_score = match self.policy {
                        Policy::Spread => score.partial_cmp(&best_score),
                        Policy::BinPack => best_score.partial_cmp(&score),
                    }
                    .unwrap_or(Ordering::Equal);
                    match by_score {
                        Ordering::Greater => true,
                        Ordering::Less => false,
                        Ordering::Equal => (key.tie, &key.name) < (best_key.tie, &best_key.name),
                    }
                }
            };
            if better {
                best = Some((score, key));
            }
        }
        best.map(|(_, k)| k.name.clone())
    }

    /// Why no node fits a request: every node, by its first failing filter.
    pub fn explain(&self, request: &Amount) -> Unschedulable {
        let mut out = Unschedulable {
            nodes: 0,
            not_ready: 0,
            unschedulable: 0,
            lack_cpu: None,
            lack_memory: None,
        };
        for slot in self.slots.values() {
            let Some(info) = &slot.info else { continue };
            out.nodes += 1;
            if !info.ready {
                out.not_ready += 1;
                continue;
            }
            if info.unschedulable {
                out.unschedulable += 1;
                continue;
            }
            let free = info.allocatable.saturating_sub(slot.requested);
            if free.cpu_millis < request.cpu_millis {
                let s = out.lack_cpu.get_or_insert(Shortage {
                    nodes: 0,
                    needs: request.cpu_millis,
                    most_free: 0,
                });
                s.nodes += 1;
                s.most_free = s.most_free.max(free.cpu_millis);
            }
            if free.memory_bytes < request.memory_bytes {
                let s = out.lack_memory.get_or_insert(Shortage {
                    nodes: 0,
                    needs: request.memory_bytes,
                    most_free: 0,
                });
                s.nodes += 1;
                s.most_free = s.most_free.max(free.memory_bytes);
            }
        }
        out
    }

    /// Chooses a node and counts the request against it, or says why none fits.
    pub fn place(&mut self, request: Amount) -> Result<Arc<str>, Unschedulable> {
        if let Some(node) = self.choose(&request) {
            self.bind(&node, request);
            return Ok(node);
        }
        // A full cluster fails every placement until something changes; explaining each
        // failure anew would scan every node every time.
        if self.explained_at != self.generation {
            self.explained.clear();
            self.explained_at = self.generation;
        }
        if let Some(why) = self.explained.get(&request) {
            return Err(why.clone());
        }
        let why = self.explain(&request);
        self.explained.insert(request, why.clone());
        Err(why)
    }
}

#[cfg(test)]
mod tests;
