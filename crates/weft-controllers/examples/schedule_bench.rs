//! Wall time to place 100,000 instances onto 5,000 nodes, per policy (the budget is 5 s).
//! `cargo run --release -p weft-controllers --example schedule_bench [-- NODES INSTANCES]`.

use std::time::Instant;

use weft_controllers::scheduler::workload::synthetic;
use weft_controllers::scheduler::{Cluster, Policy};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let instances: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let (node_list, requests) = synthetic(nodes, instances, 42);
    for policy in [Policy::Spread, Policy::BinPack] {
        let start = Instant::now();
        let mut cluster = Cluster::new(policy);
        for n in &node_list {
            cluster.upsert_node(n.clone());
        }
        let mut placed = 0usize;
        let mut failed = 0usize;
        for r in &requests {
            match cluster.place(*r) {
                Ok(_) => placed += 1,
                Err(_) => failed += 1,
            }
        }
        let took = start.elapsed();
        let used: u32 = node_list
            .iter()
            .filter_map(|n| cluster.node(&n.name))
            .filter(|u| u.instances > 0)
            .count() as u32;
        println!(
            "{policy:>8}: {instances} instances onto {nodes} nodes in {:.3} s ({:.2} µs each); placed {placed}, unschedulable {failed}, nodes used {used}",
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / instances.max(1) as f64,
        );
    }
}
