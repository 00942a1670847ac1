//! api-bench: durable writes/s, point reads/s and watch fan-out latency of a real `weft server`.
//!
//! Usage: cargo build --release -p weft -p weft-bench && target/release/api-bench
//! (see --help). It starts its own server on a free port with a fresh data dir, on the embedded
//! store or on etcd (`--backends embedded,etcd` runs the same parts on both, one after the other;
//! for etcd it starts a single-member `etcd` itself unless `--store` names one).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use weft_bench::http::{Conn, request};
use weft_bench::server::{WeftServer, cpu_seconds, rss_mib, sibling_weft};
use weft_bench::stats::{ms, percentile};

#[derive(Parser)]
#[command(about = "Measure a real weft api server: durable writes, point reads, watch fan-out")]
struct Args {
    /// The weft binary [default: next to this one]
    #[arg(long)]
    weft: Option<std::path::PathBuf>,
    /// Which parts to run
    #[arg(long, value_delimiter = ',', default_value = "writes,reads,fanout")]
    only: Vec<String>,
    #[arg(long, default_value_t = 32)]
    write_clients: usize,
    #[arg(long, default_value_t = 10)]
    write_secs: u64,
    #[arg(long, default_value_t = 32)]
    read_clients: usize,
    #[arg(long, default_value_t = 10)]
    read_secs: u64,
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Which stores to run the parts on, in order: embedded, etcd
    #[arg(long, value_delimiter = ',', default_value = "embedded")]
    backends: Vec<String>,
    /// For the etcd backend: an existing etcd as weft server's --store takes it
    /// (etcd://HOST:PORT[/PREFIX]) [default: a single-member etcd started here]
    #[arg(long)]
    store: Option<String>,
    /// More `weft server` flags, e.g. --server-arg=--audit-log=off or --server-arg=--tls=auto
    /// (the raw-HTTP parts need a plaintext server; `client-reads` works on both)
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
}

fn service(name: &str, note: &str) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "weft/v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "default", "annotations": { "round": note } },
        "spec": { "selector": { "deployment": name }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] }
    })
    .to_string()
    .into_bytes()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let weft = args.weft.clone().unwrap_or_else(sibling_weft);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cpus} cpus; load generator runs on the same machine");
    for backend in &args.backends {
        // Kept alive (and killed on drop) for the whole run on this backend.
        let mut local_etcd = None;
        let extra = match backend.as_str() {
            "embedded" => Vec::new(),
            "etcd" => {
                let url = match &args.store {
                    Some(url) => url.clone(),
                    None => {
                        let dir = tempfile::Builder::new().prefix("weft-bench-etcd-").tempdir()?;
                        let etcd = weft_store::etcd::LocalEtcd::start(dir.path())
                            .context("starting etcd for the etcd backend")?;
                        let url = etcd.url();
                        local_etcd = Some((etcd, dir));
                        url
                    }
                };
                vec!["--store".to_string(), url]
            }
            other => bail!("--backends: unknown backend {other:?} (embedded, etcd)"),
        };
        let mut extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        extra.extend(args.server_arg.iter().map(String::as_str));
        let server = WeftServer::start(&weft, &extra).context("starting weft server")?;
        println!(
            "\n== {backend}: weft server pid {} at {} ({}){}",
            server.pid(),
            server.url,
            weft.display(),
            match &local_etcd {
                Some((etcd, _)) =>
                    format!("; etcd pid {} at {}", etcd.pid().unwrap_or(0), etcd.endpoint()),
                None => String::new(),
            }
        );
        if args.only.iter().any(|o| o == "writes") {
            writes(&server, args.write_clients, Duration::from_secs(args.write_secs)).await?;
        }
        if args.only.iter().any(|o| o == "reads") {
            reads(&server, args.read_clients, Duration::from_secs(args.read_secs)).await?;
        }
        if args.only.iter().any(|o| o == "client-reads") {
            client_reads(&server, args.read_clients, Duration::from_secs(args.read_secs)).await?;
        }
        if args.only.iter().any(|o| o == "fanout") {
            fanout(&server, args.watchers, args.rounds).await?;
        }
        if let Some((etcd, _)) = &local_etcd
            && let Some(pid) = etcd.pid()
        {
            println!(
                "  etcd: cpu {:.1} s, rss {:.0} MiB",
                cpu_seconds(pid).unwrap_or(0.0),
                rss_mib(pid).unwrap_or(0.0)
            );
        }
        drop(server);
    }
    Ok(())
}

