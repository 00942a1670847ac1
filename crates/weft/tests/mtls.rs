//! mTLS between sidecars (issue 6), with real processes.
//!
//! - The CA route: a proxy token gets a certificate for its instance's identity, a CSR for
//!   another service gets 403, a missing instance 404, a viewer 403, garbage 400.
//! - A sidecar pair with fixed identities (`--mtls-cert/--mtls-key/--mtls-ca`): traffic flows
//!   over mTLS; in strict mode plaintext, no certificate, a certificate from another CA and an
//!   expired certificate are refused at the inbound port and counted; a caller that expects
//!   another service's identity refuses the callee; permissive mode takes plaintext.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::mesh::{app, metric, plain_get, proxy};
use common::*;
use serde_json::json;
use weft_ca::{Ca, Csr, SpiffeId};

fn id(svc: &str) -> SpiffeId {
    SpiffeId::new("weft.local", "default", svc)
}

/// Writes `<name>.crt` (chain) and `<name>.key` for `svc`, signed by `ca` at `now` for `ttl`.
fn issue(ca: &Ca, dir: &Path, name: &str, svc: &str, now: SystemTime, ttl: Duration) {
    let csr = Csr::generate(&id(svc)).unwrap();
    let issued = ca.sign_csr(&csr.csr_pem, &id(svc), ttl, now).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), issued.chain_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), csr.key_pem).unwrap();
}

#[test]
fn the_ca_signs_only_the_instance_identity() {
    let s = Server::start();
    assert!(s.dir.join("ca.crt").exists() && s.dir.join("ca.key").exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir.join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let inst = json!({
        "apiVersion": "weft/v1", "kind": "Instance",
        "metadata": {"name": "web-1"},
        "spec": {"deployment": "web", "template": {"command": ["web"]}}
    });
    let r = s.put_json("/api/v1/namespaces/default/instances/web-1", &inst);
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    let proxy = s.create_token("proxy", None);
    let viewer = s.create_token("viewer", None);
    let post = |token: &str, body: serde_json::Value| {
        s.call(
            "POST",
            "/api/v1/certificates",
            Some(token),
            Some(("application/json", body.to_string().as_bytes())),
        )
    };

    let csr = Csr::generate(&id("web")).unwrap();
    let r = post(&proxy, json!({"csr": csr.csr_pem, "instance": "web-1", "namespace": "default"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["identity"], "spiffe://weft.local/ns/default/svc/web");
    let certs = weft_ca::pem_certs(v["certificateChain"].as_str().unwrap());
    assert_eq!(certs.len(), 2);
    assert_eq!(weft_ca::identity_of(&certs[0]), Some(id("web")));
    let ca_file = std::fs::read_to_string(s.dir.join("ca.crt")).unwrap();
    assert_eq!(v["caCertificate"].as_str().unwrap(), ca_file);
    // About 24 hours by default.
    let left = weft_ca::not_after_of(&certs[0]).unwrap().duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(23 * 3600) && left <= Duration::from_secs(24 * 3600));

    // Another service's identity: 403, saying which.
    let other = Csr::generate(&id("cart")).unwrap();
    let r = post(&proxy, json!({"csr": other.csr_pem, "instance": "web-1"}));
    let msg = r.error(403, "Forbidden");
    assert!(
        msg.contains("spiffe://weft.local/ns/default/svc/cart")
            && msg.contains("spiffe://weft.local/ns/default/svc/web"),
        "{msg}"
    );
    // An instance that does not exist: 404.
    let r = post(&proxy, json!({"csr": csr.csr_pem, "instance": "nope"}));
    r.error(404, "NotFound");
    // Not a proxy or admin token: 403.
    let r = post(&viewer, json!({"csr": csr.csr_pem, "instance": "web-1"}));
    r.error(403, "Forbidden");
    // Garbage: 400; an unknown field: 422; no token: 401.
    let r = post(&proxy, json!({"csr": "not a csr", "instance": "web-1"}));
    r.error(400, "BadRequest");
    let r = post(&proxy, json!({"csr": csr.csr_pem, "instance": "web-1", "key": "x"}));
    r.error(422, "Invalid");
    let r = s.call("POST", "/api/v1/certificates", None, Some(("application/json", b"{}")));
    assert_eq!(r.status, 401);
}

/// Test-only: accepts any server certificate (the proxy's own checks are what is tested).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `GET /` over TLS to `addr`, presenting `<dir>/<name>.crt` (or no certificate): the status,
/// or the error.
fn tls_get(addr: &str, dir: &Path, name: Option<&str>) -> Result<u16, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match name {
        None => b.with_no_client_auth(),
        Some(n) => {
            let chain = std::fs::read_to_string(dir.join(format!("{n}.crt"))).unwrap();
            let key = std::fs::read_to_string(dir.join(format!("{n}.key"))).unwrap();
            let certs = weft_ca::pem_certs(&chain)
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from)
                .collect();
            let key =
                rustls::pki_types::PrivateKeyDer::try_from(weft_ca::pem_key_der(&key).unwrap())
                    .unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
    };
    let sn = rustls::pki_types::ServerName::try_from("catalog.default.svc").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), sn).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if out.is_empty() => return Err(e.to_string()),
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no answer: {text:?}"))
}

