//! `weft sim`: replay a request-rate trace through weft's autoscaler (the real `decide`, with the
//! policy of an Autoscaler manifest) and through the Kubernetes HPA's defaults, offline, and
//! compare them. The model and the contenders are `weft_autoscale::sim`'s; this module reads and
//! checks the inputs, prints the comparison and writes `timeline.csv` and `chart.svg`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use weft_api::kinds::autoscaler::{AutoscalerSpec, MetricType};
use weft_api::kinds::{self, Autoscaler, Deployment};
use weft_api::quantity::Quantity;
use weft_autoscale::sim::{self, Contender, Model, SimResult};
use weft_autoscale::{Policy, Reason, Requests};

use crate::exit;
use crate::manifest::{self, Loaded};

const EXAMPLES: &str = "\
The trace is a CSV of `seconds,rps` lines (an optional header line; blank lines and lines
starting with # are skipped); each rate holds until the next line, and the trace ends at its
last line. Seconds must increase and rates must not be negative.

The model: load is spread evenly over the ready instances; one instance serves --capacity
requests/s within the latency objective (a second with more load than that is over objective);
a new instance serves --start-delay after the decision that adds it; instances report
concurrency = their rps x --latency. weft decides every second with the Autoscaler's policy;
the HPA every 15s with its defaults (no burst mode, 5m scale-down stabilization) on the same
metrics and replica range. cpu and memory are not simulated: only concurrency and rps metrics
drive the runs.

Examples:
  weft sim --trace examples/sim/step.csv --autoscaler examples/sim/catalog-autoscaler.yaml
  weft sim --trace load.csv --autoscaler app.yaml --capacity 250 --start-delay 20s --out sim/
  weft sim --generate step                 write step.csv here: a 4x step up, then back down
  weft sim --generate flat --trace flat.csv    150% of one instance's capacity, +-20% noise
  weft sim --generate step --autoscaler examples/sim/catalog-autoscaler.yaml
                                           write step.csv and replay it, no file needed";

/// The example traces `--generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// 80% of one instance's capacity, 4x that from 60s, back at 240s, until 420s
    Step,
    /// 150% of one instance's capacity with +-20% noise every second, for 600s
    Flat,
}

