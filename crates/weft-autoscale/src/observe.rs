//! What `decide` sees: per-metric readings over the stable and burst windows, and the
//! aggregator that turns per-instance samples into them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use weft_api::kinds::autoscaler::MetricType;

use crate::Time;
use crate::policy::Policy;

/// Steps (scrape rounds) the recent figure averages: two, so that one noisy sample cannot size
/// a surge alone.
pub const RECENT_STEPS: usize = 2;

pub(crate) const METRICS: [MetricType; 4] =
    [MetricType::Concurrency, MetricType::Rps, MetricType::Cpu, MetricType::Memory];

pub(crate) fn index(m: MetricType) -> usize {
    match m {
        MetricType::Concurrency => 0,
        MetricType::Rps => 1,
        MetricType::Cpu => 2,
        MetricType::Memory => 3,
    }
}

/// One metric across the deployment's instances.
///
/// `stable` and `burst` are totals (the sum over instances), averaged over the stable and
/// burst windows. Totals rather than per-instance averages so that a change in the number of
/// instances within a window does not skew the figure: after a scale-up, an old instance's
/// average still remembers the load it carried alone, while the total does not.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// Ready instances that reported this metric recently.
    pub reporting: u32,
    /// Ready instances with no recent value (the HPA's "missing pods").
    pub missing: u32,
    /// Total over instances, averaged over the stable window.
    pub stable: f64,
    /// Total over instances, averaged over the burst (panic) window.
    pub burst: f64,
    /// Total over instances, averaged over the newest [`RECENT_STEPS`] steps (`recent_window`):
    /// what a surge is sized on, so that it follows a step at once instead of waiting for the
    /// burst window's average to catch up.
    pub recent: f64,
    /// How far back `recent` reaches.
    pub recent_window: Duration,
    /// How far back the data reaches within the stable window. The stable figure is trusted
    /// (for anything but bursts) only once this covers the whole window.
    pub span: Duration,
}

impl Reading {
    /// `reporting` instances whose values add up to `stable` and `burst`, with a full history.
    pub fn totals(reporting: u32, stable: f64, burst: f64) -> Reading {
        Reading {
            reporting,
            missing: 0,
            stable,
            burst,
            recent: burst,
            recent_window: Duration::ZERO,
            span: Duration::MAX,
        }
    }

    /// The same, with `recent` (a total, over `window`).
    pub fn with_recent(mut self, recent: f64, window: Duration) -> Reading {
        self.recent = recent;
        self.recent_window = window;
        self
    }

    /// `reporting` instances each averaging `stable` (and `burst`), with a full history.
    pub fn per_instance(reporting: u32, stable: f64, burst: f64) -> Reading {
        let n = f64::from(reporting);
        Reading::totals(reporting, stable * n, burst * n)
    }

    /// The same, with data reaching back only `span`.
    pub fn with_span(mut self, span: Duration) -> Reading {
        self.span = span;
        self
    }

    /// The same, with `missing` ready instances that did not report.
    pub fn with_missing(mut self, missing: u32) -> Reading {
        self.missing = missing;
        self
    }
}

/// Everything one decision looks at besides the policy, the clock and the autoscaler's memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// The target deployment's replicas now (`spec.replicas`).
    pub current_replicas: u32,
    /// Instances that exist but are not ready (starting, or failing readiness).
    pub unready: u32,
    /// A request arrived for the service while it had no instance (the activator's poke).
    pub poked: bool,
    readings: [Option<Reading>; 4],
}

impl Observation {
    /// No readings yet.
    pub fn new(current_replicas: u32) -> Observation {
        Observation { current_replicas, ..Observation::default() }
    }

    /// Adds (or replaces) the reading for `metric`.
    pub fn with(mut self, metric: MetricType, reading: Reading) -> Observation {
        self.set(metric, reading);
        self
    }

    pub fn with_unready(mut self, unready: u32) -> Observation {
        self.unready = unready;
        self
    }

