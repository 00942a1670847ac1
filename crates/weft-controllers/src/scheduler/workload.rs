//! A synthetic cluster and stream of requests, for benchmarks (`benches/scheduler.rs`,
//! `examples/schedule_bench.rs`) and load tests: seeded, so every run places the same things.

use super::placement::{Amount, NodeInfo};

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

/// `nodes` nodes of three machine shapes (16 cores/64Gi, 8/32Gi, 32/128Gi, in 3:1:1) and
/// `instances` requests drawn from five sizes (100m/128Mi … 2/4Gi). Across 5,000 nodes and
/// 100,000 instances the requests take about 87% of the cluster's cpu, so the last placements
/// happen on a crowded cluster.
pub fn synthetic(nodes: usize, instances: usize, seed: u64) -> (Vec<NodeInfo>, Vec<Amount>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let shapes = [
        Amount::new(16_000, 64 * GI),
        Amount::new(16_000, 64 * GI),
        Amount::new(16_000, 64 * GI),
        Amount::new(8_000, 32 * GI),
        Amount::new(32_000, 128 * GI),
    ];
    let nodes = (0..nodes)
        .map(|i| NodeInfo {
            name: format!("node-{i:05}"),
            ready: true,
            unschedulable: false,
            allocatable: shapes[next(shapes.len() as u64) as usize],
        })
        .collect();
    let sizes = [
        Amount::new(100, 128 * MI),
        Amount::new(250, 256 * MI),
        Amount::new(500, 512 * MI),
        Amount::new(1000, GI),
        Amount::new(2000, 4 * GI),
    ];
    let requests = (0..instances).map(|_| sizes[next(sizes.len() as u64) as usize]).collect();
    (nodes, requests)
}
