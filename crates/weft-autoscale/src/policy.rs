//! What the autoscaler aims for and how fast it may move: an [`AutoscalerSpec`] with every
//! default resolved and every target in the units the metrics arrive in.

use std::fmt;
use std::time::Duration;

use weft_api::kinds::autoscaler::{AutoscalerSpec, Behavior, MetricType, PolicyType, ScaleRules};
use weft_api::kinds::autoscaler::{ScalePolicy, SelectPolicy};
use weft_api::kinds::template::ResourceList;

/// A resolved autoscaling policy. Build one with [`Policy::from_spec`]; the fields are public so
/// that other policies (such as [`Policy::hpa_defaults`]) can be written out directly, and
/// [`Policy::validate`] checks any of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// 0 enables scale to zero.
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// The largest proposal across these wins.
    pub metrics: Vec<MetricTarget>,
    /// Usage/target ratios within `1 ± tolerance` do not scale.
    pub tolerance: f64,
    /// Metrics are averaged over this window for normal decisions; burst mode ends after a
    /// stable window without a new burst.
    pub stable_window: Duration,
    pub scale_up: Rules,
    pub scale_down: Rules,
    /// Burst ("panic") mode; `None` disables it.
    pub burst: Option<Burst>,
    /// With `min_replicas` 0: how long after the stable window first reads no traffic before
    /// scaling to zero.
    pub scale_to_zero_grace: Duration,
}

/// One signal and the value per instance to aim for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricTarget {
    pub metric: MetricType,
    /// Per instance, in the units samples arrive in: in-flight requests (concurrency),
    /// requests/s (rps), cores (cpu) or bytes (memory).
    pub target: f64,
    /// For a `targetUtilization` metric: the per-instance request `target` is a percentage of
    /// (cores or bytes), so reasons can speak in percent.
    pub request: Option<f64>,
}

impl MetricTarget {
    /// A target value per instance (for memory, bytes).
    pub fn value(metric: MetricType, target: f64) -> MetricTarget {
        MetricTarget { metric, target, request: None }
    }

    /// A utilisation target: `percent` of `request` (cores or bytes) per instance.
    pub fn utilization(metric: MetricType, percent: f64, request: f64) -> MetricTarget {
        MetricTarget { metric, target: request * percent / 100.0, request: Some(request) }
    }
}

/// Limits on one direction of scaling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// After a scale event in this direction, no further one until this has passed.
    pub cooldown: Duration,
    /// Act on the most conservative recommendation over this window.
    pub stabilization_window: Duration,
    pub policies: Vec<RatePolicy>,
    pub select: SelectPolicy,
}

/// At most `value` instances (or percent of the replicas at the period's start) per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePolicy {
    pub kind: PolicyType,
    pub value: u32,
    pub period: Duration,
}

/// Burst mode: when the short window proposes at least `threshold` × current replicas, scale up
/// at once and do not scale down until a stable window has passed without another burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burst {
    pub window: Duration,
    pub threshold: f64,
}

/// What one instance of the target deployment requests, for utilisation targets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Requests {
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
}

impl Requests {
    /// From a deployment template's `resources.requests`.
    pub fn from_resources(requests: &ResourceList) -> Requests {
        let cpu = requests.cpu_millis();
        let mem = requests.memory_bytes();
        Requests {
            cpu_cores: (cpu > 0).then(|| cpu as f64 / 1000.0),
            memory_bytes: (mem > 0).then_some(mem as f64),
        }
    }
}

/// A policy that cannot be used, naming the spec field at fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("spec.minReplicas: {min} is more than maxReplicas {max}")]
    MinAboveMax { min: i64, max: i64 },
    #[error("spec.metrics: needs at least one metric")]
    NoMetrics,
    #[error("{field}: must be more than 0, got {value}")]
    NotPositive { field: String, value: f64 },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl PolicyError {
    /// The spec field at fault, e.g. `spec.metrics[0].target`.
    pub fn field(&self) -> &str {
        match self {
            PolicyError::MinAboveMax { .. } => "spec.minReplicas",
            PolicyError::NoMetrics => "spec.metrics",
            PolicyError::NotPositive { field, .. } | PolicyError::Invalid { field, .. } => field,
        }
    }

    fn invalid(field: impl Into<String>, message: impl fmt::Display) -> PolicyError {
        PolicyError::Invalid { field: field.into(), message: message.to_string() }
    }
}

