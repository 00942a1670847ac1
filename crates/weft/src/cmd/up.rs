//! `weft up`: the whole platform on one machine, in one process: api server on the embedded
//! store, controllers and scheduler, one local agent and the ingress gateway. Manifests given
//! with `-f` are applied once everything runs, and progress is shown until they are ready.
//!
//! Shutdown runs in dependency order: gateway and controllers first (nothing new is routed or
//! scheduled), then the agent stops every instance and sidecar, then the api server.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use weft_agent::{Agent, AgentOptions, CgroupMode};
use weft_api::wire::Role;
use weft_api::{Deployment, Instance, kinds};
use weft_client::{Client, ClientError};
use weft_controllers::{Controllers, Policy};
use weft_server::Server;

use crate::cmd::server::{self, ServerArgs};
use crate::connect::{Connection, SERVER_FILE};
use crate::exit::{self, Exit};
use crate::manifest;

const AFTER_HELP: &str = "\
Everything runs in this process; Ctrl-C stops it all (instances and sidecars included) and
leaves no process behind. State is kept in the data dir (default ~/.weft), so what you applied
comes back on the next `weft up`.

Examples:
  weft up -f examples/shop/            the demo shop; then open http://127.0.0.1:8080/
  weft up --capacity cpu=2,memory=4Gi  limit what instances may use on this machine
  weft up --data-dir /tmp/weft-test --listen 127.0.0.1:7171 --gateway 127.0.0.1:8181

In another terminal (the CLI finds the server and token in the data dir):
  weft get inst -o wide
  weft logs <instance> -f
  weft scale deploy catalog --replicas 3
  weft rollout status deploy catalog";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct UpArgs {
    /// Manifests to apply once the platform runs: file, directory or - (repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Read directories recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Address of the api server
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: String,
    /// Address of the ingress gateway (outside traffic into the mesh)
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub gateway: String,
    /// What instances may use on this machine, e.g. cpu=4,memory=8Gi [default: all of it]
    #[arg(long, value_name = "cpu=Q,memory=Q")]
    pub capacity: Option<String>,
    /// How the scheduler places instances: spread or binpack
    #[arg(long, default_value = "spread", value_name = "POLICY")]
    pub scheduler: String,
    /// Cpu and memory limits through cgroups: auto (where writable) or off
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub cgroups: CgroupMode,
    /// How long to show progress for the applied workloads before giving the summary anyway
    #[arg(long, default_value = "3m", value_name = "DURATION")]
    pub wait: String,
    /// Gateway: how long a request for a service scaled to zero is held while an instance
    /// starts (then 503)
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub hold_timeout: String,
    /// Gateway: most requests held per service scaled to zero (more get 503 at once)
    #[arg(long, default_value = "100", value_name = "N")]
    pub hold_queue: String,
    /// Lifetime of the sidecars' workload certificates (mTLS; renewed at 70% of it)
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub cert_ttl: String,
    #[command(flatten)]
    pub apisec: crate::cmd::apisec::ApiSecArgs,
    #[command(flatten)]
    pub obs: super::up_obs::UpObsArgs,
}

/// A shutdown signal for one part, sent once.
struct Stop(watch::Sender<bool>);

impl Stop {
    fn new() -> Stop {
        Stop(watch::channel(false).0)
    }
    fn signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
    fn fire(&self) {
        let _ = self.0.send(true);
    }
}

fn addr(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.parse().map_err(|_| {
        exit::usage(format!("--{flag} {text:?} is not an address such as 127.0.0.1:8080"))
    })
}

