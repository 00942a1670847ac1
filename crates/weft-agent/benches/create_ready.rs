//! Instance create → ready latency, and memory per sidecar, on one agent.
//!
//! A real api server (embedded store) and one agent run in this process; instances are created
//! one after another with `spec.node` set (no scheduler), each an app that listens at once
//! (`weft-agent-testbin app`) behind a sidecar. Latency is from just before the PUT to the
//! watch event showing `status.ready: true`. All instances are kept running; then the resident
//! memory (RSS, and PSS: shared pages divided among sharers) of the sidecars is summed.
//!
//! ```text
//! cargo bench -p weft-agent --bench create_ready
//! WEFT_BENCH_WEFT=target/release/weft WEFT_BENCH_N=200 cargo bench -p weft-agent --bench create_ready
//! ```
//!
//! `WEFT_BENCH_WEFT`: a `weft` binary whose `weft proxy` is the sidecar (dynamic mode: it
//! reads its Instance and follows Services and Endpoints from the api); without it the test
//! helper's stand-in sidecar is used. `WEFT_BENCH_N`: instances (default 200).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use weft_agent::{Agent, AgentOptions, CgroupMode};
use weft_api::wire::Role;
use weft_client::Client;
use weft_client::watcher::{self, Event};

fn kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn mem(pid: u64) -> (u64, u64) {
    let rss =
        kb(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(), "VmRSS:");
    let pss = kb(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default(),
        "Pss:",
    );
    (rss, pss)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let n: usize = std::env::var("WEFT_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let testbin = PathBuf::from(env!("CARGO_BIN_EXE_weft-agent-testbin"));
    let (weft_bin, sidecar_name) = match std::env::var_os("WEFT_BENCH_WEFT") {
        Some(p) => (PathBuf::from(p), "weft proxy (dynamic sidecar mode)"),
        None => (testbin.clone(), "weft-agent-testbin proxy (stand-in)"),
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(weft_store::embedded::Embedded::open(dir.path().join("store.redb")).unwrap());
        let server =
            weft_server::Server::start(store, weft_server::Limits::default()).await.unwrap();
        let admin_token = server.ensure_admin_token(dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop_server, rx) = oneshot::channel::<()>();
        tokio::spawn(server.serve(
            listener,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(1),
        ));
        let admin = Client::new(&url, Some(admin_token)).unwrap();
        let token = admin.create_token(Role::Agent, None, "bench").await.unwrap().token;
        let mut o = AgentOptions::new(&url, token, dir.path().join("data"));
        o.name = "bench".into();
        o.weft_bin = weft_bin;
        o.cgroups = CgroupMode::Auto;
        o.stop_on_exit = true;
        o.drain_delay = Duration::ZERO;
        let data = o.data_dir.clone();
        let (stop_agent, rx) = oneshot::channel::<()>();
        let agent = tokio::spawn(Agent::run(o, async move {
            let _ = rx.await;
        }));

        // Readiness by watch: the first time each instance is seen ready.
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(String, Instant)>();
        let w = admin.clone();
        tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            let mut events =
                Box::pin(watcher::watcher(w, &weft_api::kinds::INSTANCE, watcher::Config::default()));
            while let Some(ev) = events.next().await {
                let items = match ev {
                    Ok(Event::Applied(v)) => vec![v],
                    Ok(Event::Restarted(vs)) => vs,
                    _ => continue,
                };
                for v in items {
                    let ready = v.pointer("/status/ready").and_then(Value::as_bool) == Some(true);
                    let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                    if ready && seen.insert(name.to_string()) {
                        let _ = ready_tx.send((name.to_string(), Instant::now()));
                    }
                }
            }
        });
        // Wait for the node.
        while admin.get::<weft_api::Node>(None, "bench").await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let app = json!([testbin.display().to_string(), "app"]);
        let mut lat = Vec::with_capacity(n);
        let mut early: HashMap<String, Instant> = HashMap::new();
        let started = Instant::now();
        for i in 0..n {
            let name = format!("bench-{i:04}");
            let v = json!({
                "apiVersion": "weft/v1", "kind": "Instance",
                "metadata": { "name": name, "namespace": "default" },
                "spec": { "deployment": "bench", "node": "bench", "template": {
                    "command": app, "ports": [{ "name": "http", "port": 8080 }],
                    "terminationGracePeriod": "2s",
                }},
            });
            let t0 = Instant::now();
            admin.put_value(&v, false).await.unwrap();
            let t1 = loop {
                if let Some(t) = early.remove(&name) {
                    break t;
                }
                let (got, t) = tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{name} not ready within 60s"))
                    .unwrap();
                if got == name {
                    break t;
                }
                early.insert(got, t);
            };
            lat.push(t1 - t0);
        }
        let total = started.elapsed();
        let mut sorted = lat.clone();
        sorted.sort();
        println!("sidecar: {sidecar_name}");
        println!(
            "create -> ready over {n} instances (sequential, all kept running): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, total {:.1} s",
            pct(&sorted, 0.5).as_secs_f64() * 1e3,
            pct(&sorted, 0.9).as_secs_f64() * 1e3,
            pct(&sorted, 0.99).as_secs_f64() * 1e3,
            sorted.last().unwrap().as_secs_f64() * 1e3,
            total.as_secs_f64()
        );
        let first: Vec<Duration> = {
            let mut f = lat[..n.min(20)].to_vec();
            f.sort();
            f
        };
        let last: Vec<Duration> = {
            let mut l = lat[n.saturating_sub(20)..].to_vec();
            l.sort();
            l
        };
        println!(
            "  first 20: p50 {:.1} ms; last 20 (with {} running): p50 {:.1} ms",
            pct(&first, 0.5).as_secs_f64() * 1e3,
            n - 1,
            pct(&last, 0.5).as_secs_f64() * 1e3
        );

        // Memory, after things settle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (mut s_rss, mut s_pss, mut a_rss, mut count) = (0u64, 0u64, 0u64, 0u64);
        for e in std::fs::read_dir(data.join("agent/instances")).unwrap().flatten() {
            let v: Value =
                serde_json::from_slice(&std::fs::read(e.path().join("state.json")).unwrap_or_default())
                    .unwrap_or(Value::Null);
            if let Some(pid) = v.pointer("/sidecar/pid").and_then(Value::as_u64) {
                let (r, p) = mem(pid);
                s_rss += r;
                s_pss += p;
                count += 1;
            }
            if let Some(pid) = v.pointer("/app/pid").and_then(Value::as_u64) {
                a_rss += mem(pid).0;
            }
        }
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "memory of {count} sidecars: RSS {:.1} MiB in all, {:.2} MiB each; PSS {:.1} MiB in all, {:.2} MiB each (apps: RSS {:.2} MiB each)",
            mib(s_rss),
            mib(s_rss) / count.max(1) as f64,
            mib(s_pss),
            mib(s_pss) / count.max(1) as f64,
            mib(a_rss) / count.max(1) as f64,
        );
        println!(
            "this process (api server + agent + bench): RSS {:.1} MiB",
            mib(mem(std::process::id() as u64).0)
        );

        let t = Instant::now();
        let _ = stop_agent.send(());
        agent.await.unwrap().unwrap();
        println!("stopping {n} instances (agent --stop-on-exit): {:.1} s", t.elapsed().as_secs_f64());
        let _ = stop_server.send(());
    });
}
