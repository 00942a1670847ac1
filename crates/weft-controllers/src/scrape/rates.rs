//! From scraped counters to per-instance figures: requests/s, in-flight, latency percentiles
//! and cpu cores from the change between two scrapes; memory as read. Pure: the caller passes
//! the time of each scrape ([`Time`], any epoch), so the tests drive simulated time.
//!
//! Counter resets (a restarted sidecar or app) are handled as Prometheus' `rate()` does: a
//! counter lower than before restarted from zero, so its whole value is the increase.

use std::collections::BTreeMap;

use weft_autoscale::Time;

use super::prom::Sample;

pub const REQUESTS: &str = "weft_requests_total";
pub const IN_FLIGHT: &str = "weft_requests_in_flight";
pub const DURATION_BUCKET: &str = "weft_request_duration_seconds_bucket";
pub const CPU_SECONDS: &str = "weft_instance_cpu_seconds_total";
pub const MEMORY_BYTES: &str = "weft_instance_memory_bytes";

/// Cumulative histogram buckets: `(upper bound, count at or below it)`, ascending, the last
/// one `+Inf`.
pub type Buckets = Vec<(f64, f64)>;

/// What one sidecar scrape says about the requests its instance served (`direction="inbound"`;
/// outbound series are the instance's own calls to others and say nothing about its load).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SidecarCounters {
    pub requests: f64,
    pub in_flight: f64,
    pub buckets: Buckets,
}

impl SidecarCounters {
    /// Sums the inbound series over services, upstreams, codes and status classes.
    pub fn from_samples(samples: &[Sample]) -> SidecarCounters {
        let mut c = SidecarCounters::default();
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.label("direction") == Some("inbound")) {
            if !s.value.is_finite() {
                continue;
            }
            match s.name.as_str() {
                REQUESTS => c.requests += s.value,
                IN_FLIGHT => c.in_flight += s.value,
                DURATION_BUCKET => {
                    let Some(le) = s.label("le").and_then(parse_le) else { continue };
                    buckets.entry(order_key(le)).or_insert((le, 0.0)).1 += s.value;
                }
                _ => {}
            }
        }
        c.buckets = buckets.into_values().collect();
        c
    }
}

/// One instance's figures from an agent scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgentCounters {
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<f64>,
}

/// Per `(namespace, instance)`.
pub fn agent_counters(samples: &[Sample]) -> BTreeMap<(String, String), AgentCounters> {
    let mut out: BTreeMap<(String, String), AgentCounters> = BTreeMap::new();
    for s in samples {
        if !(s.name == CPU_SECONDS || s.name == MEMORY_BYTES) || !s.value.is_finite() {
            continue;
        }
        let (Some(ns), Some(name)) = (s.label("namespace"), s.label("instance")) else {
            continue;
        };
        let e = out.entry((ns.to_string(), name.to_string())).or_default();
        if s.name == CPU_SECONDS {
            e.cpu_seconds = Some(s.value);
        } else {
            e.memory_bytes = Some(s.value);
        }
    }
    out
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok().filter(|v: &f64| !v.is_nan()),
    }
}

/// A key that sorts non-negative floats (bucket bounds) in numeric order.
fn order_key(v: f64) -> u64 {
    v.max(0.0).to_bits()
}

/// What an instance served between two scrapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// When the latest scrape answered.
    pub at: Time,
    /// Requests per second since the previous scrape (`None` on the first scrape).
    pub rps: Option<f64>,
    /// Requests in flight at the scrape.
    pub in_flight: f64,
    /// Latency buckets of the requests completed since the previous scrape (cumulative).
    pub latency: Buckets,
    /// Median and 99th percentile latency in seconds, `None` when no request completed.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Turns successive sidecar scrapes of one instance into [`Traffic`].
#[derive(Clone, Debug, Default)]
pub struct TrafficRates {
    prev: Option<(Time, SidecarCounters)>,
}