pub async fn run(conn: &Connection, args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let api_addr = addr("listen", &args.listen)?;
    let gateway_addr = addr("gateway", &args.gateway)?;
    let policy: Policy =
        args.scheduler.parse().map_err(|e: String| exit::usage(format!("--scheduler: {e}")))?;
    let wait: Duration = args
        .wait
        .parse::<weft_api::duration::Duration>()
        .map_err(|e| exit::usage(format!("--wait: {e}")))?
        .as_std();
    let capacity = match &args.capacity {
        Some(c) => {
            weft_agent::parse_resources("capacity", c).map_err(|e| exit::usage(e.to_string()))?
        }
        None => Default::default(),
    };
    let gateway_admin = args.obs.gateway_admin()?;
    // The gateway's flags too (--hold-timeout, --hold-queue, tracing and access log).
    let probe = gateway_args(gateway_addr, gateway_admin, "http://127.0.0.1:7070", "-", &args)
        .map_err(|e| exit::usage(e.to_string()))?;
    weft_proxy::Config::from_args(&probe).map_err(|e| exit::usage(e.to_string()))?;
    let (tls, audit) = crate::cmd::apisec::plan(&args.apisec)?;
    // Manifests are checked before anything starts, so a typo costs nothing.
    let manifests = load_manifests(&args.files, args.recursive)?;

    let data_dir = conn.data_dir();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let store = server::open_store(&data_dir)?;
    let api_listener = server::bind(api_addr, "api", "--listen").await?;
    // The gateway binds later, inside the proxy; find a taken port now, before anything runs.
    drop(server::bind(gateway_addr, "gateway", "--gateway").await?);

    let limits = server::limits(&ServerArgs {
        listen: args.listen.clone(),
        history: 10_000,
        max_body: "3Mi".into(),
        bookmark_interval: "10s".into(),
        store: None,
        controllers: false,
        cert_ttl: args.cert_ttl.clone(),
        trust_domain: "weft.local".into(),
        apisec: Default::default(),
    })?;
    let mut api =
        Server::start(Arc::new(store), limits).await.map_err(|e| anyhow::anyhow!(e.0.message))?;
    let admin_token =
        api.ensure_admin_token(&data_dir).await.map_err(|e| anyhow::anyhow!(e.0.message))?;
    server::enable_ca(&api, &data_dir, "weft.local", &args.cert_ttl).await?;
    let api_local = api_listener.local_addr().context("reading the api address")?;
    let scheme = crate::cmd::apisec::enable(&mut api, tls, audit, &data_dir, api_local)?;
    let url = crate::cmd::apisec::with_scheme(server::local_url(api_local), scheme);
    weft_server::auth::write_private(&data_dir.join(SERVER_FILE), &format!("{url}\n"))
        .with_context(|| format!("writing {}", data_dir.join(SERVER_FILE).display()))?;
    step(started, &format!("api server on {url} (data in {})", data_dir.display()));

    let (stop_front, stop_agent, stop_api) = (Stop::new(), Stop::new(), Stop::new());
    // The controllers' metrics on the api's /metrics; they run in this process.
    let controller_metrics = Arc::new(weft_controllers::Metrics::new());
    controller_metrics.leader.set(1);
    let served = controller_metrics.clone();
    api.add_metrics(move || served.encode());
    let mut api_task =
        tokio::spawn(api.serve(api_listener, stop_api.signal(), Duration::from_secs(5)));
    let client = Client::new(&url, Some(admin_token.clone())).context("the api address")?;

    // The agent first: controllers that started before it re-registered would find its node
    // NotReady (as the last run left it) and replace every instance instead of restarting them.
    let agent_token = run_token(&client, Role::Agent, AGENT_TOKEN).await?;
    let mut agent_options = AgentOptions::new(url.clone(), agent_token.0.clone(), data_dir.clone());
    agent_options.capacity = capacity;
    agent_options.cgroups = args.cgroups;
    agent_options.stop_on_exit = true;
    agent_options.sidecar_obs = args.obs.sidecar_obs();
    // Workload binaries built beside weft (the demo's weft-demo) are found by name.
    if let Some(dir) = agent_options.weft_bin.parent() {
        agent_options.extra_path.push(dir.to_path_buf());
    }
    let node = agent_options.name.clone();
    let mut agent_task = tokio::spawn(Agent::run(agent_options, stop_agent.signal()));
    wait_for_node(&client, &node, &mut agent_task).await?;
    step(started, &format!("agent running; node {node} is ready"));

    let controllers = Controllers::with_metrics(
        client.clone(),
        weft_controllers::Options { scheduler: policy, ..Default::default() },
        controller_metrics,
    );
    // Node pools' local agents are children of this process and stop with the controllers.
    let controllers_task = {
        let (client, data_dir, stop) = (client.clone(), data_dir.clone(), stop_front.signal());
        tokio::spawn(async move {
            crate::local_pool::run_controllers(controllers, &data_dir, &client, stop).await
        })
    };
    step(started, &format!("controllers and scheduler running ({policy} placement)"));

    let gateway_token = run_token(&client, Role::Proxy, GATEWAY_TOKEN).await?;
    let mut gateway_task = tokio::spawn(weft_proxy::run_until(
        gateway_args(gateway_addr, gateway_admin, &url, &gateway_token.0, &args)?,
        stop_front.signal(),
    ));
    let gateway_url = server::local_url(gateway_addr);
    let admin_note = gateway_admin.map(|a| format!(" (admin: http://{a}/metrics)"));
    step(started, &format!("ingress gateway on {gateway_url}{}", admin_note.unwrap_or_default()));

    let mut ctrl_c = std::pin::pin!(server::shutdown_signal());
    let outcome: anyhow::Result<()> = async {
        if !manifests.is_empty() {
            apply(&client, &manifests).await?;
            tokio::select! {
                r = progress(&client, &manifests, wait, started) => r?,
                _ = &mut ctrl_c => return Ok(()),
                r = &mut agent_task => return Err(ended("agent", r)),
                r = &mut gateway_task => return Err(ended("gateway", r)),
                r = &mut api_task => return Err(ended("api server", r.map(|r| r.map_err(anyhow::Error::from)))),
            }
        }
        banner(&url, &gateway_url, &admin_token, &data_dir, conn);
        tokio::select! {
            _ = &mut ctrl_c => Ok(()),
            r = &mut agent_task => Err(ended("agent", r)),
            r = &mut gateway_task => Err(ended("gateway", r)),
            r = &mut api_task => Err(ended("api server", r.map(|r| r.map_err(anyhow::Error::from)))),
        }
    }
    .await;

    eprintln!("\nstopping: gateway and controllers, then instances, then the api server...");
    stop_front.fire();
    if !gateway_task.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut gateway_task).await;
    }
    // Long enough for pool agents to stop their instances (they are killed after 30 s).
    let _ = tokio::time::timeout(Duration::from_secs(40), controllers_task).await;
    // The gateway's token is only for this run.
    let _ = client.revoke_token(&gateway_token.1).await;
    stop_agent.fire();
    if !agent_task.is_finished() {
        // Instances get their grace periods; the agent bounds the wait itself.
        match tokio::time::timeout(Duration::from_secs(120), &mut agent_task).await {
            Ok(Ok(Err(e))) => eprintln!("warning: the agent stopped with an error: {e}"),
            Err(_) => {
                eprintln!("warning: instances took over 2 minutes to stop; some may still run")
            }
            _ => {}
        }
    }
    let _ = client.revoke_token(&agent_token.1).await;
    stop_api.fire();
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut api_task).await;
    eprintln!("weft stopped");
    outcome
}

