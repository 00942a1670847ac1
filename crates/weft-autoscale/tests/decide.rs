//! `decide`, one rule at a time, on a simulated clock (`Duration`s from an arbitrary epoch).

mod common;

use std::time::Duration;

use common::*;
use weft_autoscale::{
    Burst, Decision, Direction, Limit, MetricTarget, MetricType, Mode, Observation, Policy,
    PolicyType, RatePolicy, Reading, Reason, Requests, ScalerState, SelectPolicy, decide,
};

fn once(policy: &Policy, obs: &Observation) -> Decision {
    decide(&mut ScalerState::new(), obs, policy, secs(1000))
}

// --- HPA math -------------------------------------------------------------------------------

#[test]
fn scales_by_current_times_metric_over_target() {
    let p = plain(1, 100, vec![rps_target(100.0)]);
    // 4 × 150 / 100 = 6.
    let d = once(&p, &rps_obs(4, 150.0));
    assert_eq!((d.from, d.replicas), (4, 6));
    let Reason::Metrics { basis, limit: None } = d.reason else { panic!("{d:?}") };
    assert_eq!((basis.metric, basis.proposal), (MetricType::Rps, 6));
    assert!((basis.per_instance - 150.0).abs() < 1e-9);
    // Rounds up: 4 × 130 / 100 = 5.2 → 6; and down: 4 × 30 / 100 = 1.2 → 2.
    assert_eq!(once(&p, &rps_obs(4, 130.0)).replicas, 6);
    assert_eq!(once(&p, &rps_obs(4, 30.0)).replicas, 2);
    // No floating-point surprise at exact multiples: 3 × 70 / 70 × 2 = 6, not 7.
    let p70 = plain(1, 100, vec![rps_target(70.0)]);
    assert_eq!(once(&p70, &rps_obs(3, 140.0)).replicas, 6);
    assert_eq!(d.to_string(), "4 -> 6: rps 150.00 per instance (target 100.00) over 1m asks for 6");
}

#[test]
fn tolerance_skips_small_ratios() {
    let p = plain(1, 100, vec![rps_target(100.0)]);
    for per in [91.0, 100.0, 105.0, 110.0] {
        let d = once(&p, &rps_obs(10, per));
        assert_eq!(d.replicas, 10, "{per}");
        assert!(matches!(d.reason, Reason::Steady { .. }), "{d:?}");
    }
    assert_eq!(once(&p, &rps_obs(10, 111.0)).replicas, 12);
    assert_eq!(once(&p, &rps_obs(10, 89.0)).replicas, 9);
    let mut wide = p;
    wide.tolerance = 0.25;
    assert_eq!(once(&wide, &rps_obs(10, 120.0)).replicas, 10);
}

#[test]
fn largest_proposal_across_metrics_wins() {
    let p = plain(1, 100, vec![rps_target(100.0), conc_target(10.0)]);
    let obs = rps_obs(4, 150.0) // asks for 6
        .with(MetricType::Concurrency, Reading::per_instance(4, 20.0, 20.0)); // asks for 8
    let d = once(&p, &obs);
    assert_eq!(d.replicas, 8);
    let Reason::Metrics { basis, .. } = d.reason else { panic!() };
    assert_eq!(basis.metric, MetricType::Concurrency);
    // And a scale-down only as far as the largest proposal allows.
    let obs = rps_obs(10, 20.0) // asks for 2
        .with(MetricType::Concurrency, Reading::per_instance(10, 5.0, 5.0)); // asks for 5
    assert_eq!(once(&p, &obs).replicas, 5);
}

