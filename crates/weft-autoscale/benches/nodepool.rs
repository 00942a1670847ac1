//! The cost of one node-pool decision on a large cluster: 100 nodes (80 in the pool), 1000
//! bound instances, on simulated time. Two cases: pending instances to pack onto template
//! nodes (scale up), and none pending, every pool node checked for scale-down (each candidate
//! re-packed onto the rest).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use weft_autoscale::nodepool::{
    NodeState, NodeView, Pending, PoolConfig, PoolMemory, Resources, decide,
};

const MI: u64 = 1024 * 1024;

fn config() -> PoolConfig {
    PoolConfig {
        min_nodes: 0,
        max_nodes: 100,
        template: Resources::new(4000, 8192 * MI),
        utilization_threshold: 0.5,
        unneeded_time: Duration::from_secs(600),
        scale_up_delay: Duration::ZERO,
        scale_down_enabled: true,
    }
}

/// 100 nodes, 10 instances each; the pool's nodes are 30% requested so all are scale-down
/// candidates (the expensive case).
fn cluster() -> Vec<NodeView> {
    (0..100)
        .map(|i| NodeView {
            name: format!("node-{i:03}"),
            in_pool: i >= 20,
            state: NodeState::Ready,
            allocatable: Resources::new(4000, 8192 * MI),
            instances: (0..10)
                .map(|j| Resources::new(if i >= 20 { 120 } else { 350 }, (64 + j) * MI))
                .collect(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let nodes = cluster();
    let cfg = config();
    let pending: Vec<Pending> = (0..200)
        .map(|i| Pending {
            name: format!("web-{i}"),
            request: Resources::new(500 + (i % 5) * 100, 256 * MI),
            since: Duration::ZERO,
        })
        .collect();
    c.bench_function("nodepool_decide_scale_up_100_nodes_1000_instances_200_pending", |b| {
        b.iter(|| {
            let mut m = PoolMemory::default();
            black_box(decide(
                &cfg,
                black_box(&nodes),
                black_box(&pending),
                &mut m,
                Duration::from_secs(1),
            ))
        })
    });
    // Unneeded since 0, decided at 700 s: every pool node is a candidate.
    let mut warm = PoolMemory::default();
    decide(&cfg, &nodes, &[], &mut warm, Duration::ZERO);
    c.bench_function("nodepool_decide_scale_down_100_nodes_1000_instances", |b| {
        b.iter(|| {
            let mut m = warm.clone();
            black_box(decide(&cfg, black_box(&nodes), &[], &mut m, Duration::from_secs(700)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
