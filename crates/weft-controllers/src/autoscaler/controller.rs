//! The autoscaler controller's I/O. One loop for all autoscalers, woken by each scrape round
//! (about once a second): decisions are cheap and writes rare, and one loop keeps each
//! autoscaler's windows and memory in one place without locks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use weft_api::kinds::autoscaler::{AutoscalerStatus, Decision as DecisionRecord};
use weft_api::{Autoscaler, Deployment, ErrorCode};
use weft_autoscale::{Decision, MetricType, Policy, Requests, ScalerState, Time, Windows, decide};

use weft_api::kinds::service::ACTIVATION_ANNOTATION;

use super::status::{self, ABLE_TO_SCALE, SCALING_ACTIVE, condition};
use super::vertical::Vertical;
use crate::deployment::plan::DEPLOYMENT_LABEL;
use crate::error::Error;
use crate::runtime::{BY_DEPLOYMENT, Context, ObjectKey};

pub const NAME: &str = "autoscaler";

/// An activation request older than this is history, not a request (a controller starting
/// next to an old annotation must not scale a deployment up from zero for it).
const ACTIVATION_FRESH: Duration = Duration::from_secs(30);

/// Tries of one replica write against concurrent writers (409) before leaving it to the next
/// round, which decides again from what it then sees.
const SCALE_TRIES: usize = 5;

/// What the controller remembers about one autoscaler between rounds.
struct Scaler {
    uid: Option<String>,
    windows: Windows,
    /// The windows' (stable, burst) lengths, to rebuild them when the policy changes them.
    shape: (Duration, Duration),
    state: ScalerState,
    /// The newest sample time recorded per instance, (traffic, resources): the store keeps the
    /// latest figures, and a figure must enter the windows once.
    recorded: HashMap<String, (Time, Time)>,
    /// Kept here as well as in status: a status write that fails must not lose a decision.
    decisions: Vec<DecisionRecord>,
    last_scale_time: Option<String>,
    /// When status was last written (figures and messages refresh at most this often).
    written_at: Option<Time>,
    /// The newest activation request (a Service annotation) already acted on.
    activation_seen: Option<SystemTime>,
    vertical: Vertical,
}

impl Scaler {
    fn new(a: &Autoscaler, policy: &Policy) -> Scaler {
        let st = a.status.clone().unwrap_or_default();
        Scaler {
            uid: a.metadata.uid.clone(),
            windows: Windows::for_policy(policy),
            shape: (policy.stable_window, policy.burst_window()),
            state: ScalerState::new(),
            recorded: HashMap::new(),
            decisions: st.decisions,
            last_scale_time: st.last_scale_time,
            written_at: None,
            activation_seen: None,
            vertical: Vertical::new(
                &a.spec.vertical,
                st.vertical
                    .as_ref()
                    .and_then(|v| v.last_update_time.as_deref())
                    .and_then(crate::time::parse),
            ),
        }
    }
}

/// Runs until the task is dropped.
pub(crate) async fn run(ctx: Arc<Context>) {
    let mut scalers: HashMap<ObjectKey, Scaler> = HashMap::new();
    // A round follows each scrape round; the timer only matters if scraping stalls, so that
    // status still says so (metrics then read as missing).
    let fallback = ctx.options.scrape_interval.max(Duration::from_millis(50)) * 3;
    loop {
        tokio::select! {
            () = ctx.autoscale_tick.notified() => {}
            () = tokio::time::sleep(fallback) => {}
        }
        let list = ctx.autoscalers.list();
        scalers.retain(|k, _| {
            let kept = list.iter().any(|a| ObjectKey::of(&**a) == *k);
            if !kept {
                ctx.metrics.forget_autoscaler(&k.namespace, &k.name);
            }
            kept
        });
        for a in list {
            let key = ObjectKey::of(&*a);
            let start = std::time::Instant::now();
            let outcome = match reconcile(&ctx, &a, &mut scalers).await {
                Ok(()) => "ok",
                Err(e) if e.is_conflict() => "conflict",
                Err(e) => {
                    tracing::warn!(controller = NAME, %key, error = %e, "autoscaling failed; retrying next round");
                    "error"
                }
            };
            ctx.metrics.reconciled(NAME, outcome, start.elapsed().as_secs_f64());
        }
    }
}

