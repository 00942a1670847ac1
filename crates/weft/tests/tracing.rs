//! Tracing and access logs end to end: `weft up` with the demo shop, its gateway and sidecars
//! exporting spans to an OTLP/HTTP receiver started by the test.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::up::{Up, repo};
use common::{closed_port, wait_for};
use serde_json::Value;

const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A span as received: its resource's service.name and the span itself.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A tiny OTLP/HTTP (JSON) receiver: one thread per connection, `Connection: close` on every
/// answer (so that once stopped, the next export finds nobody listening).
struct Collector {
    port: u16,
    spans: Received,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans: Received = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (spans.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let sink = sink.clone();
                        std::thread::spawn(move || receive(s, &sink));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Collector { port, spans, stop }
    }

    fn of_trace(&self, trace: &str) -> Vec<(String, Value)> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|(_, s)| s["traceId"] == trace).cloned().collect()
    }
}

fn receive(mut s: TcpStream, sink: &Received) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut len = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    for rs in doc["resourceSpans"].as_array().unwrap() {
        let attrs = rs["resource"]["attributes"].as_array().unwrap();
        let name =
            attrs.iter().find(|a| a["key"] == "service.name").unwrap()["value"]["stringValue"]
                .as_str()
                .unwrap()
                .to_string();
        for ss in rs["scopeSpans"].as_array().unwrap() {
            for span in ss["spans"].as_array().unwrap() {
                sink.lock().unwrap().push((name.clone(), span.clone()));
            }
        }
    }
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
}

/// GET through the gateway with extra header lines: (status, body).
fn get(addr: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: shop.local\r\n{headers}Connection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

fn metrics(admin: &str) -> String {
    get(admin, "/metrics", "").map(|(_, b)| b).unwrap_or_default()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Checks that `spans` form one tree: exactly one span (the gateway's) has `root_parent` as
/// parent (`None`: no parent), every other span's parent is one of them. Returns the services.
fn one_tree(spans: &[(String, Value)], root_parent: Option<&str>) -> BTreeSet<String> {
    let ids: HashMap<&str, &str> =
        spans.iter().map(|(svc, s)| (s["spanId"].as_str().unwrap(), svc.as_str())).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique: {spans:#?}");
    let roots: Vec<&(String, Value)> =
        spans.iter().filter(|(_, s)| s["parentSpanId"].as_str() == root_parent).collect();
    assert_eq!(roots.len(), 1, "one root: {spans:#?}");
    assert_eq!(roots[0].0, "weft-gateway", "the gateway is first on the path");
    assert_eq!(roots[0].1["kind"], 2);
    for (svc, s) in spans {
        if s["parentSpanId"].as_str() == root_parent {
            continue;
        }
        let parent = s["parentSpanId"].as_str().unwrap_or_else(|| panic!("no parent: {s}"));
        assert!(ids.contains_key(parent), "{svc}: parent {parent} is a span of the trace");
    }
    spans.iter().map(|(svc, _)| svc.clone()).collect()
}

#[test]
fn requests_through_the_demo_make_one_trace_and_json_access_logs() {
    let collector = Collector::start();
    let tmp = tempfile::tempdir().unwrap();
    let gw_log = tmp.path().join("gateway-access.log");
    let admin = format!("127.0.0.1:{}", closed_port());
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    let up = Up::start(&[
        "-f",
        repo("examples/shop").to_str().unwrap(),
        "--otlp-endpoint",
        &endpoint,
        "--access-log",
        gw_log.to_str().unwrap(),
        "--sidecar-access-log",
        "on",
        "--gateway-admin",
        &admin,
    ]);
    assert!(up.log_text().contains(&format!("admin: http://{admin}/metrics")), "{}", up.log_text());
    wait_for("the shop through the gateway", Duration::from_secs(90), || {
        let (status, body) = get(&up.gateway, "/api/home?user=alice", "")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["errors"].as_array().is_some_and(|e| e.is_empty())).then_some(())
    });

    // A request that comes with a trace: every hop joins it.
    let (status, _) = get(&up.gateway, "/api/home?user=alice", &format!("traceparent: {SPEC}\r\n"))
        .expect("the traced request");
    assert_eq!(status, 200);
    let trace = &SPEC[3..35];
    // gateway, frontend in + 2 out, catalog in + out, pricing in, cart in.
    let spans = wait_for("the spans of every hop", Duration::from_secs(30), || {
        let s = collector.of_trace(trace);
        (s.len() >= 8).then_some(s)
    });
    let services = one_tree(&spans, Some(&SPEC[36..52]));
    for svc in ["weft-gateway", "frontend", "catalog", "pricing", "cart"] {
        assert!(services.contains(svc), "{svc} missing from {services:?}");
    }
    let kinds: Vec<(String, i64, String)> = spans
        .iter()
        .map(|(svc, s)| {
            let dir = s["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "weft.direction")
                .unwrap()["value"]["stringValue"]
                .as_str()
                .unwrap()
                .to_string();
            (svc.clone(), s["kind"].as_i64().unwrap(), dir)
        })
        .collect();
    for (svc, kind, dir) in &kinds {
        let want = if dir == "outbound" { 3 } else { 2 };
        assert_eq!(*kind, want, "{svc} {dir}: {kinds:?}");
    }
    assert!(kinds.iter().any(|(s, _, d)| s == "frontend" && d == "outbound"), "{kinds:?}");

    // Without a trace, the gateway starts one (and every hop joins it).
    let (status, _) = get(&up.gateway, "/api/home?user=bob&token=hunter2", "").unwrap();
    assert_eq!(status, 200);
    let line = wait_for("the gateway's access log line", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&gw_log).ok()?;
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .find(|l| l["path"] == "/api/home" && l["trace_id"] != trace)
    });
    let text = std::fs::read_to_string(&gw_log).unwrap();
    assert!(!text.contains("hunter2"), "no query strings in access logs:\n{text}");
    for field in [
        "time",
        "direction",
        "method",
        "authority",
        "path",
        "status",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "upstream",
        "endpoint",
        "retries",
        "error",
        "trace_id",
        "span_id",
    ] {
        assert!(line.get(field).is_some(), "no {field} in {line}");
    }
    assert_eq!(
        (line["direction"].as_str(), line["upstream"].as_str()),
        (Some("gateway"), Some("frontend"))
    );
    let new_trace = line["trace_id"].as_str().unwrap().to_string();
    let spans = wait_for("the new trace's spans", Duration::from_secs(30), || {
        let s = collector.of_trace(&new_trace);
        (s.len() >= 8).then_some(s)
    });
    one_tree(&spans, None);
    let root = spans.iter().find(|(_, s)| s.get("parentSpanId").is_none()).unwrap();
    assert_eq!(root.1["spanId"], line["span_id"], "the log line names the gateway's span");

    // A malformed traceparent: a new trace, counted, and the request succeeds.
    let before = metric(&metrics(&admin), "weft_traceparent_invalid_total");
    let bad = "00-zzzz2f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, _) =
        get(&up.gateway, "/api/home?user=carol", &format!("traceparent: {bad}\r\n")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics(&admin), "weft_traceparent_invalid_total"), before + 1.0);

    // The gateway's admin listener: its traffic and hold metrics, readiness, configuration.
    let m = metrics(&admin);
    assert!(m.contains("direction=\"gateway\""), "{m}");
    assert!(m.contains("weft_held_requests"), "{m}");
    assert!(metric(&m, "weft_spans_exported_total") > 0.0, "{m}");
    assert_eq!(get(&admin, "/ready", "").unwrap().0, 200);
    let (status, config) = get(&admin, "/config", "").unwrap();
    assert_eq!(status, 200);
    assert!(config.contains("\"ingress\""), "{config}");

    // Sidecars' access log lines are in the instances' sidecar logs. The balancer decides which
    // frontend got the requests above, so look at each of them.
    let frontends: Vec<String> = up
        .items("inst")
        .into_iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("frontend-"))
        .collect();
    assert!(!frontends.is_empty(), "no frontend instance");
    let out = wait_for("sidecar access log lines", Duration::from_secs(20), || {
        frontends.iter().find_map(|f| {
            let out = up.cli(&["logs", f, "--sidecar", "--tail", "200"]);
            out.stdout.contains("\"direction\":\"inbound\"").then_some(out.stdout)
        })
    });
    let json: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        json.iter().any(|l| l["direction"] == "outbound" && l["upstream"] == "catalog"),
        "{out}"
    );

    // The collector goes away: requests still succeed, spans are dropped and counted.
    collector.stop.store(true, Ordering::SeqCst);
    wait_for("the collector's port to close", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", collector.port)).is_err().then_some(())
    });
    for _ in 0..5 {
        let (status, _) = get(&up.gateway, "/api/home?user=dave", "").unwrap();
        assert_eq!(status, 200);
    }
    wait_for("dropped spans counted", Duration::from_secs(30), || {
        (metric(&metrics(&admin), "weft_spans_dropped_total{reason=\"export_failed\"}") >= 5.0)
            .then_some(())
    });
}