/// Runs `clients` closed-loop connections for `dur`, each sending what `make` builds.
async fn closed_loop(
    server: &WeftServer,
    clients: usize,
    dur: Duration,
    expect: &'static [u16],
    make: Arc<dyn Fn(usize, usize) -> Vec<u8> + Send + Sync>,
) -> anyhow::Result<(usize, Vec<Duration>, Duration, f64)> {
    let cpu0 = cpu_seconds(server.pid()).unwrap_or(0.0);
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = server.addr.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&addr).await?;
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let req = make(c, i);
                let t = Instant::now();
                let (status, body) = conn.roundtrip(&req).await?;
                if !expect.contains(&status) {
                    bail!("unexpected status {status}: {}", String::from_utf8_lossy(&body));
                }
                lat.push(t.elapsed());
                i += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(server.pid()).unwrap_or(0.0) - cpu0;
    all.sort();
    Ok((all.len(), all, elapsed, cpu))
}

async fn writes(server: &WeftServer, clients: usize, dur: Duration) -> anyhow::Result<()> {
    let token = server.token.clone();
    // Each write changes the object (a new annotation), so every one is a real, durable write.
    let make = Arc::new(move |c: usize, i: usize| {
        let name = format!("w{c}-{}", i % 50);
        request(
            "PUT",
            &format!("/api/v1/namespaces/default/services/{name}"),
            &token,
            Some(&service(&name, &i.to_string())),
        )
    });
    let (n, lat, elapsed, cpu) = closed_loop(server, clients, dur, &[200, 201], make).await?;
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "durable writes: {clients} clients, {:.1}s: {n} acknowledged, {rate:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, server cpu {:.0} µs/write",
        elapsed.as_secs_f64(),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
        cpu * 1e6 / n.max(1) as f64
    );
    Ok(())
}

async fn reads(server: &WeftServer, clients: usize, dur: Duration) -> anyhow::Result<()> {
    let mut setup = Conn::connect(&server.addr).await?;
    let (status, _) = setup
        .roundtrip(&request(
            "PUT",
            "/api/v1/namespaces/default/services/r0",
            &server.token,
            Some(&service("r0", "0")),
        ))
        .await?;
    if status >= 300 {
        bail!("creating the read target failed: {status}");
    }
    let req = request("GET", "/api/v1/namespaces/default/services/r0", &server.token, None);
    let make = Arc::new(move |_: usize, _: usize| req.clone());
    let (n, lat, elapsed, cpu) = closed_loop(server, clients, dur, &[200], make).await?;
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "point reads: {clients} clients, {:.1}s: {n} reads, {rate:.0} reads/s, p50 {:.3} ms, p99 {:.3} ms, server cpu {:.1} µs/read",
        elapsed.as_secs_f64(),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
        cpu * 1e6 / n.max(1) as f64
    );
    Ok(())
}

/// Point reads through weft's own client (`weft-client`, http or https as the server serves),
/// `clients` tasks sharing one pooled client: the way the CLI, agents and controllers read.
async fn client_reads(server: &WeftServer, clients: usize, dur: Duration) -> anyhow::Result<()> {
    let ca = server.ca_file.is_file().then(|| server.ca_file.clone());
    let client = weft_client::Client::with_ca(&server.url, Some(server.token.clone()), ca)?;
    let body = bytes::Bytes::from(service("r0", "0"));
    client
        .call(
            http::Method::PUT,
            "/api/v1/namespaces/default/services/r0",
            Some((body, "application/json")),
        )
        .await
        .context("creating the read target")?;
    let cpu0 = cpu_seconds(server.pid()).unwrap_or(0.0);
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client
                    .call(http::Method::GET, "/api/v1/namespaces/default/services/r0", None)
                    .await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(server.pid()).unwrap_or(0.0) - cpu0;
    all.sort();
    let n = all.len();
    println!(
        "client reads ({}): {clients} clients, {:.1}s: {n} reads, {:.0} reads/s, p50 {:.3} ms, p99 {:.3} ms, server cpu {:.1} µs/read",
        if server.url.starts_with("https://") { "https" } else { "http" },
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        cpu * 1e6 / n.max(1) as f64
    );
    Ok(())
}

