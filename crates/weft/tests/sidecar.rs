//! The sidecar proxy end to end: `weft proxy` as a child process following a real
//! `weft server` (dynamic mode), the ingress gateway following the same server, and bad
//! configuration files and flags.
//!
//! Dynamic mode: endpoints change → traffic follows without dropping connections or requests in
//! flight; the server killed → the proxy keeps serving the last configuration; the server back →
//! the proxy catches up. Gateway: Services' `spec.ingress` → outside requests reach the
//! endpoints; an ingress changed → routing follows, requests in flight complete. A service with
//! no endpoint (scaled to zero): the sidecar holds the request, asks the server for an instance
//! (the Service's activation annotation), and sends it on when endpoints appear.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A gate the test opens to let held requests through.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// An HTTP/1.1 upstream answering its name; `/hold` waits for the gate.
struct Upstream {
    addr: SocketAddr,
    gate: Arc<Gate>,
    held: Arc<Mutex<usize>>,
}

fn upstream(name: &'static str) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let gate = Arc::new(Gate::default());
    let held = Arc::new(Mutex::new(0));
    let (g, h) = (gate.clone(), held.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (g, h) = (g.clone(), h.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    if head.starts_with("GET /hold ") {
                        *h.lock().unwrap() += 1;
                        g.wait();
                    }
                    let resp =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}", name.len());
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Upstream { addr, gate, held }
}

/// A keep-alive client connection.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { s, buf: Vec::new() }
    }

    /// `GET path` with `Host: host`; status and body (the connection stays open).
    fn get(&mut self, host: &str, path: &str) -> std::io::Result<(u16, String)> {
        self.s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let body =
                        String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).to_string();
                    self.buf.drain(..end + 4 + len);
                    return Ok((status, body));
                }
            }
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `weft proxy` as a child process (killed on drop), its log in its own temp dir.
struct ProxyProcess {
    proc: common::mesh::Proc,
    _tmp: tempfile::TempDir,
}

impl ProxyProcess {
    fn start(args: &[&str]) -> ProxyProcess {
        let tmp = tempfile::tempdir().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        ProxyProcess { proc: common::mesh::proxy(tmp.path(), "proxy", &args), _tmp: tmp }
    }

    fn log(&self) -> String {
        self.proc.log_text()
    }
}

/// `weft proxy` as instance web-1's dynamic sidecar on `s`, with `extra` flags, once ready:
/// (process, outbound address, admin address).
fn dynamic_sidecar(s: &Server, token: &str, extra: &[&str]) -> (ProxyProcess, SocketAddr, String) {
    let outbound = format!("127.0.0.1:{}", closed_port());
    let admin = format!("127.0.0.1:{}", closed_port());
    let mut args = vec![
        "--server",
        &s.url,
        "--token",
        token,
        "--instance",
        "web-1",
        "--outbound",
        &outbound,
        "--admin",
        &admin,
    ];
    args.extend_from_slice(extra);
    let p = ProxyProcess::start(&args);
    wait_for("the proxy to be ready", Duration::from_secs(30), || {
        let r = request(&admin, "GET", "/ready", None, &[], None).ok()?;
        (r.status == 200).then_some(())
    });
    (p, outbound.parse().unwrap(), admin)
}

/// The sidecar's own Instance; its template asks for a fixed local port to `catalog`.
fn instance(upstream_port: u16) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Instance",
        "metadata": {"name": "web-1", "labels": {"deployment": "web"}},
        "spec": {"deployment": "web", "template": {
            "command": ["web"], "ports": [{"name": "http", "port": 8080}],
            "upstreams": [{"service": "catalog", "localPort": upstream_port}]
        }}
    })
}

fn catalog_service() -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Service", "metadata": {"name": "catalog"},
        "spec": {"selector": {"deployment": "catalog"}, "ports": [{"name": "http", "port": 80}],
                 "traffic": {"loadBalancer": "round-robin"}}
    })
}

fn catalog_endpoints(addr: SocketAddr) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Endpoints", "metadata": {"name": "catalog"},
        "spec": {"addresses": [{"instance": "catalog-1", "ip": "127.0.0.1", "ports": {"http": addr.port()}}]}
    })
}

const ENDPOINTS: &str = "/api/v1/namespaces/default/endpoints/catalog";