impl Generate {
    fn name(self) -> &'static str {
        match self {
            Generate::Step => "step",
            Generate::Flat => "flat",
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct SimArgs {
    /// The load, as `seconds,rps` lines; with --generate, where to write the example trace
    #[arg(long, value_name = "FILE.csv", required_unless_present = "generate")]
    pub trace: Option<PathBuf>,
    /// A manifest with exactly one Autoscaler (a Deployment it targets, in the same file, gives
    /// the requests utilisation targets need)
    #[arg(long, value_name = "FILE.yaml", required_unless_present = "generate")]
    pub autoscaler: Option<PathBuf>,
    /// Write an example trace (to --trace, or to DIR/step.csv or DIR/flat.csv) instead of
    /// reading one; replays it too when --autoscaler is given
    #[arg(long, value_name = "step|flat")]
    pub generate: Option<Generate>,
    /// Requests per second one instance serves within the latency objective
    #[arg(long, value_name = "RPS", default_value_t = 100.0)]
    pub capacity: f64,
    /// From the decision that adds an instance to the instance serving
    #[arg(long, value_name = "DUR", default_value = "5s")]
    pub start_delay: String,
    /// Time per request: instances report concurrency = rps x latency
    #[arg(long, value_name = "DUR", default_value = "50ms")]
    pub latency: String,
    /// Replicas at the start [default: minReplicas, at least 1]
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// One instance's cpu request (e.g. 250m), for cpu targetUtilization metrics [default: the
    /// target Deployment's, if the file has it]
    #[arg(long, value_name = "QUANTITY")]
    pub cpu_request: Option<String>,
    /// One instance's memory request (e.g. 128Mi), for memory targetUtilization metrics
    /// [default: the target Deployment's, if the file has it]
    #[arg(long, value_name = "QUANTITY")]
    pub memory_request: Option<String>,
    /// Where timeline.csv and chart.svg go (created if missing)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// The longest trace replayed (a week): the simulation runs second by second.
const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    if !(args.capacity.is_finite() && args.capacity > 0.0) {
        return Err(exit::usage(format!(
            "--capacity: must be a number of requests per second more than 0, got {}",
            args.capacity
        )));
    }
    let start_delay = duration("start-delay", &args.start_delay)?;
    let latency = duration("latency", &args.latency)?;
    if latency.is_zero() {
        return Err(exit::usage("--latency: must be more than 0s"));
    }
    let max = weft_api::kinds::deployment::MAX_REPLICAS;
    if let Some(r) = args.replicas
        && i64::from(r) > i64::from(max)
    {
        return Err(exit::usage(format!("--replicas: must be at most {max}, got {r}")));
    }
    // Check the manifest before writing anything.
    let scaler = match &args.autoscaler {
        Some(path) => Some(load_autoscaler(path, &args)?),
        None => None,
    };

    let (trace, trace_name) = match args.generate {
        Some(g) => {
            let path = match &args.trace {
                Some(p) => p.clone(),
                None => args.out.join(format!("{}.csv", g.name())),
            };
            let trace = generate(g, args.capacity);
            write_generated(&path, &trace_csv(&trace))?;
            println!("wrote {}: {}", path.display(), describe_generated(g, args.capacity));
            if scaler.is_none() {
                println!(
                    "next: weft sim --trace {} --autoscaler FILE.yaml \
                     (e.g. examples/sim/catalog-autoscaler.yaml)",
                    path.display()
                );
                return Ok(());
            }
            println!();
            (trace, path.display().to_string())
        }
        None => {
            let path = args.trace.as_ref().context("--trace is required")?;
            (read_trace(path)?, path.display().to_string())
        }
    };
    let Some(scaler) = scaler else {
        return Err(exit::usage("--autoscaler is required"));
    };

    let policy = &scaler.policy;
    let model = Model {
        capacity_rps: args.capacity,
        start_delay,
        latency,
        initial_replicas: args.replicas.unwrap_or(policy.min_replicas.max(1)),
    };
    let weft = sim::simulate(&trace, &Contender::weft(policy.clone()), &model);
    let hpa = sim::simulate(&trace, &Contender::hpa(policy), &model);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output directory {}", args.out.display()))?;
    print!("{}", header(&trace_name, &trace, &scaler, &model));
    println!();
    print!("{}", timeline(&[&weft, &hpa], args.capacity));
    println!();
    print!("{}", events(&[&weft, &hpa]));
    println!();
    print!("{}", summary(&weft, &hpa));

    let csv_path = args.out.join("timeline.csv");
    let svg_path = args.out.join("chart.svg");
    std::fs::write(&csv_path, sim::timeline_csv(&[&weft, &hpa]))
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let title =
        format!("{} through Autoscaler {}: weft vs the HPA's defaults", trace_name, scaler.name);
    std::fs::write(&svg_path, sim::chart_svg(&[&weft, &hpa], &title))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!();
    println!(
        "wrote {} (replicas per second) and {} (open it in a browser)",
        csv_path.display(),
        svg_path.display()
    );
    Ok(())
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    text.parse::<weft_api::duration::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| exit::usage(format!("--{flag}: {e}")))
}

// ---- the trace ----

/// Reads and checks a `seconds,rps` CSV.
fn read_trace(path: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    if !path.exists() {
        return Err(exit::usage(format!("{}: no such file", path.display())));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| exit::usage(format!("{}: not UTF-8 text", path.display())))?;
    parse_trace(&text)
        .map_err(|(line, msg)| exit::usage(format!("{}:{line}: {msg}", path.display())))
}

/// Parses a trace; errors are (1-based line, message).
fn parse_trace(text: &str) -> Result<Vec<(f64, f64)>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut first = true;
    let mut last_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        last_line = n;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let is_first = std::mem::replace(&mut first, false);
        // A header: the first line, with no number in it.
        if is_first && fields.iter().all(|f| f.parse::<f64>().is_err()) {
            if fields.len() != 2 {
                return Err((
                    n,
                    format!("expected a `seconds,rps` header or data, found {line:?}"),
                ));
            }
            continue;
        }
        let [t, rps] = fields[..] else {
            return Err((
                n,
                format!("expected two fields, `seconds,rps`, found {} in {line:?}", fields.len()),
            ));
        };
        let t: f64 = t
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| (n, format!("seconds {t:?} is not a number")))?;
        let rps: f64 = rps
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| (n, format!("rps {rps:?} is not a number")))?;
        if t < 0.0 {
            return Err((n, format!("seconds {t} is negative")));
        }
        if t > MAX_SECONDS {
            return Err((n, format!("seconds {t} is past a week, the longest trace replayed")));
        }
        if rps < 0.0 {
            return Err((n, format!("rps {rps} is negative")));
        }
        if let Some(&(prev, _)) = out.last()
            && t <= prev
        {
            return Err((
                n,
                format!("seconds {t} is not after the previous line's {prev} (time must increase)"),
            ));
        }
        out.push((t, rps));
    }
    if out.is_empty() {
        return Err((last_line.max(1), "no `seconds,rps` lines: the trace is empty".into()));
    }
    Ok(out)
}