fn ended<E: std::fmt::Display>(
    what: &str,
    r: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Error {
    let why = match r {
        Ok(Ok(())) => "it stopped unexpectedly".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("it crashed ({e})"),
    };
    Exit { code: exit::FAILURE, message: format!("the {what} stopped: {why}") }.into()
}

fn step(started: Instant, what: &str) {
    eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
}

fn load_manifests(files: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<manifest::Loaded>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let loaded = manifest::load(files, recursive)?;
    for l in &loaded {
        l.normalize(None)?;
    }
    Ok(loaded)
}

async fn apply(client: &Client, manifests: &[manifest::Loaded]) -> anyhow::Result<()> {
    let objects: Vec<_> = manifests.iter().map(|l| l.value.clone()).collect();
    let resp = client.apply(&objects, None, false).await.context("applying the manifests")?;
    let summary: Vec<String> = resp
        .results
        .iter()
        .map(|r| {
            let singular =
                kinds::lookup(&r.kind).map_or(r.kind.to_lowercase(), |k| k.singular.to_string());
            format!("{singular}/{} {}", r.name, r.action)
        })
        .collect();
    eprintln!("applied: {}", summary.join(", "));
    Ok(())
}

/// Waits until the local agent's Node is registered and ready, or the agent fails.
async fn wait_for_node(
    client: &Client,
    node: &str,
    agent: &mut tokio::task::JoinHandle<Result<(), weft_agent::AgentError>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if agent.is_finished() {
            let r = agent.await;
            return Err(match r {
                Ok(Err(e)) => crate::cmd::agent::agent_error(e),
                other => ended("agent", other.map(|r| r.map_err(|e| e.to_string()))),
            });
        }
        match client.get::<weft_api::Node>(None, node).await {
            Ok(n) if n.status.as_ref().is_some_and(|s| s.ready) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the local agent did not register node {node} within 30s; run with WEFT_LOG=info to see why"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const GATEWAY_TOKEN: &str = "weft up: ingress gateway";
const AGENT_TOKEN: &str = "weft up: local agent";

/// A token with just `role` for one part of this run (token, id), so no part holds more than
/// it needs; the same part's leftovers from an earlier run (one that was killed) are revoked.
async fn run_token(
    client: &Client,
    role: Role,
    description: &str,
) -> anyhow::Result<(String, String)> {
    if let Ok(tokens) = client.list_tokens().await {
        for t in tokens.iter().filter(|t| t.description == description) {
            let _ = client.revoke_token(&t.id).await;
        }
    }
    let created = client
        .create_token(role, None, description)
        .await
        .with_context(|| format!("creating a token for the {description}"))?;
    Ok((created.token, created.info.id))
}

fn gateway_args(
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    url: &str,
    token: &str,
    args: &UpArgs,
) -> anyhow::Result<weft_proxy::ProxyArgs> {
    // The gateway originates mTLS into the mesh as the agent's sidecars expect (the agent reads
    // the same variable for them).
    let mtls = match std::env::var("WEFT_MESH_MTLS").as_deref() {
        Ok(m @ ("strict" | "permissive" | "off")) => m.to_string(),
        _ => "strict".to_string(),
    };
    #[derive(Parser)]
    struct Gateway {
        #[command(flatten)]
        args: weft_proxy::ProxyArgs,
    }
    let obs = args.obs.gateway_flags(admin);
    let addr = addr.to_string();
    let argv = [
        "proxy",
        "--gateway",
        &addr,
        "--server",
        url,
        "--token",
        token,
        "--hold-timeout",
        &args.hold_timeout,
        "--hold-queue",
        &args.hold_queue,
        "--mtls",
        &mtls,
    ]
    .into_iter()
    .chain(obs.iter().map(String::as_str));
    Gateway::try_parse_from(argv).map(|g| g.args).map_err(|e| {
        anyhow::anyhow!("gateway flags: {}", e.to_string().lines().next().unwrap_or(""))
    })
}

/// Shows where the applied deployments stand until all are available or `wait` passes.
async fn progress(
    client: &Client,
    manifests: &[manifest::Loaded],
    wait: Duration,
    started: Instant,
) -> anyhow::Result<()> {
    let wanted: Vec<(String, String)> = manifests
        .iter()
        .filter(|l| l.value.get("kind").and_then(|k| k.as_str()) == Some("Deployment"))
        .filter_map(|l| {
            let m = l.value.get("metadata")?;
            let name = m.get("name")?.as_str()?.to_string();
            let ns = m.get("namespace").and_then(|n| n.as_str()).unwrap_or("default").to_string();
            Some((ns, name))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let tty = std::io::stderr().is_terminal();
    let deadline = Instant::now() + wait;
    let mut last = String::new();
    loop {
        let (done, lines) = match snapshot(client, &wanted).await {
            Ok(s) => s,
            Err(e) => (false, vec![format!("(cannot read status: {e})")]),
        };
        let text = lines.join("\n");
        if text != last {
            if tty && !last.is_empty() {
                // Redraw in place: up as many lines as were printed, clear to the end.
                eprint!("\x1b[{}A\x1b[J", last.lines().count());
            }
            eprintln!("{text}");
            let _ = std::io::stderr().flush();
            last = text;
        }
        if done {
            step(started, "all workloads are ready");
            return Ok(());
        }
        if Instant::now() > deadline {
            eprintln!(
                "still not ready after {}; the platform keeps running. See why with `weft get inst -o wide` and `weft describe inst NAME`.",
                humantime::format_duration(wait)
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One line per wanted deployment: ready count, and for one that is not there yet, why.
async fn snapshot(
    client: &Client,
    wanted: &[(String, String)],
) -> Result<(bool, Vec<String>), ClientError> {
    let (deployments, _) = client.list::<Deployment>(None, None).await?;
    let (instances, _) = client.list::<Instance>(None, None).await?;
    let by_key: BTreeMap<(&str, &str), &Deployment> = deployments
        .iter()
        .map(|d| {
            ((d.metadata.namespace.as_deref().unwrap_or("default"), d.metadata.name.as_str()), d)
        })
        .collect();
    let mut all = true;
    let mut lines = Vec::new();
    for (ns, name) in wanted {
        let Some(d) = by_key.get(&(ns.as_str(), name.as_str())) else {
            all = false;
            lines.push(format!("  {ns}/{name}: not found"));
            continue;
        };
        let (ready, line) = crate::cmd::rollout::progress(d);
        let avail = d.status.as_ref().map_or(0, |s| s.available_replicas);
        let mark = if ready { "✓" } else { "…" };
        let mut l = format!("  {mark} {ns}/{name}: {avail}/{} ready", d.spec.replicas);
        if !ready {
            all = false;
            // The most telling instance: one with a reason, else the rollout's own words.
            let why = instances
                .iter()
                .filter(|i| {
                    i.spec.deployment == *name
                        && i.metadata.namespace.as_deref().unwrap_or("default") == ns
                })
                .filter_map(|i| {
                    let s = i.status.as_ref()?;
                    (!s.ready && !s.reason.is_empty()).then(|| {
                        let msg = if s.message.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", s.message)
                        };
                        format!("{} {}{msg}", i.metadata.name, s.reason)
                    })
                })
                .next()
                .unwrap_or(line);
            l.push_str(&format!(" ({why})"));
        }
        lines.push(l);
    }
    Ok((all, lines))
}

fn banner(
    url: &str,
    gateway: &str,
    admin_token: &str,
    data_dir: &std::path::Path,
    conn: &Connection,
) {
    let dd = if conn.data_dir.is_some() {
        format!(" --data-dir {}", data_dir.display())
    } else {
        String::new()
    };
    // The dashboard link carries the admin token (in the URL fragment, which never reaches a
    // server's logs): `weft up` is a local, single-user tool whose admin token already sits in
    // the user's own data dir, and this terminal is that user's. Shared servers use
    // `weft dashboard` with a token of their own (e.g. a viewer token) instead.
    let dashboard = super::dashboard::link(url, Some(admin_token));
    eprintln!(
        "\nweft is up.\n  gateway:   {gateway}/\n  api:       {url}  (admin token in {})\n  dashboard: {dashboard}\n\nTry, in another terminal:\n  weft get inst -o wide{dd}\n  weft get svc{dd}\n  weft logs INSTANCE -f{dd}\n  weft scale deploy NAME --replicas 3{dd}\n\nCtrl-C stops everything.",
        data_dir.join(weft_server::auth::ADMIN_TOKEN_FILE).display()
    );
}
