//! Cost of one authorization decision at the inbound sidecar (`policy::authz`), with 1, 10 and
//! 50 allow policies plus a deny policy on the target: the allowed caller is the one named by
//! the last policy (every policy is looked at), the stranger is denied by default (the same
//! walk), the deny matches first.
//!
//! `cargo bench -p weft-proxy --bench authz`

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use weft_ca::SpiffeId;
use weft_proxy::AuthzBenchTable;

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("authz_decide");
    for n in [1usize, 10, 50] {
        let t = AuthzBenchTable::new(n);
        let last = SpiffeId::new("weft.local", "shop", &format!("caller{}", n - 1));
        let stranger = SpiffeId::new("weft.local", "shop", "stranger");
        g.bench_with_input(BenchmarkId::new("allowed_by_last", n), &n, |b, _| {
            b.iter(|| t.decide(black_box(&last), black_box("/api/items?page=2")))
        });
        g.bench_with_input(BenchmarkId::new("default_deny", n), &n, |b, _| {
            b.iter(|| t.decide(black_box(&stranger), black_box("/api/items")))
        });
        g.bench_with_input(BenchmarkId::new("explicit_deny", n), &n, |b, _| {
            b.iter(|| t.decide(black_box(&last), black_box("/admin/users")))
        });
    }
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
