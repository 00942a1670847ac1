//! The vertical half of an autoscaler: usage samples into a [`VerticalRecommender`] per
//! deployment, the recommendation into status, and in mode `auto` the recommended requests
//! into the deployment's template (which the deployment controller rolls out).
//!
//! Acting waits for enough samples, for the current requests to leave the recommended bounds
//! (drift inside them restarts nothing), for burst mode to end (a rolling restart in a surge
//! would take capacity away when it is needed most) and for `minUpdateInterval` since the last
//! update.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use weft_api::kinds::autoscaler::{RecommendedRange, VerticalMode, VerticalSpec, VerticalStatus};
use weft_api::kinds::template::ResourceList;
use weft_api::quantity::Quantity;
use weft_api::{Deployment, ErrorCode, Instance};
use weft_autoscale::{
    Bounds, Requests, Time, VerticalConfig, VerticalRecommendation, VerticalRecommender,
    outside_bounds,
};

use crate::error::Error;
use crate::runtime::{Context, ObjectKey};

/// Samples (per instance and scrape, decayed) before mode `auto` acts: half a minute of one
/// instance's figures at the default 1 s scrape.
pub(super) const MIN_SAMPLES: f64 = 30.0;

/// What the controller keeps per autoscaler for its vertical half.
pub(super) struct Vertical {
    recommender: VerticalRecommender,
    half_life: Duration,
    /// Per instance, the time of the last out-of-memory exit already recorded.
    ooms: HashMap<String, String>,
    last_update: Option<SystemTime>,
}

impl Vertical {
    pub(super) fn new(spec: &VerticalSpec, last_update: Option<SystemTime>) -> Vertical {
        let half_life = spec.half_life.as_std();
        Vertical {
            recommender: VerticalRecommender::new(VerticalConfig {
                half_life,
                ..VerticalConfig::default()
            }),
            half_life,
            ooms: HashMap::new(),
            last_update,
        }
    }

    /// Starts over when the half-life changes (the histograms are built for one).
    pub(super) fn follow(&mut self, spec: &VerticalSpec) {
        if spec.half_life.as_std() != self.half_life {
            *self = Vertical::new(spec, self.last_update);
        }
    }

    pub(super) fn record_cpu(&mut self, at: Time, cores: f64) {
        self.recommender.record_cpu(at, cores);
    }

    pub(super) fn record_memory(&mut self, at: Time, bytes: f64) {
        self.recommender.record_memory(at, bytes);
    }

    /// Records out-of-memory exits not seen before: the memory recommendation goes to at least
    /// 1.2 × the limit the instance was killed at.
    pub(super) fn record_ooms(&mut self, d: &Deployment, instances: &[&Instance], now: Time) {
        let res = &d.spec.template.resources;
        let limit = res.limits.memory_bytes().max(res.requests.memory_bytes()) as f64;
        for i in instances {
            let Some(exit) = i.status.as_ref().and_then(|s| s.last_exit.as_ref()) else {
                continue;
            };
            if exit.reason != "OOMKilled" {
                continue;
            }
            let when = exit.time.clone().unwrap_or_default();
            let name = &i.metadata.name;
            if self.ooms.get(name) == Some(&when) {
                continue;
            }
            self.ooms.insert(name.clone(), when);
            if limit > 0.0 {
                self.recommender.record_oom(now, limit, limit);
            }
        }
        self.ooms.retain(|n, _| instances.iter().any(|i| &i.metadata.name == n));
    }

    /// The status to show, after writing the recommended requests into the deployment when
    /// mode `auto` calls for it.
    pub(super) async fn step(
        &mut self,
        ctx: &Context,
        spec: &VerticalSpec,
        d: &Deployment,
        in_burst: bool,
        now: Time,
        wall: SystemTime,
    ) -> VerticalStatus {
        let mut status = VerticalStatus {
            mode: spec.mode,
            cpu: None,
            memory: None,
            oom_bumped: false,
            last_update_time: self.last_update.map(crate::time::format),
            message: String::new(),
        };
        let Some(rec) = self.recommender.recommend(now) else {
            status.message = "collecting usage: no cpu and memory figures yet".into();
            return status;
        };
        status.cpu = Some(range(&rec.cpu_cores, cpu_quantity));
        status.memory = Some(range(&rec.memory_bytes, memory_quantity));
        status.oom_bumped = rec.oom_bumped;
        let current = Requests::from_resources(&d.spec.template.resources.requests);
        let outside = outside_bounds(current.cpu_cores, current.memory_bytes, &rec);
        let samples = self.recommender.samples(now);
        status.message = match (spec.mode, outside) {
            (_, false) => "the requests are within the recommended bounds".into(),
            (VerticalMode::Off, true) => {
                "the requests are outside the recommended bounds; mode off: not applied".into()
            }
            (VerticalMode::Auto, true) if samples < MIN_SAMPLES => {
                format!("collecting usage: {samples:.0} of {MIN_SAMPLES:.0} samples before acting")
            }
            (VerticalMode::Auto, true) if in_burst => {
                "waiting for burst mode to end before a rolling restart".into()
            }
            (VerticalMode::Auto, true) => {
                let due = self.last_update.map(|t| t + spec.min_update_interval.as_std());
                match due.filter(|t| *t > wall) {
                    Some(t) => format!(
                        "next update allowed in {}s (minUpdateInterval)",
                        t.duration_since(wall).unwrap_or_default().as_secs()
                    ),
                    None => match apply(ctx, d, &rec).await {
                        Ok(Some(text)) => {
                            self.last_update = Some(wall);
                            status.last_update_time = Some(crate::time::format(wall));
                            ctx.metrics.wrote(super::controller::NAME, "vertical");
                            tracing::info!(deployment = %ObjectKey::of(d), %text, "vertical update");
                            text
                        }
                        Ok(None) => "the deployment changed meanwhile; next round".into(),
                        Err(e) => format!("could not update the deployment: {e}"),
                    },
                }
            }
        };
        status
    }
}

