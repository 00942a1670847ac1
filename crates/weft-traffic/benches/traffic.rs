//! Hot-path costs of the traffic algorithms. Time is simulated (`t0 + offset`) so the figures
//! are the algorithms' own, without a clock read.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use weft_traffic::{
    Algorithm, CircuitBreaker, LoadBalancer, OutlierConfig, OutlierDetector, RetryBudget,
    RetryBudgetConfig, TokenBucket, WyRand,
};

fn picks(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("pick");
    for name in ["round-robin", "least-request", "p2c-ewma", "ring-hash"] {
        for n in [3usize, 100] {
            let alg: Algorithm = name.parse().unwrap();
            let lb = LoadBalancer::new(
                alg,
                (0..n).map(|i| format!("10.0.{}.{}:8080", i / 256, i % 256)),
                t0,
            );
            // Realistic state: every endpoint has latency history and some in flight.
            for (i, e) in lb.endpoints().iter().enumerate() {
                e.stats.observe_latency(t0, Duration::from_micros(500 + 37 * i as u64));
                for _ in 0..i % 3 {
                    e.stats.begin();
                }
            }
            let keys: Vec<[u8; 16]> = (0..1024u64)
                .map(|i| {
                    let mut k = *b"session-00000000";
                    k[8..].copy_from_slice(&i.to_le_bytes());
                    k
                })
                .collect();
            let mut rng = WyRand::new(1);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let now = t0 + Duration::from_nanos(i as u64 * 1000);
                    black_box(lb.pick(now, Some(&keys[i % keys.len()]), &mut rng).map(|e| &e.id));
                })
            });
        }
    }
    group.finish();
}

fn per_request(c: &mut Criterion) {
    let t0 = Instant::now();
    let bucket = TokenBucket::new(1e9, 1000, t0).unwrap();
    let mut i = 0u64;
    c.bench_function("token_bucket/try_acquire", |b| {
        b.iter(|| {
            i += 1;
            black_box(bucket.try_acquire(t0 + Duration::from_nanos(i * 10)).is_ok())
        })
    });
    let empty = TokenBucket::new(1.0, 1, t0).unwrap();
    let _ = empty.try_acquire(t0);
    c.bench_function("token_bucket/denied", |b| {
        b.iter(|| black_box(empty.try_acquire(t0).map_err(|d| d.retry_after_secs())))
    });

    let breaker = CircuitBreaker::default();
    c.bench_function("breaker/admit_release", |b| {
        b.iter(|| black_box(breaker.requests.try_acquire().is_some()))
    });

    let budget = RetryBudget::new(RetryBudgetConfig::default(), t0).unwrap();
    let mut i = 0u64;
    c.bench_function("retry_budget/deposit_withdraw", |b| {
        b.iter(|| {
            i += 1;
            let now = t0 + Duration::from_nanos(i * 100);
            budget.deposit(now);
            black_box(budget.try_withdraw(now))
        })
    });

    let lb = LoadBalancer::new(Algorithm::default(), 0..3, t0);
    let stats = Arc::clone(&lb.endpoints()[0].stats);
    let detector = OutlierDetector::new(OutlierConfig::default());
    let mut i = 0u64;
    c.bench_function("endpoint/track_finish_success", |b| {
        b.iter(|| {
            i += 1;
            let now = t0 + Duration::from_nanos(i * 1000);
            let guard = stats.track();
            guard.finish(now, Duration::from_micros(700 + i % 300));
            detector.record_success(&stats);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = picks, per_request
}
criterion_main!(benches);
