//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use weft_api::kinds::autoscaler::{AutoscalerSpec, Behavior, MetricSpec, TargetRef};
use weft_autoscale::{
    MetricTarget, MetricType, Observation, Policy, PolicyType, RatePolicy, Reading, Rules,
    SelectPolicy,
};

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn spec(min: i32, max: i32, metrics: Vec<MetricSpec>) -> AutoscalerSpec {
    AutoscalerSpec {
        target: TargetRef { kind: "Deployment".into(), name: "web".into() },
        min_replicas: min,
        max_replicas: max,
        metrics,
        behavior: Behavior::default(),
        vertical: Default::default(),
    }
}

pub fn metric(kind: MetricType, target: Option<f64>, utilization: Option<u32>) -> MetricSpec {
    MetricSpec { kind, target, target_utilization: utilization }
}

pub fn rps(target: f64) -> MetricSpec {
    metric(MetricType::Rps, Some(target), None)
}

/// A policy with every rule but the metric math switched off (no cooldowns, no stabilization,
/// rate policies too generous to bind, no burst mode), for testing one rule at a time.
pub fn plain(min: u32, max: u32, metrics: Vec<MetricTarget>) -> Policy {
    let free = |value| RatePolicy { kind: PolicyType::Percent, value, period: secs(1) };
    Policy {
        min_replicas: min,
        max_replicas: max,
        metrics,
        tolerance: 0.1,
        stable_window: secs(60),
        scale_up: Rules {
            cooldown: Duration::ZERO,
            stabilization_window: Duration::ZERO,
            policies: vec![free(100_000)],
            select: SelectPolicy::Max,
        },
        scale_down: Rules {
            cooldown: Duration::ZERO,
            stabilization_window: Duration::ZERO,
            policies: vec![free(100)],
            select: SelectPolicy::Max,
        },
        burst: None,
        scale_to_zero_grace: secs(30),
    }
}

pub fn rps_target(t: f64) -> MetricTarget {
    MetricTarget::value(MetricType::Rps, t)
}

pub fn conc_target(t: f64) -> MetricTarget {
    MetricTarget::value(MetricType::Concurrency, t)
}

/// `current` replicas, all ready and reporting `per` rps each over both windows.
pub fn rps_obs(current: u32, per: f64) -> Observation {
    Observation::new(current).with(MetricType::Rps, Reading::per_instance(current, per, per))
}

/// Same, with different stable and burst figures.
pub fn rps_obs2(current: u32, stable: f64, burst: f64) -> Observation {
    Observation::new(current).with(MetricType::Rps, Reading::per_instance(current, stable, burst))
}