#[test]
fn cpu_and_memory_utilization_targets() {
    let s = spec(
        1,
        100,
        vec![metric(MetricType::Cpu, None, Some(50)), metric(MetricType::Memory, None, Some(80))],
    );
    let mut p =
        Policy::from_spec(&s, Requests { cpu_cores: Some(2.0), memory_bytes: Some(1e9) }).unwrap();
    p.burst = None;
    p.scale_up = plain(1, 1, vec![]).scale_up;
    // cpu: 1.5 cores of 2 = 75% vs 50% → 4 × 1.5 = 6; memory 60% vs 80% → 3.
    let obs = Observation::new(4)
        .with(MetricType::Cpu, Reading::per_instance(4, 1.5, 1.5))
        .with(MetricType::Memory, Reading::per_instance(4, 6e8, 6e8));
    let d = decide(&mut ScalerState::new(), &obs, &p, secs(10));
    assert_eq!(d.replicas, 6);
    assert!(d.to_string().contains("cpu 75% of request (target 50%)"), "{d}");
    // Memory in bytes (not expressible in AutoscalerSpec; see the crate docs) works the same.
    let mut q = plain(1, 100, vec![MetricTarget::value(MetricType::Memory, 5e8)]);
    q.tolerance = 0.0;
    let obs = Observation::new(4).with(MetricType::Memory, Reading::per_instance(4, 7.5e8, 7.5e8));
    assert_eq!(once(&q, &obs).replicas, 6);
}

// --- Missing metrics and not-ready instances -------------------------------------------------

#[test]
fn scale_up_counts_missing_instances_as_idle() {
    let p = plain(1, 100, vec![rps_target(100.0)]);
    // 4 report 200, 1 reports nothing: 800 / 100 = 8.
    let obs = Observation::new(5)
        .with(MetricType::Rps, Reading::per_instance(4, 200.0, 200.0).with_missing(1));
    assert_eq!(once(&p, &obs).replicas, 8);
    // 4 report 115 (ratio 1.15); with the missing one at 0 the ratio is 0.92: hold.
    let obs = Observation::new(5)
        .with(MetricType::Rps, Reading::per_instance(4, 115.0, 115.0).with_missing(1));
    let d = once(&p, &obs);
    assert_eq!(d.replicas, 5);
    assert!(matches!(d.reason, Reason::Steady { .. }), "{d:?}");
}

#[test]
fn scale_down_counts_missing_instances_at_target() {
    let p = plain(1, 100, vec![rps_target(100.0)]);
    // 4 report 50, 1 missing counts as 100: (200 + 100) / 100 = 3, not 2.
    let obs = Observation::new(5)
        .with(MetricType::Rps, Reading::per_instance(4, 50.0, 50.0).with_missing(1));
    assert_eq!(once(&p, &obs).replicas, 3);
    // Without the missing one it would be 2.
    assert_eq!(once(&p, &rps_obs2(4, 50.0, 50.0)).replicas, 2);
    // 2 report 85 (ratio 0.85), 2 missing at 100: ratio 0.925, within tolerance: hold.
    let obs = Observation::new(4)
        .with(MetricType::Rps, Reading::per_instance(2, 85.0, 85.0).with_missing(2));
    assert_eq!(once(&p, &obs).replicas, 4);
}

#[test]
fn not_ready_instances_count_as_idle_on_scale_up_and_are_ignored_on_scale_down() {
    let p = plain(1, 100, vec![rps_target(100.0)]);
    // 6 replicas, 2 ready at 150 (ratio 1.5), 4 starting: with those at 0 the ratio is 0.5,
    // the other way: hold rather than pile on more instances while they start.
    let obs = Observation::new(6)
        .with(MetricType::Rps, Reading::per_instance(2, 150.0, 150.0))
        .with_unready(4);
    assert_eq!(once(&p, &obs).replicas, 6);
    // 2 ready at 400 with 4 starting: 800 / 100 = 8 (the starting ones are in that count).
    let obs = Observation::new(6)
        .with(MetricType::Rps, Reading::per_instance(2, 400.0, 400.0))
        .with_unready(4);
    assert_eq!(once(&p, &obs).replicas, 8);
    // Scale-down ignores them: 4 ready at 50 → 2.
    let obs = Observation::new(6)
        .with(MetricType::Rps, Reading::per_instance(4, 50.0, 50.0))
        .with_unready(2);
    assert_eq!(once(&p, &obs).replicas, 2);
}

