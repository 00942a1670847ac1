//! `weft top`: live requests/s, in-flight, latency, cpu and memory per instance, deployment or
//! service.
//!
//! The CLI scrapes the sidecars (`status.sidecarAdmin`) and the agents (`status.metricsAddress`)
//! itself, with the controllers' own pipeline (`weft_controllers::scrape`): rates need two
//! scrapes, so the first table comes after one second. This works wherever those addresses are
//! reachable from the CLI, i.e. on the machine that runs the instances (they are loopback
//! addresses); the api server does not relay them.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use weft_api::{Instance, Node, Service};
use weft_controllers::scrape::rates::{self, Buckets};
use weft_controllers::scrape::{self, InstanceFigures, Scraper, Target};

use crate::connect::Connection;
use crate::exit;
use crate::output;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  weft top                 every instance, once\n  weft top deploy -w       per deployment, refreshed every second\n  weft top svc -A          per service in every namespace\n\nFigures: RPS is requests/s the instances served over the last second (inbound, through\ntheir sidecars), IN-FLIGHT the requests being served now, P50/P99 the latency of the\nrequests completed over the last second, CPU in millicores, MEMORY the working set.\n'-' means no figure (not scraped yet, or the sidecar or agent did not answer)."
)]
pub struct TopArgs {
    /// What to sum over: inst (default), deploy or svc
    #[arg(default_value = "inst")]
    pub kind: String,
    #[arg(short, long, default_value = "default", conflicts_with = "all_namespaces")]
    pub namespace: String,
    /// Every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Refresh every second until interrupted
    #[arg(short, long)]
    pub watch: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Instances,
    Deployments,
    Services,
}

fn view(kind: &str) -> anyhow::Result<View> {
    match kind {
        "inst" | "instance" | "instances" | "pod" | "pods" => Ok(View::Instances),
        "deploy" | "deployment" | "deployments" => Ok(View::Deployments),
        "svc" | "service" | "services" => Ok(View::Services),
        other => Err(exit::usage(format!("weft top shows inst, deploy or svc, not {other:?}"))),
    }
}

