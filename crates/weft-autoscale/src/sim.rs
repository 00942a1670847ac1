//! `weft sim`: replay a request-rate trace through the real [`decide`] with a simple model of
//! instances, and compare policies on the same trace.
//!
//! The model, per simulated second: load is spread evenly over the ready instances; each ready
//! instance reports rps (its share) and concurrency (its share × the model's latency, Little's
//! law); a new instance is ready `start_delay` after the decision that created it; scaling down
//! removes not-ready instances first, then the newest. A second is *over objective* when the
//! load exceeds what the ready instances can serve (`ready × capacity_rps`). Replica-seconds
//! count every instance that exists, ready or starting. While at zero, any load pokes the
//! autoscaler.

use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_api::kinds::autoscaler::MetricType;

use crate::decide::{Decision, ScalerState, decide};
use crate::observe::Windows;
use crate::policy::Policy;

/// The simulated service.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Requests per second one instance serves within the latency objective.
    pub capacity_rps: f64,
    /// From the decision that creates an instance to the instance being ready.
    pub start_delay: Duration,
    /// Time per request, for the concurrency instances report (Little's law).
    pub latency: Duration,
    /// Replicas at the start of the trace.
    pub initial_replicas: u32,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            capacity_rps: 100.0,
            start_delay: Duration::from_secs(5),
            latency: Duration::from_millis(50),
            initial_replicas: 1,
        }
    }
}

/// A policy and how often its loop runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Contender {
    pub name: String,
    pub policy: Policy,
    /// Time between decisions.
    pub sync_period: Duration,
}

impl Contender {
    /// weft's loop: decide every second.
    pub fn weft(policy: Policy) -> Contender {
        Contender { name: "weft".into(), policy, sync_period: Duration::from_secs(1) }
    }

    /// The Kubernetes HPA with its defaults ([`Policy::hpa_defaults`]), syncing every 15 s, on
    /// the same metrics and replica range as `like` (minReplicas at least 1: the HPA does not
    /// scale to zero).
    pub fn hpa(like: &Policy) -> Contender {
        let policy =
            Policy::hpa_defaults(like.metrics.clone(), like.min_replicas.max(1), like.max_replicas);
        Contender { name: "hpa".into(), policy, sync_period: Duration::from_secs(15) }
    }
}

/// One simulated second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    pub t: u64,
    pub rps: f64,
    /// Replicas the autoscaler wants (after this second's decision).
    pub desired: u32,
    /// Instances ready during this second.
    pub ready: u32,
}

/// What a replay produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SimResult {
    pub name: String,
    pub capacity_rps: f64,
    pub timeline: Vec<Tick>,
    /// Seconds in which the load exceeded the ready instances' capacity.
    pub seconds_over_objective: u64,
    /// Sum over seconds of the instances that existed (ready or starting).
    pub replica_seconds: u64,
    /// Decisions that changed the replica count.
    pub scale_events: u32,
    /// Those decisions, with the second they were taken in.
    pub events: Vec<(u64, Decision)>,
}

impl SimResult {
    /// Scale events at or after second `t`.
    pub fn scale_events_from(&self, t: u64) -> usize {
        self.events.iter().filter(|(at, _)| *at >= t).count()
    }
}

/// The request rate at second `t` of a trace: the last point at or before `t` (the first point
/// before it).
fn rps_at(trace: &[(f64, f64)], i: &mut usize, t: f64) -> f64 {
    while *i + 1 < trace.len() && trace[*i + 1].0 <= t {
        *i += 1;
    }
    trace[*i].1.max(0.0)
}

struct Instance {
    name: String,
    ready_at: u64,
}

