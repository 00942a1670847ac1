//! The cost of one `decide` for one deployment, on simulated time (no clock read), in the
//! steady state (holding at target, a full stabilization history) and in a burst; and, for
//! scale, of the `Windows::observe` that precedes it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use weft_api::kinds::autoscaler::{AutoscalerSpec, Behavior, MetricSpec, TargetRef};
use weft_autoscale::{
    MetricType, Observation, Policy, Reading, Requests, ScalerState, Windows, decide,
};

fn policy() -> Policy {
    let metric = |kind, target, target_utilization| MetricSpec { kind, target, target_utilization };
    let spec = AutoscalerSpec {
        target: TargetRef { kind: "Deployment".into(), name: "web".into() },
        min_replicas: 1,
        max_replicas: 100,
        metrics: vec![
            metric(MetricType::Rps, Some(70.0), None),
            metric(MetricType::Concurrency, Some(10.0), None),
            metric(MetricType::Cpu, None, Some(70)),
        ],
        behavior: Behavior::default(),
        vertical: Default::default(),
    };
    Policy::from_spec(&spec, Requests { cpu_cores: Some(0.5), memory_bytes: None }).unwrap()
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let steady = Observation::new(20)
        .with(MetricType::Rps, Reading::per_instance(20, 68.0, 71.0))
        .with(MetricType::Concurrency, Reading::per_instance(20, 6.0, 6.5))
        .with(MetricType::Cpu, Reading::per_instance(20, 0.3, 0.31));
    let burst = Observation::new(20)
        .with(MetricType::Rps, Reading::per_instance(20, 90.0, 300.0))
        .with(MetricType::Concurrency, Reading::per_instance(20, 8.0, 25.0))
        .with(MetricType::Cpu, Reading::per_instance(20, 0.4, 0.5));

    let mut g = c.benchmark_group("decide");
    // Warm the state with 10 minutes of once-a-second decisions (full stabilization window).
    let mut state = ScalerState::new();
    let mut t = Duration::ZERO;
    for _ in 0..600 {
        t += Duration::from_secs(1);
        decide(&mut state, &steady, &policy, t);
    }
    g.bench_function("steady", |b| {
        b.iter(|| {
            t += Duration::from_secs(1);
            black_box(decide(&mut state, black_box(&steady), &policy, t))
        })
    });
    let mut state = ScalerState::new();
    g.bench_function("burst", |b| {
        b.iter(|| {
            t += Duration::from_secs(1);
            black_box(decide(&mut state, black_box(&burst), &policy, t))
        })
    });
    g.finish();
}

/// For scale: the aggregation the controller runs before each decision, 20 instances with a
/// minute of once-a-second rps and concurrency samples.
fn observe(c: &mut Criterion) {
    let policy = policy();
    let mut w = Windows::for_policy(&policy);
    let names: Vec<String> = (0..20).map(|i| format!("web-{i}")).collect();
    for s in 0..=120u64 {
        for (i, n) in names.iter().enumerate() {
            let t = Duration::from_secs(s) + Duration::from_millis(37 * i as u64);
            w.record(n, MetricType::Rps, t, 60.0 + i as f64);
            w.record(n, MetricType::Concurrency, t, 6.0);
        }
    }
    let now = Duration::from_secs(120) + Duration::from_millis(900);
    w.prune(now);
    c.bench_function("observe/20-instances", |b| {
        b.iter(|| black_box(w.observe(now, 20, names.iter().map(|n| (n.as_str(), true)), false)))
    });
}

criterion_group!(benches, bench, observe);
criterion_main!(benches);