#[test]
fn no_metrics_holds_and_never_scales_to_zero() {
    let mut p = plain(0, 100, vec![rps_target(100.0)]);
    p.scale_to_zero_grace = Duration::ZERO;
    let mut st = ScalerState::new();
    for t in 0..1000 {
        let obs = Observation::new(7).with_unready(2);
        let d = decide(&mut st, &obs, &p, secs(t));
        assert_eq!(d.replicas, 7);
        assert_eq!(d.reason, Reason::NoMetrics);
    }
    // A reading with no reporting instance is no reading.
    let obs = Observation::new(7).with(MetricType::Rps, Reading::totals(0, 0.0, 0.0));
    assert_eq!(once(&p, &obs).reason, Reason::NoMetrics);
}

#[test]
fn partly_missing_metrics_block_scale_down_but_not_scale_up() {
    let p = plain(1, 100, vec![rps_target(100.0), conc_target(10.0)]);
    // Only rps reported, and it asks for fewer: hold.
    let d = once(&p, &rps_obs(10, 20.0));
    assert_eq!(d.replicas, 10);
    assert!(matches!(d.reason, Reason::MissingMetrics { .. }), "{d:?}");
    // It asks for more: go.
    assert_eq!(once(&p, &rps_obs(10, 200.0)).replicas, 20);
}

// --- Stabilization, rate policies, cooldowns, min/max ---------------------------------------

#[test]
fn scale_down_takes_the_highest_recommendation_over_its_window() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_down.stabilization_window = secs(300);
    let mut st = ScalerState::new();
    // A fresh state assumes the current count was recommended for the window before it.
    let d = decide(&mut st, &rps_obs(10, 50.0), &p, secs(0));
    assert_eq!(d.replicas, 10);
    assert!(matches!(
        d.reason,
        Reason::Metrics {
            limit: Some(Limit::Stabilization { direction: Direction::Down, .. }),
            ..
        }
    ));
    // Recommendations: 10 at t=100 (load at target), then 5 from t=110.
    assert_eq!(decide(&mut st, &rps_obs(10, 100.0), &p, secs(100)).replicas, 10);
    for t in (110..400).step_by(10) {
        let d = decide(&mut st, &rps_obs(10, 50.0), &p, secs(t));
        assert_eq!(d.replicas, 10, "t={t}: {d}");
    }
    // 300 s after the last recommendation of 10, the highest in the window is 5.
    let d = decide(&mut st, &rps_obs(10, 50.0), &p, secs(400));
    assert_eq!(d.replicas, 5, "{d}");
}

#[test]
fn scale_up_takes_the_lowest_recommendation_over_its_window() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_up.stabilization_window = secs(60);
    let mut st = ScalerState::new();
    decide(&mut st, &rps_obs(4, 100.0), &p, secs(0));
    // Asks for 8 from t=10 on; the window still holds the 4 of t=0 ...
    assert_eq!(decide(&mut st, &rps_obs(4, 200.0), &p, secs(10)).replicas, 4);
    assert_eq!(decide(&mut st, &rps_obs(4, 150.0), &p, secs(30)).replicas, 4);
    // ... then the lowest over the last minute is 6 (t=30), then 8.
    assert_eq!(decide(&mut st, &rps_obs(4, 200.0), &p, secs(61)).replicas, 6);
    assert_eq!(decide(&mut st, &rps_obs(6, 800.0 / 6.0), &p, secs(91)).replicas, 8);
}

fn rate(kind: PolicyType, value: u32, period: u64) -> RatePolicy {
    RatePolicy { kind, value, period: secs(period) }
}

