//! Api hardening (issue 6) and control-plane metrics (issue 7) through the real binary: TLS on
//! the api listener (`--tls auto`, operator files, and every way a client can get it wrong),
//! the audit log of writes, and the controllers' metrics on the api's `/metrics`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::up::Up;
use common::*;
use serde_json::Value;

/// A CLI run against `url` with a token and maybe a CA file, from a data dir that holds
/// nothing (so nothing is found there).
fn remote(url: &str, token: &str, ca: Option<&Path>, args: &[&str]) -> Out {
    let empty = tempfile::tempdir().unwrap();
    let mut all =
        vec!["--data-dir", empty.path().to_str().unwrap(), "--server", url, "--token", token];
    if let Some(ca) = ca {
        all.extend(["--ca-file", ca.to_str().unwrap()]);
    }
    all.extend_from_slice(args);
    weft(&all, None)
}

fn one_line(out: &Out) -> &str {
    let err = out.stderr.trim_end();
    assert!(!err.contains('\n'), "more than one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn tls_auto_is_trusted_from_the_data_dir_and_every_mistake_gets_one_line() {
    let s = Server::with_args(&["--tls", "auto"]);
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let ca = s.dir.join("api-ca.crt");
    assert!(std::fs::read_to_string(&ca).unwrap().contains("BEGIN CERTIFICATE"));

    // The CLI on this machine needs no flags: address, token and CA are in the data dir.
    let out = s.cli_stdin(&["apply", "-f", "-"], &serde_yaml_doc(&deployment("web", 1)));
    out.ok();
    let out = s.cli(&["get", "deploy", "web", "-o", "name"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "deployment/web");

    // Elsewhere, with the CA file passed: works; and failover across replicas still does.
    remote(&s.url, &s.token, Some(&ca), &["get", "deploy"]).ok();
    let dead = format!("https://127.0.0.1:{}", closed_port());
    remote(&format!("{dead},{}", s.url), &s.token, Some(&ca), &["get", "deploy"]).ok();
    // WEFT_CA_FILE does the same as --ca-file.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "--data-dir",
            empty.path().to_str().unwrap(),
            "--server",
            &s.url,
            "--token",
            &s.token,
        ])
        .args(["get", "deploy"])
        .env("WEFT_CA_FILE", &ca)
        .env_remove("WEFT_SERVER")
        .env_remove("WEFT_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // No CA: untrusted, and the line names the file to pass.
    let out = remote(&s.url, &s.token, None, &["get", "deploy"]);
    assert_eq!(out.code, 69, "{}", out.stderr);
    let line = one_line(&out);
    assert!(line.contains("not trusted") && line.contains("--ca-file"), "{line}");
    assert!(line.contains("api-ca.crt"), "{line}");

    // A CA file that is not the server's: untrusted too, naming the file given.
    let other = tempfile::tempdir().unwrap();
    let other_ca = weft_ca::Ca::generate("other.local", std::time::SystemTime::now()).unwrap();
    let other_path = other.path().join("other.crt");
    std::fs::write(&other_path, other_ca.cert_pem()).unwrap();
    let out = remote(&s.url, &s.token, Some(&other_path), &["get", "deploy"]);
    assert_eq!(out.code, 69, "{}", out.stderr);
    let line = one_line(&out);
    assert!(line.contains("not trusted") && line.contains("other.crt"), "{line}");

    // A CA file that cannot be read: bad configuration.
    let out = remote(&s.url, &s.token, Some(Path::new("/nonexistent/ca.crt")), &["get", "deploy"]);
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        one_line(&out).contains("cannot read the CA file /nonexistent/ca.crt"),
        "{}",
        out.stderr
    );

    // Plaintext to the TLS api: told to use https.
    let out = remote(&format!("http://{}", s.addr), &s.token, None, &["get", "deploy"]);
    assert_eq!(out.code, 69, "{}", out.stderr);
    let line = one_line(&out);
    assert!(line.contains(&format!("use https://{}", s.addr)), "{line}");
    // Raw HTTP gets the same, as JSON.
    let r = s.call("GET", "/healthz", None, None);
    assert_eq!(r.status, 400);
    assert!(r.message().contains("speaks TLS only"), "{}", r.text());
}

