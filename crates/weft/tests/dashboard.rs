//! The web dashboard end to end: the real `weft up` runs the demo shop, a thread here puts load
//! through the gateway, and
//! - the api serves `/ui` (no token) and `/api/v1/dashboard/graph` (401 without a token) with
//!   the demo's services and the frontend → catalog edge at a live rate; `weft dashboard` and
//!   the banner print the link;
//! - headless Chromium (Debian's `chromium` + `chromium-driver`) loads the page: no page
//!   errors, the graph shows the services and a live edge, and a scale caused here
//!   (`weft scale deploy cart --replicas 3`) appears on the scaling timeline. Screenshots go to
//!   `$CARGO_TARGET_TMPDIR/dashboard/` (the path is printed). Without a browser that test says
//!   it was skipped and why, unless `WEFT_REQUIRE_BROWSER=1` (CI), where that is a failure.
//!
//! The browser is driven over the W3C WebDriver protocol with a few lines of raw HTTP/1.1
//! here rather than a WebDriver crate such as `fantoccini`: the handful
//! of calls needed (new session, navigate, execute script, screenshot, delete) are JSON over
//! HTTP, and this adds no dependency (no TLS stack, no Cargo.lock change, builds offline).
//!
//! `bench_dashboard_500_instances` (ignored; `cargo test -p weft --test dashboard -- --ignored
//! --nocapture`) measures the page with 500 instances; see `docs/bench-dashboard.md`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::up::{Up, http_get, repo};
use common::{closed_port, request, wait_for};
use serde_json::{Value, json};

/// The two `weft up` tests here take the machine's cores; one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn admin_token(up: &Up) -> String {
    std::fs::read_to_string(up.dir.join("admin.token")).unwrap().trim().to_string()
}