/// An example trace, scaled to one instance's capacity.
fn generate(g: Generate, capacity: f64) -> Vec<(f64, f64)> {
    match g {
        Generate::Step => {
            let base = 0.8 * capacity;
            let mut t = sim::step_trace(base, 4.0, 60, 240);
            t.extend(sim::step_trace(base, 1.0, 0, 181).into_iter().map(|(s, r)| (s + 240.0, r)));
            t
        }
        Generate::Flat => sim::noisy_flat_trace(1.5 * capacity, 0.2, 601, 1),
    }
}

fn describe_generated(g: Generate, capacity: f64) -> String {
    match g {
        Generate::Step => format!(
            "{} rps, {} rps from 60s, back to {} rps from 240s, until 420s",
            fmt_rps(0.8 * capacity),
            fmt_rps(3.2 * capacity),
            fmt_rps(0.8 * capacity)
        ),
        Generate::Flat => format!("{} rps +-20% every second, for 600s", fmt_rps(1.5 * capacity)),
    }
}

/// The trace as CSV, one line per change of rate (and the last second, where the trace ends).
fn trace_csv(trace: &[(f64, f64)]) -> String {
    let mut s = String::from("seconds,rps\n");
    for (i, &(t, rps)) in trace.iter().enumerate() {
        let same_as_before = i > 0 && trace[i - 1].1 == rps;
        if same_as_before && i + 1 < trace.len() {
            continue;
        }
        let _ = writeln!(s, "{},{}", fmt_rps(t), fmt_rps(rps));
    }
    s
}