/// A real `weft proxy` process (several worker threads) that gets SIGTERM sends the spans it
/// was still batching before it exits: the last requests of a sidecar being scaled down keep
/// their traces.
#[test]
fn a_proxy_process_sends_its_last_spans_when_it_is_stopped() {
    let collector = Collector::start();
    let app = common::mesh::app();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", closed_port());
    let admin = format!("127.0.0.1:{}", closed_port());
    let args: Vec<String> = [
        "--listen",
        &listen,
        "--upstream",
        &app.to_string(),
        "--admin",
        &admin,
        "--threads",
        "2",
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{}", collector.port),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut p = common::mesh::proxy(dir.path(), "proxy", &args);
    wait_for("the proxy", Duration::from_secs(20), || get(&admin, "/ready", "").map(|_| ()));
    for i in 0..5 {
        let tp = format!("00-{:032x}-00f067aa0ba902b7-01", 0xabc0 + i);
        let (status, _) = get(&listen, "/", &format!("traceparent: {tp}\r\n")).unwrap();
        assert_eq!(status, 200);
    }
    let pid = p.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        wait_for("the proxy to exit", Duration::from_secs(20), || p.child.try_wait().unwrap());
    assert!(status.success(), "{}", p.log_text());
    // Exited means sent: the batch interval (a second) did not have to pass.
    let ours = (0..5).filter(|i| !collector.of_trace(&format!("{:032x}", 0xabc0 + i)).is_empty());
    assert_eq!(ours.count(), 5, "{}", p.log_text());
}
