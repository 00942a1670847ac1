//! The simulator, and weft's policy against the Kubernetes HPA's defaults on the same traces.
//! Run with `--nocapture` to see the figures.

mod common;

use common::*;
use weft_autoscale::sim::{
    Contender, Model, SimResult, chart_svg, noisy_flat_trace, simulate, step_trace, timeline_csv,
};
use weft_autoscale::{Policy, Reason, Requests};

/// rps target 70 per instance (capacity 100), 1..50 replicas, every other field weft-api's
/// default.
fn weft_policy(min: i32) -> Policy {
    Policy::from_spec(&spec(min, 50, vec![rps(70.0)]), Requests::default()).unwrap()
}

fn both(trace: &[(f64, f64)], model: &Model) -> (SimResult, SimResult) {
    let p = weft_policy(1);
    (
        simulate(trace, &Contender::weft(p.clone()), model),
        simulate(trace, &Contender::hpa(&p), model),
    )
}

fn show(label: &str, r: &SimResult) {
    println!(
        "{label} {}: {} s over objective, {} replica-s, {} scale events",
        r.name, r.seconds_over_objective, r.replica_seconds, r.scale_events
    );
}

#[test]
fn step_trace_weft_has_fewer_seconds_over_objective() {
    // 100 rps, then 1000 from t=300; 2 replicas to start (100 / 70 → 2).
    let trace = step_trace(100.0, 10.0, 300, 1200);
    let model = Model { initial_replicas: 2, ..Model::default() };
    let (weft, hpa) = both(&trace, &model);
    show("step", &weft);
    show("step", &hpa);
    assert!(weft.seconds_over_objective < hpa.seconds_over_objective);
    assert!(weft.replica_seconds as f64 <= 1.1 * hpa.replica_seconds as f64);
    // Burst mode is what does it: the first decision after the step is a burst.
    let (t, first) = weft.events[0];
    assert_eq!(t, 300);
    assert!(matches!(first.reason, Reason::Burst { triggered: true, .. }), "{first}");
    // And nothing moves once the new level is served.
    assert_eq!(weft.scale_events_from(310), 0);
}

/// From the cold start used in `noisy_flat_trace_weft_has_fewer_seconds_over_objective`.
const SETTLE: u64 = 600; // scale-down stabilization (300 s) + scale-down cooldown (300 s)

#[test]
fn noisy_flat_trace_weft_has_fewer_seconds_over_objective() {
    // 700 rps ± 20% per second, the deployment at 2 replicas when it starts; 20 seeds.
    let model = Model { initial_replicas: 2, ..Model::default() };
    let (mut weft_rs, mut hpa_rs, mut worst) = (0u64, 0u64, 0f64);
    for seed in 1..=20 {
        let trace = noisy_flat_trace(700.0, 0.2, 1800, seed);
        let (weft, hpa) = both(&trace, &model);
        let ratio = weft.replica_seconds as f64 / hpa.replica_seconds as f64;
        println!(
            "flat seed {seed:2}: over objective {:3} vs {:3}, replica-s {} vs {} ({ratio:.3}x), \
             events {} vs {}, after {SETTLE}s {} vs {}",
            weft.seconds_over_objective,
            hpa.seconds_over_objective,
            weft.replica_seconds,
            hpa.replica_seconds,
            weft.scale_events,
            hpa.scale_events,
            weft.scale_events_from(SETTLE),
            hpa.scale_events_from(SETTLE),
        );
        assert!(weft.seconds_over_objective < hpa.seconds_over_objective, "seed {seed}");
        assert_eq!(weft.scale_events_from(SETTLE), 0, "seed {seed}: {:?}", weft.events);
        weft_rs += weft.replica_seconds;
        hpa_rs += hpa.replica_seconds;
        worst = worst.max(ratio);
    }
    let total = weft_rs as f64 / hpa_rs as f64;
    println!("flat: replica-seconds over all seeds {total:.3}x, worst seed {worst:.3}x");
    // Over all seeds; single seeds can exceed 1.1x (see the crate's report).
    assert!(total <= 1.1, "{total}");
}