fn metric(admin: &str, name: &str, label: &str) -> Option<f64> {
    let r = request(admin, "GET", "/metrics", None, &[], None).ok()?;
    r.text()
        .lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Asks through the outbound listener on fresh connections until `want` answers.
fn wait_for_body(outbound: SocketAddr, want: &str, timeout: Duration) {
    wait_for(&format!("traffic on {want}"), timeout, || {
        let mut c = Client::connect(outbound);
        match c.get("catalog", "/") {
            Ok((200, body)) if body == want => Some(()),
            _ => None,
        }
    });
}

#[test]
fn dynamic_sidecar_follows_a_real_server_and_survives_its_absence() {
    let mut s = Server::start();
    let token = s.create_token("proxy", None);
    let (a, b) = (upstream("A"), upstream("B"));
    let upstream_port = closed_port();
    let inst = instance(upstream_port);
    assert_eq!(s.put_json("/api/v1/namespaces/default/instances/web-1", &inst).status, 201);
    assert_eq!(s.put_json(&svc_path("catalog"), &catalog_service()).status, 201);
    assert_eq!(s.put_json(ENDPOINTS, &catalog_endpoints(a.addr)).status, 201);

    let (p, outbound, admin) = dynamic_sidecar(&s, &token, &[]);
    let mut kept = Client::connect(outbound);
    assert_eq!(kept.get("catalog", "/").unwrap(), (200, "A".to_string()), "{}", p.log());
    // The Instance's template upstream: a local port that always means catalog.
    let fixed = SocketAddr::from(([127, 0, 0, 1], upstream_port));
    assert_eq!(Client::connect(fixed).get("anything", "/").unwrap(), (200, "A".to_string()));

    // A request in flight on A while the endpoints move to B.
    let in_flight = std::thread::spawn(move || Client::connect(outbound).get("catalog", "/hold"));
    wait_for("the held request at A", Duration::from_secs(10), || {
        (*a.held.lock().unwrap() == 1).then_some(())
    });
    assert_eq!(s.put_json(ENDPOINTS, &catalog_endpoints(b.addr)).status, 200);
    wait_for_body(outbound, "B", Duration::from_secs(20));
    // The open keep-alive connection follows too, and the held request still completes.
    assert_eq!(kept.get("catalog", "/").unwrap(), (200, "B".to_string()));
    a.gate.open();
    assert_eq!(in_flight.join().unwrap().unwrap(), (200, "A".to_string()));

    // The control plane goes away: the last configuration keeps serving.
    let revision = metric(&admin, "weft_config_revision", "").unwrap();
    s.kill();
    for _ in 0..5 {
        assert_eq!(Client::connect(outbound).get("catalog", "/").unwrap(), (200, "B".to_string()));
    }
    assert_eq!(kept.get("catalog", "/").unwrap(), (200, "B".to_string()));
    assert_eq!(request(&admin, "GET", "/ready", None, &[], None).unwrap().status, 200);
    assert_eq!(metric(&admin, "weft_config_revision", ""), Some(revision));

    // Back: a change made after the restart reaches the proxy.
    s.restart();
    assert_eq!(s.put_json(ENDPOINTS, &catalog_endpoints(a.addr)).status, 200);
    wait_for_body(outbound, "A", Duration::from_secs(60));
    assert!(metric(&admin, "weft_config_revision", "").unwrap() > revision);
    assert!(metric(&admin, "weft_config_updates_total", "result=\"applied\"").unwrap() >= 3.0);
    assert_eq!(
        metric(&admin, "weft_config_updates_total", "result=\"rejected\"").unwrap_or(0.0),
        0.0
    );
    assert_eq!(kept.get("catalog", "/").unwrap(), (200, "A".to_string()), "{}", p.log());
    // Unknown services are named in the answer.
    let (status, body) = Client::connect(outbound).get("catalogue", "/").unwrap();
    assert_eq!(status, 503);
    assert_eq!(body, "no service \"catalogue\" in namespace \"default\" (known: catalog)\n");
}

#[test]
fn a_dynamic_sidecar_holds_a_request_for_a_service_at_zero_and_asks_for_an_instance() {
    let s = Server::start();
    let token = s.create_token("proxy", None);
    let a = upstream("A");
    let inst = instance(closed_port());
    assert_eq!(s.put_json("/api/v1/namespaces/default/instances/web-1", &inst).status, 201);
    assert_eq!(s.put_json(&svc_path("catalog"), &catalog_service()).status, 201);
    let none = json!({"apiVersion": "weft/v1", "kind": "Endpoints", "metadata": {"name": "catalog"},
                      "spec": {"addresses": []}});
    assert_eq!(s.put_json(ENDPOINTS, &none).status, 201);
    let (p, outbound, admin) = dynamic_sidecar(&s, &token, &["--hold-timeout", "20s"]);
    let held = std::thread::spawn(move || Client::connect(outbound).get("catalog", "/"));
    // The sidecar asked for an instance: the api recorded it on the Service (the proxy token
    // may do that, and nothing more on Services).
    wait_for("the activation request on the Service", Duration::from_secs(10), || {
        let svc: Value = serde_json::from_str(&s.get(&svc_path("catalog")).text()).ok()?;
        svc["metadata"]["annotations"]["weft.dev/activation-requested"].as_str().map(drop)
    });
    assert!(!held.is_finished(), "the request is held, not refused: {}", p.log());
    // An instance becomes ready (the autoscaler and agent's part): the held request goes to it.
    assert_eq!(s.put_json(ENDPOINTS, &catalog_endpoints(a.addr)).status, 200);
    assert_eq!(held.join().unwrap().unwrap(), (200, "A".to_string()), "{}", p.log());
    assert_eq!(
        metric(&admin, "weft_held_requests_total", "result=\"released\""),
        Some(1.0),
        "{}",
        p.log()
    );
}

/// A Service in `ns` with an ingress (JSON), one port `http`.
fn ingress_service(name: &str, ns: &str, ingress: Value) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"deployment": name}, "ports": [{"name": "http", "port": 80}],
                 "ingress": ingress}
    })
}

