//! Autoscaler: how many replicas a deployment should run, from its metrics.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::Condition;
use crate::quantity::Quantity;
use crate::validate::{self, Validator};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscalerSpec {
    pub target: TargetRef,
    /// 0 enables scale to zero.
    #[serde(default = "one")]
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// The largest proposal across metrics wins. Defaults to `{type: concurrency, target: 100}`.
    #[serde(default = "default_metrics")]
    pub metrics: Vec<MetricSpec>,
    #[serde(default)]
    pub behavior: Behavior,
    /// Vertical recommendations for the target's cpu and memory requests (always made; applied
    /// only in mode `auto`).
    #[serde(default)]
    pub vertical: VerticalSpec,
}

/// How the target's requests are sized from what its instances use (the VPA).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerticalSpec {
    /// `off` (default): recommend only, in status and `weft describe`; `auto`: write the
    /// recommended requests into the deployment's template (a rolling restart) when the
    /// current ones fall outside the recommended bounds.
    #[serde(default)]
    pub mode: VerticalMode,
    /// Usage samples lose half their weight every this long.
    #[serde(default = "default_half_life")]
    pub half_life: Duration,
    /// In mode `auto`: at most one rolling restart per this long.
    #[serde(default = "default_update_interval")]
    pub min_update_interval: Duration,
}

impl Default for VerticalSpec {
    fn default() -> VerticalSpec {
        VerticalSpec {
            mode: VerticalMode::Off,
            half_life: default_half_life(),
            min_update_interval: default_update_interval(),
        }
    }
}

fn default_half_life() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_update_interval() -> Duration {
    Duration::from_secs(600)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerticalMode {
    #[default]
    Off,
    Auto,
}

impl fmt::Display for VerticalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerticalMode::Off => "off",
            VerticalMode::Auto => "auto",
        })
    }
}

fn one() -> i32 {
    1
}

fn default_metrics() -> Vec<MetricSpec> {
    vec![MetricSpec {
        kind: MetricType::Concurrency,
        target: Some(100.0),
        target_utilization: None,
    }]
}

impl AutoscalerSpec {
    pub(crate) fn apply_defaults(&mut self) {
        self.behavior.apply_defaults();
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        v.check(
            self.target.kind == "Deployment",
            "spec.target.kind",
            "only Deployment can be scaled",
        );
        if let Err(e) = validate::dns_label(&self.target.name) {
            v.error("spec.target.name", e);
        }
        v.check(self.min_replicas >= 0, "spec.minReplicas", "must be at least 0");
        v.check(self.max_replicas >= 1, "spec.maxReplicas", "must be at least 1");
        v.check(
            self.max_replicas <= super::deployment::MAX_REPLICAS,
            "spec.maxReplicas",
            format!("must be at most {}", super::deployment::MAX_REPLICAS),
        );
        if self.min_replicas > self.max_replicas {
            v.error(
                "spec.minReplicas",
                format!("{} is more than maxReplicas {}", self.min_replicas, self.max_replicas),
            );
        }
        if self.metrics.is_empty() {
            v.error("spec.metrics", "needs at least one metric");
        }
        for (i, m) in self.metrics.iter().enumerate() {
            m.validate(v, &format!("spec.metrics[{i}]"));
        }
        self.behavior.validate(v);
        let vert = &self.vertical;
        v.check(!vert.half_life.is_zero(), "spec.vertical.halfLife", "must be more than 0s");
        if vert.mode == VerticalMode::Auto
            && let Some(m) =
                self.metrics.iter().find(|m| matches!(m.kind, MetricType::Cpu | MetricType::Memory))
        {
            v.error(
                "spec.vertical.mode",
                format!(
                    "auto changes the requests that the {} metric is measured against, so the \
                     two would chase each other; scale horizontally on concurrency or rps, or \
                     use vertical mode off",
                    m.kind
                ),
            );
        }
    }
}

/// The scaled object. Only deployments can be scaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default = "deployment_kind")]
    pub kind: String,
    pub name: String,
}