#[test]
fn scale_up_rate_policies_select_max_or_min() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_up.policies =
        vec![rate(PolicyType::Percent, 100, 15), rate(PolicyType::Instances, 4, 15)];
    // From 3 asking for 30: 100% allows 6, 4 instances allow 7; Max takes 7.
    let d = once(&p, &rps_obs(3, 1000.0));
    assert_eq!(d.replicas, 7);
    assert!(matches!(
        d.reason,
        Reason::Metrics { limit: Some(Limit::Rate { direction: Direction::Up, limit: 7 }), .. }
    ));
    p.scale_up.select = SelectPolicy::Min;
    assert_eq!(once(&p, &rps_obs(3, 1000.0)).replicas, 6);
}

#[test]
fn rate_policies_count_changes_within_their_period() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_up.policies = vec![rate(PolicyType::Instances, 4, 15)];
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &rps_obs(2, 1000.0), &p, secs(0)).replicas, 6);
    // 5 s later the period started at 2: no more room.
    let d = decide(&mut st, &rps_obs(6, 400.0), &p, secs(5));
    assert_eq!(d.replicas, 6, "{d}");
    // Once the period has passed: 4 more.
    assert_eq!(decide(&mut st, &rps_obs(6, 400.0), &p, secs(15)).replicas, 10);
}

#[test]
fn scale_down_rate_policies() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_down.policies =
        vec![rate(PolicyType::Percent, 50, 60), rate(PolicyType::Instances, 2, 60)];
    // From 10 asking for 1: 50% allows 5, 2 instances allow 8; Max (most change) takes 5.
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &rps_obs(10, 10.0), &p, secs(0)).replicas, 5);
    assert_eq!(decide(&mut st, &rps_obs(5, 20.0), &p, secs(30)).replicas, 5);
    assert_eq!(decide(&mut st, &rps_obs(5, 20.0), &p, secs(60)).replicas, 2);
    p.scale_down.select = SelectPolicy::Min;
    assert_eq!(once(&p, &rps_obs(10, 10.0)).replicas, 8);
}

#[test]
fn select_policy_disabled_blocks_that_direction() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_down.select = SelectPolicy::Disabled;
    let d = once(&p, &rps_obs(10, 10.0));
    assert_eq!(d.replicas, 10);
    assert!(matches!(
        d.reason,
        Reason::Metrics { limit: Some(Limit::Disabled { direction: Direction::Down }), .. }
    ));
    assert_eq!(once(&p, &rps_obs(10, 200.0)).replicas, 20);
    p.scale_up.select = SelectPolicy::Disabled;
    assert_eq!(once(&p, &rps_obs(10, 200.0)).replicas, 10);
}

#[test]
fn scale_up_cooldown() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_up.cooldown = secs(180);
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &rps_obs(2, 200.0), &p, secs(0)).replicas, 4);
    let d = decide(&mut st, &rps_obs(4, 200.0), &p, secs(60));
    assert_eq!(d.replicas, 4);
    let Reason::Metrics { limit: Some(Limit::Cooldown { direction, remaining }), .. } = d.reason
    else {
        panic!("{d:?}")
    };
    assert_eq!((direction, remaining), (Direction::Up, secs(120)));
    assert!(d.to_string().ends_with("held by scale-up cooldown, 2m left"), "{d}");
    assert_eq!(decide(&mut st, &rps_obs(4, 200.0), &p, secs(179)).replicas, 4);
    assert_eq!(decide(&mut st, &rps_obs(4, 200.0), &p, secs(180)).replicas, 8);
    // A scale-up cooldown does not hold back a scale-down.
    assert_eq!(decide(&mut st, &rps_obs(8, 10.0), &p, secs(181)).replicas, 1);
}

#[test]
fn scale_down_cooldown() {
    let mut p = plain(1, 100, vec![rps_target(100.0)]);
    p.scale_down.cooldown = secs(300);
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &rps_obs(10, 50.0), &p, secs(0)).replicas, 5);
    assert_eq!(decide(&mut st, &rps_obs(5, 40.0), &p, secs(299)).replicas, 5);
    assert_eq!(decide(&mut st, &rps_obs(5, 40.0), &p, secs(300)).replicas, 2);
}