fn endpoints_in(name: &str, ns: &str, addr: SocketAddr) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
        "spec": {"addresses": [{"instance": format!("{name}-1"), "ip": "127.0.0.1", "ports": {"http": addr.port()}}]}
    })
}

#[test]
fn gateway_routes_outside_traffic_by_ingress_and_follows_changes() {
    let s = Server::start();
    let token = s.create_token("proxy", None);
    let (a, b) = (upstream("A"), upstream("B"));
    let shop = "/api/v1/namespaces/web/services/shop";
    let ingress = json!({"host": "shop.example", "pathPrefix": "/"});
    assert_eq!(s.put_json(shop, &ingress_service("shop", "web", ingress)).status, 201);
    let eps = endpoints_in("shop", "web", a.addr);
    assert_eq!(s.put_json("/api/v1/namespaces/web/endpoints/shop", &eps).status, 201);
    let docs = ingress_service("docs", "default", json!({"pathPrefix": "/docs/"}));
    assert_eq!(s.put_json(&svc_path("docs"), &docs).status, 201);
    let eps = endpoints_in("docs", "default", b.addr);
    assert_eq!(s.put_json("/api/v1/namespaces/default/endpoints/docs", &eps).status, 201);
    // Not exposed: no ingress.
    assert_eq!(s.put_json(&svc_path("catalog"), &catalog_service()).status, 201);
    assert_eq!(s.put_json(ENDPOINTS, &catalog_endpoints(a.addr)).status, 201);

    let gateway = format!("127.0.0.1:{}", closed_port());
    let admin = format!("127.0.0.1:{}", closed_port());
    let p = ProxyProcess::start(&[
        "--gateway",
        &gateway,
        "--server",
        &s.url,
        "--token",
        &token,
        "--admin",
        &admin,
    ]);
    wait_for("the gateway to be ready", Duration::from_secs(30), || {
        let r = request(&admin, "GET", "/ready", None, &[], None).ok()?;
        (r.status == 200).then_some(())
    });
    let gateway: SocketAddr = gateway.parse().unwrap();
    let mut kept = Client::connect(gateway);
    assert_eq!(kept.get("shop.example", "/").unwrap(), (200, "A".to_string()), "{}", p.log());
    assert_eq!(kept.get("Shop.Example:8080", "/cart").unwrap(), (200, "A".to_string()));
    // The host's route wins over the host-less /docs; other hosts get /docs.
    assert_eq!(kept.get("shop.example", "/docs/x").unwrap(), (200, "A".to_string()));
    assert_eq!(kept.get("other.example", "/docs/x").unwrap(), (200, "B".to_string()));
    assert_eq!(
        kept.get("other.example", "/catalog").unwrap(),
        (404, "no ingress route for host \"other.example\" and path \"/catalog\"\n".to_string())
    );
    assert_eq!(kept.get("catalog", "/").unwrap().0, 404, "a service without ingress stays inside");

    // A request in flight at A while the ingress moves to another host and prefix.
    let in_flight =
        std::thread::spawn(move || Client::connect(gateway).get("shop.example", "/hold"));
    wait_for("the held request at A", Duration::from_secs(10), || {
        (*a.held.lock().unwrap() == 1).then_some(())
    });
    let moved = json!({"host": "store.example", "pathPrefix": "/store"});
    assert_eq!(s.put_json(shop, &ingress_service("shop", "web", moved)).status, 200);
    wait_for("the new route", Duration::from_secs(20), || {
        match Client::connect(gateway).get("store.example", "/store/1") {
            Ok((200, body)) if body == "A" => Some(()),
            _ => None,
        }
    });
    // The open connection follows: the old host now falls through to the host-less route.
    assert_eq!(kept.get("shop.example", "/docs/x").unwrap(), (200, "B".to_string()));
    assert_eq!(kept.get("shop.example", "/").unwrap().0, 404);
    assert_eq!(kept.get("store.example", "/storefront").unwrap().0, 404);
    assert_eq!(kept.get("store.example", "/store").unwrap(), (200, "A".to_string()));
    a.gate.open();
    assert_eq!(in_flight.join().unwrap().unwrap(), (200, "A".to_string()));

    // What the gateway serves and counts, on its admin listener.
    let config = request(&admin, "GET", "/config", None, &[], None).unwrap().json();
    let routes = &config["routes"]["ingress"];
    assert_eq!(routes[0]["host"], "store.example", "{config}");
    assert_eq!(routes[0]["service"], "shop", "{config}");
    assert_eq!(routes[1]["pathPrefix"], "/docs/", "{config}");
    assert!(
        metric(&admin, "weft_requests_total", "direction=\"gateway\",service=\"shop.web\"")
            .unwrap()
            >= 4.0
    );
    assert!(metric(&admin, "weft_requests_total", "service=\"docs\"").unwrap() >= 2.0);
    assert_eq!(
        metric(&admin, "weft_config_updates_total", "result=\"rejected\"").unwrap_or(0.0),
        0.0
    );
}

