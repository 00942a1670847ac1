//! `weft proxy` as a process: runtimes (one single-threaded runtime per worker thread by
//! default), listeners, signals, drain and exit codes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, ProxyArgs, RuntimeLayout};
use crate::proxy::Proxy;

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
        .about("Run the sidecar proxy (or a plain reverse proxy with --upstream)");
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

fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    crate::listener::bind(addr).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; stop what listens there or choose another address"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {addr} (--{flag}): {e}{hint}")
    })
}

fn run_process(config: Config) -> anyhow::Result<()> {
    let layout = config.runtime;
    let threads = config.threads;
    let rt = runtime(layout, threads)?;
    let (listener, admin) = {
        let _entered = rt.enter();
        let listener = bind(config.listen, "listen")?;
        let admin = config.admin.map(|a| bind(a, "admin")).transpose()?;
        (listener, admin)
    };
    let proxy = Proxy::new(config);

    // Extra single-threaded workers share the listening socket; each has its own pool.
    let mut workers = Vec::new();
    if layout == RuntimeLayout::PerCore && threads > 1 {
        let std_listener = listener.into_std().context("cannot share the listener")?;
        for i in 1..threads {
            let clone = std_listener.try_clone().context("cannot share the listener")?;
            let proxy = proxy.clone();
            let worker_rt = runtime(layout, 1)?;
            let handle = std::thread::Builder::new()
                .name(format!("weft-proxy-{i}"))
                .spawn(move || {
                    worker_rt.block_on(async move {
                        if let Ok(l) = TcpListener::from_std(clone) {
                            proxy.serve(l).await;
                        }
                    });
                })
                .context("cannot start a worker thread")?;
            workers.push(handle);
        }
        let listener = {
            let _entered = rt.enter();
            TcpListener::from_std(std_listener).context("cannot share the listener")?
        };
        rt.block_on(serve_main(proxy, listener, admin))?;
    } else {
        rt.block_on(serve_main(proxy, listener, admin))?;
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// Serves on the current runtime with signal handling: the first SIGTERM/SIGINT drains, a
/// second one ends the grace period.
async fn serve_main(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    admin: Option<TcpListener>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    if let Some(admin) = admin {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.serve_admin(admin).await });
    }
    let cfg = proxy.config();
    let upstreams: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
    let admin_note = cfg.admin.map(|a| format!(", admin on {a}")).unwrap_or_default();
    eprintln!(
        "weft proxy: listening on {}, forwarding to {} ({} worker thread{}{admin_note})",
        listener.local_addr().unwrap_or(cfg.listen),
        upstreams.join(","),
        cfg.threads,
        if cfg.threads == 1 { "" } else { "s" },
    );
    let signals = {
        let proxy = proxy.clone();
        async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            eprintln!(
                "weft proxy: draining ({} connection(s) open, grace {:?}; signal again to stop now)",
                proxy.open_connections(),
                proxy.config().drain_grace
            );
            proxy.shutdown();
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            proxy.force_shutdown();
        }
    };
    let signals = tokio::spawn(signals);
    proxy.serve(listener).await;
    signals.abort();
    eprintln!("weft proxy: stopped");
    Ok(())
}

/// [`crate::run`]: the proxy on the caller's runtime.
pub(crate) async fn run_embedded(config: Config) -> anyhow::Result<()> {
    let listener = bind(config.listen, "listen")?;
    let admin = config.admin.map(|a| bind(a, "admin")).transpose()?;
    serve_main(Proxy::new(config), listener, admin).await
}