#[test]
fn min_and_max_bound_everything() {
    let p = plain(3, 8, vec![rps_target(100.0)]);
    let d = once(&p, &rps_obs(4, 1000.0));
    assert_eq!(d.replicas, 8);
    assert!(matches!(d.reason, Reason::Metrics { limit: Some(Limit::MaxReplicas(8)), .. }));
    let d = once(&p, &rps_obs(5, 1.0));
    assert_eq!(d.replicas, 3);
    assert!(matches!(d.reason, Reason::Metrics { limit: Some(Limit::MinReplicas(3)), .. }));
    // Out of range already (spec changed): brought back whatever the metrics say.
    assert_eq!(once(&p, &rps_obs(12, 500.0)).reason, Reason::AboveMax(8));
    assert_eq!(once(&p, &rps_obs(12, 500.0)).replicas, 8);
    assert_eq!(once(&p, &rps_obs(1, 1.0)).reason, Reason::BelowMin(3));
    assert_eq!(once(&p, &rps_obs(1, 1.0)).replicas, 3);
    // Held at the bound, with the bound as the reason.
    let d = once(&p, &rps_obs(8, 1000.0));
    assert_eq!(d.replicas, 8);
    assert!(matches!(d.reason, Reason::Metrics { limit: Some(Limit::MaxReplicas(8)), .. }));
}

// --- Burst mode -----------------------------------------------------------------------------

fn bursty() -> Policy {
    let mut p = Policy::from_spec(&spec(1, 100, vec![rps(100.0)]), Requests::default()).unwrap();
    p.scale_down.cooldown = Duration::ZERO;
    p.scale_down.stabilization_window = Duration::ZERO;
    p
}

#[test]
fn burst_scales_up_at_once_past_cooldown_stabilization_and_policies() {
    let mut p = bursty();
    p.scale_up.stabilization_window = secs(120);
    assert_eq!(p.scale_up.cooldown, secs(180));
    let mut st = ScalerState::new();
    // Scale up once to start the cooldown.
    let d = decide(&mut st, &rps_obs(2, 300.0), &p, secs(0));
    assert_eq!(d.replicas, 6, "{d}");
    // 10 s later the 6 s window reads 5x target: burst goes straight to 30, though the
    // cooldown, the scale-up stabilization window and 100%/4-per-15s policies would not.
    let d = decide(&mut st, &rps_obs2(6, 150.0, 500.0), &p, secs(10));
    assert_eq!((d.replicas, d.mode), (30, Mode::Burst));
    let Reason::Burst { basis, triggered: true, threshold } = d.reason else { panic!("{d:?}") };
    assert_eq!((basis.window, basis.proposal, threshold), (secs(6), 30, 2.0));
    assert!(d.to_string().starts_with("6 -> 30: burst: rps 500.00 per instance"), "{d}");
}

#[test]
fn below_the_threshold_is_no_burst() {
    let p = bursty();
    let mut st = ScalerState::new();
    decide(&mut st, &rps_obs(10, 100.0), &p, secs(0));
    // 1.9x in the burst window, stable window at target.
    let d = decide(&mut st, &rps_obs2(10, 100.0, 190.0), &p, secs(1));
    assert_eq!((d.replicas, d.mode), (10, Mode::Stable));
    assert!(!st.in_burst(&p, secs(1)));
    // 2.0x exactly is a burst.
    let d = decide(&mut st, &rps_obs2(10, 100.0, 200.0), &p, secs(2));
    assert_eq!((d.replicas, d.mode), (20, Mode::Burst));
}