/// Requests through the gateway from a thread until dropped (about 25/s).
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Load {
    fn start(gateway: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, gw) = (stop.clone(), gateway.to_string());
        let thread = std::thread::spawn(move || {
            let mut ok = 0;
            while !s.load(Ordering::Relaxed) {
                if let Ok((200, _)) = http_get(&gw, "/api/home?user=dash") {
                    ok += 1;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
            ok
        });
        Load { stop, thread: Some(thread) }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn graph(up: &Up, token: Option<&str>) -> common::Resp {
    request(&up.api, "GET", "/api/v1/dashboard/graph", token, &[], None).unwrap()
}

fn edge<'a>(g: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    g["edges"].as_array()?.iter().find(|e| e["from"] == from && e["to"] == to)
}

const SERVICES: [&str; 4] = ["frontend", "catalog", "pricing", "cart"];

#[test]
fn the_api_serves_the_page_and_the_demo_graph_with_live_figures() {
    let _serial = serial();
    let up = Up::start(&["-f", repo("examples/shop").to_str().unwrap()]);
    let token = admin_token(&up);
    let log = up.log_text();
    assert!(
        log.contains(&format!("dashboard: http://{}/ui#token={token}", up.api)),
        "the banner has the dashboard link:\n{log}"
    );

    // The page: static, no token needed, nothing from elsewhere.
    let page = request(&up.api, "GET", "/ui", None, &[], None).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text().contains("/ui/app.js"));
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"));
    for asset in ["/ui/", "/ui/app.js", "/ui/app.css", "/ui/favicon.svg"] {
        let r = request(&up.api, "GET", asset, None, &[], None).unwrap();
        assert_eq!(r.status, 200, "{asset}");
    }
    assert_eq!(request(&up.api, "GET", "/ui/nope.js", None, &[], None).unwrap().status, 404);

    // The figures need a token, and take no query parameters.
    graph(&up, None).error(401, "Unauthorized");
    graph(&up, Some("weft_nope_nope")).error(401, "Unauthorized");
    request(&up.api, "GET", "/api/v1/dashboard/graph?x=1", Some(&token), &[], None)
        .unwrap()
        .error(400, "BadRequest");

    let _load = Load::start(&up.gateway);
    let g = wait_for("frontend → catalog at a live rate", Duration::from_secs(60), || {
        let r = graph(&up, Some(&token));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("content-type").unwrap().starts_with("application/json"));
        let g = r.json();
        let e = edge(&g, "default/frontend", "default/catalog")?;
        (e["rps"].as_f64()? > 0.0).then_some(g)
    });
    for s in SERVICES {
        assert!(
            g["nodes"].as_array().unwrap().iter().any(|n| n["id"] == format!("default/{s}")),
            "node {s} in {g}"
        );
    }
    let e = edge(&g, "default/frontend", "default/catalog").unwrap();
    let sr = e["successRate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&sr), "{e}");
    assert!(e["p99Ms"].as_f64().unwrap() > 0.0, "{e}");
    assert!(edge(&g, "default/catalog", "default/pricing").is_some(), "catalog → pricing: {g}");
    // The gateway is outside the mesh: frontend's traffic comes from the ingress node.
    assert!(edge(&g, "ingress", "default/frontend").is_some(), "ingress → frontend: {g}");
    assert!(g["scraped"].as_u64().unwrap() >= 8, "{g}");

    // A viewer token reads it too.
    let viewer = up.cli(&["token", "create", "--role", "viewer"]);
    let viewer = viewer.ok().stdout.trim().to_string();
    assert_eq!(graph(&up, Some(&viewer)).status, 200);

    // `weft dashboard` prints the link with the data dir's token.
    let out = up.cli(&["dashboard"]);
    assert_eq!(out.ok().stdout.trim(), format!("http://{}/ui#token={token}", up.api));
    let out = up.cli(&["dashboard", "--no-token"]);
    assert_eq!(out.ok().stdout.trim(), format!("http://{}/ui", up.api));
}

// ---- the browser ---------------------------------------------------------------------------

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `(chromium, chromedriver)`, or why not.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("WEFT_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
        .ok_or(
            "no chromium on PATH (apt-get install chromium chromium-driver, or set WEFT_CHROMIUM)",
        )?;
    let driver = std::env::var_os("WEFT_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| on_path("chromedriver"))
        .ok_or(
            "no chromedriver on PATH (apt-get install chromium-driver, or set WEFT_CHROMEDRIVER)",
        )?;
    Ok((chromium, driver))
}

/// Some(browser) or None after saying why the test is skipped (a failure under
/// `WEFT_REQUIRE_BROWSER=1`).
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match browser() {
        Ok(b) => Some(b),
        Err(why) => {
            if std::env::var("WEFT_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("{test}: WEFT_REQUIRE_BROWSER=1 but {why}");
            }
            eprintln!("SKIPPED {test}: {why}. Set WEFT_REQUIRE_BROWSER=1 to make this a failure.");
            None
        }
    }
}

/// A chromedriver process and one headless Chromium session, both ended on drop.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = closed_port();
        let addr = format!("127.0.0.1:{port}");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser { driver, addr, session: String::new(), _profile: profile };
        wait_for("chromedriver", Duration::from_secs(20), || {
            TcpStream::connect(&b.addr).ok()?;
            let r = b.call("GET", "/status", None).ok()?;
            r["ready"].as_bool().filter(|r| *r)
        });
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            // DOMContentLoaded is enough: the page's watch streams never finish loading, and
            // "normal" makes chromedriver wait on them.
            "pageLoadStrategy": "eager",
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1600", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", b._profile.path().display())]
            }
        } } });
        let v = b.call("POST", "/session", Some(&caps)).expect("new WebDriver session");
        b.session =
            v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    /// One WebDriver command; its `value`, or the error's. The answer is read by its
    /// Content-Length: chromedriver keeps connections open despite `Connection: close`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let (status, start, len) = loop {
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("{method} {path}: connection closed early"));
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("{method} {path}: no content-length"))?;
            break (status, end + 4, len);
        };
        while buf.len() < start + len {
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[start..(start + len).min(buf.len())];
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(body)))?;
        if status != 200 {
            return Err(format!("{method} {path}: {status} {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        self.call(method, &p, body).unwrap_or_else(|e| panic!("{e}"))
    }

    fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] })))
    }

    /// Runs an async script (`done` is its callback) and returns what it passed.
    fn js_async(&self, body: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1]; {body}");
        self.session_call("POST", "/execute/async", Some(&json!({ "script": script, "args": [] })))
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    fn errors(&self) -> Vec<String> {
        self.js("return window.__weftErrors || ['__weftErrors missing: app.js did not run']")
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|c| **c == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, c| (acc << 6) | val(*c)) << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    out
}