impl TrafficRates {
    pub fn update(&mut self, at: Time, now: SidecarCounters) -> Traffic {
        let mut t = Traffic { at, in_flight: now.in_flight, ..Traffic::default() };
        if let Some((before, prev)) = &self.prev
            && at > *before
        {
            let secs = (at - *before).as_secs_f64();
            t.rps = Some(increase(prev.requests, now.requests) / secs);
            t.latency = bucket_increase(&prev.buckets, &now.buckets);
            t.p50 = quantile(0.5, &t.latency);
            t.p99 = quantile(0.99, &t.latency);
        }
        // A scrape answered out of order (older than the last) is not a base to measure from.
        if self.prev.as_ref().is_none_or(|(before, _)| at > *before) {
            self.prev = Some((at, now));
        }
        t
    }
}

/// Turns successive cpu-seconds readings of one instance into cores.
#[derive(Clone, Debug, Default)]
pub struct CpuRate {
    prev: Option<(Time, f64)>,
}

impl CpuRate {
    /// Cores used since the previous reading (`None` on the first).
    pub fn update(&mut self, at: Time, cpu_seconds: f64) -> Option<f64> {
        let out = match self.prev {
            Some((before, prev)) if at > before => {
                Some(increase(prev, cpu_seconds) / (at - before).as_secs_f64())
            }
            _ => None,
        };
        if self.prev.is_none_or(|(before, _)| at > before) {
            self.prev = Some((at, cpu_seconds));
        }
        out
    }
}