#[test]
fn bad_configuration_files_and_flags_exit_64_with_one_line() {
    for (file, expect) in [
        ("broken-field.yaml", "objects[0].spec.traffic.retrys: unknown field `retrys`"),
        ("broken-syntax.yaml", "line "),
        ("missing.yaml", "cannot read"),
    ] {
        let path = fixture(&format!("sidecar/{file}"));
        let out = weft(&["proxy", "--config", path.to_str().unwrap()], None);
        assert_eq!(out.code, 64, "{file}: {out:?}");
        let err = out.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{file}: one line: {err}");
        assert!(err.starts_with("error: --config: ") && err.contains(file), "{file}: {err}");
        assert!(err.contains(expect), "{file}: {err}");
    }
    for (args, flag) in [
        (&["proxy", "--server", "http://127.0.0.1:1", "--instance", "x"][..], "--token"),
        (&["proxy", "--server", "http://127.0.0.1:1", "--token", "t"][..], "--instance"),
        (&["proxy", "--config", "x.yaml", "--inbound", "http=nowhere"][..], "--config"),
        (&["proxy", "--inbound", "http"][..], "--upstream"),
        (
            &[
                "proxy",
                "--listen",
                "127.0.0.1:1",
                "--upstream",
                "127.0.0.1:2",
                "--outbound",
                "127.0.0.1:3",
            ][..],
            "--outbound",
        ),
        (&["proxy", "--server", "nope", "--token", "t", "--instance", "x"][..], "--server"),
        (&["proxy", "--gateway", "127.0.0.1:1"][..], "--gateway"),
        (&["proxy", "--gateway", "nowhere", "--config", "x.yaml"][..], "--gateway"),
        (&["proxy", "--gateway", "127.0.0.1:1", "--server", "http://127.0.0.1:1"][..], "--token"),
        (
            &[
                "proxy",
                "--gateway",
                "127.0.0.1:1",
                "--server",
                "http://127.0.0.1:1",
                "--token",
                "t",
                "--instance",
                "x",
            ][..],
            "--instance",
        ),
        (
            &["proxy", "--gateway", "127.0.0.1:1", "--outbound", "127.0.0.1:2", "--config", "x"][..],
            "--outbound",
        ),
        (
            &[
                "proxy",
                "--gateway",
                "127.0.0.1:1",
                "--listen",
                "127.0.0.1:2",
                "--upstream",
                "127.0.0.1:3",
            ][..],
            "--gateway",
        ),
    ] {
        let out = weft(args, None);
        assert_eq!(out.code, 64, "{args:?}: {out:?}");
        assert!(
            out.stderr.trim().starts_with(&format!("error: {flag}: ")),
            "{args:?}: {}",
            out.stderr
        );
    }
    // A good file starts (and a flag's listener is added to the file's).
    let path = fixture("sidecar/good.yaml");
    let admin = format!("127.0.0.1:{}", closed_port());
    let p = ProxyProcess::start(&["--config", path.to_str().unwrap(), "--admin", &admin]);
    wait_for("the static sidecar to be ready", Duration::from_secs(30), || {
        let r = request(&admin, "GET", "/ready", None, &[], None).ok()?;
        (r.status == 200).then_some(())
    });
    let config = request(&admin, "GET", "/config", None, &[], None).unwrap().json();
    assert_eq!(config["routes"]["services"][0]["name"], "catalog", "{}", p.log());

    // A gateway on a taken port: exit 1, one line that says which listener and what to do.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = fixture("sidecar/gateway.yaml");
    let out =
        weft(&["proxy", "--gateway", &addr.to_string(), "--config", path.to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: cannot listen for the gateway on {addr}: address already in use; pick another with --gateway"
        )
    );
    // The help shows the mode.
    let help = weft(&["proxy", "--help"], None);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(help.stdout.contains("weft proxy --gateway ADDR --server URL"), "{}", help.stdout);
}