/// Polls the page's state until `f` accepts it; on timeout saves a screenshot and fails with
/// the last state and the page's errors.
fn wait_page<T>(
    browser: &Browser,
    out: &Path,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let s = browser.js(STATE);
        if let Some(v) = f(&s) {
            return v;
        }
        if Instant::now() > deadline {
            browser.screenshot(&out.join("timeout.png"));
            panic!(
                "timed out after {timeout:?} waiting for {what}; page state: {s:#}\nerrors: {:?}",
                browser.errors()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn out_dir(test: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard").join(test)
}

/// What the page shows, read in one script.
const STATE: &str = r#"
const q = (s) => [...document.querySelectorAll(s)];
return {
  nodes: q('#graph [data-node]').map((n) => n.getAttribute('data-node')),
  edges: q('#graph .edge').map((e) => ({ from: e.dataset.from, to: e.dataset.to, rps: +e.dataset.rps,
                                        label: e.querySelector('text').textContent })),
  timeline: q('#timeline li').map((li) => ({ target: li.dataset.target || '', text: li.textContent })),
  instances: q('#instances tbody tr').length,
  deployments: q('#deployments tbody tr').map((r) => r.textContent),
  sparks: q('#latency [data-service]').length,
  login: !document.getElementById('login').hidden,
  status: document.getElementById('status').textContent,
};
"#;

#[test]
fn a_browser_shows_the_demo_live_with_the_scale_event_on_the_timeline() {
    let test = "a_browser_shows_the_demo_live";
    let Some((chromium, driver)) = browser_or_skip(test) else { return };
    let _serial = serial();
    let up = Up::start(&["-f", repo("examples/shop").to_str().unwrap()]);
    let token = admin_token(&up);
    let _load = Load::start(&up.gateway);
    let out = out_dir(test);
    let browser = Browser::start(&chromium, &driver);

    browser.goto(&format!("http://{}/ui#token={token}", up.api));
    // The token left the address bar at once.
    let href = browser.js("return location.href");
    assert!(!href.as_str().unwrap().contains("token"), "{href}");
    // The paint entry is recorded once the first frame is painted, which can be after `goto`
    // returns: read until it is there (with a deadline).
    let read_paint = || {
        browser.js(
            "const p = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint'); \
             const n = performance.getEntriesByType('navigation')[0]; \
             return { fcp: p ? p.startTime : null, domContentLoaded: n ? n.domContentLoadedEventEnd : null, load: n ? n.loadEventEnd : null };",
        )
    };
    let paint = wait_for("a first-contentful-paint entry", Duration::from_secs(10), || {
        let p = read_paint();
        p["fcp"].as_f64().is_some().then_some(p)
    });
    eprintln!("first paint (ms since navigation start): {paint}");

    let seen = wait_page(
        &browser,
        &out,
        "the graph with a live frontend → catalog edge",
        Duration::from_secs(60),
        |s| {
            let nodes: Vec<&str> =
                s["nodes"].as_array()?.iter().filter_map(Value::as_str).collect();
            let all = SERVICES.iter().all(|n| nodes.contains(&format!("default/{n}").as_str()));
            let live = s["edges"].as_array()?.iter().any(|e| {
                e["from"] == "default/frontend"
                    && e["to"] == "default/catalog"
                    && e["rps"].as_f64().unwrap_or(0.0) > 0.0
                    && e["label"].as_str().unwrap_or("").contains("rps")
            });
            (all && live && s["instances"].as_u64()? >= 6 && s["sparks"].as_u64()? >= 1)
                .then(|| s.clone())
        },
    );
    assert_eq!(seen["login"], false, "{seen}");
    eprintln!("graph edges: {}", seen["edges"]);
    browser.screenshot(&out.join("1-graph.png"));

    // A scale caused here shows on the timeline (cart has no autoscaler to undo it).
    up.cli(&["scale", "deploy", "cart", "--replicas", "3"]).ok();
    let timeline = wait_page(
        &browser,
        &out,
        "the scale event on the timeline",
        Duration::from_secs(30),
        |s| {
            let t = s["timeline"].as_array()?.clone();
            t.iter()
                .any(|li| {
                    li["target"] == "default/cart"
                        && li["text"].as_str().is_some_and(|t| t.contains("2 → 3"))
                })
                .then_some(t)
        },
    );
    eprintln!("timeline: {}", Value::Array(timeline));
    // ...and the deployment table follows: cart 3 / 3 once the new instance is ready.
    wait_page(
        &browser,
        &out,
        "cart 3 / 3 in the deployments table",
        Duration::from_secs(60),
        |s| {
            s["deployments"]
                .as_array()?
                .iter()
                .any(|d| d.as_str().is_some_and(|d| d.contains("cart3 / 3")))
                .then_some(())
        },
    );
    browser.screenshot(&out.join("2-scaled.png"));

    let errors = browser.errors();
    assert!(errors.is_empty(), "page errors: {errors:?}");
    let fcp = paint["fcp"].as_f64().expect("a first-contentful-paint entry");
    assert!(fcp < 1000.0, "first contentful paint took {fcp} ms");
    eprintln!("screenshots in {}", out.display());
}

/// Not run by default: 500 instances in a plain `weft server`, then the page's times.
#[test]
#[ignore]
fn bench_dashboard_500_instances() {
    let test = "bench_dashboard_500_instances";
    let Some((chromium, driver)) = browser_or_skip(test) else { return };
    let _serial = serial();
    let s = common::Server::start();
    let n = 500;
    let put_status = |i: usize, restarts: u32| {
        let name = format!("web-{i:04}");
        let status = json!({ "apiVersion": "weft/v1", "kind": "Instance",
            "metadata": { "name": name, "namespace": "default" },
            "status": { "phase": "Running", "ready": true, "restarts": restarts, "address": "127.0.0.1",
                        "usage": { "cpu": "12m", "memory": "31Mi" } } });
        let r = s.put_json(&format!("/api/v1/namespaces/default/instances/{name}/status"), &status);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let started = Instant::now();
    for i in 0..n {
        let name = format!("web-{i:04}");
        let inst = json!({ "apiVersion": "weft/v1", "kind": "Instance",
            "metadata": { "name": name, "namespace": "default", "labels": { "deployment": "web" } },
            "spec": { "deployment": "web", "templateHash": "abc12", "node": format!("node-{}", i % 10),
                      "template": { "command": ["weft-demo", "catalog"],
                                    "ports": [{ "name": "http", "port": 8080, "protocol": "http" }] } } });
        let r = s.put_json(&format!("/api/v1/namespaces/default/instances/{name}"), &inst);
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
        put_status(i, 0);
    }
    eprintln!("{n} instances created in {:?}", started.elapsed());

    let t0 = Instant::now();
    let browser = Browser::start(&chromium, &driver);
    eprintln!("browser started in {:?}", t0.elapsed());
    let t0 = Instant::now();
    browser.goto(&format!("{}/ui#token={}", s.url, s.token));
    let nav = t0.elapsed();
    let rows = wait_for("500 rows", Duration::from_secs(30), || {
        let p = browser.js("return window.__weftPerf");
        (p["instanceRows"]["n"].as_u64()? == n as u64).then_some(p)
    });
    let paint = browser.js(
        "const p = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint'); return p ? p.startTime : null;",
    );
    eprintln!(
        "navigate returned after {nav:?}; first contentful paint {paint} ms; all {n} rows at {} ms after navigation start; one render of the table took {} ms",
        rows["instanceRows"]["at"], rows["renders"]["instances"]
    );
    browser.screenshot(&out_dir(test).join("500-instances.png"));

    // Responsiveness while every instance changes: frame gaps measured in the page (rAF) for
    // 4 s while this thread writes 500 status changes through the api.
    let writer = {
        let (addr, token) = (s.addr.clone(), s.token.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            for i in 0..n {
                let name = format!("web-{i:04}");
                let body = json!({ "apiVersion": "weft/v1", "kind": "Instance",
                    "metadata": { "name": name, "namespace": "default" },
                    "status": { "phase": "Running", "ready": i % 7 != 0, "restarts": 1, "address": "127.0.0.1",
                                "usage": { "cpu": "40m", "memory": "33Mi" } } })
                .to_string();
                let r = request(
                    &addr,
                    "PUT",
                    &format!("/api/v1/namespaces/default/instances/{name}/status"),
                    Some(&token),
                    &[("Content-Type", "application/json")],
                    Some(body.as_bytes()),
                )
                .unwrap();
                assert_eq!(r.status, 200);
            }
            t.elapsed()
        })
    };
    let frames = browser.js_async(
        "const gaps = []; let last = performance.now(); const end = last + 4000; \
         function tick(t) { gaps.push(t - last); last = t; if (t < end) requestAnimationFrame(tick); \
           else { gaps.sort((a, b) => a - b); done({ frames: gaps.length, p50: gaps[gaps.length >> 1], \
             p99: gaps[Math.floor(gaps.length * 0.99)], max: gaps[gaps.length - 1], \
             render: window.__weftPerf.renders.instances, events: window.__weftPerf.events }); } } \
         requestAnimationFrame(tick);",
    );
    let wrote = writer.join().unwrap();
    eprintln!("{n} status writes took {wrote:?}; frame gaps during them (ms): {frames}");
    let updated =
        browser.js("return document.querySelectorAll('#instances tbody tr td.warn').length");
    eprintln!("rows showing the changes: {updated}");
    let errors = browser.errors();
    assert!(errors.is_empty(), "page errors: {errors:?}");
}