/// Writes a generated trace, but never over a different file (it may be someone's data).
fn write_generated(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.exists() {
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        return Err(exit::usage(format!(
            "{}: already exists and differs from the example trace; not overwriting it \
             (remove it, or name another file with --trace)",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Whole numbers from 10 up, else up to 3 decimals.
fn fmt_round(v: f64) -> String {
    if v >= 10.0 { format!("{v:.0}") } else { fmt_rps(v) }
}

/// Up to 3 decimals, without trailing zeros.
fn fmt_rps(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

// ---- the autoscaler ----

struct Scaler {
    name: String,
    origin: String,
    policy: Policy,
}

/// Reads the manifest as `weft apply` does (every document decoded, defaulted and validated),
/// finds its one Autoscaler and resolves its policy.
fn load_autoscaler(path: &Path, args: &SimArgs) -> anyhow::Result<Scaler> {
    let loaded = manifest::load(&[path.to_path_buf()], false)?;
    let mut scalers: Vec<(&Loaded, Autoscaler)> = Vec::new();
    let mut deployments: Vec<Deployment> = Vec::new();
    for l in &loaded {
        let (info, value) = l.normalize(None)?;
        let decode_err =
            |e: weft_api::ApiError| exit::usage(format!("{}: {}", l.origin(), e.message));
        match info.kind {
            "Autoscaler" => scalers.push((l, kinds::from_value(value).map_err(decode_err)?)),
            "Deployment" => deployments.push(kinds::from_value(value).map_err(decode_err)?),
            _ => {}
        }
    }
    let (l, scaler) = match scalers.len() {
        1 => scalers.remove(0),
        0 => {
            let found: Vec<String> =
                loaded.iter().filter_map(|l| kinds::describe_raw(&l.value)).collect();
            return Err(exit::usage(format!(
                "{}: no Autoscaler in it (found {}); weft sim needs exactly one",
                path.display(),
                found.join(", ")
            )));
        }
        n => {
            let at: Vec<String> = scalers
                .iter()
                .map(|(l, a)| format!("{} at {}", a.metadata.name, l.origin()))
                .collect();
            return Err(exit::usage(format!(
                "{}: {n} Autoscalers ({}); weft sim needs exactly one: put the one to simulate \
                 in a file of its own",
                path.display(),
                at.join(", ")
            )));
        }
    };
    let name = scaler.metadata.name.clone();
    let origin = l.origin();
    let at = |msg: String| exit::usage(format!("{origin}: Autoscaler {name}: {msg}"));
    let spec: &AutoscalerSpec = &scaler.spec;
    let target = deployments.iter().find(|d| {
        d.metadata.name == spec.target.name && d.metadata.namespace == scaler.metadata.namespace
    });
    let from_target = target
        .map(|d| Requests::from_resources(&d.spec.template.resources.requests))
        .unwrap_or_default();
    let requests = Requests {
        cpu_cores: match &args.cpu_request {
            Some(q) => Some(quantity("cpu-request", q)?.as_milli_ceil() as f64 / 1000.0),
            None => from_target.cpu_cores,
        },
        memory_bytes: match &args.memory_request {
            Some(q) => Some(quantity("memory-request", q)?.as_units_ceil() as f64),
            None => from_target.memory_bytes,
        },
    };
    for (i, m) in spec.metrics.iter().enumerate() {
        let (have, flag, example) = match m.kind {
            MetricType::Cpu => (requests.cpu_cores, "cpu", "250m"),
            MetricType::Memory => (requests.memory_bytes, "memory", "128Mi"),
            _ => continue,
        };
        if m.target_utilization.is_some() && !have.is_some_and(|r| r > 0.0) {
            let why = match target {
                Some(_) => format!(
                    "Deployment {} in {} requests no {flag}",
                    spec.target.name,
                    path.display()
                ),
                None => format!("the file has no Deployment {}", spec.target.name),
            };
            return Err(at(format!(
                "spec.metrics[{i}].targetUtilization: a {flag} utilisation target is a percentage \
                 of each instance's {flag} request, and {why}: pass --{flag}-request (e.g. \
                 --{flag}-request {example})"
            )));
        }
    }
    let policy = Policy::from_spec(spec, requests).map_err(|e| at(e.to_string()))?;
    if !policy.metrics.iter().any(|m| matches!(m.metric, MetricType::Concurrency | MetricType::Rps))
    {
        return Err(at(
            "spec.metrics: weft sim replays request rates, so it needs a concurrency or rps \
             metric (cpu and memory are not simulated)"
                .into(),
        ));
    }
    Ok(Scaler { name, origin, policy })
}

fn quantity(flag: &str, text: &str) -> anyhow::Result<Quantity> {
    let q: Quantity = text.parse().map_err(|e| exit::usage(format!("--{flag}: {e}")))?;
    if q == Quantity::ZERO {
        return Err(exit::usage(format!("--{flag}: must be more than 0")));
    }
    Ok(q)
}

// ---- the report ----

fn header(trace_name: &str, trace: &[(f64, f64)], scaler: &Scaler, model: &Model) -> String {
    let mut s = String::new();
    let seconds = trace.last().map_or(0.0, |p| p.0.floor()) + 1.0;
    let (lo, hi) = trace
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let _ = writeln!(
        s,
        "trace:      {trace_name}: {}s, {}-{} rps",
        fmt_rps(seconds),
        fmt_round(lo),
        fmt_round(hi)
    );
    let p = &scaler.policy;
    let metrics: Vec<String> = p
        .metrics
        .iter()
        .map(|m| match m.request {
            Some(r) => format!(
                "{} {}% of {}",
                m.metric,
                fmt_rps(m.target / r * 100.0),
                match m.metric {
                    MetricType::Cpu => format!("{}m", fmt_rps(r * 1000.0)),
                    _ => format!("{}Mi", fmt_rps(r / 1048576.0)),
                }
            ),
            None => format!("{} {}", m.metric, fmt_rps(m.target)),
        })
        .collect();
    let _ = writeln!(
        s,
        "autoscaler: {} ({}): {}-{} replicas, {} per instance",
        scaler.name,
        scaler.origin,
        p.min_replicas,
        p.max_replicas,
        metrics.join(", ")
    );
    let _ = writeln!(
        s,
        "model:      {} rps per instance within the objective, {} to start, {} per request, \
         {} replica{} at first",
        fmt_rps(model.capacity_rps),
        humantime::format_duration(model.start_delay),
        humantime::format_duration(model.latency),
        model.initial_replicas,
        if model.initial_replicas == 1 { "" } else { "s" }
    );
    let unsimulated: Vec<String> = p
        .metrics
        .iter()
        .filter(|m| matches!(m.metric, MetricType::Cpu | MetricType::Memory))
        .map(|m| m.metric.to_string())
        .collect();
    if !unsimulated.is_empty() {
        let _ = writeln!(
            s,
            "note:       {} {} not simulated (no data): only the request-rate metrics drive \
             these runs",
            unsimulated.join(" and "),
            if unsimulated.len() == 1 { "is" } else { "are" }
        );
    }
    s
}

/// A sparkline per contender (and the load, in instances' worth of capacity) on one scale.
fn timeline(results: &[&SimResult], capacity: f64) -> String {
    const WIDTH: usize = 60;
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(first) = results.first() else { return String::new() };
    let n = first.timeline.len();
    if n == 0 {
        return String::new();
    }
    let step = n.div_ceil(WIDTH);
    let load: Vec<f64> = first
        .timeline
        .chunks(step)
        .map(|c| c.iter().map(|k| k.rps / capacity).sum::<f64>() / c.len() as f64)
        .collect();
    let rows: Vec<Vec<f64>> = results
        .iter()
        .map(|r| {
            r.timeline
                .chunks(step)
                .map(|c| f64::from(c.iter().map(|k| k.desired).max().unwrap_or(0)))
                .collect()
        })
        .collect();
    let max = rows.iter().flatten().chain(load.iter()).fold(1.0_f64, |a, &b| a.max(b)).ceil();
    let line = |values: &[f64]| -> String {
        values
            .iter()
            .map(|&v| {
                let level = if v <= 0.0 { 0 } else { ((v / max * 8.0).round() as usize).max(1) };
                BARS[level.min(8)]
            })
            .collect()
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "replicas over time (a column is {step}s, the most replicas in it; a full bar is {}):",
        fmt_rps(max)
    );
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(s, "  {:<width$} |{}| instances' worth of load", "load", line(&load));
    for (r, row) in results.iter().zip(&rows) {
        let peak = r.timeline.iter().map(|k| k.desired).max().unwrap_or(0);
        let _ = writeln!(s, "  {:<width$} |{}| peak {peak}", r.name, line(row));
    }
    let end = first.timeline.last().map_or(0, |k| k.t + 1);
    let _ = writeln!(s, "  {:<width$}  0s{:>w$}", "", format!("{end}s"), w = rows[0].len() - 2);
    s
}

/// The scale events, a few per line.
fn events(results: &[&SimResult]) -> String {
    const MAX: usize = 24;
    const PER_LINE: usize = 6;
    let mut s = String::from("scale events (second: from → to):\n");
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    for r in results {
        if r.events.is_empty() {
            let _ = writeln!(s, "  {:<width$} none", r.name);
            continue;
        }
        let items: Vec<String> = r
            .events
            .iter()
            .take(MAX)
            .map(|(t, d)| {
                let why = match d.reason {
                    Reason::Burst { .. } => " burst",
                    Reason::ScaleToZero { .. } => " idle",
                    Reason::Poked => " poked",
                    Reason::BelowMin(_) => " min",
                    Reason::AboveMax(_) => " max",
                    _ => "",
                };
                format!("{t}s: {} → {}{why}", d.from, d.replicas)
            })
            .collect();
        for (i, chunk) in items.chunks(PER_LINE).enumerate() {
            let name = if i == 0 { r.name.as_str() } else { "" };
            let _ = writeln!(s, "  {name:<width$} {}", chunk.join(", "));
        }
        if r.events.len() > MAX {
            let _ = writeln!(
                s,
                "  {:<width$} … and {} more (every second is in timeline.csv)",
                "",
                r.events.len() - MAX
            );
        }
    }
    s
}

fn summary(weft: &SimResult, hpa: &SimResult) -> String {
    let rows = [
        ("seconds over objective", weft.seconds_over_objective, hpa.seconds_over_objective),
        ("replica-seconds", weft.replica_seconds, hpa.replica_seconds),
        ("scale events", u64::from(weft.scale_events), u64::from(hpa.scale_events)),
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24}{:>10}{:>10}{:>10}",
        "(lower is better)",
        weft.name,
        hpa.name,
        format!("{}/{}", weft.name, hpa.name)
    );
    for (label, w, h) in rows {
        let ratio = if h == 0 {
            if w == 0 { "1.00".to_string() } else { "-".to_string() }
        } else {
            format!("{:.2}", w as f64 / h as f64)
        };
        let _ = writeln!(s, "{label:<24}{w:>10}{h:>10}{ratio:>10}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_traces() {
        assert_eq!(
            parse_trace("seconds,rps\n0,10\n\n# x\n5, 20.5\r\n").unwrap(),
            vec![(0.0, 10.0), (5.0, 20.5)]
        );
        assert_eq!(parse_trace("0,1\n1,2").unwrap(), vec![(0.0, 1.0), (1.0, 2.0)]);
        assert_eq!(parse_trace("t,rps\n0,1\n1;2\n").unwrap_err().0, 3);
        assert_eq!(parse_trace("0,1\n1,x\n").unwrap_err().0, 2);
        assert_eq!(parse_trace("0,1\n5,1\n3,1\n").unwrap_err().0, 3);
        assert_eq!(parse_trace("0,1\n5,1\n5,1\n").unwrap_err().0, 3);
        assert_eq!(parse_trace("0,-1\n").unwrap_err().0, 1);
        assert_eq!(parse_trace("-1,1\n").unwrap_err().0, 1);
        assert_eq!(parse_trace("0,inf\n").unwrap_err().0, 1);
        assert_eq!(parse_trace("seconds,rps\n").unwrap_err().0, 1);
        assert!(parse_trace("").is_err());
    }

    #[test]
    fn generated_traces_round_trip() {
        for g in [Generate::Step, Generate::Flat] {
            let t = generate(g, 100.0);
            let back = parse_trace(&trace_csv(&t)).unwrap();
            assert_eq!(back.last().unwrap().0, t.last().unwrap().0);
            // The rate at every second is the same after compression.
            let mut j = 0;
            for &(s, r) in &t {
                while j + 1 < back.len() && back[j + 1].0 <= s {
                    j += 1;
                }
                assert!((back[j].1 - r).abs() < 1e-3, "{g:?} at {s}");
            }
        }
        assert_eq!(
            trace_csv(&generate(Generate::Step, 100.0)),
            "seconds,rps\n0,80\n60,320\n240,80\n420,80\n"
        );
    }
}