#[test]
fn settled_flat_trace_changes_nothing() {
    // Started at the right size, neither moves and neither is ever over objective: the same
    // figures (so "fewer" cannot hold here; it is a tie).
    let model = Model { initial_replicas: 10, ..Model::default() };
    for seed in 1..=5 {
        let trace = noisy_flat_trace(700.0, 0.2, 1800, seed);
        let (weft, hpa) = both(&trace, &model);
        if seed == 1 {
            show("settled flat", &weft);
            show("settled flat", &hpa);
        }
        assert_eq!(weft.scale_events, 0, "seed {seed}");
        assert_eq!(weft.seconds_over_objective, 0);
        assert!(weft.seconds_over_objective <= hpa.seconds_over_objective);
        assert!(weft.replica_seconds <= hpa.replica_seconds);
    }
}

#[test]
fn scale_to_zero_and_back_in_the_simulator() {
    // No traffic for 200 s, then 50 rps.
    let trace: Vec<(f64, f64)> =
        (0..400).map(|t| (f64::from(t), if t < 200 { 0.0 } else { 50.0 })).collect();
    let model = Model { initial_replicas: 1, ..Model::default() };
    let r = simulate(&trace, &Contender::weft(weft_policy(0)), &model);
    let (t0, d0) = r.events[0];
    // A full stable window of zeros (t=59), then the 30 s grace period.
    assert_eq!((t0, d0.replicas), (89, 0), "{d0}");
    let (t1, d1) = r.events[1];
    assert_eq!((t1, d1.replicas, d1.reason), (200, 1, Reason::Poked));
    // Over objective while the first instance starts (5 s), then served.
    assert_eq!(r.seconds_over_objective, 5);
    assert_eq!(r.timeline[210].ready, 1);
}

#[test]
fn trace_generators_are_deterministic() {
    let s = step_trace(100.0, 10.0, 3, 6);
    assert_eq!(
        s,
        vec![(0.0, 100.0), (1.0, 100.0), (2.0, 100.0), (3.0, 1000.0), (4.0, 1000.0), (5.0, 1000.0)]
    );
    let a = noisy_flat_trace(700.0, 0.2, 1000, 42);
    assert_eq!(a, noisy_flat_trace(700.0, 0.2, 1000, 42));
    assert_ne!(a, noisy_flat_trace(700.0, 0.2, 1000, 43));
    assert!(a.iter().all(|(_, r)| (560.0..=840.0).contains(r)));
    let mean = a.iter().map(|(_, r)| r).sum::<f64>() / 1000.0;
    assert!((mean - 700.0).abs() < 10.0, "{mean}");
}

#[test]
fn csv_and_svg() {
    let trace = step_trace(100.0, 10.0, 30, 60);
    let (weft, hpa) = both(&trace, &Model { initial_replicas: 2, ..Model::default() });
    let csv = timeline_csv(&[&weft, &hpa]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "t,rps,weft_desired,weft_ready,hpa_desired,hpa_ready");
    assert_eq!(lines.len(), 61);
    assert_eq!(lines[1], "0,100.000,2,2,2,2");
    // The first round after the step sizes on the newest rounds: 8 at once.
    assert!(lines[31].starts_with("30,1000.000,8,2,"), "{}", lines[31]);

    let svg = chart_svg(&[&weft, &hpa], "10x step <demo>");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 3); // the load and two replica lines
    assert!(svg.contains("10x step &lt;demo&gt;"));
    assert!(svg.contains("weft: "));
    assert!(svg.contains("hpa: "));
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    // Empty input is still a document.
    let empty = simulate(&[], &Contender::weft(weft_policy(1)), &Model::default());
    assert!(empty.timeline.is_empty());
    assert!(chart_svg(&[&empty], "x").contains("</svg>"));
    assert!(chart_svg(&[], "x").contains("</svg>"));
    assert_eq!(timeline_csv(&[&empty]), "t,rps,weft_desired,weft_ready\n");
}