fn files(dir: &Path, name: &str) -> Vec<String> {
    let p = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    vec![
        "--mtls-cert".into(),
        p("crt"),
        "--mtls-key".into(),
        p("key"),
        "--mtls-ca".into(),
        dir.join("ca.crt").display().to_string(),
    ]
}

#[test]
fn strict_inbound_refuses_plaintext_foreign_and_expired_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let now = SystemTime::now();
    let (ca, _) = Ca::load_or_create(dir, "weft.local", now).unwrap();
    let other_dir = dir.join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let (other, _) = Ca::load_or_create(&other_dir, "weft.local", now).unwrap();
    let day = Duration::from_secs(24 * 3600);
    issue(&ca, dir, "catalog", "catalog", now, day);
    issue(&ca, dir, "web", "web", now, day);
    issue(&other, dir, "foreign", "web", now, day);
    issue(&ca, dir, "expired", "web", now - 2 * day, day);

    let app = app();
    let (inbound, admin_in, outbound, admin_out) =
        (closed_port(), closed_port(), closed_port(), closed_port());
    let (inbound_tcp, upstream_tcp) = (closed_port(), closed_port());
    let service = |name: &str| {
        format!(
            "  - apiVersion: weft/v1\n    kind: Service\n    metadata: {{ name: {name} }}\n    spec: {{ selector: {{ deployment: {name} }}, ports: [ {{ name: http, port: 80, targetPort: http }}, {{ name: tcp, port: 9000, targetPort: tcp, protocol: tcp }}, {{ name: h2, port: 81, targetPort: http, protocol: http2 }} ] }}\n  - apiVersion: weft/v1\n    kind: Endpoints\n    metadata: {{ name: {name} }}\n    spec: {{ addresses: [ {{ instance: catalog-0, ip: 127.0.0.1, ports: {{ http: {inbound}, tcp: {inbound_tcp}, h2: {inbound} }} }} ] }}\n"
        )
    };
    std::fs::write(
        dir.join("inbound.yaml"),
        format!(
            "labels: {{ deployment: catalog }}\ninbound: [ {{ port: http, listen: 127.0.0.1:{inbound}, app: {app} }}, {{ port: tcp, listen: 127.0.0.1:{inbound_tcp}, app: {app}, protocol: tcp }} ]\n"
        ),
    )
    .unwrap();
    // The caller knows `catalog` (the callee's identity) and `cart`, whose endpoint is the same
    // sidecar: a caller of cart must refuse a server that proves it is catalog.
    std::fs::write(
        dir.join("outbound.yaml"),
        format!(
            "labels: {{ deployment: web }}\noutbound: {{ listen: 127.0.0.1:{outbound} }}\nupstreams: [ {{ service: catalog, port: tcp, listen: 127.0.0.1:{upstream_tcp} }} ]\nobjects:\n{}{}",
            service("catalog"),
            service("cart")
        ),
    )
    .unwrap();
    let mut args: Vec<String> = vec![
        "--config".into(),
        dir.join("inbound.yaml").display().to_string(),
        "--admin".into(),
        format!("127.0.0.1:{admin_in}"),
        "--mtls".into(),
        "strict".into(),
    ];
    args.extend(files(dir, "catalog"));
    let callee = proxy(dir, "inbound", &args);
    let mut args: Vec<String> = vec![
        "--config".into(),
        dir.join("outbound.yaml").display().to_string(),
        "--admin".into(),
        format!("127.0.0.1:{admin_out}"),
        "--mtls".into(),
        "strict".into(),
    ];
    args.extend(files(dir, "web"));
    let caller = proxy(dir, "outbound", &args);
    let in_addr = format!("127.0.0.1:{inbound}");
    let out_addr = format!("127.0.0.1:{outbound}");
    let admin_in = format!("127.0.0.1:{admin_in}");
    let admin_out = format!("127.0.0.1:{admin_out}");

    // Through the pair: mTLS, and the app answers.
    wait_for("the pair over mTLS", Duration::from_secs(20), || {
        (plain_get(&out_addr, "catalog") == Ok(200)).then_some(())
    });
    assert!(
        metric(&admin_out, "weft_mtls_connections_total", "side=\"outbound\",result=\"mtls\"")
            >= 1.0
    );
    assert!(
        metric(&admin_in, "weft_mtls_connections_total", "side=\"inbound\",result=\"mtls\"") >= 1.0
    );
    // Opaque TCP over mTLS: the caller's fixed local port for catalog:tcp reaches the callee's
    // tcp inbound port.
    assert_eq!(plain_get(&format!("127.0.0.1:{upstream_tcp}"), "catalog"), Ok(200));
    assert!(
        metric(&admin_in, "weft_mtls_connections_total", "side=\"inbound\",result=\"mtls\"") >= 2.0
    );
    // HTTP/2 between the sidecars (a Service port with protocol http2) over mTLS.
    assert_eq!(plain_get(&out_addr, "catalog:81"), Ok(200), "{}", caller.log_text());
    // A client of the mesh CA directly: fine.
    assert_eq!(tls_get(&in_addr, dir, Some("web")), Ok(200));

    // Plaintext at the inbound port: closed without an answer, counted.
    let r = plain_get(&in_addr, "catalog");
    assert!(r.is_err(), "plaintext got {r:?}\n{}", callee.log_text());
    assert_eq!(
        metric(&admin_in, "weft_mtls_connections_total", "result=\"refused_plaintext\""),
        1.0
    );
    // TLS without a certificate, with one from another CA, with an expired one: refused.
    for who in [None, Some("foreign"), Some("expired")] {
        let r = tls_get(&in_addr, dir, who);
        assert!(r.is_err(), "{who:?} got {r:?}");
    }
    assert_eq!(
        metric(&admin_in, "weft_mtls_connections_total", "result=\"refused_handshake\""),
        3.0,
        "{}",
        request(&admin_in, "GET", "/metrics", None, &[], None).unwrap().text()
    );

    // The caller calling `cart` reaches a server proving it is `catalog`: refused (5xx), and
    // counted on the caller's side.
    let r = plain_get(&out_addr, "cart");
    assert!(matches!(r, Ok(502..=503)), "cart got {r:?}\n{}", caller.log_text());
    assert!(
        metric(
            &admin_out,
            "weft_mtls_connections_total",
            "side=\"outbound\",result=\"refused_handshake\""
        ) >= 1.0
    );
    drop(callee);

    // Permissive: plaintext and mTLS both served.
    let mut args: Vec<String> = vec![
        "--config".into(),
        dir.join("inbound.yaml").display().to_string(),
        "--mtls".into(),
        "permissive".into(),
    ];
    args.extend(files(dir, "catalog"));
    let _callee = proxy(dir, "permissive", &args);
    wait_for("the permissive sidecar", Duration::from_secs(20), || {
        (plain_get(&in_addr, "catalog") == Ok(200)).then_some(())
    });
    assert_eq!(tls_get(&in_addr, dir, Some("web")), Ok(200));
    assert_eq!(tls_get(&in_addr, dir, Some("foreign")).ok(), None);
}