fn deployment_kind() -> String {
    "Deployment".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// In-flight requests per instance (`target`).
    Concurrency,
    /// Requests per second per instance (`target`).
    Rps,
    /// Cpu used as a percentage of the cpu request (`targetUtilization`).
    Cpu,
    /// Memory used as a percentage of the memory request (`targetUtilization`).
    Memory,
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricType::Concurrency => "concurrency",
            MetricType::Rps => "rps",
            MetricType::Cpu => "cpu",
            MetricType::Memory => "memory",
        })
    }
}

/// One signal and its per-instance target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricSpec {
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// For concurrency and rps: the value per instance to aim for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// For cpu and memory: percent of the request to aim for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization: Option<u32>,
}

impl MetricSpec {
    fn validate(&self, v: &mut Validator, p: &str) {
        match self.kind {
            MetricType::Concurrency | MetricType::Rps => {
                match self.target {
                    None => v.error(
                        format!("{p}.target"),
                        format!("is required for type {}", self.kind),
                    ),
                    Some(t) if !(t.is_finite() && t > 0.0) => {
                        v.error(format!("{p}.target"), "must be more than 0")
                    }
                    _ => {}
                }
                if self.target_utilization.is_some() {
                    v.error(
                        format!("{p}.targetUtilization"),
                        format!("does not apply to type {}; use target", self.kind),
                    );
                }
            }
            MetricType::Cpu | MetricType::Memory => {
                match self.target_utilization {
                    None => v.error(
                        format!("{p}.targetUtilization"),
                        format!("is required for type {}", self.kind),
                    ),
                    Some(0) => v.error(format!("{p}.targetUtilization"), "must be more than 0"),
                    Some(u) if u > 1000 => {
                        v.error(format!("{p}.targetUtilization"), "must be at most 1000 (percent)")
                    }
                    _ => {}
                }
                if self.target.is_some() {
                    v.error(
                        format!("{p}.target"),
                        format!("does not apply to type {}; use targetUtilization", self.kind),
                    );
                }
            }
        }
    }
}

/// How fast to move, and how to avoid flapping. Every field has a default (DESIGN.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Behavior {
    /// Metric/target ratios within 1 ± tolerance do not scale.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// The window metrics are averaged over for normal decisions.
    #[serde(default = "default_stable_window")]
    pub stable_window: Duration,
    #[serde(default)]
    pub scale_up: ScaleRules,
    #[serde(default)]
    pub scale_down: ScaleRules,
    #[serde(default)]
    pub panic: Panic,
    /// With minReplicas 0: how long without traffic before scaling to zero.
    #[serde(default = "default_zero_grace")]
    pub scale_to_zero_grace_period: Duration,
}

fn default_tolerance() -> f64 {
    0.1
}
fn default_stable_window() -> Duration {
    Duration::from_secs(60)
}
fn default_zero_grace() -> Duration {
    Duration::from_secs(30)
}

impl Default for Behavior {
    fn default() -> Behavior {
        let mut b = Behavior {
            tolerance: default_tolerance(),
            stable_window: default_stable_window(),
            scale_up: ScaleRules::default(),
            scale_down: ScaleRules::default(),
            panic: Panic::default(),
            scale_to_zero_grace_period: default_zero_grace(),
        };
        b.apply_defaults();
        b
    }
}

impl Behavior {
    /// Scale-up and scale-down share a shape but not their defaults, so the defaults are filled
    /// here rather than by serde.
    pub(crate) fn apply_defaults(&mut self) {
        let up = &mut self.scale_up;
        up.cooldown.get_or_insert(Duration::from_secs(180));
        up.stabilization_window.get_or_insert(Duration::ZERO);
        up.policies.get_or_insert_with(|| {
            vec![
                ScalePolicy {
                    kind: PolicyType::Percent,
                    value: 100,
                    period: Duration::from_secs(15),
                },
                ScalePolicy {
                    kind: PolicyType::Instances,
                    value: 4,
                    period: Duration::from_secs(15),
                },
            ]
        });
        up.select_policy.get_or_insert(SelectPolicy::Max);
        let down = &mut self.scale_down;
        down.cooldown.get_or_insert(Duration::from_secs(300));
        down.stabilization_window.get_or_insert(Duration::from_secs(300));
        down.policies.get_or_insert_with(|| {
            vec![ScalePolicy {
                kind: PolicyType::Percent,
                value: 100,
                period: Duration::from_secs(15),
            }]
        });
        down.select_policy.get_or_insert(SelectPolicy::Max);
    }

