//! The real `weft-demo` binary, started as processes on 127.0.0.1 and wired with `--upstream`
//! (no weft needed), driven over plain HTTP/1.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_weft-demo");

/// A running service; killed when dropped.
struct Demo {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn upstream(&self, name: &str) -> String {
        format!("{name}={}", self.addr)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the log has a line containing `needle` within a few seconds: the lines are read
    /// from the child's stdout by another thread, a moment after they are written.
    fn logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// A command for the binary with a clean environment: no proxy or knob settings leaking in
/// from the machine running the tests.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        let lower = k.to_ascii_lowercase();
        if k.starts_with("DEMO_")
            || k.starts_with("WEFT_")
            || lower.ends_with("_proxy")
            || k == "PORT"
            || k == "LOG"
            || k == "RUST_LOG"
            || k == "LOG_FORMAT"
        {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Starts `weft-demo <service> --listen 127.0.0.1:0 <args>` and waits for its "listening" log
/// line, which says the port it got.
fn start(service: &str, args: &[&str], env: &[(&str, &str)]) -> Demo {
    let mut all = vec![service, "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = command(&all, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start weft-demo");
    let stdout = child.stdout.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    {
        let log = log.clone();
        // Keep draining stdout, or the child blocks once the pipe is full.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening")
                    && let Some(addr) =
                        line.split_whitespace().find_map(|w| w.strip_prefix("addr="))
                {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("{service} did not start: {:?}", log.lock().unwrap())
    });
    Demo { child, addr, log }
}

struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One request on its own connection.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<(&str, &str)>) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (ctype, body) = body.unwrap_or(("text/plain", ""));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Resp { status, head: head.to_string(), body: body.to_string() }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, None)
}

fn post_json(addr: SocketAddr, path: &str, body: &str) -> Resp {
    request(addr, "POST", path, Some(("application/json", body)))
}