/// Replays `trace` (points of (seconds, rps), sorted by time; the rate holds until the next
/// point) second by second from 0 to the last point, deciding every `sync_period`.
pub fn simulate(trace: &[(f64, f64)], contender: &Contender, model: &Model) -> SimResult {
    let mut out = SimResult {
        name: contender.name.clone(),
        capacity_rps: model.capacity_rps,
        timeline: Vec::new(),
        seconds_over_objective: 0,
        replica_seconds: 0,
        scale_events: 0,
        events: Vec::new(),
    };
    let Some(last) = trace.last() else { return out };
    let seconds = last.0.max(0.0).floor() as u64 + 1;
    let policy = &contender.policy;
    let sync = contender.sync_period.as_secs().max(1);
    let delay = model.start_delay.as_secs_f64().ceil() as u64;
    let mut windows = Windows::for_policy(policy);
    let mut state = ScalerState::new();
    let mut next_id = 0u64;
    let mut spawn = |ready_at: u64| {
        next_id += 1;
        Instance { name: format!("i{next_id}"), ready_at }
    };
    let mut instances: Vec<Instance> = (0..model.initial_replicas).map(|_| spawn(0)).collect();
    let mut poked = false;
    let mut cursor = 0;
    for t in 0..seconds {
        let now = Duration::from_secs(t);
        let load = rps_at(trace, &mut cursor, t as f64);
        let ready = instances.iter().filter(|i| i.ready_at <= t).count() as u32;
        if ready > 0 {
            let share = load / f64::from(ready);
            let concurrency = share * model.latency.as_secs_f64();
            for i in instances.iter().filter(|i| i.ready_at <= t) {
                windows.record(&i.name, MetricType::Rps, now, share);
                windows.record(&i.name, MetricType::Concurrency, now, concurrency);
            }
        }
        if load > f64::from(ready) * model.capacity_rps + 1e-9 {
            out.seconds_over_objective += 1;
        }
        out.replica_seconds += instances.len() as u64;
        poked |= instances.is_empty() && load > 0.0;
        if t % sync == 0 {
            windows.prune(now);
            let current = instances.len() as u32;
            let obs = windows.observe(
                now,
                current,
                instances.iter().map(|i| (i.name.as_str(), i.ready_at <= t)),
                poked,
            );
            poked = false;
            let d = decide(&mut state, &obs, policy, now);
            if d.changed() {
                out.scale_events += 1;
                out.events.push((t, d));
                let want = d.replicas as usize;
                while instances.len() < want {
                    instances.push(spawn(t + delay));
                }
                if instances.len() > want {
                    // Not-ready instances go first, then the newest.
                    instances.sort_by_key(|i| (i.ready_at <= t, std::cmp::Reverse(i.ready_at)));
                    instances.drain(..instances.len() - want);
                    instances.sort_by_key(|i| i.ready_at);
                }
            }
        }
        out.timeline.push(Tick { t, rps: load, desired: instances.len() as u32, ready });
    }
    out
}

/// `base_rps` until second `step_at`, then `factor × base_rps` until `seconds`.
pub fn step_trace(base_rps: f64, factor: f64, step_at: u64, seconds: u64) -> Vec<(f64, f64)> {
    (0..seconds)
        .map(|t| (t as f64, if t < step_at { base_rps } else { base_rps * factor }))
        .collect()
}

/// `rps` with independent uniform noise of ±`noise` (a fraction) every second, from `seed`.
pub fn noisy_flat_trace(rps: f64, noise: f64, seconds: u64, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..seconds).map(|t| (t as f64, rps * (1.0 + noise * rng.gen_range(-1.0..=1.0)))).collect()
}

/// The timelines side by side as CSV: `t,rps,<name>_desired,<name>_ready,…`. The time and
/// load columns come from the first result.
pub fn timeline_csv(results: &[&SimResult]) -> String {
    let mut s = String::from("t,rps");
    for r in results {
        let _ = write!(s, ",{0}_desired,{0}_ready", csv_name(&r.name));
    }
    s.push('\n');
    let rows = results.first().map_or(0, |r| r.timeline.len());
    for i in 0..rows {
        let first = &results[0].timeline[i];
        let _ = write!(s, "{},{:.3}", first.t, first.rps);
        for r in results {
            match r.timeline.get(i) {
                Some(k) => {
                    let _ = write!(s, ",{},{}", k.desired, k.ready);
                }
                None => s.push_str(",,"),
            }
        }
        s.push('\n');
    }
    s
}