async fn reconcile(
    ctx: &Context,
    a: &Autoscaler,
    scalers: &mut HashMap<ObjectKey, Scaler>,
) -> Result<(), Error> {
    let key = ObjectKey::of(a);
    let now = ctx.live.now();
    let wall = SystemTime::now();
    let ns = key.namespace.clone();
    let target = a.spec.target.name.clone();
    let current = a.status.clone().unwrap_or_default();
    let dkey = ObjectKey::new(&ns, &target);

    let Some(d) = ctx.deployments.get(&dkey) else {
        // Nothing to scale: say so, forget what was learnt (a new deployment of that name
        // starts afresh), and touch nothing else.
        scalers.remove(&key);
        let msg = format!("the target deployment {target} does not exist in namespace {ns}");
        let mut next = current.clone();
        next.current_metrics.clear();
        next.conditions = vec![
            condition(ABLE_TO_SCALE, false, "TargetNotFound", msg.clone()),
            condition(SCALING_ACTIVE, false, "TargetNotFound", msg),
        ];
        return write_status(ctx, a, &current, next, None, now, wall).await.map(drop);
    };
    let requests = Requests::from_resources(&d.spec.template.resources.requests);
    let policy = match Policy::from_spec(&a.spec, requests) {
        Ok(p) => p,
        Err(e) => {
            scalers.remove(&key);
            let msg = format!("the spec cannot be used: {e}");
            let mut next = current.clone();
            next.current_metrics.clear();
            next.current_replicas = d.spec.replicas;
            next.conditions = vec![
                condition(ABLE_TO_SCALE, true, "TargetFound", format!("deployment {target}")),
                condition(SCALING_ACTIVE, false, "InvalidSpec", msg),
            ];
            return write_status(ctx, a, &current, next, None, now, wall).await.map(drop);
        }
    };

    let scaler = scalers.entry(key.clone()).or_insert_with(|| Scaler::new(a, &policy));
    if scaler.uid != a.metadata.uid {
        // Deleted and created again under the same name: a different autoscaler.
        *scaler = Scaler::new(a, &policy);
    }
    let shape = (policy.stable_window, policy.burst_window());
    if scaler.shape != shape {
        scaler.windows = Windows::for_policy(&policy);
        scaler.shape = shape;
        scaler.recorded.clear();
    }

    // Aggregate: the latest figures of the target's instances into the windows.
    let instances: Vec<_> = ctx
        .instances
        .by_index(BY_DEPLOYMENT, &dkey.to_string())
        .into_iter()
        .filter(|i| !i.spec.terminating)
        .collect();
    let mut listed = Vec::with_capacity(instances.len());
    for i in &instances {
        let name = i.metadata.name.clone();
        let ready = i
            .status
            .as_ref()
            .is_some_and(|s| s.ready && s.phase == weft_api::kinds::instance::Phase::Running);
        if let Some(f) = ctx.live.get(&ObjectKey::of(&**i)) {
            let seen = scaler.recorded.entry(name.clone()).or_default();
            if let Some(t) = &f.traffic
                && t.at > seen.0
            {
                seen.0 = t.at;
                scaler.windows.record(&name, MetricType::Concurrency, t.at, t.in_flight);
                if let Some(rps) = t.rps {
                    scaler.windows.record(&name, MetricType::Rps, t.at, rps);
                }
            }
            if let Some(r) = &f.resources
                && r.at > seen.1
            {
                seen.1 = r.at;
                if let Some(c) = r.cpu_cores {
                    scaler.windows.record(&name, MetricType::Cpu, r.at, c);
                    scaler.vertical.record_cpu(r.at, c);
                }
                if let Some(m) = r.memory_bytes {
                    scaler.windows.record(&name, MetricType::Memory, r.at, m);
                    scaler.vertical.record_memory(r.at, m);
                }
            }
        }
        listed.push((name, ready));
    }
    scaler.windows.prune(now);
    scaler.recorded.retain(|n, _| listed.iter().any(|(l, _)| l == n));
    let replicas = d.spec.replicas.max(0) as u32;
    let requested = activation_requested(ctx, &d);
    let poked = requested.is_some_and(|t| {
        scaler.activation_seen.is_none_or(|seen| t > seen)
            && wall.duration_since(t).unwrap_or_default() < ACTIVATION_FRESH
    });
    if poked {
        scaler.activation_seen = requested;
    }
    let obs =
        scaler.windows.observe(now, replicas, listed.iter().map(|(n, r)| (n.as_str(), *r)), poked);

    // Decide, then act.
    let decision = decide(&mut scaler.state, &obs, &policy, now);
    ctx.metrics.decided(&ns, &a.metadata.name, &decision);
    let mut able = condition(
        ABLE_TO_SCALE,
        true,
        "ReadyForNewScale",
        format!("deployment {target} can be scaled"),
    );
    let mut failure = None;
    if decision.changed() {
        match scale(ctx, &dkey, &decision).await {
            Ok(true) => {
                tracing::info!(autoscaler = %key, deployment = %dkey, from = decision.from,
                    to = decision.replicas, reason = %decision.reason, "scaled");
                ctx.metrics.wrote(NAME, "scaled");
                status::record(&mut scaler.decisions, &decision, wall);
                scaler.last_scale_time = Some(crate::time::format(wall));
                able = condition(
                    ABLE_TO_SCALE,
                    true,
                    "SucceededRescale",
                    format!(
                        "scaled deployment {target} from {} to {}",
                        decision.from, decision.replicas
                    ),
                );
            }
            Ok(false) => {
                // Someone else changed the replicas meanwhile: the next round decides from that.
            }
            Err(e) => {
                able = condition(ABLE_TO_SCALE, false, "FailedUpdateScale", e.to_string());
                failure = Some(e);
            }
        }
    }
    scaler.vertical.follow(&a.spec.vertical);
    let listed_instances: Vec<&weft_api::Instance> = instances.iter().map(|i| &**i).collect();
    scaler.vertical.record_ooms(&d, &listed_instances, now);
    let in_burst = scaler.state.in_burst(&policy, now);
    let vertical = scaler.vertical.step(ctx, &a.spec.vertical, &d, in_burst, now, wall).await;
    let next = AutoscalerStatus {
        current_replicas: replicas as i32,
        desired_replicas: decision.replicas as i32,
        last_scale_time: scaler.last_scale_time.clone(),
        mode: Some(decision.mode.as_str().to_string()),
        current_metrics: status::current_metrics(&obs, &policy),
        decisions: scaler.decisions.clone(),
        conditions: vec![able, status::scaling_active(&decision, &target)],
        vertical: Some(vertical),
    };
    let wrote = write_status(ctx, a, &current, next, scaler.written_at, now, wall).await;
    if let Ok(true) = wrote {
        scaler.written_at = Some(now);
    }
    match failure {
        Some(e) => Err(e),
        None => wrote.map(drop),
    }
}

