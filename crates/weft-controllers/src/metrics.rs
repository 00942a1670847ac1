//! The controllers' Prometheus metrics.
//!
//! - `weft_controller_reconciles_total{controller,result}`: result `ok`, `conflict` (someone
//!   wrote first; retried) or `error`.
//! - `weft_controller_reconcile_duration_seconds{controller}`
//! - `weft_controller_queue_depth{controller}`: keys waiting, due now or later.
//! - `weft_controller_writes_total{controller,action}`: objects created, updated, marked
//!   terminating, deleted.
//! - `weft_scheduler_attempts_total{result}`: `scheduled`, `unschedulable`, `conflict`, `error`.
//! - `weft_scheduler_scheduling_duration_seconds`: from first seeing an instance Pending to its
//!   binding being written.
//! - `weft_nodepool_nodes{pool}`: nodes a pool has (provisioning, ready and draining);
//!   `weft_nodepool_desired_nodes{pool}`: where it is heading.
//! - `weft_nodepool_scale_total{pool,direction}`: scale-ups (`up`, counted per node added)
//!   and scale-downs (`down`, per node drained and removed).
//! - `weft_autoscaler_decisions_total{namespace,autoscaler,direction,reason}`: replica changes
//!   the autoscaler made; `direction` is `up` or `down`, `reason` one of a fixed set (see
//!   [`reason_label`]), so the label stays bounded.
//! - `weft_autoscaler_desired_replicas{namespace,autoscaler}` and
//!   `weft_autoscaler_current_replicas{namespace,autoscaler}`: the latest decision's target and
//!   the deployment's replicas when it was taken.
//! - `weft_controllers_leader`: 1 while this process runs the controllers, 0 while it waits
//!   for the leadership (only set where leader election runs, or the controllers run at all).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use weft_autoscale::{Decision, Reason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub controller: &'static str,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolScaleLabels {
    pub pool: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AutoscalerLabels {
    pub namespace: String,
    pub autoscaler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub namespace: String,
    pub autoscaler: String,
    pub direction: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub result: &'static str,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ])
}

/// Every metric the controllers record, and a registry holding them.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<ControllerLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
    pub scheduling_attempts: Family<AttemptLabels, Counter>,
    pub scheduling_duration: Histogram,
    pub pool_nodes: Family<PoolLabels, Gauge>,
    pub pool_desired: Family<PoolLabels, Gauge>,
    pub pool_scale: Family<PoolScaleLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub desired_replicas: Family<AutoscalerLabels, Gauge>,
    pub current_replicas: Family<AutoscalerLabels, Gauge>,
    pub leader: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(latency_buckets),
            queue_depth: Family::default(),
            writes: Family::default(),
            scheduling_attempts: Family::default(),
            scheduling_duration: latency_buckets(),
            pool_nodes: Family::default(),
            pool_desired: Family::default(),
            pool_scale: Family::default(),
            decisions: Family::default(),
            desired_replicas: Family::default(),
            current_replicas: Family::default(),
            leader: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("weft");
        m.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// Registers every metric in another registry too (e.g. the binary's), sharing the values.
    pub fn register(&self, registry: &mut Registry) {
        let c = registry.sub_registry_with_prefix("controller");
        c.register("reconciles", "Reconciles by controller and result", self.reconciles.clone());
        c.register(
            "reconcile_duration_seconds",
            "Time to reconcile one key",
            self.reconcile_duration.clone(),
        );
        c.register("queue_depth", "Keys waiting in the work queue", self.queue_depth.clone());
        c.register("writes", "Objects written, by controller and action", self.writes.clone());
        let s = registry.sub_registry_with_prefix("scheduler");
        s.register("attempts", "Scheduling attempts by result", self.scheduling_attempts.clone());
        s.register(
            "scheduling_duration_seconds",
            "From first seeing an instance Pending to its binding being written",
            self.scheduling_duration.clone(),
        );
        let p = registry.sub_registry_with_prefix("nodepool");
        p.register(
            "nodes",
            "Nodes a pool has (provisioning, ready, draining)",
            self.pool_nodes.clone(),
        );
        p.register("desired_nodes", "Nodes a pool is heading for", self.pool_desired.clone());
        p.register("scale", "Nodes added (up) and removed (down) by pool", self.pool_scale.clone());
        let a = registry.sub_registry_with_prefix("autoscaler");
        a.register(
            "decisions",
            "Replica changes made by autoscalers, by direction and reason",
            self.decisions.clone(),
        );
        a.register(
            "desired_replicas",
            "Replicas the autoscaler's latest decision asks for",
            self.desired_replicas.clone(),
        );
        a.register(
            "current_replicas",
            "The target deployment's replicas at the latest decision",
            self.current_replicas.clone(),
        );
        registry.register(
            "controllers_leader",
            "1 while this process runs the controllers (leads), else 0",
            self.leader.clone(),
        );
    }

    /// The registry holding every metric (prefixed `weft_`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn queue_gauge(&self, controller: &'static str) -> Gauge {
        self.queue_depth.get_or_create(&ControllerLabels { controller }).clone()
    }

    pub fn reconciled(&self, controller: &'static str, result: &'static str, seconds: f64) {
        self.reconciles.get_or_create(&ResultLabels { controller, result }).inc();
        self.reconcile_duration.get_or_create(&ControllerLabels { controller }).observe(seconds);
    }

    pub fn wrote(&self, controller: &'static str, action: &'static str) {
        self.writes.get_or_create(&WriteLabels { controller, action }).inc();
    }

    /// Records an autoscaler's decision: the gauges always, the counter when it changes the
    /// replica count.
    pub fn decided(&self, namespace: &str, autoscaler: &str, decision: &Decision) {
        let key = AutoscalerLabels { namespace: namespace.into(), autoscaler: autoscaler.into() };
        self.desired_replicas.get_or_create(&key).set(i64::from(decision.replicas));
        self.current_replicas.get_or_create(&key).set(i64::from(decision.from));
        if decision.changed() {
            let direction = if decision.replicas > decision.from { "up" } else { "down" };
            self.decisions
                .get_or_create(&DecisionLabels {
                    namespace: key.namespace,
                    autoscaler: key.autoscaler,
                    direction,
                    reason: reason_label(&decision.reason),
                })
                .inc();
        }
    }

    /// Forgets a deleted autoscaler's gauges.
    pub fn forget_autoscaler(&self, namespace: &str, autoscaler: &str) {
        let key = AutoscalerLabels { namespace: namespace.into(), autoscaler: autoscaler.into() };
        self.desired_replicas.remove(&key);
        self.current_replicas.remove(&key);
    }

    pub fn attempt(&self, result: &'static str) {
        self.scheduling_attempts.get_or_create(&AttemptLabels { result }).inc();
    }
}