fn csv_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An SVG chart of the results: each one's desired replicas as a line, and the load (grey, as
/// the instances it needs at full capacity, so the load above a line means over objective; the
/// right axis reads it in rps). Time and load come from the first result.
pub fn chart_svg(results: &[&SimResult], title: &str) -> String {
    const W: f64 = 960.0;
    const H: f64 = 420.0;
    const L: f64 = 60.0;
    const R: f64 = 80.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let Some(first) = results.first() else {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\"></svg>\n"
        );
    };
    let cap = if first.capacity_rps > 0.0 { first.capacity_rps } else { 1.0 };
    let t_max = first.timeline.last().map_or(1, |k| k.t + 1) as f64;
    let mut y_max = first.timeline.iter().map(|k| k.rps / cap).fold(1.0, f64::max);
    for r in results {
        for k in &r.timeline {
            y_max = y_max.max(f64::from(k.desired));
        }
    }
    let y_max = nice_ceil(y_max * 1.05);
    let x = |t: f64| L + (W - L - R) * t / t_max;
    let y = |v: f64| H - B - (H - T - B) * v / y_max;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        W / 2.0,
        xml_escape(title)
    );
    // Axes and grid.
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            "<line x1=\"{L}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            W - R,
            L - 6.0,
            yy + 4.0,
            fmt_num(v),
            W - R + 6.0,
            yy + 4.0,
            fmt_num(v * cap)
        );
    }
    for i in 0..=6 {
        let t = t_max * f64::from(i) / 6.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}s</text>",
            x(t),
            H - B + 18.0,
            t.round()
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{L}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"black\"/>\
         <line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{0:.1}\" stroke=\"black\"/>\
         <line x1=\"{1:.1}\" y1=\"{T}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"black\"/>",
        H - B,
        W - R
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{0:.1}\" transform=\"rotate(-90 16 {0:.1})\" \
         text-anchor=\"middle\">replicas</text>\
         <text x=\"{1:.1}\" y=\"{0:.1}\" transform=\"rotate(90 {1:.1} {0:.1})\" \
         text-anchor=\"middle\">load (rps)</text>",
        (T + H - B) / 2.0,
        W - 16.0
    );
    // Load, then one step line per result: a value holds for its second, so a change draws a
    // vertical segment; unchanged seconds add no points.
    let path = |points: &mut dyn Iterator<Item = (f64, f64)>| {
        let mut p = String::new();
        let mut prev: Option<f64> = None;
        for (t, v) in points {
            match prev {
                None => {
                    let _ = write!(p, " {:.1},{:.1}", x(t), y(v));
                }
                Some(pv) if (pv - v).abs() > 1e-9 => {
                    let _ = write!(p, " {:.1},{:.1} {:.1},{:.1}", x(t), y(pv), x(t), y(v));
                }
                Some(_) => {}
            }
            prev = Some(v);
        }
        if let Some(v) = prev {
            let _ = write!(p, " {:.1},{:.1}", x(t_max), y(v));
        }
        p
    };
    let load = path(&mut first.timeline.iter().map(|k| (k.t as f64, k.rps / cap)));
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#999\" stroke-width=\"1\" points=\"{}\"/>",
        load.trim_start()
    );
    for (n, r) in results.iter().enumerate() {
        let pts = path(&mut r.timeline.iter().map(|k| (k.t as f64, f64::from(k.desired))));
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            COLORS[n % COLORS.len()],
            pts.trim_start()
        );
    }
    // Legend, one row per line, on a white box.
    let _ = writeln!(
        s,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"420\" height=\"{:.1}\" fill=\"white\" \
         fill-opacity=\"0.85\" stroke=\"#ccc\"/>",
        L + 4.0,
        T + 2.0,
        16.0 * (results.len() + 1) as f64 + 4.0
    );
    let mut row = 0.0;
    let mut legend = |s: &mut String, color: &str, width: u32, label: &str| {
        let ly = T + 10.0 + 16.0 * row;
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{2:.1}\" y2=\"{1:.1}\" stroke=\"{color}\" \
             stroke-width=\"{width}\"/><text x=\"{3:.1}\" y=\"{4:.1}\">{5}</text>",
            L + 10.0,
            ly,
            L + 30.0,
            L + 36.0,
            ly + 4.0,
            xml_escape(label)
        );
        row += 1.0;
    };
    legend(&mut s, "#999", 1, "load / capacity");
    for (n, r) in results.iter().enumerate() {
        let label = format!(
            "{}: {} s over objective, {} replica-s, {} scale events",
            r.name, r.seconds_over_objective, r.replica_seconds, r.scale_events
        );
        legend(&mut s, COLORS[n % COLORS.len()], 2, &label);
    }
    s.push_str("</svg>\n");
    s
}

/// The smallest of 1, 2, 5 × 10^k at least `v`.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{}", v.round()) } else { format!("{v:.1}") }
}
