//! Resolving and validating policies.

mod common;

use std::time::Duration;

use common::*;
use weft_api::kinds::autoscaler::{Behavior, Panic, ScaleRules};
use weft_autoscale::{
    MetricTarget, MetricType, Policy, PolicyError, PolicyType, RatePolicy, Requests, SelectPolicy,
};

#[test]
fn defaults_follow_weft_api_even_without_api_defaulting() {
    // A spec straight from a decoder, before the api server fills scaleUp/scaleDown.
    let mut s = spec(1, 10, vec![rps(70.0)]);
    s.behavior = Behavior {
        tolerance: 0.1,
        stable_window: weft_api::duration::Duration::from_secs(60),
        scale_up: ScaleRules::default(),
        scale_down: ScaleRules::default(),
        panic: Panic::default(),
        scale_to_zero_grace_period: weft_api::duration::Duration::from_secs(30),
    };
    let p = Policy::from_spec(&s, Requests::default()).unwrap();
    assert_eq!(p.tolerance, 0.1);
    assert_eq!(p.stable_window, secs(60));
    assert_eq!(p.scale_up.cooldown, secs(180));
    assert_eq!(p.scale_down.cooldown, secs(300));
    assert_eq!(p.scale_up.stabilization_window, Duration::ZERO);
    assert_eq!(p.scale_down.stabilization_window, secs(300));
    let per15 = |kind, value| RatePolicy { kind, value, period: secs(15) };
    assert_eq!(
        p.scale_up.policies,
        vec![per15(PolicyType::Percent, 100), per15(PolicyType::Instances, 4)]
    );
    assert_eq!(p.scale_down.policies, vec![per15(PolicyType::Percent, 100)]);
    assert_eq!(p.scale_up.select, SelectPolicy::Max);
    assert_eq!(p.scale_down.select, SelectPolicy::Max);
    let b = p.burst.unwrap();
    assert_eq!((b.window, b.threshold), (secs(6), 2.0));
    assert_eq!(p.scale_to_zero_grace, secs(30));
    // The same as from a fully defaulted spec.
    let q = Policy::from_spec(&spec(1, 10, vec![rps(70.0)]), Requests::default()).unwrap();
    assert_eq!(p, q);
}

#[test]
fn set_fields_win_over_defaults() {
    let mut s = spec(0, 10, vec![rps(70.0)]);
    s.behavior.scale_up.cooldown = Some(weft_api::duration::Duration::from_secs(5));
    s.behavior.scale_down.select_policy = Some(SelectPolicy::Disabled);
    let p = Policy::from_spec(&s, Requests::default()).unwrap();
    assert_eq!(p.scale_up.cooldown, secs(5));
    assert_eq!(p.scale_down.select, SelectPolicy::Disabled);
    assert_eq!(p.min_replicas, 0);
}

#[test]
fn utilization_targets_become_per_instance_values() {
    let s = spec(
        1,
        10,
        vec![metric(MetricType::Cpu, None, Some(70)), metric(MetricType::Memory, None, Some(80))],
    );
    let req = Requests { cpu_cores: Some(0.5), memory_bytes: Some(1e9) };
    let p = Policy::from_spec(&s, req).unwrap();
    assert!((p.metrics[0].target - 0.35).abs() < 1e-12);
    assert_eq!(p.metrics[0].request, Some(0.5));
    assert!((p.metrics[1].target - 8e8).abs() < 1e-3);
}

#[test]
fn requests_from_resources() {
    let list = weft_api::kinds::template::ResourceList {
        cpu: Some("250m".parse().unwrap()),
        memory: Some("64Mi".parse().unwrap()),
    };
    let r = Requests::from_resources(&list);
    assert_eq!(r.cpu_cores, Some(0.25));
    assert_eq!(r.memory_bytes, Some(64.0 * 1024.0 * 1024.0));
    assert_eq!(Requests::from_resources(&Default::default()), Requests::default());
}

fn err(s: &weft_api::kinds::autoscaler::AutoscalerSpec) -> PolicyError {
    Policy::from_spec(s, Requests { cpu_cores: Some(1.0), memory_bytes: None }).unwrap_err()
}

#[test]
fn min_above_max_names_min_replicas() {
    let e = err(&spec(5, 3, vec![rps(70.0)]));
    assert_eq!(e.field(), "spec.minReplicas");
    assert_eq!(e.to_string(), "spec.minReplicas: 5 is more than maxReplicas 3");
    assert_eq!(err(&spec(-1, 3, vec![rps(70.0)])).field(), "spec.minReplicas");
    assert_eq!(err(&spec(0, 0, vec![rps(70.0)])).field(), "spec.maxReplicas");
}

