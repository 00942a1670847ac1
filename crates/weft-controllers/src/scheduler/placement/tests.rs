use super::*;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

fn node(name: &str, cpu: u64, mem: u64) -> NodeInfo {
    NodeInfo {
        name: name.to_string(),
        ready: true,
        unschedulable: false,
        allocatable: Amount::new(cpu, mem),
    }
}

fn cluster(policy: Policy, nodes: &[NodeInfo]) -> Cluster {
    let mut c = Cluster::new(policy);
    for n in nodes {
        c.upsert_node(n.clone());
    }
    c
}

fn pick(c: &Cluster, cpu: u64, mem: u64) -> Option<String> {
    c.choose(&Amount::new(cpu, mem)).map(|n| n.to_string())
}

#[test]
fn fits_and_does_not_fit() {
    let mut c = cluster(Policy::Spread, &[node("a", 1000, GI)]);
    assert_eq!(pick(&c, 1000, GI).as_deref(), Some("a"), "exactly the allocatable fits");
    assert_eq!(pick(&c, 1001, GI), None);
    assert_eq!(pick(&c, 1000, GI + 1), None);
    c.bind("a", Amount::new(600, 0));
    assert_eq!(pick(&c, 400, 0).as_deref(), Some("a"));
    assert_eq!(pick(&c, 401, 0), None);
}

#[test]
fn spread_prefers_least_requested() {
    let mut c = cluster(Policy::Spread, &[node("a", 4000, 4 * GI), node("b", 4000, 4 * GI)]);
    c.bind("a", Amount::new(1000, GI));
    assert_eq!(pick(&c, 100, MI).as_deref(), Some("b"));
    c.bind("b", Amount::new(2000, 2 * GI));
    assert_eq!(pick(&c, 100, MI).as_deref(), Some("a"));
}

#[test]
fn binpack_prefers_most_requested_that_fits() {
    let mut c = cluster(
        Policy::BinPack,
        &[node("a", 4000, 4 * GI), node("b", 4000, 4 * GI), node("c", 4000, 4 * GI)],
    );
    c.bind("a", Amount::new(3900, 3 * GI));
    c.bind("b", Amount::new(2000, 2 * GI));
    // a is fullest but cannot take 500m; b is next.
    assert_eq!(pick(&c, 500, MI).as_deref(), Some("b"));
    // a still takes what fits.
    assert_eq!(pick(&c, 100, MI).as_deref(), Some("a"));
}

#[test]
fn ties_go_to_the_smaller_name() {
    let c =
        cluster(Policy::Spread, &[node("b", 1000, GI), node("a", 1000, GI), node("c", 1000, GI)]);
    assert_eq!(pick(&c, 100, MI).as_deref(), Some("a"));
    let c =
        cluster(Policy::BinPack, &[node("b", 1000, GI), node("a", 1000, GI), node("c", 1000, GI)]);
    assert_eq!(pick(&c, 100, MI).as_deref(), Some("a"));
}