    fn validate(&self, v: &mut Validator) {
        let p = "spec.behavior";
        let t = self.tolerance;
        v.check(
            t.is_finite() && (0.0..1.0).contains(&t),
            format!("{p}.tolerance"),
            "must be at least 0 and less than 1",
        );
        v.check(!self.stable_window.is_zero(), format!("{p}.stableWindow"), "must be more than 0s");
        for (rules, name) in [(&self.scale_up, "scaleUp"), (&self.scale_down, "scaleDown")] {
            for (i, pol) in rules.policies.iter().flatten().enumerate() {
                let f = format!("{p}.{name}.policies[{i}]");
                v.check(pol.value >= 1, format!("{f}.value"), "must be at least 1");
                v.check(!pol.period.is_zero(), format!("{f}.period"), "must be more than 0s");
            }
            if rules.policies.as_ref().is_some_and(Vec::is_empty)
                && rules.select_policy != Some(SelectPolicy::Disabled)
            {
                v.error(
                    format!("{p}.{name}.policies"),
                    "needs at least one policy (or selectPolicy: Disabled)",
                );
            }
        }
        let th = self.panic.threshold;
        v.check(
            th.is_finite() && th > 1.0,
            format!("{p}.panic.threshold"),
            "must be more than 1.0",
        );
        v.check(!self.panic.window.is_zero(), format!("{p}.panic.window"), "must be more than 0s");
        v.check(
            self.panic.window <= self.stable_window,
            format!("{p}.panic.window"),
            format!(
                "{} is longer than the stable window {}",
                self.panic.window, self.stable_window
            ),
        );
    }
}

/// Limits on one direction of scaling. Unset fields take the direction's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleRules {
    /// After a scale event in this direction, no further one until this has passed
    /// (defaults: 3m up, 5m down). Burst mode bypasses the scale-up cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
    /// Act on the most conservative recommendation over this window (defaults: 0s up, 5m down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<ScalePolicy>>,
    /// Which policy wins when several apply: `Max` (default), `Min`, or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
}

/// At most `value` instances (or percent of current) per `period`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalePolicy {
    #[serde(rename = "type")]
    pub kind: PolicyType,
    pub value: u32,
    pub period: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PolicyType {
    Percent,
    Instances,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// Burst mode: when the short window asks for at least `threshold` × current replicas, scale up
/// at once and hold off scaling down until a stable window has passed calmly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Panic {
    #[serde(default = "default_panic_window")]
    pub window: Duration,
    #[serde(default = "default_panic_threshold")]
    pub threshold: f64,
}

fn default_panic_window() -> Duration {
    Duration::from_secs(6)
}
fn default_panic_threshold() -> f64 {
    2.0
}

impl Default for Panic {
    fn default() -> Panic {
        Panic { window: default_panic_window(), threshold: default_panic_threshold() }
    }
}

/// What the autoscaler observed and decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscalerStatus {
    #[serde(default)]
    pub current_replicas: i32,
    #[serde(default)]
    pub desired_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// `stable` or `panic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current_metrics: Vec<MetricValue>,
    /// Most recent first, bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The vertical recommendation and what was done with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalStatus>,
}

/// Per-instance requests recommended from usage: below `lower` the instances are starved,
/// above `upper` they waste.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerticalStatus {
    pub mode: VerticalMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<RecommendedRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<RecommendedRange>,
    /// Memory was raised after an instance was killed for running out of memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_bumped: bool,
    /// When mode `auto` last wrote requests into the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// One line for people: collecting, within bounds, applied, or why not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecommendedRange {
    pub lower: Quantity,
    pub target: Quantity,
    pub upper: Quantity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricValue {
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Per-instance average over the stable window.
    pub current: f64,
    pub target: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Decision {
    pub time: String,
    pub from: i32,
    pub to: i32,
    pub reason: String,
}