/// A decision's reason as a fixed label value (the reason's own text carries figures).
pub fn reason_label(reason: &Reason) -> &'static str {
    match reason {
        Reason::Poked => "activation",
        Reason::Idle => "idle",
        Reason::BelowMin(_) => "below-min",
        Reason::AboveMax(_) => "above-max",
        Reason::NoMetrics => "no-metrics",
        Reason::MissingMetrics { .. } => "missing-metrics",
        Reason::Steady { .. } => "steady",
        Reason::Metrics { limit: None, .. } => "metrics",
        Reason::Metrics { limit: Some(_), .. } => "metrics-limited",
        Reason::Burst { .. } => "burst",
        Reason::BurstHold { .. } => "burst-hold",
        Reason::Warming { .. } => "warming",
        Reason::ScaleToZero { .. } => "scale-to-zero",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_shared_with_other_registries() {
        let m = Metrics::new();
        m.reconciled("deployment", "ok", 0.002);
        m.attempt("scheduled");
        m.queue_gauge("endpoints").set(3);
        let text = m.encode();
        assert!(
            text.contains(
                "weft_controller_reconciles_total{controller=\"deployment\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("weft_scheduler_attempts_total{result=\"scheduled\"} 1"), "{text}");
        assert!(text.contains("weft_controller_queue_depth{controller=\"endpoints\"} 3"), "{text}");
        m.leader.set(1);
        let d = Decision {
            from: 1,
            replicas: 2,
            mode: weft_autoscale::Mode::Stable,
            reason: Reason::BelowMin(2),
        };
        m.decided("default", "web", &d);
        let text = m.encode();
        assert!(text.contains("weft_controllers_leader 1"), "{text}");
        assert!(
            text.contains("weft_autoscaler_decisions_total{namespace=\"default\",autoscaler=\"web\",direction=\"up\",reason=\"below-min\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "weft_autoscaler_desired_replicas{namespace=\"default\",autoscaler=\"web\"} 2"
            ),
            "{text}"
        );
        m.forget_autoscaler("default", "web");
        assert!(!m.encode().contains("weft_autoscaler_desired_replicas{"));
        let mut other = Registry::default();
        m.register(&mut other);
        m.attempt("scheduled");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &other).unwrap();
        assert!(
            out.contains("weft_scheduler_attempts_total{result=\"scheduled\"} 2")
                || out.contains("scheduler_attempts_total{result=\"scheduled\"} 2"),
            "{out}"
        );
    }
}