#[test]
fn spread_places_round_robin_over_equal_nodes() {
    let mut c =
        cluster(Policy::Spread, &[node("a", 1000, GI), node("b", 1000, GI), node("c", 1000, GI)]);
    let placed: Vec<String> =
        (0..6).map(|_| c.place(Amount::new(100, MI)).unwrap().to_string()).collect();
    assert_eq!(placed, ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn binpack_fills_one_node_before_the_next() {
    let mut c = cluster(Policy::BinPack, &[node("a", 1000, GI), node("b", 1000, GI)]);
    let placed: Vec<String> =
        (0..4).map(|_| c.place(Amount::new(400, MI)).unwrap().to_string()).collect();
    assert_eq!(placed, ["a", "a", "b", "b"]);
    assert_eq!(
        c.place(Amount::new(400, MI)).unwrap_err().to_string(),
        "0/2 nodes can run it: 2 lack cpu (needs 400m, most free 200m)"
    );
}

#[test]
fn zero_requests_spread_by_instance_count_and_pack_together() {
    let mut c = cluster(Policy::Spread, &[node("a", 1000, GI), node("b", 1000, GI)]);
    let placed: Vec<String> = (0..4).map(|_| c.place(Amount::ZERO).unwrap().to_string()).collect();
    assert_eq!(placed, ["a", "b", "a", "b"]);
    let mut c = cluster(Policy::BinPack, &[node("a", 1000, GI), node("b", 1000, GI)]);
    let placed: Vec<String> = (0..4).map(|_| c.place(Amount::ZERO).unwrap().to_string()).collect();
    assert_eq!(placed, ["a", "a", "a", "a"]);
}

#[test]
fn zero_requests_fit_a_full_node_and_a_node_without_allocatable() {
    let mut c = cluster(Policy::Spread, &[node("a", 1000, GI)]);
    c.bind("a", Amount::new(1000, GI));
    assert_eq!(pick(&c, 0, 0).as_deref(), Some("a"));
    let c = cluster(Policy::Spread, &[node("empty", 0, 0)]);
    assert_eq!(pick(&c, 0, 0).as_deref(), Some("empty"));
    assert_eq!(pick(&c, 1, 0), None);
}

#[test]
fn not_ready_and_unschedulable_nodes_are_never_chosen() {
    let mut down = node("a", 8000, 8 * GI);
    down.ready = false;
    let mut cordoned = node("b", 8000, 8 * GI);
    cordoned.unschedulable = true;
    let mut c = cluster(Policy::Spread, &[down.clone(), cordoned.clone(), node("c", 1000, GI)]);
    assert_eq!(pick(&c, 100, MI).as_deref(), Some("c"));
    assert_eq!(pick(&c, 2000, MI), None);
    // Coming back makes it a candidate again, with its bookkeeping intact.
    c.bind("a", Amount::new(7000, 0));
    down.ready = true;
    c.upsert_node(down);
    assert_eq!(pick(&c, 2000, MI), None, "a has only 1000m free");
    c.bind("c", Amount::new(1000, 0));
    assert_eq!(pick(&c, 900, MI).as_deref(), Some("a"));
}

#[test]
fn overcommitted_nodes_count_as_full() {
    let mut c = cluster(Policy::BinPack, &[node("a", 1000, GI), node("b", 1000, GI)]);
    c.bind("a", Amount::new(5000, 5 * GI));
    assert_eq!(pick(&c, 1, 1).as_deref(), Some("b"));
    assert_eq!(pick(&c, 0, 0).as_deref(), Some("a"), "zero requests fit anywhere; a is fullest");
}

#[test]
fn reason_matches_the_design_example() {
    let mut cordoned = node("c", 4000, 4 * GI);
    cordoned.unschedulable = true;
    let mut c = cluster(Policy::Spread, &[node("a", 1000, GI), node("b", 1000, GI), cordoned]);
    c.bind("a", Amount::new(800, 0));
    c.bind("b", Amount::new(900, 0));
    let why = c.place(Amount::new(500, 64 * MI)).unwrap_err();
    assert_eq!(
        why.to_string(),
        "0/3 nodes can run it: 2 lack cpu (needs 500m, most free 200m), 1 is unschedulable"
    );
    assert_eq!(why.lack_cpu, Some(Shortage { nodes: 2, needs: 500, most_free: 200 }));
    assert_eq!(why.lack_memory, None);
}

#[test]
fn reason_counts_each_resource_and_uses_singulars() {
    let mut down = node("d", 4000, 4 * GI);
    down.ready = false;
    let mut c = cluster(
        Policy::Spread,
        &[node("a", 1000, GI), node("b", 4000, 256 * MI), node("c", 2000, 200 * MI), down],
    );
    c.bind("a", Amount::new(0, 1024 * MI - 100 * MI));
    let why = c.explain(&Amount::new(1500, 300 * MI));
    // a lacks cpu and memory, b lacks memory, c lacks memory; d is not ready.
    assert_eq!(
        why.to_string(),
        "0/4 nodes can run it: 3 lack memory (needs 300Mi, most free 256Mi), 1 lacks cpu (needs 1500m, most free 1), 1 is not ready"
    );
    let mut c = cluster(Policy::Spread, &[]);
    assert_eq!(
        c.place(Amount::new(1, 1)).unwrap_err().to_string(),
        "0/0 nodes can run it: no node has registered"
    );
    let mut down = node("x", 1, 1);
    down.ready = false;
    c.upsert_node(down.clone());
    down.name = "y".into();
    c.upsert_node(down);
    assert_eq!(c.explain(&Amount::ZERO).to_string(), "0/2 nodes can run it: 2 are not ready");
}

#[test]
fn reason_is_recomputed_when_the_cluster_changes() {
    let mut c = cluster(Policy::Spread, &[node("a", 1000, GI)]);
    c.bind("a", Amount::new(900, 0));
    let first = c.place(Amount::new(500, 0)).unwrap_err();
    assert_eq!(first.lack_cpu.unwrap().most_free, 100);
    assert_eq!(c.place(Amount::new(500, 0)).unwrap_err(), first, "cached");
    c.unbind("a", Amount::new(300, 0));
    let second = c.place(Amount::new(500, 0)).unwrap_err();
    assert_eq!(second.lack_cpu.unwrap().most_free, 400);
    c.unbind("a", Amount::new(100, 0));
    assert_eq!(c.place(Amount::new(500, 0)).unwrap().as_ref(), "a");
}

#[test]
fn removed_nodes_keep_their_bookkeeping_until_their_instances_go() {
    let mut c = cluster(Policy::Spread, &[node("a", 1000, GI)]);
    c.bind("a", Amount::new(700, 0));
    c.remove_node("a");
    assert_eq!(c.nodes(), 0);
    assert_eq!(pick(&c, 1, 0), None);
    c.upsert_node(node("a", 1000, GI));
    assert_eq!(pick(&c, 400, 0), None, "the 700m bound there still count");
    c.remove_node("a");
    c.unbind("a", Amount::new(700, 0));
    assert!(c.node("a").is_none(), "nothing left to remember");
    // Binding to a node not registered yet is remembered for when it registers.
    c.bind("later", Amount::new(1000, 0));
    c.upsert_node(node("later", 1500, GI));
    assert_eq!(c.node("later").unwrap().requested, Amount::new(1000, 0));
    assert_eq!(pick(&c, 600, 0), None);
    c.unbind("nobody", Amount::new(1, 1));
}

#[test]
fn allocatable_changes_move_the_node_between_shapes() {
    let mut c = cluster(Policy::Spread, &[node("a", 1000, GI), node("b", 1000, GI)]);
    c.bind("a", Amount::new(500, 0));
    c.upsert_node(node("a", 8000, 8 * GI));
    assert_eq!(pick(&c, 2000, 0).as_deref(), Some("a"));
    assert_eq!(pick(&c, 100, 0).as_deref(), Some("a"), "a is now the emptiest by share");
}

#[test]
fn mixed_shapes_compare_shares_after_placing() {
    // big: 4 cores and 4Gi, half used; small: 1 core and 1Gi, empty.
    let mut c = cluster(Policy::Spread, &[node("big", 4000, 4 * GI), node("small", 1000, GI)]);
    c.bind("big", Amount::new(2000, 2 * GI));
    // cpu only: big free after = 1100/4000 = .275, mem 2Gi/4Gi = .5 → .3875;
    // small free after = 100/1000 = .1, mem 1 → .55. Spread picks small.
    assert_eq!(pick(&c, 900, 0).as_deref(), Some("small"));
    // A small request: big → (1900/4000 + .5)/2 = .4875; small → (900/1000 + 1)/2 = .95.
    assert_eq!(pick(&c, 100, 0).as_deref(), Some("small"));
    let mut c = cluster(Policy::BinPack, &[node("big", 4000, 4 * GI), node("small", 1000, GI)]);
    c.bind("big", Amount::new(2000, 2 * GI));
    assert_eq!(pick(&c, 900, 0).as_deref(), Some("big"));
}

/// A straightforward scan of every node, the definition the index must agree with.
fn reference(c: &Cluster, nodes: &[NodeInfo], req: Amount) -> Option<String> {
    let mut best: Option<(f64, u32, String)> = None;
    let mut sorted: Vec<&NodeInfo> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for n in sorted {
        let usage = c.node(&n.name).unwrap();
        if !n.ready || n.unschedulable {
            continue;
        }
        let free = n.allocatable.saturating_sub(usage.requested);
        if !req.fits_in(&free) {
            continue;
        }
        let score = free_share(free.saturating_sub(req), n.allocatable);
        let tie = match c.policy() {
            Policy::Spread => usage.instances,
            Policy::BinPack => u32::MAX - usage.instances,
        };
        let better = match &best {
            None => true,
            Some((s, t, _)) => match c.policy() {
                Policy::Spread => score > *s || (score == *s && tie < *t),
                Policy::BinPack => score < *s || (score == *s && tie < *t),
            },
        };
        if better {
            best = Some((score, tie, n.name.clone()));
        }
    }
    best.map(|b| b.2)
}

/// A small deterministic generator, so the test needs no seed handling.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn index_agrees_with_a_full_scan() {
    for policy in [Policy::Spread, Policy::BinPack] {
        for seed in 0..20 {
            let mut rng = Lcg(seed);
            let shapes = [(1000, GI), (2000, 4 * GI), (4000, 2 * GI), (16000, 64 * GI)];
            let mut nodes: Vec<NodeInfo> = (0..30)
                .map(|i| {
                    let (cpu, mem) = if rng.next(4) == 0 {
                        (1 + rng.next(8000), 1 + rng.next(16 * GI))
                    } else {
                        shapes[rng.next(4) as usize]
                    };
                    let mut n = node(&format!("n{:02}", rng.next(100) * 100 + i), cpu, mem);
                    n.ready = rng.next(10) != 0;
                    n.unschedulable = rng.next(10) == 0;
                    n
                })
                .collect();
            let mut c = cluster(policy, &nodes);
            for step in 0..400 {
                let req = match rng.next(4) {
                    0 => Amount::ZERO,
                    1 => Amount::new(rng.next(4) * 250, rng.next(4) * 256 * MI),
                    _ => Amount::new(1 + rng.next(2000), 1 + rng.next(2 * GI)),
                };
                let expected = reference(&c, &nodes, req);
                assert_eq!(
                    c.choose(&req).map(|n| n.to_string()),
                    expected,
                    "{policy} seed {seed} step {step} request {req:?}"
                );
                match (rng.next(10), expected) {
                    (0, _) => {
                        // Flip a node's readiness.
                        let i = rng.next(nodes.len() as u64) as usize;
                        nodes[i].ready = !nodes[i].ready;
                        c.upsert_node(nodes[i].clone());
                    }
                    (1, _) => {
                        let i = rng.next(nodes.len() as u64) as usize;
                        let used = c.node(&nodes[i].name).unwrap().requested;
                        c.unbind(
                            &nodes[i].name,
                            Amount::new(used.cpu_millis / 2, used.memory_bytes / 2),
                        );
                    }
                    (_, Some(name)) => c.bind(&name, req),
                    (_, None) => {}
                }
            }
        }
    }
}

#[test]
fn policies_parse_and_print() {
    assert_eq!("spread".parse::<Policy>().unwrap(), Policy::Spread);
    assert_eq!("BinPack".parse::<Policy>().unwrap(), Policy::BinPack);
    assert_eq!("bin-pack".parse::<Policy>().unwrap(), Policy::BinPack);
    assert!("random".parse::<Policy>().is_err());
    assert_eq!(Policy::BinPack.to_string(), "binpack");
    assert_eq!(Policy::default(), Policy::Spread);
}