    pub fn with_poke(mut self) -> Observation {
        self.poked = true;
        self
    }

    pub fn set(&mut self, metric: MetricType, reading: Reading) {
        self.readings[index(metric)] = Some(reading);
    }

    /// The reading for `metric`, if any instance reported it.
    pub fn reading(&self, metric: MetricType) -> Option<&Reading> {
        self.readings[index(metric)].as_ref().filter(|r| r.reporting > 0)
    }
}

/// Per-instance sample windows: the controller records what it scrapes (every second, say), and
/// [`Windows::observe`] turns the windows into an [`Observation`]. Pure: every call takes the
/// time from the caller.
///
/// A sample counts as fresh for `max_sample_age` (default 3 s). A ready instance without a
/// fresh sample of a metric is *missing* for that metric. Totals are computed per
/// `resolution` step (default 1 s) over the window, each instance contributing its latest fresh
/// sample at that step; instances the caller lists as not ready are left out, and instances it
/// no longer lists (scaled away) still count for the time they reported, since the load they
/// carried then was real. Instances with no sample left in the stable window are dropped.
///
/// Build it with the policy's windows ([`Windows::for_policy`]): `decide` trusts the stable
/// figure once [`Reading::span`] covers the policy's stable window.
#[derive(Clone, Debug)]
pub struct Windows {
    stable: Duration,
    burst: Duration,
    resolution: Duration,
    max_age: Duration,
    instances: BTreeMap<String, Series>,
}

#[derive(Clone, Debug, Default)]
struct Series {
    samples: [VecDeque<(Time, f64)>; 4],
}

impl Series {
    fn is_empty(&self) -> bool {
        self.samples.iter().all(VecDeque::is_empty)
    }
}

impl Windows {
    /// Windows of `stable` and `burst` length (the burst window is the short one).
    pub fn new(stable: Duration, burst: Duration) -> Windows {
        Windows {
            stable,
            burst: burst.min(stable),
            resolution: Duration::from_secs(1),
            max_age: Duration::from_secs(3),
            instances: BTreeMap::new(),
        }
    }

    /// The windows `policy` decides on.
    pub fn for_policy(policy: &Policy) -> Windows {
        Windows::new(policy.stable_window, policy.burst_window())
    }

    /// How long a sample stands for its instance (default 3 s).
    pub fn with_max_sample_age(mut self, age: Duration) -> Windows {
        self.max_age = age.max(Duration::from_nanos(1));
        self
    }

    /// The step totals are computed at (default 1 s, the scrape interval).
    pub fn with_resolution(mut self, step: Duration) -> Windows {
        self.resolution = step.max(Duration::from_millis(1));
        self
    }

