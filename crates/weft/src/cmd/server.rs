//! `weft server`: the control plane's api server, on the embedded store in its data dir or on an
//! etcd cluster (`--store etcd://…`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weft_api::quantity::Quantity;
use weft_server::{Limits, Server};
use weft_store::Store;
use weft_store::embedded::Embedded;
#[cfg(feature = "etcd")]
use weft_store::etcd::Etcd;

use crate::connect::{Connection, SERVER_FILE};
use crate::exit::{self, Exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The server keeps its store (store.redb, unless --store names an etcd cluster), an admin token\n(admin.token) and its address (server) in the data dir; `weft get` and friends find the latter\ntwo there.\n\nExamples:\n  weft server --data-dir /var/lib/weft --listen 127.0.0.1:7070\n  weft server --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/weft-prod"
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
    /// Keep the state in an etcd cluster instead of the embedded store in the data dir:
    /// etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (keys go under PREFIX, so clusters can share
    /// one etcd)
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Also run the controllers, scheduler, autoscaler and node pools here (the `local`
    /// provider's agents run on this machine, under <data-dir>/nodepools/). With --store
    /// etcd://, give it to several replicas: they elect one (an etcd lease) to run them, and
    /// another takes over within seconds when it dies
    #[arg(long)]
    pub controllers: bool,
    /// Lifetime of the workload certificates the CA signs for sidecars (renewed at 70%)
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub cert_ttl: String,
    /// SPIFFE trust domain of workload identities (spiffe://<domain>/ns/<ns>/svc/<service>)
    #[arg(long, default_value = "weft.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    #[command(flatten)]
    pub apisec: super::apisec::ApiSecArgs,
}

/// Where a server keeps its state, from `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreTarget {
    /// `store.redb` in the data dir.
    Embedded,
    /// An etcd cluster; every key under `prefix`.
    Etcd { endpoints: Vec<String>, prefix: String },
}

/// Parses `--store`: absent means the embedded store; otherwise
/// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`. Anything else is a usage error (exit 64).
pub fn parse_store(url: Option<&str>) -> anyhow::Result<StoreTarget> {
    let Some(url) = url else { return Ok(StoreTarget::Embedded) };
    let usage = |why: String| {
        exit::usage(format!(
            "--store {url:?}: {why}; expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (leave \
             --store out for the embedded store in the data dir)"
        ))
    };
    let Some(rest) = url.strip_prefix("etcd://") else {
        return Err(usage("only etcd:// URLs are supported".into()));
    };
    let (hosts, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut endpoints = Vec::new();
    for host in hosts.split(',') {
        let Some((name, port)) = host.rsplit_once(':') else {
            return Err(usage(format!("{host:?} has no port")));
        };
        let ipv6 = name.len() > 2 && name.starts_with('[') && name.ends_with(']');
        let plain =
            !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || "@?#[]".contains(c));
        if !(ipv6 || plain) {
            return Err(usage(format!("{host:?} is not HOST:PORT")));
        }
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(usage(format!("the port of {host:?} is not a number from 1 to 65535")));
        }
        endpoints.push(host.to_string());
    }
    if prefix.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(usage(format!("the key prefix {prefix:?} has spaces, '?' or '#'")));
    }
    Ok(StoreTarget::Etcd { endpoints, prefix: prefix.trim_end_matches('/').to_string() })
}

/// Opens the store `--store` names (the data dir must exist for the embedded one).
pub async fn open(target: &StoreTarget, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    match target {
        StoreTarget::Embedded => Ok(Arc::new(open_store(data_dir)?)),
        #[cfg(not(feature = "etcd"))]
        StoreTarget::Etcd { .. } => Err(exit::usage(
            "--store etcd://…: this weft was built without the etcd backend; build it with \
             `cargo build --release -p weft --features etcd` (needs protoc: apt-get install \
             protobuf-compiler)",
        )),
        #[cfg(feature = "etcd")]
        StoreTarget::Etcd { endpoints, prefix } => {
            let etcd = Etcd::connect(endpoints, prefix).await.map_err(|e| Exit {
                code: exit::FAILURE,
                message: match e {
                    weft_store::StoreError::Backend(message)
                    | weft_store::StoreError::Unavailable(message) => message,
                    other => other.to_string(),
                },
            })?;
            Ok(Arc::new(etcd))
        }
    }
}