/// An address nothing listens on.
fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn timed(f: impl FnOnce() -> Resp) -> (Resp, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

#[test]
fn the_shop_page_shows_data_from_every_service() {
    let pricing = start("pricing", &[], &[("WEFT_INSTANCE", "pricing-test-1")]);
    let cart = start("cart", &[], &[("WEFT_INSTANCE", "cart-test-1")]);
    let catalog = start(
        "catalog",
        &["--upstream", &pricing.upstream("pricing")],
        &[("WEFT_INSTANCE", "catalog-test-1")],
    );
    let frontend = start(
        "frontend",
        &["--upstream", &catalog.upstream("catalog"), "--upstream", &cart.upstream("cart")],
        &[("WEFT_INSTANCE", "frontend-test-1")],
    );

    for _ in 0..2 {
        let r = request(
            frontend.addr,
            "POST",
            "/cart",
            Some(("application/x-www-form-urlencoded", "id=tea&user=alice")),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location").as_deref(), Some("/?user=alice"));
    }

    let page = get(frontend.addr, "/?user=alice");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    for needle in [
        "Green tea",
        "8.50 EUR",
        "Hand grinder",
        "34.50 EUR",
        r#"id="cart-count">2<"#,
        "frontend-test-1",
        "catalog-test-1",
        "pricing-test-1",
        "cart-test-1",
    ] {
        assert!(page.body.contains(needle), "page lacks {needle:?}:\n{}", page.body);
    }
    assert!(!page.body.contains("did not answer"), "{}", page.body);

    // Another user's cart is separate; the guest page works without a query.
    let guest = get(frontend.addr, "/");
    assert!(guest.body.contains(r#"id="cart-count">0<"#), "{}", guest.body);

    let home = get(frontend.addr, "/api/home?user=alice").json();
    assert_eq!(home["cartCount"], 2);
    assert_eq!(home["products"][0]["price"], 850);
    let served: Vec<_> =
        home["servedBy"].as_array().unwrap().iter().map(|p| p["instance"].clone()).collect();
    assert_eq!(served, ["frontend-test-1", "catalog-test-1", "pricing-test-1", "cart-test-1"]);
    assert_eq!(
        get(frontend.addr, "/").header("x-demo-instance").as_deref(),
        Some("frontend-test-1")
    );

    // The services' own APIs.
    let one = get(catalog.addr, "/api/products/mug").json();
    assert_eq!((one["name"].as_str(), one["price"].as_u64()), (Some("Enamel mug"), Some(1500)));
    assert_eq!(get(catalog.addr, "/api/products/nope").status, 404);
    assert_eq!(get(pricing.addr, "/api/prices/teapot").json()["price"], 4200);
    assert_eq!(get(cart.addr, "/api/carts/alice").json()["items"][0]["quantity"], 2);
    assert_eq!(request(cart.addr, "DELETE", "/api/carts/alice", None).json()["count"], 0);
    assert_eq!(get(frontend.addr, "/nope").status, 404);
    assert_eq!(get(frontend.addr, "/?user=%3Cscript%3E").status, 400);
    assert_eq!(post_json(cart.addr, "/api/carts/bob/items", r#"{"id": 5}"#).status, 400);
}

#[test]
fn the_page_degrades_when_services_fail() {
    let dead = dead_addr().to_string();
    // pricing down: products without prices, still 200.
    let catalog = start("catalog", &["--upstream", &format!("pricing={dead}")], &[]);
    let products = get(catalog.addr, "/api/products").json();
    assert_eq!(products["products"][0]["price"], Value::Null);
    assert!(products["pricingError"].as_str().unwrap().contains("pricing is unreachable"));

    // cart down too: the page is served, with the cart count unknown.
    let frontend = start(
        "frontend",
        &["--upstream", &catalog.upstream("catalog"), "--upstream", &format!("cart={dead}")],
        &[],
    );
    let page = get(frontend.addr, "/");
    assert_eq!(page.status, 200);
    for needle in ["price unavailable", r#"id="cart-count">?<"#, "cart is unreachable", "Green tea"]
    {
        assert!(page.body.contains(needle), "page lacks {needle:?}:\n{}", page.body);
    }

    // catalog down: nothing to sell, 502 with the reason on the page.
    let lonely = start(
        "frontend",
        &["--upstream", &format!("catalog={dead}"), "--upstream", &format!("cart={dead}")],
        &[],
    );
    let page = get(lonely.addr, "/");
    assert_eq!(page.status, 502);
    assert!(page.body.contains("catalog is unreachable"), "{}", page.body);
    // Failing requests are logged at the default level.
    assert!(lonely.logged("request failed"), "{}", lonely.log());
}

#[test]
fn latency_knob_changes_live_and_resets_to_the_environment() {
    let pricing = start("pricing", &[], &[("DEMO_LATENCY", "20ms")]);
    assert_eq!(get(pricing.addr, "/knobs").json()["latency"], "20ms");
    let (r, fast) = timed(|| get(pricing.addr, "/api/prices"));
    assert_eq!(r.status, 200);
    assert!(fast >= Duration::from_millis(20), "{fast:?}");

    let k = post_json(pricing.addr, "/knobs", r#"{"latency": "400ms"}"#);
    assert_eq!(k.status, 200, "{}", k.body);
    assert_eq!(k.json()["latency"], "400ms");
    for _ in 0..3 {
        let (r, slow) = timed(|| get(pricing.addr, "/api/prices"));
        assert_eq!(r.status, 200);
        assert!(slow >= Duration::from_millis(400) && slow < Duration::from_secs(5), "{slow:?}");
    }
    // Health checks and knobs are never slowed down.
    let (h, health) = timed(|| get(pricing.addr, "/healthz"));
    assert_eq!(h.status, 200);
    assert!(health < Duration::from_millis(400), "{health:?}");

    assert_eq!(request(pricing.addr, "DELETE", "/knobs", None).json()["latency"], "20ms");
    let (_, back) = timed(|| get(pricing.addr, "/api/prices"));
    assert!(back < Duration::from_millis(400), "{back:?}");
}

#[test]
fn error_rate_fails_about_that_fraction_of_requests() {
    let pricing = start("pricing", &[], &[]);
    assert_eq!(post_json(pricing.addr, "/knobs", r#"{"errorRate": 0.3}"#).status, 200);
    let n = 400;
    let mut failed = 0;
    for _ in 0..n {
        match get(pricing.addr, "/api/prices").status {
            200 => {}
            503 => failed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // 120 expected; ±40 is more than four standard deviations (9.2).
    assert!((80..=160).contains(&failed), "{failed} of {n} failed");

    assert_eq!(post_json(pricing.addr, "/knobs", r#"{"errorRate": 1}"#).status, 200);
    let r = get(pricing.addr, "/api/prices");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("errorRate"), "{}", r.body);
    assert_eq!(get(pricing.addr, "/healthz").status, 200, "health is not subject to errorRate");
    assert_eq!(post_json(pricing.addr, "/knobs", r#"{"errorRate": 0}"#).status, 200);
    assert!((0..50).all(|_| get(pricing.addr, "/api/prices").status == 200));
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3, state.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Some(ticks / hz)
}

#[test]
fn cpu_knob_burns_measurable_cpu() {
    let pricing = start("pricing", &[], &[]);
    let Some(before) = cpu_seconds(pricing.pid()) else {
        eprintln!("skipped: no /proc/<pid>/stat on this system");
        return;
    };
    for _ in 0..20 {
        get(pricing.addr, "/api/prices");
    }
    let idle = cpu_seconds(pricing.pid()).unwrap() - before;

    assert_eq!(post_json(pricing.addr, "/knobs", r#"{"cpu": "50ms"}"#).status, 200);
    let start_cpu = cpu_seconds(pricing.pid()).unwrap();
    let (_, took) = timed(|| {
        let mut last = None;
        for _ in 0..20 {
            last = Some(get(pricing.addr, "/api/prices"));
        }
        last.unwrap()
    });
    let busy = cpu_seconds(pricing.pid()).unwrap() - start_cpu;
    // 20 × 50 ms = 1 s asked. The spin is timed by the wall clock, so on a machine shared with
    // other builds it gets less than that; a third is still far above the idle cost.
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(busy >= 0.33, "only {busy:.2}s of cpu for 1s of busy-work (idle: {idle:.2}s)");
    assert!(idle < 0.2, "{idle:.2}s of cpu for 20 plain requests");
}

#[test]
fn fail_health_makes_healthz_fail() {
    let cart = start("cart", &[], &[("DEMO_FAIL_HEALTH", "true")]);
    assert_eq!(get(cart.addr, "/healthz").status, 503);
    assert_eq!(get(cart.addr, "/api/carts/x").status, 200, "only health fails");
    assert_eq!(post_json(cart.addr, "/knobs", r#"{"failHealth": false}"#).status, 200);
    assert_eq!(get(cart.addr, "/healthz").status, 200);
    assert_eq!(post_json(cart.addr, "/knobs", r#"{"failHealth": true}"#).status, 200);
    assert_eq!(get(cart.addr, "/healthz").status, 503);
}

#[test]
fn malformed_knobs_are_rejected_and_change_nothing() {
    let pricing = start("pricing", &[], &[]);
    let before = get(pricing.addr, "/knobs").json();
    for (body, needle) in [
        ("{not json", "bad knobs"),
        ("", "bad knobs"),
        (r#"{"errorRate": 1.5}"#, "between 0 and 1"),
        (r#"{"errorRate": "half"}"#, "bad knobs"),
        (r#"{"latency": "soon"}"#, "latency"),
        (r#"{"latency": "2h"}"#, "latency"),
        (r#"{"latncy": "2ms"}"#, "unknown field"),
        ("[1, 2]", "bad knobs"),
    ] {
        let r = post_json(pricing.addr, "/knobs", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    assert_eq!(get(pricing.addr, "/knobs").json(), before);
    assert_eq!(request(pricing.addr, "PUT", "/knobs", None).status, 405);
    let big = "x".repeat(100_000);
    assert_eq!(post_json(pricing.addr, "/knobs", &big).status, 413);
    // The process is still fine.
    assert_eq!(get(pricing.addr, "/healthz").status, 200);
}

#[test]
fn bad_configuration_exits_64_with_a_message() {
    for (args, env) in [
        (vec!["pricing"], vec![("DEMO_ERROR_RATE", "2")]),
        (vec!["pricing"], vec![("DEMO_LATENCY", "slow")]),
        (vec!["pricing"], vec![("PORT", "http")]),
        (vec!["catalog", "--upstream", "pricing"], vec![]),
        (vec!["catalog"], vec![("HTTP_PROXY", "https://proxy:443")]),
        (vec!["load", "--url", "ftp://x/"], vec![]),
    ] {
        let out = command(&args, &env).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.trim().is_empty());
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let mut pricing = start("pricing", &[], &[("DEMO_LATENCY", "1s")]);
    let addr = pricing.addr;
    let slow = thread::spawn(move || get(addr, "/api/prices"));
    thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill").args(["-TERM", &pricing.pid().to_string()]).status().unwrap();
    assert!(killed.success());

    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished: {}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = pricing.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running 10s after SIGTERM");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
    assert!(pricing.logged("SIGTERM"), "{}", pricing.log());
}

#[test]
fn load_reports_every_second() {
    let pricing = start("pricing", &[], &[]);
    let url = format!("http://{}/api/prices", pricing.addr);
    let out =
        command(&["load", "--url", &url, "--rps", "40", "--duration", "2s"], &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.iter().any(|l| l.trim_start().starts_with("1s")), "{stdout}");
    assert!(lines.iter().any(|l| l.trim_start().starts_with("2s")), "{stdout}");
    let total = lines.iter().find(|l| l.starts_with("total:")).expect(&stdout);
    assert!(total.contains("80 due, 80 done, 80 ok"), "{total}");
    assert!(total.contains("failures -"), "{total}");

    // Failures are reported by status.
    assert_eq!(post_json(pricing.addr, "/knobs", r#"{"errorRate": 1}"#).status, 200);
    let out =
        command(&["load", "--url", &url, "--rps", "20", "--duration", "1s"], &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("503:20"), "{stdout}");

    // A target that is not there: connection errors, not a crash.
    let dead = format!("http://{}/", dead_addr());
    let out = command(&["load", "--url", &dead, "--rps", "10", "--duration", "1s"], &[])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("error:10"), "{stdout}");
}

/// A stand-in sidecar: records the request line it gets and answers as pricing would.
fn fake_proxy() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = tx.send(line.trim_end().to_string());
            let body = r#"{"instance":"fake","currency":"EUR","prices":{"tea":1}}"#;
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-demo-instance: pricing-via-proxy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, rx)
}

#[test]
fn calls_go_through_http_proxy_in_absolute_form() {
    let (proxy, requests) = fake_proxy();
    let proxy_url = format!("http://{proxy}");
    let catalog =
        start("catalog", &[], &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "localhost,127.0.0.1")]);
    let products = get(catalog.addr, "/api/products").json();
    assert_eq!(products["pricingInstance"], "pricing-via-proxy");
    assert_eq!(products["products"][0]["price"], 1);
    let line = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(line.starts_with("GET http://pricing/api/prices?ids=tea,coffee,"), "{line}");
    assert!(line.ends_with(" HTTP/1.1"), "{line}");
}

/// The weft binary, when it has been built (`cargo build -p weft`).
fn weft_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_BIN") {
        return Some(PathBuf::from(p));
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut candidates = vec![workspace.join("target/debug/weft")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.insert(0, PathBuf::from(dir).join("debug/weft"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

#[test]
fn calls_go_through_a_real_weft_proxy() {
    let Some(weft) = weft_binary() else {
        eprintln!("skipped: no weft binary (run `cargo build -p weft`, or set WEFT_BIN)");
        return;
    };
    let a = start("pricing", &[], &[("WEFT_INSTANCE", "pricing-a")]);
    let b = start("pricing", &[], &[("WEFT_INSTANCE", "pricing-b")]);
    let listen = dead_addr();
    let mut proxy = Command::new(&weft)
        .args([
            "proxy",
            "--listen",
            &listen.to_string(),
            "--upstream",
            &format!("{},{}", a.addr, b.addr),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weft proxy");
    let ready = (0..100).any(|_| {
        thread::sleep(Duration::from_millis(50));
        TcpStream::connect(listen).is_ok()
    });
    if !ready {
        let _ = proxy.kill();
        panic!("weft proxy did not listen on {listen}");
    }

    let proxy_url = format!("http://{listen}");
    let catalog = start("catalog", &[], &[("HTTP_PROXY", &proxy_url)]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let products = get(catalog.addr, "/api/products").json();
        assert_eq!(products["products"][0]["price"], 850, "{products}");
        seen.insert(products["pricingInstance"].as_str().unwrap_or_default().to_string());
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
    // The plain proxy balances round-robin: both pricing instances answered.
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["pricing-a", "pricing-b"]);
}