    /// Records one sample. Negative, NaN and infinite values are ignored.
    pub fn record(&mut self, instance: &str, metric: MetricType, at: Time, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            return;
        }
        let series = match self.instances.get_mut(instance) {
            Some(s) => s,
            None => self.instances.entry(instance.to_owned()).or_default(),
        };
        let q = &mut series.samples[index(metric)];
        if q.back().is_none_or(|(t, _)| *t <= at) {
            q.push_back((at, value));
        } else {
            let i = q.partition_point(|(t, _)| *t <= at);
            q.insert(i, (at, value));
        }
    }

    /// Drops samples too old to matter at `now`, and instances left without any.
    pub fn prune(&mut self, now: Time) {
        let Some(cut) = now.checked_sub(self.stable + self.max_age) else { return };
        self.instances.retain(|_, s| {
            for q in &mut s.samples {
                while q.front().is_some_and(|(t, _)| *t <= cut) {
                    q.pop_front();
                }
            }
            !s.is_empty()
        });
    }

    /// Instances with samples.
    pub fn instances(&self) -> impl Iterator<Item = &str> {
        self.instances.keys().map(String::as_str)
    }

    /// One instance's plain average of `metric` over the `window` ending at `now`.
    pub fn average(
        &self,
        instance: &str,
        metric: MetricType,
        window: Duration,
        now: Time,
    ) -> Option<f64> {
        let q = &self.instances.get(instance)?.samples[index(metric)];
        let from = now.checked_sub(window);
        let (mut sum, mut n) = (0.0, 0u32);
        for &(t, v) in q.iter().rev() {
            if t > now {
                continue;
            }
            if from.is_some_and(|f| t <= f) {
                break;
            }
            sum += v;
            n += 1;
        }
        (n > 0).then(|| sum / f64::from(n))
    }

    /// An observation at `now`: `instances` are the target's instances as `(name, ready)`.
    pub fn observe<'a>(
        &self,
        now: Time,
        current_replicas: u32,
        instances: impl IntoIterator<Item = (&'a str, bool)>,
        poked: bool,
    ) -> Observation {
        let listed: Vec<(&str, bool)> = instances.into_iter().collect();
        let unready: BTreeSet<&str> =
            listed.iter().filter(|(_, ready)| !ready).map(|(n, _)| *n).collect();
        let mut obs = Observation::new(current_replicas);
        obs.poked = poked;
        obs.unready = unready.len() as u32;
        let steps = step_count(self.stable, self.resolution);
        let burst_steps = step_count(self.burst, self.resolution).min(steps);
        let recent_steps = RECENT_STEPS.min(burst_steps);
        let mut sums = vec![0.0f64; steps];
        let mut seen = vec![false; steps];
        for metric in METRICS {
            let m = index(metric);
            let fresh_from = now.checked_sub(self.max_age);
            let (mut reporting, mut missing) = (0u32, 0u32);
            for (name, ready) in &listed {
                if !ready {
                    continue;
                }
                let fresh = self.instances.get(*name).is_some_and(|s| {
                    s.samples[m]
                        .iter()
                        .rev()
                        .find(|(t, _)| *t <= now)
                        .is_some_and(|(t, _)| fresh_from.is_none_or(|f| *t > f))
                });
                if fresh {
                    reporting += 1;
                } else {
                    missing += 1;
                }
            }
            if reporting == 0 {
                continue;
            }
            sums.iter_mut().for_each(|s| *s = 0.0);
            seen.iter_mut().for_each(|s| *s = false);
            for (name, series) in &self.instances {
                if unready.contains(name.as_str()) {
                    continue;
                }
                let q = &series.samples[m];
                // Steps oldest first; `i` is the first sample after the step's end.
                let mut i = 0;
                for k in (0..steps).rev() {
                    let Some(end) = now.checked_sub(self.resolution * k as u32) else {
                        continue;
                    };
                    while i < q.len() && q[i].0 <= end {
                        i += 1;
                    }
                    if i == 0 {
                        continue;
                    }
                    let (t, v) = q[i - 1];
                    if end.checked_sub(self.max_age).is_none_or(|f| t > f) {
                        sums[k] += v;
                        seen[k] = true;
                    }
                }
            }
            let oldest = (0..steps).rev().find(|&k| seen[k]).map_or(0, |k| k + 1);
            let span = (self.resolution * oldest as u32).min(self.stable);
            let avg = |n: usize| {
                let (mut sum, mut count) = (0.0, 0u32);
                for k in 0..n {
                    if seen[k] {
                        sum += sums[k];
                        count += 1;
                    }
                }
                if count == 0 { 0.0 } else { sum / f64::from(count) }
            };
            obs.set(
                metric,
                Reading {
                    reporting,
                    missing,
                    stable: avg(steps),
                    burst: avg(burst_steps),
                    recent: avg(recent_steps),
                    recent_window: self.resolution * recent_steps as u32,
                    span,
                },
            );
        }
        obs
    }
}

fn step_count(window: Duration, step: Duration) -> usize {
    (window.as_nanos().div_ceil(step.as_nanos())).max(1) as usize
}