/// Enables the workload CA from `<data_dir>/ca.key` and `ca.crt` (created at first start).
pub async fn enable_ca(
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
    server.enable_ca(data_dir, trust_domain, ttl).await.map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let target = parse_store(args.store.as_deref())?;
    let (tls, audit) = super::apisec::plan(&args.apisec)?;
    let data_dir: PathBuf = conn.data_dir();
    // Many watchers each hold a socket; the default soft limit of 1024 would cap them.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    create_private_dir(&data_dir)?;
    let store = open(&target, &data_dir).await?;
    let mut server =
        Server::start(store, limits).await.map_err(|e| anyhow::anyhow!(e.0.message))?;
    let admin_token =
        server.ensure_admin_token(&data_dir).await.map_err(|e| anyhow::anyhow!(e.0.message))?;
    enable_ca(&server, &data_dir, &args.trust_domain, &args.cert_ttl).await?;
    let listener = bind(addr, "api", "--listen").await?;
    let local = listener.local_addr().context("reading the bound address")?;
    let scheme = super::apisec::enable(&mut server, tls, audit, &data_dir, local)?;
    let url = super::apisec::with_scheme(local_url(local), scheme);
    weft_server::auth::write_private(&data_dir.join(SERVER_FILE), &format!("{url}\n"))
        .with_context(|| format!("writing {}", data_dir.join(SERVER_FILE).display()))?;
    let store = match &target {
        StoreTarget::Embedded => data_dir.join("store.redb").display().to_string(),
        StoreTarget::Etcd { endpoints, prefix } => {
            format!("etcd at {}, keys under {prefix:?}", endpoints.join(","))
        }
    };
    tracing::info!(%url, data_dir = %data_dir.display(), %store, "weft api server ready");
    eprintln!(
        "weft api server on {url}\n  store:       {store}\n  data dir:    {}\n  admin token: {}\n  try:         weft get nodes{}",
        data_dir.display(),
        data_dir.join(weft_server::auth::ADMIN_TOKEN_FILE).display(),
        if conn.data_dir.is_some() {
            format!(" --data-dir {}", data_dir.display())
        } else {
            String::new()
        }
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let leader = if args.controllers {
        let client =
            weft_client::Client::new(&url, Some(admin_token)).context("the api address")?;
        let metrics = std::sync::Arc::new(weft_controllers::Metrics::new());
        let served = metrics.clone();
        server.add_metrics(move || served.encode());
        let lead = super::lead::run(target.clone(), client, data_dir.clone(), metrics, stop_rx);
        Some(tokio::spawn(lead))
    } else {
        None
    };
    // Controllers stop (and resign) before the api does: they act through it.
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        if let Some(h) = leader {
            let _ = h.await;
        }
    };
    server.serve(listener, shutdown, Duration::from_secs(5)).await.context("serving the api")?;
    eprintln!("weft api server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(endpoints: &[&str], prefix: &str) -> StoreTarget {
        StoreTarget::Etcd {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn store_urls() {
        assert_eq!(parse_store(None).unwrap(), StoreTarget::Embedded);
        for (url, want) in [
            ("etcd://127.0.0.1:2379", etcd(&["127.0.0.1:2379"], "")),
            ("etcd://a:1,b:2,[::1]:3", etcd(&["a:1", "b:2", "[::1]:3"], "")),
            ("etcd://etcd-0.local:2379/weft/prod/", etcd(&["etcd-0.local:2379"], "/weft/prod")),
            ("etcd://h:2379/", etcd(&["h:2379"], "")),
        ] {
            assert_eq!(parse_store(Some(url)).unwrap(), want, "{url}");
        }
        for bad in [
            "",
            "http://127.0.0.1:2379",
            "etcd://",
            "etcd://127.0.0.1",
            "etcd://:2379",
            "etcd://h:0",
            "etcd://h:65536",
            "etcd://h:x",
            "etcd://a:1,,b:2",
            "etcd://user@h:1",
            "etcd://h:1/with space",
            "etcd://h:1/p?x=1",
        ] {
            let err = parse_store(Some(bad)).expect_err(bad);
            let (code, line) = exit::classify(&err);
            assert_eq!(code, exit::USAGE, "{bad}");
            assert!(line.contains("expected etcd://HOST:PORT"), "{bad}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }
}
