//! Autoscaling end to end: the real `weft up` runs a deployment behind the gateway with an
//! Autoscaler on it (`tests/fixtures/autoscale/`); client threads here keep requests in flight
//! through the gateway, and the test follows, through the CLI, the scale-up the in-flight
//! count asks for, the decisions it records (`weft describe`, `weft get as -o json`), and the
//! way back to `minReplicas` once the load stops. An Autoscaler whose deployment does not
//! exist says so in its status. With `minReplicas: 0` a deployment goes to zero without
//! traffic, and the gateway holds the next request while it scales back from zero; one whose
//! instances never become ready answers held requests 503 after the hold timeout, and the hold
//! queue is bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::up::{Up, http_get};
use serde_json::Value;

/// Polls `f` every `period` until it returns `Some`, panicking with `what` (and the last thing
/// `f` saw) after `timeout`. Slower than `common::wait_for`: each try here runs the CLI, and
/// the platform under test shares the machine.
fn poll<T>(
    what: &str,
    timeout: Duration,
    period: Duration,
    mut f: impl FnMut(&mut String) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    loop {
        if let Some(v) = f(&mut seen) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen:\n{seen}"
        );
        std::thread::sleep(period);
    }
}

const PERIOD: Duration = Duration::from_millis(200);

/// Client threads, each keeping one request in flight through the gateway at all times (GET
/// after GET on a keep-alive connection), until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, path: &'static str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (addr, stop, ok, failed) =
                    (addr.to_string(), stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || client(&addr, path, &stop, &ok, &failed))
            })
            .collect();
        Load { stop, ok, failed, threads }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops every thread (each finishes its request in flight); (ok, failed).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn client(addr: &str, path: &str, stop: &AtomicBool, ok: &AtomicU64, failed: &AtomicU64) {
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.set_nodelay(true).unwrap();
                    conn.insert(s)
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        match get(s, path) {
            Ok((status, keep)) => {
                let counter = if status == 200 { ok } else { failed };
                counter.fetch_add(1, Ordering::Relaxed);
                if !keep {
                    conn = None;
                }
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// One GET on an open connection: (status, whether the connection may be used again).
fn get(s: &mut TcpStream, path: &str) -> std::io::Result<(u16, bool)> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: autoscale.test\r\n\r\n")?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut more = |s: &mut TcpStream, buf: &mut Vec<u8>| -> std::io::Result<usize> {
        let n = s.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    };
    let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if more(s, &mut buf)? == 0 {
            return Err(eof());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let header =
        |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
    let mut keep = header("connection:").is_none_or(|v| v != "close");
    if let Some(len) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < head_end + len {
            if more(s, &mut buf)? == 0 {
                return Err(eof());
            }
        }
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        while !buf.ends_with(b"0\r\n\r\n") {
            if more(s, &mut buf)? == 0 {
                return Err(eof());
            }
        }
    } else {
        while more(s, &mut buf)? > 0 {}
        keep = false;
    }
    Ok((status, keep))
}

fn replicas(d: &Value) -> i64 {
    d["spec"]["replicas"].as_i64().unwrap_or(-1)
}

/// The `weft describe` rows under "Scaling decisions", e.g. `3s  1 → 4  burst: concurrency …`.
fn decision_rows(describe: &str) -> Vec<String> {
    describe
        .lines()
        .skip_while(|l| !l.starts_with("Scaling decisions"))
        .skip(2) // the heading and the table's header
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn in_flight_requests_scale_a_deployment_up_at_once_and_back_down_when_they_stop() {
    let mut up = Up::start(&["-f", common::fixture("autoscale/scale.yaml").to_str().unwrap()]);
    let gateway = up.gateway.clone();
    poll("pricing through the gateway", Duration::from_secs(30), PERIOD, |seen| {
        let mut s = TcpStream::connect(&gateway).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let r = get(&mut s, "/api/prices");
        *seen = format!("{r:?}");
        (r.ok()?.0 == 200).then_some(())
    });
    assert_eq!(replicas(&up.json(&["get", "deploy", "pricing"])), 1);

    // 16 requests in flight at all times (each takes 200ms in the app) against a target of 3
    // per instance: 16 / 3 asks for 6, capped at maxReplicas 4; one replica has more than
    // 2.0x its share, so burst mode scales up at once.
    let load = Load::start(&gateway, "/api/prices", 16);
    let started = Instant::now();
    let peak = poll("pricing to scale up to at least 3", Duration::from_secs(30), PERIOD, |seen| {
        let d = up.json(&["get", "deploy", "pricing"]);
        let a = up.json(&["get", "as", "pricing"]);
        *seen = format!("deployment: {}\nautoscaler status: {}", d["spec"], a["status"]);
        (replicas(&d) >= 3).then(|| replicas(&d))
    });
    let up_after = started.elapsed();
    assert!(peak <= 4, "maxReplicas 4: {peak}");

    // The new instances start and become ready, and requests keep being served.
    let served_before = load.ok();
    poll("a second ready instance of pricing", Duration::from_secs(30), PERIOD, |seen| {
        let insts = up.items("inst");
        let ready = insts
            .iter()
            .filter(|i| i["spec"]["deployment"] == "pricing" && i["status"]["ready"] == true)
            .count();
        *seen = format!("{ready} ready of {}", insts.len());
        (ready >= 2).then_some(())
    });
    poll("requests served meanwhile", Duration::from_secs(10), PERIOD, |seen| {
        *seen = format!("{} ok since scaling up", load.ok() - served_before);
        (load.ok() > served_before).then_some(())
    });

    // `weft describe` (exit 0) shows the decision, naming the metric that drove it.
    let rows = poll("the scale-up in weft describe", Duration::from_secs(15), PERIOD, |seen| {
        let out = up.cli(&["describe", "autoscaler", "pricing"]);
        *seen = format!("exit {}\n{}{}", out.code, out.stdout, out.stderr);
        out.ok();
        let rows = decision_rows(&out.stdout);
        rows.iter().any(|r| r.contains("1 → ") && r.contains("concurrency")).then_some(rows)
    });
    assert!(rows.iter().any(|r| r.contains("burst")), "a burst-mode decision: {rows:?}");

    // The same in the object: decisions and the current figures.
    let a = up.json(&["get", "as", "pricing"]);
    let status = &a["status"];
    let decisions = status["decisions"].as_array().expect("status.decisions");
    let first_up = decisions.iter().rev().find(|d| d["from"] == 1).expect("a decision from 1");
    assert!(first_up["to"].as_i64().unwrap() >= 2, "{first_up}");
    assert!(first_up["reason"].as_str().unwrap().contains("concurrency"), "{first_up}");
    assert!(first_up["time"].is_string(), "{first_up}");
    let metrics = status["currentMetrics"].as_array().expect("status.currentMetrics");
    let concurrency = metrics.iter().find(|m| m["type"] == "concurrency").expect("concurrency");
    assert_eq!(concurrency["target"], 3.0, "{concurrency}");
    assert!(concurrency["current"].as_f64().is_some(), "{concurrency}");
    assert!(status["lastScaleTime"].is_string(), "{status}");

    // No more load: once burst mode is over (a 4s stable window without a burst) and the
    // stable window has emptied, back to minReplicas 1.
    let (ok, failed) = load.stop();
    assert!(ok > 0, "no request succeeded ({failed} failed)");
    let stopped = Instant::now();
    poll("pricing back at 1 replica", Duration::from_secs(40), PERIOD, |seen| {
        let d = up.json(&["get", "deploy", "pricing"]);
        let a = up.json(&["get", "as", "pricing"]);
        *seen = format!("deployment: {}\nautoscaler status: {}", d["spec"], a["status"]);
        (replicas(&d) == 1).then_some(())
    });
    let down_after = stopped.elapsed();
    let out = up.cli(&["describe", "as", "pricing"]);
    out.ok();
    let rows = decision_rows(&out.stdout);
    assert!(rows.iter().any(|r| r.contains("→ 1") && r.contains("concurrency")), "{rows:?}");
    eprintln!(
        "scaled 1 → {peak} {up_after:.1?} after the load started ({ok} ok, {failed} failed), \
         back to 1 {down_after:.1?} after it stopped"
    );
    let status = up.interrupt(Duration::from_secs(60));
    assert!(status.success(), "weft up exit: {status}\n{}", up.log_text());
}

#[test]
fn an_autoscaler_whose_deployment_does_not_exist_says_so() {
    let mut up = Up::start(&["-f", common::fixture("autoscale/ghost.yaml").to_str().unwrap()]);
    let a = poll("TargetNotFound in the status", Duration::from_secs(20), PERIOD, |seen| {
        let a = up.json(&["get", "as", "ghost"]);
        *seen = a["status"].to_string();
        let conds = a["status"]["conditions"].as_array()?;
        conds.iter().any(|c| c["reason"] == "TargetNotFound").then_some(a)
    });
    for c in a["status"]["conditions"].as_array().unwrap() {
        assert_eq!(c["status"], "False", "{c}");
        assert_eq!(c["reason"], "TargetNotFound", "{c}");
        assert!(c["message"].as_str().unwrap().contains("no-such-deployment"), "{c}");
    }
    assert!(a["status"]["decisions"].as_array().is_none_or(|d| d.is_empty()), "{a}");

    let out = up.cli(&["describe", "as", "ghost"]);
    out.ok();
    assert!(out.stdout.contains("TargetNotFound"), "{}", out.stdout);
    assert!(out.stdout.contains("no-such-deployment"), "{}", out.stdout);
    assert!(!out.stdout.contains("Scaling decisions"), "{}", out.stdout);
    // Nothing was created or scaled on its behalf.
    assert!(up.items("deploy").is_empty());
    let status = up.interrupt(Duration::from_secs(60));
    assert!(status.success(), "weft up exit: {status}\n{}", up.log_text());
}

#[test]
fn a_service_at_zero_is_scaled_up_by_the_first_request_which_the_gateway_holds_meanwhile() {
    let zero = common::fixture("autoscale/zero.yaml");
    let mut up =
        Up::start(&["-f", zero.to_str().unwrap(), "--hold-timeout", "3s", "--hold-queue", "2"]);
    // No traffic: pricing goes from 1 to 0 after the 2s grace, and its instance goes away.
    poll("pricing scaled to zero", Duration::from_secs(60), PERIOD, |seen| {
        let d = up.json(&["get", "deploy", "pricing"]);
        let insts = up.items("inst");
        let left = insts.iter().filter(|i| i["spec"]["deployment"] == "pricing").count();
        *seen = format!("replicas {}, {left} instances", replicas(&d));
        (replicas(&d) == 0 && left == 0).then_some(())
    });

    // The first request is held by the gateway, which asks for an instance; it is answered by
    // that instance, well within the 3s hold timeout.
    let started = Instant::now();
    let (status, body) = http_get(&up.gateway, "/api/prices").unwrap();
    let first = started.elapsed();
    assert_eq!(status, 200, "{body}\n{}", up.log_text());
    assert_eq!(replicas(&up.json(&["get", "deploy", "pricing"])), 1);
    let svc = up.json(&["get", "svc", "pricing"]);
    assert!(
        svc["metadata"]["annotations"]["weft.dev/activation-requested"].is_string(),
        "the activation request is on the Service: {svc}"
    );
    let out = up.cli(&["describe", "as", "pricing"]);
    out.ok();
    let rows = decision_rows(&out.stdout);
    assert!(rows.iter().any(|r| r.contains("0 → 1") && r.contains("request arrived")), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("1 → 0") && r.contains("no traffic")), "{rows:?}");

    // stuck: never ready. Three requests at once: the queue holds two, which get 503 after
    // the 3s hold timeout; the third is refused at once.
    let gateway = up.gateway.clone();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let gateway = gateway.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = http_get(&gateway, "/stuck").unwrap();
                (r, t.elapsed())
            })
        })
        .collect();
    let mut answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    answers.sort_by_key(|(_, took)| *took);
    let ((s0, b0), t0) = &answers[0];
    assert_eq!(*s0, 503, "{b0}");
    assert!(b0.contains("already waiting"), "queue full: {b0}");
    assert!(*t0 < Duration::from_secs(3), "refused at once, not held: {t0:?}");
    for ((s, b), took) in &answers[1..] {
        assert_eq!(*s, 503, "{b}");
        assert!(b.contains("\"stuck\" has no ready instance"), "{b}");
        assert!(b.contains("3s"), "names the hold timeout: {b}");
        assert!(*took >= Duration::from_millis(2900), "held for the timeout: {took:?}");
    }
    // The held requests asked for an instance: stuck was scaled to one, which never got ready.
    assert_eq!(replicas(&up.json(&["get", "deploy", "stuck"])), 1);
    eprintln!("scale from zero: the first request was answered {first:.1?} after it was sent");
    let status = up.interrupt(Duration::from_secs(60));
    assert!(status.success(), "weft up exit: {status}\n{}", up.log_text());
}