#[test]
fn no_scale_down_until_a_stable_window_passes_calm() {
    let p = bursty();
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &rps_obs2(5, 100.0, 400.0), &p, secs(0)).replicas, 20);
    // Load drops at once; still burst mode for a stable window (60 s) after the last burst.
    for t in 1..60 {
        let d = decide(&mut st, &rps_obs(20, 10.0), &p, secs(t));
        assert_eq!((d.replicas, d.mode), (20, Mode::Burst), "t={t}");
        let Reason::BurstHold { calm_in, .. } = d.reason else { panic!("{d:?}") };
        assert_eq!(calm_in, secs(60 - t));
    }
    let d = decide(&mut st, &rps_obs(20, 10.0), &p, secs(60));
    assert_eq!((d.replicas, d.mode), (2, Mode::Stable), "{d}");
}

#[test]
fn a_surge_is_followed_at_once_for_as_long_as_burst_mode_lasts() {
    let p = bursty();
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &rps_obs2(5, 100.0, 400.0), &p, secs(0)).replicas, 20);
    // In burst mode (a stable window, 60 s, after the trigger), a further rise below the
    // threshold still scales up at once: within the burst window ...
    let d = decide(&mut st, &rps_obs2(20, 100.0, 150.0), &p, secs(3));
    assert_eq!(d.replicas, 30);
    assert!(matches!(d.reason, Reason::Burst { triggered: false, .. }), "{d:?}");
    // ... and after it, past the 3-minute scale-up cooldown.
    let d = decide(&mut st, &rps_obs2(30, 150.0, 150.0), &p, secs(10));
    assert_eq!((d.replicas, d.mode), (45, Mode::Burst));
    assert!(matches!(d.reason, Reason::Burst { triggered: false, .. }), "{d:?}");
    // Once burst mode is over, a rise takes the normal path (here: the cooldown).
    let d = decide(&mut st, &rps_obs2(45, 150.0, 150.0), &p, secs(61));
    assert_eq!((d.replicas, d.mode), (45, Mode::Stable));
    assert!(
        matches!(d.reason, Reason::Metrics { limit: Some(Limit::Cooldown { .. }), .. }),
        "{d:?}"
    );
}

#[test]
fn the_newest_rounds_trigger_a_burst_and_size_it() {
    let p = bursty();
    let mut st = ScalerState::new();
    // A step seen in the newest two rounds (400 per instance) before it moved the burst
    // window's average much (150): burst at once, sized on the newest rounds.
    let r = Reading::per_instance(5, 100.0, 150.0).with_recent(2000.0, secs(2));
    let d = decide(&mut st, &Observation::new(5).with(MetricType::Rps, r), &p, secs(0));
    assert_eq!((d.replicas, d.mode), (20, Mode::Burst));
    let Reason::Burst { basis, triggered: true, .. } = d.reason else { panic!("{d:?}") };
    assert_eq!(basis.window, secs(2), "{d}");
    assert!(d.to_string().contains("over 2s"), "{d}");
    // Newest rounds under the threshold do not trigger one.
    let mut st = ScalerState::new();
    let r = Reading::per_instance(5, 100.0, 100.0).with_recent(900.0, secs(2));
    let d = decide(&mut st, &Observation::new(5).with(MetricType::Rps, r), &p, secs(0));
    assert_eq!(d.mode, Mode::Stable, "{d}");
}

#[test]
fn a_new_burst_restarts_the_calm_window() {
    let p = bursty();
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &rps_obs2(5, 100.0, 400.0), &p, secs(0)).replicas, 20);
    // 30 s later another burst: 20 → 40.
    let d = decide(&mut st, &rps_obs2(20, 100.0, 200.0), &p, secs(30));
    assert_eq!(d.replicas, 40);
    assert!(matches!(d.reason, Reason::Burst { triggered: true, .. }), "{d:?}");
    let d = decide(&mut st, &rps_obs(40, 10.0), &p, secs(89));
    assert_eq!((d.replicas, d.mode), (40, Mode::Burst));
    let d = decide(&mut st, &rps_obs(40, 10.0), &p, secs(90));
    assert_eq!((d.replicas, d.mode), (4, Mode::Stable));
}