#[test]
fn an_https_client_to_a_plaintext_api_is_told_so() {
    let s = Server::start();
    let ca = tempfile::tempdir().unwrap();
    let path = ca.path().join("ca.crt");
    std::fs::write(
        &path,
        weft_ca::Ca::generate("x.local", std::time::SystemTime::now()).unwrap().cert_pem(),
    )
    .unwrap();
    let out = remote(&format!("https://{}", s.addr), &s.token, Some(&path), &["get", "deploy"]);
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(one_line(&out).contains("does not speak TLS"), "{}", out.stderr);
}

#[test]
fn operator_certificates_are_served_and_bad_files_stop_the_server_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    let ca = weft_ca::Ca::generate("ops.local", now).unwrap();
    let (chain, key) =
        ca.issue_server(&["127.0.0.1".to_string()], Duration::from_secs(3600), now).unwrap();
    let (cert_path, key_path) = (tmp.path().join("api.crt"), tmp.path().join("api.key"));
    std::fs::write(&cert_path, &chain).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let s = Server::with_args(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    s.cli(&["get", "deploy"]).ok();

    let data = tmp.path().join("never");
    let server = |extra: &[&str]| {
        let mut args =
            vec!["server", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        weft(&args, None)
    };
    let other_key = tmp.path().join("other.key");
    std::fs::write(&other_key, weft_ca::Ca::generate("x", now).unwrap().key_pem()).unwrap();
    let not_pem = tmp.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cert = cert_path.to_str().unwrap();
    for (extra, want) in [
        (
            vec!["--tls-cert", "/nonexistent/api.crt", "--tls-key", key_path.to_str().unwrap()],
            "cannot read the TLS certificate /nonexistent/api.crt",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", "/nonexistent/api.key"],
            "cannot read the TLS key /nonexistent/api.key",
        ),
        (
            vec!["--tls-cert", not_pem.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()],
            "holds no PEM certificate",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", not_pem.to_str().unwrap()],
            "holds no PEM private key",
        ),
        (vec!["--tls-cert", cert, "--tls-key", other_key.to_str().unwrap()], "do not go together"),
        (vec!["--tls", "maybe"], "use auto, off"),
        (
            vec!["--tls", "auto", "--tls-cert", cert, "--tls-key", key_path.to_str().unwrap()],
            "--tls auto",
        ),
        (vec!["--tls-san", "api.example", "--tls", "off"], "--tls-san only applies"),
        (vec!["--audit-log", ""], "--audit-log"),
        (vec!["--tls-cert", cert], "--tls-key"),
    ] {
        let out = server(&extra);
        assert_eq!(out.code, 64, "{extra:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{extra:?}: {}", out.stderr);
        assert!(!data.exists(), "{extra:?}: the data dir was created before the check");
    }
}

fn serde_yaml_doc(v: &Value) -> String {
    // JSON is YAML.
    v.to_string()
}

/// Every line of the audit log once `pred` holds for them.
fn audit_lines(path: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(what, Duration::from_secs(30), || {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        pred(&lines).then_some(lines)
    })
}

#[test]
fn the_audit_log_records_writes_and_refusals_and_no_secret() {
    let s = Server::start();
    let log = s.dir.join("audit.log");

    // Accepted writes: apply (two objects), put, scale, delete, status, token create/revoke.
    let doc = serde_json::json!([deployment("web", 1), service("web")]).to_string();
    let r = s.apply_yaml(&doc);
    assert_eq!(r.status, 200, "{}", r.text());
    s.cli(&["scale", "deploy", "web", "--replicas", "3"]).ok();
    let viewer = s.create_token("viewer", Some("1h"));
    let viewer_id = &viewer[5..17];
    let r = s.delete(&svc_path("web"));
    assert_eq!(r.status, 200, "{}", r.text());

    // Refused: a viewer writing (403), no token (401), a stale resourceVersion (409), an
    // invalid object (422 or 400).
    let r =
        s.call("POST", "/api/v1/apply", Some(&viewer), Some(("application/json", doc.as_bytes())));
    assert_eq!(r.status, 403);
    let r = s.call("PUT", &deploy_path("web"), None, Some(("application/json", b"{}")));
    assert_eq!(r.status, 401);
    let mut stale = deployment("web", 2);
    stale["metadata"]["resourceVersion"] = "1".into();
    assert_eq!(s.put_json(&deploy_path("web"), &stale).status, 409);
    // Revoking by the token's text keeps only the id in the log.
    s.cli(&["token", "revoke", &viewer]).ok();

    let lines = audit_lines(&log, "the audit lines", |l| {
        l.iter().any(|r| r["verb"] == "token-revoke") && l.len() >= 9
    });
    let text = std::fs::read_to_string(&log).unwrap();
    // No secret: neither token's text nor its secret half.
    for secret in [&s.token, &viewer] {
        assert!(!text.contains(secret.as_str()), "a token in the audit log:\n{text}");
        assert!(!text.contains(&secret[18..]), "a token's secret in the audit log:\n{text}");
    }
    let admin_id = &s.token[5..17];
    let find = |verb: &str, code: u64| -> &Value {
        lines
            .iter()
            .find(|r| r["verb"] == verb && r["code"] == code)
            .unwrap_or_else(|| panic!("no {verb} {code} line in:\n{text}"))
    };
    let applied: Vec<&Value> =
        lines.iter().filter(|r| r["verb"] == "apply" && r["code"] == 200).collect();
    assert_eq!(applied.len(), 2, "{text}");
    assert_eq!(applied[0]["kind"], "Deployment");
    assert_eq!(applied[0]["name"], "web");
    assert_eq!(applied[0]["namespace"], "default");
    assert_eq!(applied[0]["action"], "created");
    assert_eq!(applied[0]["tokenId"], admin_id);
    assert_eq!(applied[0]["role"], "admin");
    assert_eq!(applied[0]["route"], "/api/v1/apply");
    assert!(applied[0]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(applied[0]["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{text}");
    assert!(humantime::parse_rfc3339(applied[0]["time"].as_str().unwrap()).is_ok(), "{text}");
    let scaled = find("put", 200);
    assert_eq!(scaled["kind"], "Deployment");
    assert_eq!(scaled["route"], "/api/v1/namespaces/{ns}/{plural}/{name}");
    assert!(scaled["resourceVersion"].is_string(), "{text}");
    let created = find("token-create", 201);
    assert_eq!(created["name"], viewer_id);
    assert_eq!(find("delete", 200)["kind"], "Service");
    let denied = find("apply", 403);
    assert_eq!(denied["tokenId"], viewer_id);
    assert_eq!(denied["role"], "viewer");
    assert!(denied["error"].as_str().unwrap().contains("may not write"), "{text}");
    let anonymous = find("put", 401);
    assert!(anonymous.get("tokenId").is_none(), "{text}");
    assert_eq!(find("put", 409)["name"], "web");
    assert_eq!(find("token-revoke", 200)["name"], viewer_id);

    // Reads are not audited; `--audit-log off` turns it off.
    assert!(lines.iter().all(|r| r["method"] != "GET"), "{text}");
    let quiet = Server::with_args(&["--audit-log", "off"]);
    assert_eq!(quiet.apply_yaml(&deployment("web", 1).to_string()).status, 200);
    assert!(!quiet.dir.join("audit.log").exists());
    let text = s.get("/metrics").text();
    assert!(text.contains("weft_api_audit_records_total"), "{text}");
    assert!(text.contains("weft_api_audit_dropped_total 0"), "{text}");
}

#[test]
fn weft_up_on_tls_serves_controller_and_autoscaler_metrics_and_audits_certificates() {
    let up = Up::start(&["--tls", "auto", "--wait", "1s"]);
    let url = std::fs::read_to_string(up.dir.join("server")).unwrap().trim().to_string();
    assert!(url.starts_with("https://"), "{url}");
    let manifest = r#"
apiVersion: weft/v1
kind: Deployment
metadata: { name: web }
spec:
  replicas: 1
  template:
    command: ["weft-demo", "pricing"]
    ports: [{ name: http, port: 8080, protocol: http }]
    resources: { requests: { cpu: 50m, memory: 32Mi } }
    readiness: { http: { path: /healthz }, periodSeconds: 1 }
---
apiVersion: weft/v1
kind: Autoscaler
metadata: { name: web }
spec:
  target: { kind: Deployment, name: web }
  minReplicas: 2
  maxReplicas: 3
  metrics: [{ type: concurrency, target: 10 }]
"#;
    weft(&["--data-dir", up.dir.to_str().unwrap(), "apply", "-f", "-"], Some(manifest)).ok();

    // The agent, its sidecars (which fetch workload certificates) and the controllers all
    // work against the TLS api: two ready instances.
    wait_for("two ready instances", Duration::from_secs(120), || {
        let ready = up
            .items("inst")
            .iter()
            .filter(|i| i["spec"]["deployment"] == "web" && i["status"]["ready"] == true)
            .count();
        (ready == 2).then_some(())
    });

    let token = std::fs::read_to_string(up.dir.join("admin.token")).unwrap().trim().to_string();
    let client =
        weft_client::Client::with_ca(&url, Some(token), Some(up.dir.join("api-ca.crt"))).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = wait_for("controller metrics on the api", Duration::from_secs(60), || {
        let (_, body) = rt.block_on(client.call(http::Method::GET, "/metrics", None)).ok()?;
        let text = String::from_utf8(body.to_vec()).ok()?;
        text.contains("weft_autoscaler_decisions_total{").then_some(text)
    });
    for want in [
        "weft_controller_reconcile_duration_seconds_bucket{",
        "weft_controller_writes_total{",
        "weft_autoscaler_decisions_total{namespace=\"default\",autoscaler=\"web\",direction=\"up\",reason=\"below-min\"} 1",
        "weft_autoscaler_desired_replicas{namespace=\"default\",autoscaler=\"web\"} 2",
        "weft_controllers_leader 1",
        "weft_api_store_revision ",
        "weft_api_requests_total{",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");

    // The sidecars' certificate requests and the autoscaler's scale are in the audit log.
    // Three: the gateway (in process) and the two sidecars (processes given WEFT_CA_FILE).
    let lines = audit_lines(&up.dir.join("audit.log"), "certificate lines", |l| {
        l.iter().filter(|r| r["verb"] == "certificate-issue" && r["code"] == 201).count() >= 3
    });
    let cert = lines.iter().find(|r| r["verb"] == "certificate-issue").unwrap();
    assert_eq!(cert["role"], "proxy");
    assert!(cert["name"].as_str().unwrap().starts_with("spiffe://"), "{cert}");
}

/// `weft proxy` takes `--ca-file` (or `WEFT_CA_FILE`) like every other command: a gateway
/// started by hand follows a TLS api with it, and without it says the certificate is untrusted.
#[test]
fn a_gateway_follows_a_tls_api_given_the_ca_file_and_says_why_without_it() {
    let s = Server::with_args(&["--tls", "auto"]);
    let ca = s.dir.join("api-ca.crt");
    let token = s.cli(&["token", "create", "--role", "proxy"]).ok().stdout.trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str, ca: Option<&Path>| {
        let admin = format!("127.0.0.1:{}", closed_port());
        let mut args: Vec<String> = [
            "--gateway",
            &format!("127.0.0.1:{}", closed_port()),
            "--server",
            &format!("https://127.0.0.1:{},{}", closed_port(), s.url),
            "--token",
            &token,
            "--admin",
            &admin,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(ca) = ca {
            args.extend(["--ca-file".to_string(), ca.display().to_string()]);
        }
        (common::mesh::proxy(dir.path(), name, &args), admin)
    };

    let (_trusting, admin) = start("trusting", Some(&ca));
    wait_for("the gateway's first configuration over https", Duration::from_secs(20), || {
        let r = request(&admin, "GET", "/ready", None, &[], None).ok()?;
        (r.status == 200).then_some(())
    });

    let (untrusting, admin) = start("untrusting", None);
    let log = wait_for("the gateway to say why it cannot sync", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&untrusting.log).ok()?;
        text.contains("not trusted").then_some(text)
    });
    assert!(log.contains("--ca-file"), "{log}");
    let r = request(&admin, "GET", "/ready", None, &[], None).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
}
