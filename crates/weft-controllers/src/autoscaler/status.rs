//! An autoscaler's status: figures, recent decisions and the `AbleToScale` and `ScalingActive`
//! conditions (named as the Kubernetes HPA's, so people know where to look).

use std::time::SystemTime;

use weft_api::kinds::autoscaler::{AutoscalerStatus, Decision as DecisionRecord, MetricValue};
use weft_api::meta::Condition;
use weft_autoscale::{Decision, Observation, Policy, Reason};

use crate::time;

pub const ABLE_TO_SCALE: &str = "AbleToScale";
pub const SCALING_ACTIVE: &str = "ScalingActive";
/// Decisions kept in `status.decisions` (newest first).
pub const MAX_DECISIONS: usize = 10;

pub fn condition(kind: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        kind: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time: None,
    }
}

/// `next` with each condition's transition time carried over from `previous` when its status
/// did not flip.
pub fn with_transitions(
    previous: &[Condition],
    next: Vec<Condition>,
    now: SystemTime,
) -> Vec<Condition> {
    next.into_iter()
        .map(|mut c| {
            c.last_transition_time = match previous.iter().find(|p| p.kind == c.kind) {
                Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                    p.last_transition_time.clone()
                }
                _ => Some(time::format(now)),
            };
            c
        })
        .collect()
}

/// Per-instance averages over the stable window, in the spec's units: in-flight requests and
/// requests/s as such, cpu and memory in percent of the request (as `targetUtilization`).
pub fn current_metrics(obs: &Observation, policy: &Policy) -> Vec<MetricValue> {
    policy
        .metrics
        .iter()
        .filter_map(|t| {
            let r = obs.reading(t.metric)?;
            let per_instance = r.stable / f64::from(r.reporting);
            let (current, target) = match t.request {
                Some(req) => (100.0 * per_instance / req, 100.0 * t.target / req),
                None => (per_instance, t.target),
            };
            Some(MetricValue { kind: t.metric, current: round(current), target: round(target) })
        })
        .collect()
}

/// Three decimals: enough to read, and small jitter does not make a new status.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The `ScalingActive` condition for a decision.
pub fn scaling_active(d: &Decision, deployment: &str) -> Condition {
    match d.reason {
        Reason::NoMetrics => condition(
            SCALING_ACTIVE,
            false,
            "NoMetrics",
            format!(
                "no ready instance of deployment {deployment} reported the metrics the policy \
                 uses (scrapes failing or nothing ready); holding at {}",
                d.from
            ),
        ),
        Reason::Idle => condition(SCALING_ACTIVE, false, "ScaledToZero", d.reason.to_string()),
        Reason::MissingMetrics { .. } => {
            condition(SCALING_ACTIVE, true, "MissingMetrics", d.reason.to_string())
        }
        Reason::Warming { .. } => condition(SCALING_ACTIVE, true, "Warming", d.reason.to_string()),
        _ => condition(SCALING_ACTIVE, true, "ValidMetricFound", d.reason.to_string()),
    }
}

/// Puts a scale event at the front of `decisions`, keeping [`MAX_DECISIONS`].
pub fn record(decisions: &mut Vec<DecisionRecord>, d: &Decision, at: SystemTime) {
    decisions.insert(
        0,
        DecisionRecord {
            time: time::format(at),
            from: d.from as i32,
            to: d.replicas as i32,
            reason: d.reason.to_string(),
        },
    );
    decisions.truncate(MAX_DECISIONS);
}

/// Whether `next` differs from `current` in more than figures and messages (which move every
/// second and are written at most every status period).
pub fn significant(current: &AutoscalerStatus, next: &AutoscalerStatus) -> bool {
    let strip = |s: &AutoscalerStatus| {
        let mut s = s.clone();
        s.current_metrics.clear();
        for c in &mut s.conditions {
            c.message.clear();
            c.last_transition_time = None;
        }
        s
    };
    strip(current) != strip(next)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weft_autoscale::{MetricType, Mode, Reading};

    use super::*;

    #[test]
    fn decisions_are_bounded_newest_first() {
        let mut list = Vec::new();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for i in 0..15u32 {
            let d = Decision {
                from: i,
                replicas: i + 1,
                mode: Mode::Stable,
                reason: Reason::BelowMin(1),
            };
            record(&mut list, &d, t);
        }
        assert_eq!(list.len(), MAX_DECISIONS);
        assert_eq!((list[0].from, list[0].to), (14, 15));
        assert_eq!(list[0].reason, "below minReplicas 1");
    }

    #[test]
    fn figures_alone_are_not_significant() {
        let a = AutoscalerStatus {
            current_replicas: 2,
            desired_replicas: 2,
            conditions: vec![condition(SCALING_ACTIVE, true, "ValidMetricFound", "rps 1.00")],
            ..AutoscalerStatus::default()
        };
        let mut b = a.clone();
        b.conditions[0].message = "rps 2.00".into();
        b.current_metrics.push(MetricValue { kind: MetricType::Rps, current: 2.0, target: 5.0 });
        assert!(!significant(&a, &b));
        b.desired_replicas = 3;
        assert!(significant(&a, &b));
    }

    #[test]
    fn utilisation_reads_in_percent() {
        let spec: weft_api::kinds::autoscaler::AutoscalerSpec = serde_json::from_value(
            serde_json::json!({"target": {"name": "web"}, "maxReplicas": 5,
                "metrics": [{"type": "cpu", "targetUtilization": 50}, {"type": "rps", "target": 10}]}),
        )
        .unwrap();
        let req = weft_autoscale::Requests { cpu_cores: Some(0.5), memory_bytes: None };
        let policy = Policy::from_spec(&spec, req).unwrap();
        let obs = Observation::new(2)
            .with(MetricType::Cpu, Reading::per_instance(2, 0.125, 0.125))
            .with(MetricType::Rps, Reading::per_instance(2, 4.0, 4.0));
        let m = current_metrics(&obs, &policy);
        assert_eq!(m[0].kind, MetricType::Cpu);
        assert_eq!((m[0].current, m[0].target), (25.0, 50.0));
        assert_eq!((m[1].current, m[1].target), (4.0, 10.0));
    }
}
