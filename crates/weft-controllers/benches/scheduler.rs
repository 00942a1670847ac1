//! Scheduler throughput: placing 100,000 instances onto 5,000 nodes (and a smaller case).
//! `cargo bench -p weft-controllers --bench scheduler`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use weft_controllers::scheduler::workload::synthetic;
use weft_controllers::scheduler::{Cluster, Policy};

fn place_all(c: &mut Criterion) {
    let mut group = c.benchmark_group("place");
    group.sample_size(10);
    for (nodes, instances) in [(500, 10_000), (5_000, 100_000)] {
        let (node_list, requests) = synthetic(nodes, instances, 42);
        for policy in [Policy::Spread, Policy::BinPack] {
            group.bench_function(format!("{policy}/{instances}x{nodes}"), |b| {
                b.iter_batched(
                    || requests.clone(),
                    |requests| {
                        let mut cluster = Cluster::new(policy);
                        for n in &node_list {
                            cluster.upsert_node(n.clone());
                        }
                        let mut placed = 0usize;
                        for r in requests {
                            placed += usize::from(cluster.place(r).is_ok());
                        }
                        placed
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn place_one(c: &mut Criterion) {
    // One placement (choose + bind) on a half-full 5,000-node cluster.
    let (node_list, requests) = synthetic(5_000, 50_000, 7);
    for policy in [Policy::Spread, Policy::BinPack] {
        let mut cluster = Cluster::new(policy);
        for n in &node_list {
            cluster.upsert_node(n.clone());
        }
        for r in &requests {
            let _ = cluster.place(*r);
        }
        let probe = requests[0];
        c.bench_function(&format!("place_one/{policy}/5000-nodes-half-full"), |b| {
            b.iter(|| {
                let node = cluster.place(probe).expect("fits");
                cluster.unbind(&node, probe);
            })
        });
    }
}

criterion_group!(benches, place_all, place_one);
criterion_main!(benches);