#[test]
fn zero_and_negative_targets_name_the_target() {
    for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        let e = err(&spec(1, 3, vec![rps(70.0), rps_like(MetricType::Concurrency, bad)]));
        assert_eq!(e.field(), "spec.metrics[1].target", "{bad}");
        assert!(e.to_string().starts_with("spec.metrics[1].target: must be more than 0"), "{e}");
    }
    let e = err(&spec(1, 3, vec![metric(MetricType::Cpu, None, Some(0))]));
    assert_eq!(e.field(), "spec.metrics[0].targetUtilization");
}

fn rps_like(kind: MetricType, t: f64) -> weft_api::kinds::autoscaler::MetricSpec {
    metric(kind, Some(t), None)
}

#[test]
fn no_metrics_names_metrics() {
    let e = err(&spec(1, 3, vec![]));
    assert_eq!(e, PolicyError::NoMetrics);
    assert_eq!(e.to_string(), "spec.metrics: needs at least one metric");
}

#[test]
fn wrong_target_kind_and_missing_request_are_errors() {
    let e = err(&spec(1, 3, vec![metric(MetricType::Rps, None, Some(50))]));
    assert_eq!(e.field(), "spec.metrics[0].targetUtilization");
    let e = err(&spec(1, 3, vec![metric(MetricType::Rps, None, None)]));
    assert_eq!(e.field(), "spec.metrics[0].target");
    let e = err(&spec(1, 3, vec![metric(MetricType::Memory, Some(1e9), None)]));
    assert_eq!(e.field(), "spec.metrics[0].target");
    // Memory utilisation, but the deployment requests no memory.
    let e = err(&spec(1, 3, vec![metric(MetricType::Memory, None, Some(80))]));
    assert_eq!(e.field(), "spec.metrics[0].targetUtilization");
    assert!(e.to_string().contains("requests no memory"), "{e}");
    let e = err(&spec(1, 3, vec![rps(1.0), rps(2.0)]));
    assert_eq!(e.field(), "spec.metrics[1].type");
}

#[test]
fn behavior_errors_name_their_field() {
    let mut s = spec(1, 3, vec![rps(70.0)]);
    s.behavior.tolerance = 1.5;
    assert_eq!(err(&s).field(), "spec.behavior.tolerance");
    let mut s = spec(1, 3, vec![rps(70.0)]);
    s.behavior.panic.threshold = 1.0;
    assert_eq!(err(&s).field(), "spec.behavior.panic.threshold");
    let mut s = spec(1, 3, vec![rps(70.0)]);
    s.behavior.panic.window = weft_api::duration::Duration::from_secs(120);
    assert_eq!(err(&s).field(), "spec.behavior.panic.window");
    let mut s = spec(1, 3, vec![rps(70.0)]);
    s.behavior.scale_up.policies = Some(vec![]);
    assert_eq!(err(&s).field(), "spec.behavior.scaleUp.policies");
    let mut s = spec(1, 3, vec![rps(70.0)]);
    s.behavior.scale_down.policies = Some(vec![weft_api::kinds::autoscaler::ScalePolicy {
        kind: PolicyType::Instances,
        value: 0,
        period: weft_api::duration::Duration::from_secs(15),
    }]);
    assert_eq!(err(&s).field(), "spec.behavior.scaleDown.policies[0].value");
}

#[test]
fn hand_built_policies_validate_too() {
    let p = plain(1, 10, vec![rps_target(70.0)]);
    assert_eq!(p.validate(), Ok(()));
    let mut bad = p.clone();
    bad.min_replicas = 11;
    assert_eq!(bad.validate().unwrap_err().field(), "spec.minReplicas");
    let mut bad = p.clone();
    bad.metrics.clear();
    assert_eq!(bad.validate().unwrap_err(), PolicyError::NoMetrics);
    let mut bad = p.clone();
    bad.metrics[0].target = -1.0;
    assert_eq!(bad.validate().unwrap_err().field(), "spec.metrics[0].target");
    let mut bad = p;
    bad.metrics = vec![MetricTarget::utilization(MetricType::Cpu, 0.0, 1.0)];
    assert_eq!(bad.validate().unwrap_err().field(), "spec.metrics[0].targetUtilization");
}

#[test]
fn hpa_defaults_are_valid_and_have_no_burst_mode() {
    let p = Policy::hpa_defaults(vec![rps_target(70.0)], 1, 10);
    assert_eq!(p.validate(), Ok(()));
    assert!(p.burst.is_none());
    assert_eq!(p.scale_down.stabilization_window, secs(300));
    assert_eq!(p.scale_up.cooldown, Duration::ZERO);
    assert_eq!(p.tolerance, 0.1);
}