/// A counter's increase; lower than before means it restarted from zero.
fn increase(before: f64, now: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// Per-bucket increase; any bucket going down (or the bounds changing) is a reset.
fn bucket_increase(before: &Buckets, now: &Buckets) -> Buckets {
    let same_bounds = before.len() == now.len()
        && before.iter().zip(now).all(|((a, _), (b, _))| a == b || (a.is_nan() && b.is_nan()));
    let reset = !same_bounds || before.iter().zip(now).any(|((_, a), (_, b))| b < a);
    if reset {
        return now.clone();
    }
    before.iter().zip(now).map(|((_, a), (le, b))| (*le, b - a)).collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly within the bucket as
/// Prometheus' `histogram_quantile` does; past the last finite bound, that bound.
pub fn quantile(q: f64, buckets: &Buckets) -> Option<f64> {
    let total = buckets.last()?.1;
    // NaN counts as no data too.
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|(_, c)| *c >= rank)?;
    let (le, count) = buckets[i];
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    if le.is_infinite() {
        return (i > 0).then_some(lower);
    }
    let inside = count - below;
    if inside <= 0.0 {
        return Some(le);
    }
    Some(lower + (le - lower) * (rank - below) / inside)
}

/// Adds cumulative buckets of instances (same bounds expected; a bound only one has is kept).
pub fn merge_buckets<'a>(all: impl IntoIterator<Item = &'a Buckets>) -> Buckets {
    let mut m: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for b in all {
        for &(le, c) in b {
            m.entry(order_key(le)).or_insert((le, 0.0)).1 += c;
        }
    }
    m.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scrape::prom::parse;

    fn secs(s: u64) -> Time {
        Duration::from_secs(s)
    }

    /// A sidecar page with `n` inbound requests, `fast` of them under 10 ms and the rest under
    /// 100 ms, plus outbound noise that must be ignored.
    fn page(n: u64, fast: u64, in_flight: u64) -> SidecarCounters {
        let text = format!(
            "weft_requests_total{{direction=\"inbound\",service=\"web\",upstream=\"127.0.0.1:1\",code=\"200\"}} {}\n\
weft_requests_total{{direction=\"inbound\",service=\"web\",upstream=\"local\",code=\"503\"}} {}\n\
weft_requests_total{{direction=\"outbound\",service=\"db\",upstream=\"127.0.0.1:2\",code=\"200\"}} 999\n\
weft_requests_in_flight{{direction=\"inbound\",service=\"web\"}} {in_flight}\n\
weft_requests_in_flight{{direction=\"outbound\",service=\"db\"}} 50\n\
weft_request_duration_seconds_bucket{{le=\"0.01\",direction=\"inbound\",service=\"web\",class=\"2xx\"}} {fast}\n\
weft_request_duration_seconds_bucket{{le=\"0.1\",direction=\"inbound\",service=\"web\",class=\"2xx\"}} {n}\n\
weft_request_duration_seconds_bucket{{le=\"+Inf\",direction=\"inbound\",service=\"web\",class=\"2xx\"}} {n}\n\
weft_request_duration_seconds_bucket{{le=\"0.01\",direction=\"outbound\",service=\"db\",class=\"2xx\"}} 999\n\
# EOF\n",
            n.saturating_sub(1),
            n.min(1),
        );
        SidecarCounters::from_samples(&parse(&text).unwrap())
    }

    #[test]
    fn inbound_only_summed_over_series() {
        let c = page(10, 4, 3);
        assert_eq!(c.requests, 10.0);
        assert_eq!(c.in_flight, 3.0);
        assert_eq!(c.buckets, vec![(0.01, 4.0), (0.1, 10.0), (f64::INFINITY, 10.0)]);
    }

    #[test]
    fn rates_from_deltas_with_simulated_time() {
        let mut r = TrafficRates::default();
        let first = r.update(secs(10), page(100, 50, 2));
        assert_eq!(first.rps, None, "one scrape is no rate");
        assert_eq!(first.in_flight, 2.0);
        assert_eq!(first.p50, None);
        // 2 s later: 40 more requests, all fast.
        let t = r.update(secs(12), page(140, 90, 5));
        assert_eq!(t.rps, Some(20.0));
        assert_eq!(t.in_flight, 5.0);
        assert_eq!(t.latency, vec![(0.01, 40.0), (0.1, 40.0), (f64::INFINITY, 40.0)]);
        let p50 = t.p50.unwrap();
        assert!((p50 - 0.005).abs() < 1e-9, "{p50}");
        // Nothing served: a real zero rate, and no latency (not zero latency).
        let idle = r.update(secs(13), page(140, 90, 0));
        assert_eq!(idle.rps, Some(0.0));
        assert_eq!(idle.p99, None);
    }

    #[test]
    fn a_counter_reset_counts_from_zero() {
        let mut r = TrafficRates::default();
        r.update(secs(0), page(1000, 500, 0));
        // The sidecar restarted and has served 30 since.
        let t = r.update(secs(1), page(30, 30, 1));
        assert_eq!(t.rps, Some(30.0));
        assert_eq!(t.latency.last().unwrap().1, 30.0);
        // And carries on from the new base.
        let t = r.update(secs(2), page(40, 40, 1));
        assert_eq!(t.rps, Some(10.0));

        let mut cpu = CpuRate::default();
        assert_eq!(cpu.update(secs(0), 100.0), None);
        assert_eq!(cpu.update(secs(2), 101.0), Some(0.5));
        assert_eq!(cpu.update(secs(3), 0.25), Some(0.25), "the app restarted");
        assert_eq!(cpu.update(secs(3), 9.0), None, "no time passed: no rate");
    }

    #[test]
    fn quantiles_interpolate_and_stop_at_the_last_bound() {
        let b = vec![(0.1, 0.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(0.5, &b).unwrap() - 0.15).abs() < 1e-9);
        let b = vec![(0.1, 0.0), (0.2, 0.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.99, &b), Some(0.2));
        assert_eq!(quantile(0.5, &vec![(f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &vec![]), None);
        let merged = merge_buckets([
            &vec![(0.1, 1.0), (f64::INFINITY, 2.0)],
            &vec![(0.1, 3.0), (f64::INFINITY, 3.0)],
        ]);
        assert_eq!(merged, vec![(0.1, 4.0), (f64::INFINITY, 5.0)]);
    }

    #[test]
    fn agent_figures_by_instance() {
        let text = "weft_instance_cpu_seconds_total{namespace=\"default\",instance=\"web-a\",deployment=\"web\"} 12.5\n\
weft_instance_memory_bytes{namespace=\"default\",instance=\"web-a\",deployment=\"web\"} 1048576\n\
weft_instance_memory_bytes{namespace=\"default\",instance=\"web-b\",deployment=\"web\"} 2048\n\
weft_instance_restarts_total{namespace=\"default\",instance=\"web-a\",deployment=\"web\"} 1\n";
        let m = agent_counters(&parse(text).unwrap());
        let a = m[&("default".to_string(), "web-a".to_string())];
        assert_eq!(a.cpu_seconds, Some(12.5));
        assert_eq!(a.memory_bytes, Some(1048576.0));
        let b = m[&("default".to_string(), "web-b".to_string())];
        assert_eq!(b.cpu_seconds, None);
    }
}