fn range(b: &Bounds, q: fn(f64) -> Quantity) -> RecommendedRange {
    RecommendedRange { lower: q(b.lower), target: q(b.target), upper: q(b.upper) }
}

/// Cores as whole millicores, rounded up.
fn cpu_quantity(cores: f64) -> Quantity {
    let m = (cores * 1000.0).ceil().max(1.0) as u64;
    Quantity::parse(&format!("{m}m")).unwrap_or(Quantity::ZERO)
}

/// Bytes as whole MiB, rounded up.
fn memory_quantity(bytes: f64) -> Quantity {
    let mib = (bytes / (1024.0 * 1024.0)).ceil().max(1.0) as u64;
    Quantity::parse(&format!("{mib}Mi")).unwrap_or(Quantity::ZERO)
}

/// The template's requests set to the recommendation's targets; limits that would fall below
/// them grow with them (keeping their ratio to the old request). `None` when unchanged.
fn resized(
    res: &weft_api::kinds::template::Resources,
    rec: &VerticalRecommendation,
) -> Option<weft_api::kinds::template::Resources> {
    let mut next = res.clone();
    let cpu = cpu_quantity(rec.cpu_cores.target);
    let mem = memory_quantity(rec.memory_bytes.target);
    next.requests = ResourceList { cpu: Some(cpu), memory: Some(mem) };
    let (old, lim) = (&res.requests, &res.limits);
    let ratio = |limit: u64, request: u64| {
        if request == 0 { 1.0 } else { (limit as f64 / request as f64).max(1.0) }
    };
    if lim.cpu.is_some() && next.requests.cpu_millis() > lim.cpu_millis() {
        let r = ratio(lim.cpu_millis(), old.cpu_millis());
        next.limits.cpu = Some(cpu_quantity(rec.cpu_cores.target * r));
    }
    if lim.memory.is_some() && next.requests.memory_bytes() > lim.memory_bytes() {
        let r = ratio(lim.memory_bytes(), old.memory_bytes());
        next.limits.memory = Some(memory_quantity(rec.memory_bytes.target * r));
    }
    (next != *res).then_some(next)
}

/// Writes the recommended requests into the deployment (read-modify-write on its
/// resourceVersion). `Ok(None)` when someone else changed it meanwhile.
async fn apply(
    ctx: &Context,
    d: &Deployment,
    rec: &VerticalRecommendation,
) -> Result<Option<String>, Error> {
    let Some(res) = resized(&d.spec.template.resources, rec) else {
        return Ok(None);
    };
    let mut next = d.clone();
    let text = format!(
        "requests set to cpu {}, memory {} (were {}, {}): rolling restart",
        res.requests.cpu.unwrap_or_default(),
        res.requests.memory.unwrap_or_default(),
        d.spec.template.resources.requests.cpu.map_or("unset".into(), |q| q.to_string()),
        d.spec.template.resources.requests.memory.map_or("unset".into(), |q| q.to_string()),
    );
    next.spec.template.resources = res;
    match ctx.client.put(&next).await {
        Ok(written) => {
            ctx.wrote_deployment(written);
            Ok(Some(text))
        }
        Err(e) if e.code() == Some(ErrorCode::Conflict) => Ok(None),
        Err(e) => Err(Error::api(format!("resizing deployment {}", ObjectKey::of(d)), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cpu: f64, mem: f64) -> VerticalRecommendation {
        let b = |t: f64| Bounds { lower: t * 0.5, target: t, upper: t * 1.5 };
        VerticalRecommendation { cpu_cores: b(cpu), memory_bytes: b(mem), oom_bumped: false }
    }

    fn resources(yaml: &str) -> weft_api::kinds::template::Resources {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn requests_take_the_targets_rounded_up_and_limits_grow_with_them() {
        let res = resources(
            "{ requests: { cpu: 50m, memory: 32Mi }, limits: { cpu: 100m, memory: 64Mi } }",
        );
        let next = resized(&res, &rec(0.1201, 100.0 * 1024.0 * 1024.0 + 1.0)).unwrap();
        assert_eq!(next.requests.cpu.unwrap().to_string(), "121m");
        assert_eq!(next.requests.memory.unwrap().to_string(), "101Mi");
        // Limits were 2x the requests; below the new requests, they keep that ratio.
        assert_eq!(next.limits.cpu.unwrap().to_string(), "241m");
        assert_eq!(next.limits.memory.unwrap().to_string(), "201Mi");
        // Limits already above the new requests stay.
        let next = resized(&res, &rec(0.02, 20.0 * 1024.0 * 1024.0)).unwrap();
        assert_eq!(next.limits, res.limits);
        assert_eq!(next.requests.cpu.unwrap().to_string(), "20m");
        // The same figures again: nothing to write.
        assert!(resized(&next, &rec(0.02, 20.0 * 1024.0 * 1024.0)).is_none());
    }
}