impl Policy {
    /// Resolves a spec: fills the defaults weft-api documents (whether or not the spec went
    /// through the api server's defaulting), turns utilisation targets into per-instance values
    /// using `requests`, and validates the result.
    pub fn from_spec(spec: &AutoscalerSpec, requests: Requests) -> Result<Policy, PolicyError> {
        if spec.min_replicas < 0 {
            return Err(PolicyError::invalid("spec.minReplicas", "must be at least 0"));
        }
        if spec.max_replicas < 1 {
            return Err(PolicyError::invalid("spec.maxReplicas", "must be at least 1"));
        }
        if spec.min_replicas > spec.max_replicas {
            return Err(PolicyError::MinAboveMax {
                min: spec.min_replicas.into(),
                max: spec.max_replicas.into(),
            });
        }
        let mut metrics = Vec::with_capacity(spec.metrics.len());
        for (i, m) in spec.metrics.iter().enumerate() {
            let p = format!("spec.metrics[{i}]");
            let t = match m.kind {
                MetricType::Concurrency | MetricType::Rps => {
                    if m.target_utilization.is_some() {
                        return Err(PolicyError::invalid(
                            format!("{p}.targetUtilization"),
                            format_args!("does not apply to type {}; use target", m.kind),
                        ));
                    }
                    let t = m.target.ok_or_else(|| {
                        PolicyError::invalid(
                            format!("{p}.target"),
                            format_args!("is required for type {}", m.kind),
                        )
                    })?;
                    MetricTarget::value(m.kind, t)
                }
                MetricType::Cpu | MetricType::Memory => {
                    if m.target.is_some() {
                        return Err(PolicyError::invalid(
                            format!("{p}.target"),
                            format_args!(
                                "does not apply to type {}; use targetUtilization",
                                m.kind
                            ),
                        ));
                    }
                    let u = m.target_utilization.ok_or_else(|| {
                        PolicyError::invalid(
                            format!("{p}.targetUtilization"),
                            format_args!("is required for type {}", m.kind),
                        )
                    })?;
                    if u == 0 {
                        return Err(PolicyError::NotPositive {
                            field: format!("{p}.targetUtilization"),
                            value: 0.0,
                        });
                    }
                    let (request, name) = match m.kind {
                        MetricType::Cpu => (requests.cpu_cores, "cpu"),
                        _ => (requests.memory_bytes, "memory"),
                    };
                    let request = request.filter(|r| *r > 0.0).ok_or_else(|| {
                        PolicyError::invalid(
                            format!("{p}.targetUtilization"),
                            format_args!(
                                "the target deployment requests no {name}, so there is \
                                 nothing to take a percentage of (set resources.requests.{name})"
                            ),
                        )
                    })?;
                    MetricTarget::utilization(m.kind, f64::from(u), request)
                }
            };
            metrics.push(t);
        }
        let b = &spec.behavior;
        let defaults = Behavior::default();
        let policy = Policy {
            min_replicas: spec.min_replicas as u32,
            max_replicas: spec.max_replicas as u32,
            metrics,
            tolerance: b.tolerance,
            stable_window: b.stable_window.as_std(),
            scale_up: rules(&b.scale_up, &defaults.scale_up),
            scale_down: rules(&b.scale_down, &defaults.scale_down),
            burst: Some(Burst { window: b.panic.window.as_std(), threshold: b.panic.threshold }),
            scale_to_zero_grace: b.scale_to_zero_grace_period.as_std(),
        };
        policy.validate()?;
        Ok(policy)
    }

    /// The Kubernetes HPA's defaults (autoscaling/v2), as a baseline to compare with: no burst
    /// mode, no cooldowns, tolerance 0.1, scale-up `100%/15s` or `4 pods/15s` (the larger),
    /// scale-down `100%/15s` after a 300 s stabilization window. `stable_window` stands for
    /// the metrics pipeline's resolution (metrics-server's default, 15 s). The HPA's 15 s sync
    /// period is the caller's loop (see [`crate::sim::Contender::hpa`]).
    pub fn hpa_defaults(
        metrics: Vec<MetricTarget>,
        min_replicas: u32,
        max_replicas: u32,
    ) -> Policy {
        let per15 = |kind, value| RatePolicy { kind, value, period: Duration::from_secs(15) };
        Policy {
            min_replicas,
            max_replicas,
            metrics,
            tolerance: 0.1,
            stable_window: Duration::from_secs(15),
            scale_up: Rules {
                cooldown: Duration::ZERO,
                stabilization_window: Duration::ZERO,
                policies: vec![per15(PolicyType::Percent, 100), per15(PolicyType::Instances, 4)],
                select: SelectPolicy::Max,
            },
            scale_down: Rules {
                cooldown: Duration::ZERO,
                stabilization_window: Duration::from_secs(300),
                policies: vec![per15(PolicyType::Percent, 100)],
                select: SelectPolicy::Max,
            },
            burst: None,
            scale_to_zero_grace: Duration::ZERO,
        }
    }

