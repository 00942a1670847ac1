//! `weft proxy` as a process: runtimes (one single-threaded runtime per worker thread by
//! default), listeners, signals, drain and exit codes.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, HELP, ProxyArgs, RuntimeLayout};
use crate::proxy::{Listeners, Proxy};
use crate::sidecar::Source;

/// `weft proxy` straight from the command line (`args` starts with the subcommand's name),
/// without building the rest of weft's CLI: the data plane's resident memory is a target, and
/// the full command tree costs megabytes of it.
pub fn main_from_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    use clap::{Args, FromArgMatches};
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let text: Option<Vec<String>> =
        args.iter().skip(1).map(|a| a.clone().into_string().ok()).collect();
    if let Some(parsed) = text.as_deref().and_then(ProxyArgs::parse_plain) {
        return main(parsed);
    }
    let cmd = ProxyArgs::augment_args(clap::Command::new("proxy").bin_name("weft proxy"))
        .about("Run the sidecar proxy (or a plain reverse proxy with --upstream)")
        .after_help(HELP);
    let parsed = cmd.try_get_matches_from(args).and_then(|m| ProxyArgs::from_arg_matches(&m));
    match parsed {
        Ok(args) => main(args),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 64 } else { 0 })
        }
    }
}

/// Runs `weft proxy` to the end and returns the process exit code: 0 after a drain, 64 for a bad
/// flag, 1 for anything else the user can act on (each printed as one line on stderr).
pub fn main(args: ProxyArgs) -> ExitCode {
    trust_ca_file(&args);
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    match run_process(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--ca-file`: every api client of this process trusts it.
pub(crate) fn trust_ca_file(args: &ProxyArgs) {
    if let Some(ca) = args.ca_file.as_deref().filter(|c| !c.is_empty()) {
        weft_client::tls::set_default_ca_file(Some(ca.into()));
    }
}

fn runtime(layout: RuntimeLayout, threads: usize) -> anyhow::Result<Runtime> {
    let mut b = match layout {
        RuntimeLayout::PerCore => Builder::new_current_thread(),
        RuntimeLayout::Shared => {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(threads);
            b
        }
    };
    b.enable_all().build().context("cannot start the runtime")
}

fn run_process(mut config: Config) -> anyhow::Result<()> {
    let layout = config.runtime;
    let threads = config.threads;
    let rt = runtime(layout, threads)?;
    // A dynamic sidecar's Instance names listeners (its upstreams): read it before binding.
    rt.block_on(crate::control::read_instance(&mut config))?;
    let proxy = Proxy::new(config);
    let listeners = {
        let _entered = rt.enter();
        proxy.bind()?
    };
    // The exporter lives on this runtime, which outlives the workers: the flush below finds it.
    rt.block_on(async { proxy.start_telemetry() });

    // Extra single-threaded workers share the listening sockets; each has its own pool.
    let mut workers = Vec::new();
    if layout == RuntimeLayout::PerCore && threads > 1 {
        for i in 1..threads {
            let clones = listeners.try_clone_std().context("cannot share the listeners")?;
            let proxy = proxy.clone();
            let worker_rt = runtime(layout, 1)?;
            let handle = std::thread::Builder::new()
                .name(format!("weft-proxy-{i}"))
                .spawn(move || {
                    worker_rt.block_on(async move { proxy.serve_from_std(clones).await });
                })
                .context("cannot start a worker thread")?;
            workers.push(handle);
        }
    }
    rt.block_on(serve_main(proxy.clone(), listeners, Stop::Signals))?;
    for w in workers {
        let _ = w.join();
    }
    rt.block_on(proxy.flush_telemetry());
    Ok(())
}

/// One line saying what the proxy does.
fn describe(proxy: &Proxy, listeners: &Listeners) -> String {
    let cfg = proxy.config();
    let threads =
        format!("{} worker thread{}", cfg.threads, if cfg.threads == 1 { "" } else { "s" });
    let addrs = listeners.addrs(proxy);
    let admin = addrs
        .iter()
        .find(|(l, _)| l == "admin")
        .map(|(_, a)| format!(", admin on {a}"))
        .unwrap_or_default();
    match &cfg.sidecar {
        None => {
            let upstreams: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
            let listen = addrs.first().map_or(cfg.listen, |(_, a)| *a);
            format!(
                "listening on {listen}, forwarding to {} ({threads}{admin})",
                upstreams.join(",")
            )
        }
        Some(side) if side.is_gateway() => {
            let listen = addrs.iter().find(|(l, _)| l == "gateway").map(|(_, a)| a.to_string());
            let source = match &side.source {
                Source::Static { file, .. } => format!("routes from {file}"),
                Source::Dynamic { server, .. } => format!("following {server}"),
            };
            format!(
                "ingress gateway on {}, {source} ({threads}{admin})",
                listen.unwrap_or_default()
            )
        }
        Some(side) => {
            let source = match &side.source {
                Source::Static { file, .. } => format!("static sidecar from {file}"),
                Source::Dynamic { server, instance, namespace, .. } => format!(
                    "sidecar of instance {namespace}/{} following {server}",
                    instance.as_deref().unwrap_or("?")
                ),
            };
            let mut parts = Vec::new();
            for (label, a) in &addrs {
                if let Some(port) = label.strip_prefix("inbound:") {
                    let app = side.inbound.iter().find(|i| i.port == port).map(|i| i.app);
                    parts.push(format!(
                        "inbound {port} {a} -> {}",
                        app.map(|a| a.to_string()).unwrap_or_default()
                    ));
                } else if label == "outbound" {
                    parts.push(format!("outbound {a}"));
                } else if let Some(svc) = label.strip_prefix("upstream:") {
                    parts.push(format!("upstream {svc} {a}"));
                }
            }
            format!("{source}: {} ({threads}{admin})", parts.join(", "))
        }
    }
}

/// What starts the drain.
pub(crate) enum Stop {
    /// SIGTERM/SIGINT; a second one ends the grace period (`weft proxy`, [`crate::run`]).
    Signals,
    /// The embedder's future ([`crate::run_until`]); the grace period ends on its own.
    When(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// Serves on the current runtime until `stop`, then drains; the admin listener and the
/// control-plane task end with it.
async fn serve_main(proxy: Arc<Proxy>, mut listeners: Listeners, stop: Stop) -> anyhow::Result<()> {
    let trigger: Pin<Box<dyn Future<Output = ()> + Send>> = match stop {
        Stop::Signals => {
            let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
            let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
            let proxy = proxy.clone();
            Box::pin(async move {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                announce_drain(&proxy, "; signal again to stop now");
                proxy.shutdown();
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                proxy.force_shutdown();
            })
        }
        Stop::When(when) => {
            let proxy = proxy.clone();
            Box::pin(async move {
                when.await;
                announce_drain(&proxy, "");
                proxy.shutdown();
            })
        }
    };
    eprintln!("weft proxy: {}", describe(&proxy, &listeners));
    // Spawned tasks outlive this function unless aborted: an embedder that stops the proxy (or
    // drops this future) must get its admin port and its api watches back.
    let mut tasks = AbortOnDrop(Vec::new());
    if let Some(admin) = listeners.admin.take() {
        let proxy = proxy.clone();
        tasks.0.push(tokio::spawn(async move { proxy.serve_admin(admin).await }));
    }
    tasks.0.push(tokio::spawn(crate::control::run(proxy.clone())));
    tasks.0.push(tokio::spawn(trigger));
    proxy.serve_bound(listeners).await;
    drop(tasks);
    eprintln!("weft proxy: stopped");
    Ok(())
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn announce_drain(proxy: &Proxy, more: &str) {
    eprintln!(
        "weft proxy: draining ({} connection(s) open, grace {:?}{more})",
        proxy.open_connections(),
        proxy.config().drain_grace
    );
}

/// [`crate::run`] and [`crate::run_until`]: the proxy on the caller's runtime.
pub(crate) async fn run_embedded(mut config: Config, stop: Stop) -> anyhow::Result<()> {
    crate::control::read_instance(&mut config).await?;
    let proxy = Proxy::new(config);
    let listeners = proxy.bind()?;
    proxy.start_telemetry();
    serve_main(proxy.clone(), listeners, stop).await?;
    proxy.flush_telemetry().await;
    Ok(())
}