pub async fn run(conn: &Connection, args: TopArgs) -> anyhow::Result<()> {
    let view = view(&args.kind)?;
    let client = conn.client()?;
    let ns = (!args.all_namespaces).then_some(args.namespace.as_str());
    let mut scraper = Scraper::new(tokio::time::Instant::now(), scrape::DEFAULT_TIMEOUT);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let clear = args.watch && std::io::stdout().is_terminal();
    let mut rounds = 0u64;
    loop {
        tick.tick().await;
        let instances = client.list::<Instance>(ns, None).await?.0;
        let nodes = client.list::<Node>(None, None).await?.0;
        let services = match view {
            View::Services => client.list::<Service>(ns, None).await?.0,
            _ => Vec::new(),
        };
        let targets: Vec<Target> = instances.iter().filter_map(Target::of).collect();
        let node_addrs: Vec<(String, String)> = nodes
            .iter()
            .filter_map(|n| {
                Some((n.metadata.name.clone(), n.status.as_ref()?.metrics_address.clone()?))
            })
            .collect();
        let figures = scraper.scrape(&targets, &node_addrs).await;
        rounds += 1;
        // The first round is only a base for rates.
        if rounds == 1 {
            continue;
        }
        let text = render(view, args.all_namespaces, &figures, &instances, &services);
        let mut out = std::io::stdout().lock();
        if clear {
            write!(out, "\x1b[2J\x1b[H")?;
        } else if rounds > 2 {
            writeln!(out)?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        if !args.watch {
            return Ok(());
        }
    }
}

/// Sums of a group of instances.
#[derive(Default)]
struct Row {
    instances: usize,
    reporting: usize,
    rps: Option<f64>,
    in_flight: Option<f64>,
    latency: Vec<Buckets>,
    cpu: Option<f64>,
    memory: Option<f64>,
    failures: Vec<String>,
}

fn add(sum: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v {
        *sum = Some(sum.unwrap_or(0.0) + v);
    }
}

impl Row {
    fn push(&mut self, f: &InstanceFigures) {
        self.instances += 1;
        if let Some(t) = &f.traffic {
            self.reporting += 1;
            add(&mut self.rps, t.rps);
            add(&mut self.in_flight, Some(t.in_flight));
            if !t.latency.is_empty() {
                self.latency.push(t.latency.clone());
            }
        }
        if let Some(r) = &f.resources {
            add(&mut self.cpu, r.cpu_cores);
            add(&mut self.memory, r.memory_bytes);
        }
        for e in f.traffic_error.iter().chain(f.resources_error.iter()) {
            self.failures.push(format!("{}: {e}", f.key.name));
        }
    }

    fn cells(&self) -> Vec<String> {
        let merged = rates::merge_buckets(self.latency.iter());
        let ms = |q: f64| match rates::quantile(q, &merged) {
            Some(s) => format!("{:.1}ms", s * 1000.0),
            None => "-".into(),
        };
        let num = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".into(), f);
        vec![
            num(self.rps, &|v| format!("{v:.1}")),
            num(self.in_flight, &|v| format!("{v:.0}")),
            ms(0.5),
            ms(0.99),
            num(self.cpu, &|v| format!("{:.0}m", v * 1000.0)),
            num(self.memory, &|v| format!("{:.0}Mi", v / (1024.0 * 1024.0))),
        ]
    }
}

const FIGURES: [&str; 6] = ["RPS", "IN-FLIGHT", "P50", "P99", "CPU", "MEMORY"];

fn render(
    view: View,
    all: bool,
    figures: &[InstanceFigures],
    instances: &[Instance],
    services: &[Service],
) -> String {
    let mut headers: Vec<&str> = Vec::new();
    if all {
        headers.push("NAMESPACE");
    }
    headers.push("NAME");
    let mut groups: BTreeMap<(String, String), Row> = BTreeMap::new();
    match view {
        View::Instances => {
            headers.push("DEPLOYMENT");
            for f in figures {
                let key = (f.key.namespace.clone(), f.key.name.clone());
                groups.entry(key).or_default().push(f);
            }
        }
        View::Deployments => {
            headers.push("INSTANCES");
            for f in figures.iter().filter(|f| !f.deployment.is_empty()) {
                let key = (f.key.namespace.clone(), f.deployment.clone());
                groups.entry(key).or_default().push(f);
            }
        }
        View::Services => {
            headers.push("INSTANCES");
            let by_name: BTreeMap<(&str, &str), &Instance> = instances
                .iter()
                .map(|i| ((i.metadata.namespace_or_default(), i.metadata.name.as_str()), i))
                .collect();
            for s in services {
                let ns = s.metadata.namespace_or_default().to_string();
                let row = groups.entry((ns.clone(), s.metadata.name.clone())).or_default();
                for f in figures.iter().filter(|f| f.key.namespace == ns) {
                    let selected = by_name
                        .get(&(f.key.namespace.as_str(), f.key.name.as_str()))
                        .is_some_and(|i| weft_controllers::endpoints::selects(s, i));
                    if selected {
                        row.push(f);
                    }
                }
            }
        }
    }
    headers.extend(FIGURES);
    let deployment_of: BTreeMap<(&str, &str), &str> = figures
        .iter()
        .map(|f| ((f.key.namespace.as_str(), f.key.name.as_str()), f.deployment.as_str()))
        .collect();
    let mut failures = Vec::new();
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|((ns, name), row)| {
            let mut cells = Vec::new();
            if all {
                cells.push(ns.clone());
            }
            cells.push(name.clone());
            match view {
                View::Instances => {
                    let d = deployment_of.get(&(ns.as_str(), name.as_str())).copied();
                    cells.push(d.filter(|d| !d.is_empty()).unwrap_or("<none>").to_string());
                }
                _ => cells.push(format!("{}/{}", row.reporting, row.instances)),
            }
            cells.extend(row.cells());
            failures.extend(row.failures.iter().cloned());
            cells
        })
        .collect();
    if rows.is_empty() {
        return "No running instances.\n".to_string();
    }
    let mut out = output::table(&headers, &rows);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    failures.sort();
    failures.dedup();
    for f in failures.iter().take(10) {
        out.push_str(&format!("! {f}\n"));
    }
    if failures.len() > 10 {
        out.push_str(&format!("! … and {} more\n", failures.len() - 10));
    }
    out
}

#[cfg(test)]
mod tests {
    use weft_controllers::runtime::ObjectKey;
    use weft_controllers::scrape::{Resources, Traffic};

    use super::*;

    fn fig(name: &str, rps: f64, ok: bool) -> InstanceFigures {
        InstanceFigures {
            key: ObjectKey::new("default", name),
            deployment: "web".into(),
            node: Some("n1".into()),
            traffic: ok.then(|| Traffic {
                rps: Some(rps),
                in_flight: 2.0,
                latency: vec![(0.01, 10.0), (f64::INFINITY, 10.0)],
                ..Traffic::default()
            }),
            traffic_error: (!ok).then(|| "sidecar 127.0.0.1:1: no answer within 500ms".into()),
            resources: Some(Resources {
                cpu_cores: Some(0.25),
                memory_bytes: Some(64.0 * 1024.0 * 1024.0),
                ..Resources::default()
            }),
            resources_error: None,
        }
    }

    #[test]
    fn tables_per_instance_and_per_deployment() {
        let figs = [fig("web-a", 10.0, true), fig("web-b", 5.0, true), fig("web-c", 0.0, false)];
        let t = render(View::Instances, false, &figs, &[], &[]);
        assert!(t.starts_with("NAME"), "{t}");
        assert!(t.contains("web-a"), "{t}");
        assert!(t.contains("10.0"), "{t}");
        assert!(t.contains("250m") && t.contains("64Mi"), "{t}");
        assert!(t.contains("! web-c: sidecar 127.0.0.1:1: no answer"), "{t}");
        let t = render(View::Deployments, false, &figs, &[], &[]);
        assert!(t.contains("2/3"), "{t}");
        assert!(t.contains("15.0"), "{t}");
        assert!(t.contains("750m"), "{t}");
        assert!(t.contains("5.0ms"), "{t}");
        assert_eq!(render(View::Instances, false, &[], &[], &[]), "No running instances.\n");
        assert!(view("nodes").is_err());
    }
}