#[test]
fn bad_mtls_flags_are_explained() {
    let out = weft(
        &["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--mtls", "sometimes"],
        None,
    );
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("--mtls: 'sometimes' is not strict, permissive or off"),
        "{}",
        out.stderr
    );
    let out = weft(
        &["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--mtls", "strict"],
        None,
    );
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("needs an identity"), "{}", out.stderr);
    let out = weft(
        &["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--mtls-cert", "a.crt"],
        None,
    );
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("go together"), "{}", out.stderr);
}

/// The demo shop under `weft up` with mTLS on (the default) and certificates of 20 s: steady
/// load through the gateway across two rotations of every sidecar's and the gateway's
/// certificate fails no request; the sidecars served the shop over mTLS and refuse plaintext.
#[test]
fn the_shop_runs_over_mtls_and_rotation_under_load_fails_no_request() {
    use common::up::{Up, http_get, repo};
    let up = Up::start(&["-f", repo("examples/shop").to_str().unwrap(), "--cert-ttl", "20s"]);
    wait_for("the shop through the gateway", Duration::from_secs(90), || {
        let (status, body) = http_get(&up.gateway, "/api/home?user=alice").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["errors"].as_array().is_some_and(|e| e.is_empty())).then_some(())
    });
    let admins = |svc: &str| -> Vec<String> {
        up.items("instances")
            .iter()
            .filter(|i| i["spec"]["deployment"] == svc)
            .filter_map(|i| i["status"]["sidecarAdmin"].as_str().map(String::from))
            .collect()
    };
    let catalog = admins("catalog");
    assert!(!catalog.is_empty());
    let expiry = |a: &str| metric(a, "weft_mtls_certificate_expiry_seconds", "");
    let first = expiry(&catalog[0]);
    assert!(first > 0.0, "no certificate on {}", catalog[0]);

    // Steady load for 32 s: the 20 s certificates are renewed at 14 s and 28 s.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop) = (up.gateway.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match http_get(&gw, "/api/home?user=alice") {
                        Ok((200, body)) if body.contains("\"errors\":[]") => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(32));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(ok > 50, "only {ok} requests went through");
    assert!(
        failed.is_empty(),
        "{} of {} failed, e.g. {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(3)]
    );
    // Renewed (twice): the certificate in force expires later than the first one did.
    let now_exp = expiry(&catalog[0]);
    assert!(now_exp >= first + 20.0, "not renewed: {first} -> {now_exp}");
    // The shop's hops were mTLS, and the inbound ports refuse plaintext.
    let mtls: f64 = catalog
        .iter()
        .map(|a| metric(a, "weft_mtls_connections_total", "side=\"inbound\",result=\"mtls\""))
        .sum();
    assert!(mtls >= 1.0);
    let inst =
        up.items("instances").into_iter().find(|i| i["spec"]["deployment"] == "catalog").unwrap();
    let port = inst["status"]["ports"]["http"].as_u64().unwrap();
    let addr = format!("{}:{port}", inst["status"]["address"].as_str().unwrap_or("127.0.0.1"));
    assert!(TcpStream::connect(&addr).is_ok(), "nothing listens at {addr}");
    assert!(plain_get(&addr, "catalog").is_err(), "plaintext reached catalog at {addr}");
    let refused: f64 = catalog
        .iter()
        .map(|a| metric(a, "weft_mtls_connections_total", "result=\"refused_plaintext\""))
        .sum();
    assert!(refused >= 1.0, "the refusal is not counted");
    eprintln!("rotation under load: {ok} requests, 0 failed");
}