/// The newest activation request on a Service in the deployment's namespace that selects its
/// instances (a proxy holds a request for it; see `weft-server`'s `activate`).
fn activation_requested(ctx: &Context, d: &Deployment) -> Option<SystemTime> {
    let ns = d.metadata.namespace_or_default();
    let mut labels = d.spec.template.labels.clone();
    labels.insert(DEPLOYMENT_LABEL.to_string(), d.metadata.name.clone());
    ctx.services
        .list()
        .into_iter()
        .filter(|s| s.metadata.namespace_or_default() == ns && !s.spec.selector.is_empty())
        .filter(|s| s.spec.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .filter_map(|s| crate::time::parse(s.metadata.annotations.get(ACTIVATION_ANNOTATION)?))
        .max()
}

fn status_due(written_at: Option<Time>, now: Time, period: Duration) -> bool {
    written_at.is_none_or(|t| now >= t + period)
}

/// Writes `spec.replicas` from `decision.from` to `decision.replicas`: read-modify-write on
/// the resourceVersion, re-reading on a conflict. `Ok(false)` when the replicas are no longer
/// `from` (someone else scaled) or the conflicts did not stop.
async fn scale(ctx: &Context, key: &ObjectKey, decision: &Decision) -> Result<bool, Error> {
    let Some(mut current) = ctx.deployments.get(key).map(|d| (*d).clone()) else {
        return Ok(false);
    };
    for _ in 0..SCALE_TRIES {
        if current.spec.replicas != decision.from as i32 {
            return Ok(false);
        }
        let mut next = current.clone();
        next.spec.replicas = decision.replicas as i32;
        match ctx.client.put(&next).await {
            Ok(written) => {
                ctx.wrote_deployment(written);
                return Ok(true);
            }
            Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                current = ctx
                    .client
                    .get::<Deployment>(key.ns(), &key.name)
                    .await
                    .map_err(|e| Error::api(format!("reading deployment {key}"), e))?;
            }
            Err(e) => {
                return Err(Error::api(
                    format!("scaling deployment {key} to {}", decision.replicas),
                    e,
                ));
            }
        }
    }
    Ok(false)
}

/// Writes `next` as the status when it differs significantly from `current`, or differs at
/// all and the status period has passed since the last write (`written_at`); says whether it
/// wrote. The controller is
/// the only writer of autoscaler status, so it writes without a resourceVersion.
async fn write_status(
    ctx: &Context,
    a: &Autoscaler,
    current: &AutoscalerStatus,
    mut next: AutoscalerStatus,
    written_at: Option<Time>,
    now: Time,
    wall: SystemTime,
) -> Result<bool, Error> {
    next.conditions = status::with_transitions(&current.conditions, next.conditions, wall);
    let differs = {
        let mut a = current.clone();
        let mut b = next.clone();
        for c in a.conditions.iter_mut().chain(b.conditions.iter_mut()) {
            c.last_transition_time = None;
        }
        a != b
    };
    if !differs {
        return Ok(false);
    }
    let due = status_due(written_at, now, ctx.options.autoscaler_status_period);
    if !status::significant(current, &next) && !due {
        return Ok(false);
    }
    let mut obj = a.clone();
    obj.metadata.resource_version = None;
    obj.status = Some(next);
    let key = ObjectKey::of(a);
    let written = ctx
        .client
        .put_status(&obj)
        .await
        .map_err(|e| Error::api(format!("writing the status of autoscaler {key}"), e))?;
    ctx.metrics.wrote(NAME, "status");
    ctx.autoscalers.write_through(written);
    Ok(true)
}