#[test]
fn the_normal_path_waits_for_a_full_stable_window() {
    let p = plain(1, 100, vec![rps_target(100.0)]);
    let obs = |span| {
        Observation::new(4)
            .with(MetricType::Rps, Reading::per_instance(4, 200.0, 200.0).with_span(secs(span)))
    };
    let d = once(&p, &obs(59));
    assert_eq!(d.replicas, 4);
    assert!(matches!(d.reason, Reason::Warming { .. }), "{d:?}");
    assert!(
        d.to_string().ends_with("but only 59s of the stable window has data yet; holding"),
        "{d}"
    );
    assert_eq!(once(&p, &obs(60)).replicas, 8);
    // Bursts do not wait.
    let mut b = bursty();
    b.scale_up = p.scale_up.clone();
    let burst = Observation::new(4)
        .with(MetricType::Rps, Reading::per_instance(4, 100.0, 300.0).with_span(secs(2)));
    assert_eq!(once(&b, &burst).replicas, 12);
}

#[test]
fn burst_mode_can_be_switched_off() {
    let mut p = bursty();
    p.burst = None;
    p.scale_up.cooldown = secs(180);
    let mut st = ScalerState::new();
    decide(&mut st, &rps_obs(2, 300.0), &p, secs(0));
    let d = decide(&mut st, &rps_obs2(6, 150.0, 500.0), &p, secs(10));
    assert_eq!((d.replicas, d.mode), (6, Mode::Stable));
    let mut q = bursty();
    q.burst = Some(Burst { window: secs(6), threshold: 4.0 });
    assert_eq!(
        decide(&mut ScalerState::new(), &rps_obs2(6, 100.0, 300.0), &q, secs(0)).mode,
        Mode::Stable
    );
}

// --- Scale to zero --------------------------------------------------------------------------

fn to_zero() -> Policy {
    let mut p = plain(0, 10, vec![rps_target(100.0), conc_target(10.0)]);
    p.scale_to_zero_grace = secs(30);
    p
}

fn idle(current: u32) -> Observation {
    Observation::new(current)
        .with(MetricType::Rps, Reading::per_instance(current, 0.0, 0.0))
        .with(MetricType::Concurrency, Reading::per_instance(current, 0.0, 0.0))
}

#[test]
fn no_traffic_for_the_grace_period_scales_to_zero() {
    let p = to_zero();
    let mut st = ScalerState::new();
    for t in 0..30 {
        let d = decide(&mut st, &idle(1), &p, secs(100 + t));
        assert_eq!(d.replicas, 1, "t={t}");
    }
    let d = decide(&mut st, &idle(1), &p, secs(130));
    assert_eq!(d.replicas, 0);
    assert_eq!(d.reason, Reason::ScaleToZero { idle: secs(90) });
    assert_eq!(d.to_string(), "1 -> 0: no traffic for 1m30s; scaling to zero");
    // From several replicas too (metrics alone never go below 1).
    let mut st = ScalerState::new();
    assert_eq!(decide(&mut st, &idle(3), &p, secs(0)).replicas, 1);
    assert_eq!(decide(&mut st, &idle(1), &p, secs(30)).replicas, 0);
}

#[test]
fn only_with_min_replicas_zero() {
    let mut p = to_zero();
    p.min_replicas = 1;
    let mut st = ScalerState::new();
    for t in 0..600 {
        assert_eq!(decide(&mut st, &idle(1), &p, secs(t)).replicas, 1);
    }
}

