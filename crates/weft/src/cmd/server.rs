//! `weft server`: the control plane's api server on an embedded store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weft_api::quantity::Quantity;
use weft_server::{Limits, Server};
use weft_store::embedded::Embedded;

use crate::connect::{Connection, SERVER_FILE};
use crate::exit::{self, Exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The server keeps its store (store.redb), an admin token (admin.token) and its address (server)\nin the data dir; `weft get` and friends find the latter two there.\n\nExample:\n  weft server --data-dir /var/lib/weft --listen 127.0.0.1:7070"
)]
pub struct ServerArgs {
    /// Address to serve the api on (use 0.0.0.0:7070 to accept other machines)
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Revisions of history kept, so watches and long-polls can resume (older ones get 410)
    #[arg(long, default_value_t = 10_000, value_name = "REVISIONS")]
    pub history: usize,
    /// Largest request body accepted
    #[arg(long, default_value = "3Mi", value_name = "BYTES")]
    pub max_body: String,
    /// How often an idle watch stream gets a bookmark
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub bookmark_interval: String,
    /// Lifetime of the workload certificates the CA signs for sidecars (renewed at 70%)
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub cert_ttl: String,
    /// SPIFFE trust domain of workload identities (spiffe://<domain>/ns/<ns>/svc/<service>)
    #[arg(long, default_value = "weft.local", value_name = "DOMAIN")]
    pub trust_domain: String,
}

/// Enables the workload CA from `<data_dir>/ca.key` and `ca.crt` (created at first start).
pub fn enable_ca(
    server: &Server,
    data_dir: &Path,
    trust_domain: &str,
    cert_ttl: &str,
) -> anyhow::Result<()> {
    let ttl = cert_ttl
        .parse::<weft_api::duration::Duration>()
        .ok()
        .map(|d| d.as_std())
        .filter(|d| d.as_secs() >= 10)
        .ok_or_else(|| {
            exit::usage(format!(
                "--cert-ttl {cert_ttl:?}: give a duration of at least 10s, such as 24h"
            ))
        })?;
    if weft_ca::SpiffeId::parse(&format!("spiffe://{trust_domain}/ns/a/svc/b")).is_none() {
        return Err(exit::usage(format!(
            "--trust-domain {trust_domain:?}: give a domain name such as weft.local"
        )));
    }
    server.enable_ca(data_dir, trust_domain, ttl).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Opens the data dir's store, refusing clearly when another server holds it.
pub fn open_store(data_dir: &Path) -> anyhow::Result<Embedded> {
    create_private_dir(data_dir)?;
    let path = data_dir.join("store.redb");
    Embedded::open(&path).map_err(|e| {
        let text = e.to_string();
        if text.contains("already open") || text.contains("lock") || text.contains("in use") {
            Exit {
                code: exit::FAILURE,
                message: format!(
                    "the data dir {} is in use by another weft process (stop it, or choose another --data-dir)",
                    data_dir.display()
                ),
            }
            .into()
        } else {
            anyhow::anyhow!("opening the store {}: {text}", path.display())
        }
    })
}

pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

pub fn parse_listen(listen: &str) -> anyhow::Result<SocketAddr> {
    listen.parse().map_err(|_| {
        exit::usage(format!("--listen {listen:?} is not an address such as 127.0.0.1:7070"))
    })
}

pub fn limits(args: &ServerArgs) -> anyhow::Result<Limits> {
    let max_body = args
        .max_body
        .parse::<Quantity>()
        .map_err(|e| exit::usage(format!("--max-body: {e}")))?
        .as_units_ceil() as usize;
    let bookmark = args
        .bookmark_interval
        .parse::<weft_api::duration::Duration>()
        .map_err(|e| exit::usage(format!("--bookmark-interval: {e}")))?;
    if args.history == 0 {
        return Err(exit::usage("--history must be at least 1"));
    }
    if bookmark.is_zero() {
        return Err(exit::usage("--bookmark-interval must be more than 0s"));
    }
    Ok(Limits {
        max_body,
        history: args.history,
        bookmark_interval: bookmark.as_std(),
        ..Limits::default()
    })
}

/// Binds, saying clearly when the port is taken.
pub async fn bind(
    addr: SocketAddr,
    what: &str,
    flag: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(" (is another weft running? choose another address with {flag})")
        } else {
            String::new()
        };
        Exit {
            code: exit::FAILURE,
            message: format!("cannot listen for the {what} on {addr}: {e}{hint}"),
        }
        .into()
    })
}

/// The URL clients on this machine should use for a listener.
pub fn local_url(addr: SocketAddr) -> String {
    let host =
        if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    format!("http://{host}:{}", addr.port())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(conn: &Connection, args: ServerArgs) -> anyhow::Result<()> {
    let addr = parse_listen(&args.listen)?;
    let limits = limits(&args)?;
    let data_dir: PathBuf = conn.data_dir();
    // Many watchers each hold a socket; the default soft limit of 1024 would cap them.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let store = open_store(&data_dir)?;
    let server =
        Server::start(Arc::new(store), limits).await.map_err(|e| anyhow::anyhow!(e.0.message))?;
    server.ensure_admin_token(&data_dir).await.map_err(|e| anyhow::anyhow!(e.0.message))?;
    enable_ca(&server, &data_dir, &args.trust_domain, &args.cert_ttl)?;
    let listener = bind(addr, "api", "--listen").await?;
    let local = listener.local_addr().context("reading the bound address")?;
    let url = local_url(local);
    weft_server::auth::write_private(&data_dir.join(SERVER_FILE), &format!("{url}\n"))
        .with_context(|| format!("writing {}", data_dir.join(SERVER_FILE).display()))?;
    tracing::info!(%url, data_dir = %data_dir.display(), "weft api server ready");
    eprintln!(
        "weft api server on {url}\n  data dir:    {}\n  admin token: {}\n  try:         weft get nodes{}",
        data_dir.display(),
        data_dir.join(weft_server::auth::ADMIN_TOKEN_FILE).display(),
        if conn.data_dir.is_some() {
            format!(" --data-dir {}", data_dir.display())
        } else {
            String::new()
        }
    );
    server
        .serve(listener, shutdown_signal(), Duration::from_secs(5))
        .await
        .context("serving the api")?;
    eprintln!("weft api server stopped");
    Ok(())
}