async fn fanout(server: &WeftServer, watchers: usize, rounds: usize) -> anyhow::Result<()> {
    let mut writer = Conn::connect(&server.addr).await?;
    let put = |round: usize| {
        request(
            "PUT",
            "/api/v1/namespaces/default/services/fanout",
            &server.token,
            Some(&service("fanout", &round.to_string())),
        )
    };
    let (status, body) = writer.roundtrip(&put(0)).await?;
    if status >= 300 {
        bail!("creating the fan-out target failed: {status}");
    }
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let path =
        format!("/api/v1/namespaces/default/services/fanout?watch=true&resourceVersion={rv}");
    let watch_req = request("GET", &path, &server.token, None);
    let received: Arc<Vec<AtomicUsize>> =
        Arc::new((0..=rounds).map(|_| AtomicUsize::new(0)).collect());
    let connected = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let reader = weft_bench::watchers::spawn(
        server.addr.clone(),
        watch_req,
        watchers,
        rounds,
        connected.clone(),
        received.clone(),
        stop.clone(),
    );
    while connected.load(Ordering::SeqCst) < watchers {
        if reader.is_finished() || t0.elapsed() > Duration::from_secs(120) {
            stop.store(true, Ordering::SeqCst);
            let err = reader.join().map_err(|_| anyhow::anyhow!("watch reader panicked"))?.err();
            bail!(
                "only {} of {watchers} watchers connected ({err:?})",
                connected.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "watch fan-out: {watchers} watchers connected in {:.1}s; server rss {:.0} MiB",
        t0.elapsed().as_secs_f64(),
        rss_mib(server.pid()).unwrap_or(0.0)
    );
    // A fresh connection: the server closes keep-alive connections idle longer than its header
    // timeout, and connecting ten thousand watchers can take longer than that.
    let mut writer = Conn::connect(&server.addr).await?;
    let server_cpu0 = cpu_seconds(server.pid()).unwrap_or(0.0);
    let client_cpu0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let mut acks = Vec::new();
    for round in 1..=rounds {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, _) = writer.roundtrip(&put(round)).await?;
        let ack = Instant::now();
        if status >= 300 {
            bail!("write {round} failed: {status}");
        }
        acks.push(ack);
        let deadline = Instant::now() + Duration::from_secs(30);
        while received[round].load(Ordering::SeqCst) < watchers {
            if Instant::now() > deadline || reader.is_finished() {
                stop.store(true, Ordering::SeqCst);
                bail!(
                    "round {round}: only {} of {watchers} watchers got the change",
                    received[round].load(Ordering::SeqCst)
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let server_cpu = cpu_seconds(server.pid()).unwrap_or(0.0) - server_cpu0;
    let client_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - client_cpu0;
    let deliveries = (watchers * rounds) as f64;
    println!(
        "  cpu per delivered event: server {:.1} µs, load generator {:.1} µs ({rounds} rounds, idle gaps included)",
        server_cpu * 1e6 / deliveries,
        client_cpu * 1e6 / deliveries
    );
    let times = reader.join().map_err(|_| anyhow::anyhow!("watch reader panicked"))??;
    let mut per_round: Vec<Vec<Duration>> = vec![Vec::with_capacity(watchers); rounds];
    for stream in times {
        for (r, at) in stream.into_iter().enumerate() {
            per_round[r].push(at.saturating_duration_since(acks[r]));
        }
    }
    let mut all = Vec::new();
    for (r, mut lat) in per_round.into_iter().enumerate() {
        lat.sort();
        println!(
            "  round {}: after ack p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            r + 1,
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
            ms(*lat.last().unwrap_or(&Duration::ZERO))
        );
        all.extend(lat);
    }
    all.sort();
    println!(
        "watch fan-out: {watchers} watchers × {rounds} changes: delivery after ack p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(*all.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}