#[test]
fn traffic_restarts_the_grace_period() {
    let p = to_zero();
    let mut st = ScalerState::new();
    decide(&mut st, &idle(1), &p, secs(0));
    let busy = Observation::new(1)
        .with(MetricType::Rps, Reading::per_instance(1, 0.01, 0.0))
        .with(MetricType::Concurrency, Reading::per_instance(1, 0.0, 0.0));
    decide(&mut st, &busy, &p, secs(20));
    assert_eq!(decide(&mut st, &idle(1), &p, secs(21)).replicas, 1);
    assert_eq!(decide(&mut st, &idle(1), &p, secs(50)).replicas, 1);
    assert_eq!(decide(&mut st, &idle(1), &p, secs(51)).replicas, 0);
    // So does a poke while running.
    let mut st = ScalerState::new();
    decide(&mut st, &idle(1), &p, secs(0));
    decide(&mut st, &idle(1).with_poke(), &p, secs(20));
    assert_eq!(decide(&mut st, &idle(1), &p, secs(40)).replicas, 1);
}

#[test]
fn missing_or_partial_traffic_data_never_scales_to_zero() {
    let p = to_zero();
    let mut st = ScalerState::new();
    for t in 0..300 {
        // Cpu only: no traffic figure at all.
        let obs = Observation::new(1).with(MetricType::Cpu, Reading::per_instance(1, 0.0, 0.0));
        assert_eq!(decide(&mut st, &obs, &p, secs(t)).replicas, 1);
    }
    let mut st = ScalerState::new();
    for t in 0..300 {
        // One of two instances silent.
        let obs = Observation::new(2)
            .with(MetricType::Rps, Reading::per_instance(1, 0.0, 0.0).with_missing(1))
            .with(MetricType::Concurrency, Reading::per_instance(1, 0.0, 0.0).with_missing(1));
        assert_ne!(decide(&mut st, &obs, &p, secs(t)).replicas, 0, "t={t}");
    }
}

#[test]
fn a_poke_at_zero_scales_to_one_at_once() {
    let mut p = to_zero();
    p.scale_up.cooldown = secs(600);
    let mut st = ScalerState::new();
    let d = decide(&mut st, &Observation::new(0), &p, secs(0));
    assert_eq!((d.replicas, d.reason), (0, Reason::Idle));
    let d = decide(&mut st, &Observation::new(0).with_poke(), &p, secs(1));
    assert_eq!((d.replicas, d.reason), (1, Reason::Poked));
    assert_eq!(d.to_string(), "0 -> 1: a request arrived while at zero");
    // At zero with minReplicas raised: back to min.
    let mut q = p.clone();
    q.min_replicas = 2;
    let d = decide(&mut ScalerState::new(), &Observation::new(0), &q, secs(0));
    assert_eq!((d.replicas, d.reason), (2, Reason::BelowMin(2)));
}

#[test]
fn spec_defaults_scale_to_zero_after_stable_window_and_grace() {
    // End to end with the weft-api defaults, through `Windows`: 60 s stable window + 30 s.
    let p = Policy::from_spec(&spec(0, 10, vec![rps(100.0)]), Requests::default()).unwrap();
    let mut w = weft_autoscale::Windows::for_policy(&p);
    let mut st = ScalerState::new();
    let mut zero_at = None;
    for t in 0..200u64 {
        let v = if t < 10 { 5.0 } else { 0.0 };
        w.record("a", MetricType::Rps, secs(t), v);
        w.record("a", MetricType::Concurrency, secs(t), v / 10.0);
        let obs = w.observe(secs(t), 1, [("a", true)], false);
        let d = decide(&mut st, &obs, &p, secs(t));
        if d.replicas == 0 {
            zero_at = Some(t);
            break;
        }
    }
    // Last traffic at t=9; the stable window reads zero from t=69; 30 s later, zero.
    assert_eq!(zero_at, Some(99));
}

#[test]
fn decisions_read_well() {
    let p = bursty();
    let d = decide(&mut ScalerState::new(), &rps_obs(4, 100.0), &p, secs(0));
    assert_eq!(
        d.to_string(),
        "hold at 4: rps 100.00 per instance (target 100.00) over 1m asks for 4"
    );
    assert_eq!(Mode::Burst.as_str(), "panic");
    assert_eq!(Mode::Stable.as_str(), "stable");
}