#[test]
fn vertical_auto_resizes_requests_from_usage_and_rolls_them_out() {
    let vertical = common::fixture("autoscale/vertical.yaml");
    let mut up = Up::start(&["-f", vertical.to_str().unwrap()]);
    // Half a minute of samples, then one update: 512Mi requested, a few MiB used.
    let d = poll(
        "the recommended requests in the deployment",
        Duration::from_secs(120),
        PERIOD,
        |seen| {
            let d = up.json(&["get", "deploy", "pricing"]);
            let a = up.json(&["get", "as", "pricing"]);
            *seen = format!(
                "requests {}\nvertical status {}",
                d["spec"]["template"]["resources"], a["status"]["vertical"]
            );
            (d["spec"]["template"]["resources"]["requests"]["memory"] != "512Mi").then_some(d)
        },
    );
    let a = up.json(&["get", "as", "pricing"]);
    let v = &a["status"]["vertical"];
    assert_eq!(v["mode"], "auto", "{v}");
    assert!(v["lastUpdateTime"].is_string(), "{v}");
    let requests = &d["spec"]["template"]["resources"]["requests"];
    assert_eq!(requests["memory"], v["memory"]["target"], "{v}");
    assert_eq!(requests["cpu"], v["cpu"]["target"], "{v}");
    let mem = requests["memory"].as_str().unwrap();
    let mib: u64 = mem.strip_suffix("Mi").and_then(|n| n.parse().ok()).expect(mem);
    assert!((16..=64).contains(&mib), "a few MiB used, 16Mi at least: {mem}");
    // The new requests roll out: the deployment's instance is replaced and ready again.
    let out = up.cli(&["rollout", "status", "deploy", "pricing", "--timeout", "60s"]);
    out.ok();
    let insts = up.items("inst");
    let inst = insts
        .iter()
        .find(|i| i["spec"]["deployment"] == "pricing" && i["spec"]["terminating"] != true)
        .expect("a running instance");
    assert_eq!(inst["spec"]["template"]["resources"]["requests"]["memory"], mem, "{inst}");
    let out = up.cli(&["describe", "as", "pricing"]);
    out.ok();
    let line = out.stdout.lines().find(|l| l.starts_with("Vertical")).expect("a Vertical line");
    assert!(line.contains("mode auto") && line.contains("recommends cpu"), "{line}");
    assert!(line.contains(&format!("memory {mem}")), "{line}");
    assert!(
        ["requests set to", "within the recommended bounds", "next update"]
            .iter()
            .any(|m| line.contains(m)),
        "{line}"
    );

    // Vertical auto on a deployment scaled horizontally on cpu would chase itself: refused whole.
    let bad = up.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&vertical)
            .unwrap()
            .replace("{ type: concurrency, target: 10 }", "{ type: cpu, targetUtilization: 70 }"),
    )
    .unwrap();
    let out = up.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("spec.vertical.mode"), "{}", out.stderr);
    assert_eq!(up.json(&["get", "deploy", "pricing"])["spec"], d["spec"], "nothing written");
    let status = up.interrupt(Duration::from_secs(60));
    assert!(status.success(), "weft up exit: {status}\n{}", up.log_text());
}