    /// Checks the policy, naming the spec field at fault.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_replicas < 1 {
            return Err(PolicyError::invalid("spec.maxReplicas", "must be at least 1"));
        }
        if self.min_replicas > self.max_replicas {
            return Err(PolicyError::MinAboveMax {
                min: self.min_replicas.into(),
                max: self.max_replicas.into(),
            });
        }
        if self.metrics.is_empty() {
            return Err(PolicyError::NoMetrics);
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let field = match m.request {
                Some(_) => format!("spec.metrics[{i}].targetUtilization"),
                None => format!("spec.metrics[{i}].target"),
            };
            if !(m.target.is_finite() && m.target > 0.0) {
                return Err(PolicyError::NotPositive { field, value: m.target });
            }
            if let Some(r) = m.request
                && !(r.is_finite() && r > 0.0)
            {
                return Err(PolicyError::invalid(field, "the request it is a percentage of is 0"));
            }
            if self.metrics[..i].iter().any(|o| o.metric == m.metric) {
                return Err(PolicyError::invalid(
                    format!("spec.metrics[{i}].type"),
                    format_args!("{} is listed twice", m.metric),
                ));
            }
        }
        let t = self.tolerance;
        if !(t.is_finite() && (0.0..1.0).contains(&t)) {
            return Err(PolicyError::invalid(
                "spec.behavior.tolerance",
                format_args!("must be at least 0 and less than 1, got {t}"),
            ));
        }
        if self.stable_window.is_zero() {
            return Err(PolicyError::invalid("spec.behavior.stableWindow", "must be more than 0s"));
        }
        for (r, name) in [(&self.scale_up, "scaleUp"), (&self.scale_down, "scaleDown")] {
            if r.policies.is_empty() && r.select != SelectPolicy::Disabled {
                return Err(PolicyError::invalid(
                    format!("spec.behavior.{name}.policies"),
                    "needs at least one policy (or selectPolicy: Disabled)",
                ));
            }
            for (i, p) in r.policies.iter().enumerate() {
                let f = format!("spec.behavior.{name}.policies[{i}]");
                if p.value == 0 {
                    return Err(PolicyError::NotPositive {
                        field: format!("{f}.value"),
                        value: 0.0,
                    });
                }
                if p.period.is_zero() {
                    return Err(PolicyError::invalid(
                        format!("{f}.period"),
                        "must be more than 0s",
                    ));
                }
            }
        }
        if let Some(b) = &self.burst {
            if !(b.threshold.is_finite() && b.threshold > 1.0) {
                return Err(PolicyError::invalid(
                    "spec.behavior.panic.threshold",
                    format_args!("must be more than 1.0, got {}", b.threshold),
                ));
            }
            if b.window.is_zero() {
                return Err(PolicyError::invalid(
                    "spec.behavior.panic.window",
                    "must be more than 0s",
                ));
            }
            if b.window > self.stable_window {
                return Err(PolicyError::invalid(
                    "spec.behavior.panic.window",
                    "is longer than the stable window",
                ));
            }
        }
        Ok(())
    }

    /// The target for `metric`, if the policy scales on it.
    pub fn target(&self, metric: MetricType) -> Option<&MetricTarget> {
        self.metrics.iter().find(|m| m.metric == metric)
    }

    /// The window burst proposals are computed over (the stable window without burst mode).
    pub fn burst_window(&self) -> Duration {
        self.burst.map_or(self.stable_window, |b| b.window)
    }

    /// The lowest replica count metrics may drive a running deployment to (scale to zero is a
    /// rule of its own).
    pub(crate) fn floor(&self) -> u32 {
        self.min_replicas.max(1).min(self.max_replicas)
    }
}

/// Fills a direction's unset fields from that direction's weft-api defaults.
fn rules(r: &ScaleRules, d: &ScaleRules) -> Rules {
    let pick = |a: Option<weft_api::duration::Duration>,
                b: Option<weft_api::duration::Duration>| {
        a.or(b).unwrap_or_default().as_std()
    };
    let conv =
        |p: &ScalePolicy| RatePolicy { kind: p.kind, value: p.value, period: p.period.as_std() };
    Rules {
        cooldown: pick(r.cooldown, d.cooldown),
        stabilization_window: pick(r.stabilization_window, d.stabilization_window),
        policies: r
            .policies
            .as_ref()
            .or(d.policies.as_ref())
            .map_or_else(Vec::new, |v| v.iter().map(conv).collect()),
        select: r.select_policy.or(d.select_policy).unwrap_or(SelectPolicy::Max),
    }
}
