//! Tokens through the CLI (create, list, revoke, expiry, persistence), and the endpoints that
//! are about the server itself: /healthz and /metrics.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

fn is_token(t: &str) -> bool {
    let Some(rest) = t.strip_prefix("weft_") else { return false };
    let Some((id, secret)) = rest.split_once('_') else { return false };
    id.len() == 12
        && secret.len() == 64
        && (id.to_string() + secret).chars().all(|c| c.is_ascii_hexdigit())
}

fn list_cli(s: &Server) -> String {
    let out = s.cli(&["token", "list"]);
    out.ok();
    out.stdout
}

#[test]
fn token_create_list_revoke_and_roles() {
    let s = Server::start();
    assert!(is_token(&s.token), "{}", s.token);

    let out =
        s.cli(&["token", "create", "--role", "viewer", "--ttl", "1h", "--description", "for ci"]);
    out.ok();
    let viewer = out.stdout.strip_suffix('\n').expect("a newline after the token");
    assert!(is_token(viewer), "stdout must be the token alone: {:?}", out.stdout);
    let id = &viewer[5..17];
    assert!(out.stderr.contains(&format!("created viewer token {id}")), "{}", out.stderr);
    assert!(!out.stderr.contains(viewer), "the secret also went to stderr");

    // The token works, as a viewer.
    assert_eq!(s.call("GET", "/api/v1/services", Some(viewer), None).status, 200);
    let out = s.cli(&["--token", viewer, "get", "svc"]);
    out.ok();
    let file = s.tmp.path().join("svc.json");
    std::fs::write(&file, service("x").to_string()).unwrap();
    let out = s.cli(&["--token", viewer, "apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("a viewer token may not write services"), "{}", out.stderr);
    // A viewer may not manage tokens.
    let out = s.cli(&["--token", viewer, "token", "list"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "error: a viewer token may not manage tokens\n");

    // Listing never shows secrets (CLI or API).
    let agent = s.cli(&["token", "create", "--role", "agent"]).stdout.trim().to_string();
    let list = list_cli(&s);
    assert!(list.starts_with("ID"), "{list}");
    assert!(list.contains(id) && list.contains("viewer") && list.contains("for ci"), "{list}");
    assert!(list.contains(&agent[5..17]) && list.contains("never"), "{list}");
    for secret in [viewer, agent.as_str(), s.token.as_str()] {
        let secret_part = &secret[18..];
        assert!(!list.contains(secret_part), "token list shows a secret");
    }
    let api = s.get("/api/v1/tokens");
    assert_eq!(api.status, 200);
    let text = api.text();
    for secret in [viewer, agent.as_str(), s.token.as_str()] {
        assert!(!text.contains(&secret[18..]), "GET /api/v1/tokens shows a secret");
    }
    assert!(!text.contains("hash"), "{text}");
    assert_eq!(api.json().as_array().unwrap().len(), 3);

    // Revoke by id, then by the token text: both stop working at once.
    let out = s.cli(&["token", "revoke", id]);
    out.ok();
    assert_eq!(out.stdout, format!("token {id} (viewer) revoked\n"));
    let r = s.call("GET", "/api/v1/services", Some(viewer), None);
    assert_eq!(r.error(401, "Unauthorized"), "unknown or revoked token");
    let out = s.cli(&["token", "revoke", &agent]);
    out.ok();
    assert!(out.stdout.contains("(agent) revoked"), "{}", out.stdout);
    s.call("GET", "/api/v1/services", Some(&agent), None).error(401, "Unauthorized");
    assert!(!list_cli(&s).contains(id));
    // Revoking again: a clear failure.
    let out = s.cli(&["token", "revoke", id]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, format!("error: no token with id \"{id}\"\n"));
    let out = s.cli(&["--token", viewer, "get", "svc"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "error: unknown or revoked token\n");
}

#[test]
fn expired_tokens_are_401_saying_so() {
    let s = Server::start();
    let out = s.cli(&["token", "create", "--role", "viewer", "--ttl", "1s"]);
    out.ok();
    let t = out.stdout.trim().to_string();
    let r = wait_for("the token to expire", Duration::from_secs(10), || {
        let r = s.call("GET", "/api/v1/services", Some(&t), None);
        (r.status != 200).then_some(r)
    });
    let m = r.error(401, "Unauthorized");
    assert!(m.contains("expired"), "{m}");
    assert!(m.contains("weft token create"), "{m}");
    let out = s.cli(&["--token", &t, "get", "svc"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    // Listed with its expiry.
    let list = list_cli(&s);
    assert!(list.contains(&t[5..17]), "{list}");
}

#[test]
fn admin_token_file_is_private_and_tokens_survive_a_restart() {
    let mut s = Server::start();
    let mode = std::fs::metadata(s.dir.join("admin.token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token mode {mode:o}");
    let mode = std::fs::metadata(&s.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data dir mode {mode:o}");
    let admin = s.token.clone();
    let file = std::fs::read_to_string(s.dir.join("admin.token")).unwrap();
    let viewer = s.create_token("viewer", Some("1h"));
    let revoked = s.create_token("proxy", None);
    assert_eq!(
        s.delete(&format!("/api/v1/tokens/{revoked}")).status,
        200,
        "revoke by the token text"
    );
    assert_eq!(s.put_json(&svc_path("keep"), &service("keep")).status, 201);

    s.restart();
    assert_eq!(s.token, admin, "the admin token changed across a restart");
    assert_eq!(std::fs::read_to_string(s.dir.join("admin.token")).unwrap(), file);
    assert_eq!(s.call("GET", "/api/v1/services", Some(&viewer), None).status, 200);
    s.call("GET", "/api/v1/services", Some(&revoked), None).error(401, "Unauthorized");
    assert!(s.object(&svc_path("keep")).is_some());
    s.cli(&["get", "svc", "keep"]).ok();

    // A lost admin.token gets a new one at the next start; the old one keeps working.
    std::fs::remove_file(s.dir.join("admin.token")).unwrap();
    s.restart();
    assert_ne!(s.token, admin);
    assert!(is_token(&s.token));
    assert_eq!(s.call("GET", "/api/v1/tokens", Some(&admin), None).status, 200);
    assert_eq!(s.call("GET", "/api/v1/tokens", Some(&s.token), None).status, 200);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = Server::start();
    let out =
        weft(&["server", "--data-dir", s.dir.to_str().unwrap(), "--listen", "127.0.0.1:0"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is in use by another weft process"), "{}", out.stderr);
    // The first one is unharmed.
    assert_eq!(s.get("/healthz").status, 200);
    // Bad server flags are usage errors.
    for bad in [
        ["--max-body", "lots"],
        ["--bookmark-interval", "0s"],
        ["--history", "0"],
        ["--listen", "nowhere"],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = vec!["server", "--data-dir", tmp.path().to_str().unwrap()];
        args.extend(bad);
        if bad[0] != "--listen" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let out = weft(&args, None);
        assert_eq!(out.code, 64, "{bad:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{bad:?}: {}", out.stderr);
    }
}

#[test]
fn healthz_is_open_and_metrics_need_a_token() {
    let s = Server::start();
    let r = s.call("GET", "/healthz", None, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");

    let r = s.call("GET", "/metrics", None, None);
    assert!(r.error(401, "Unauthorized").starts_with("missing bearer token"));
    let r = s.call("GET", "/metrics", Some("weft_0123456789ab_00"), None);
    r.error(401, "Unauthorized");

    // Some traffic to count.
    assert_eq!(s.put_json(&svc_path("a"), &service("a")).status, 201);
    s.get(&svc_path("missing"));
    let rev = s.revision();
    let viewer = s.create_token("viewer", None);
    let r = s.call("GET", "/metrics", Some(&viewer), None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").unwrap().starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for family in [
        "weft_api_requests_total",
        "weft_api_request_duration_seconds",
        "weft_api_watchers",
        "weft_api_pollers",
        "weft_api_watch_events_sent_total",
        "weft_api_store_revision",
        "weft_api_watch_cache_events",
        "weft_api_object_writes_total",
    ] {
        assert!(
            text.contains(&format!("\n{family}")) || text.starts_with(family),
            "no {family} in:\n{text}"
        );
    }
    let has = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(
        has(
            r#"weft_api_requests_total{method="PUT",route="/api/v1/namespaces/{ns}/{plural}/{name}",code="201"} 1"#
        ),
        "{text}"
    );
    assert!(has(r#"route="/api/v1/namespaces/{ns}/{plural}/{name}",code="404"} 1"#), "{text}");
    assert!(has(r#"weft_api_object_writes_total{kind="Service",action="created"} 1"#), "{text}");
    // The watch cache's revision: the last object write (token writes are not objects).
    wait_for(
        "weft_api_store_revision to reach the last object write",
        Duration::from_secs(10),
        || {
            let text = s.get("/metrics").text();
            text.lines().any(|l| l == format!("weft_api_store_revision {rev}")).then_some(())
        },
    );
    let proxy = s.create_token("proxy", None);
    assert_eq!(s.call("GET", "/metrics", Some(&proxy), None).status, 200);
    // Unmatched routes are counted under one label, not one series per path.
    s.get("/no/such/path/1");
    s.get("/no/such/path/2");
    let text = s.get("/metrics").text();
    assert!(text.contains(r#"route="unmatched",code="404"} 2"#), "{text}");
}

#[test]
fn activating_a_service_is_for_proxies_recorded_once_a_second_and_checked() {
    let s = Server::start();
    let path = "/api/v1/namespaces/default/services/web/activate";
    let proxy = s.create_token("proxy", None);
    let viewer = s.create_token("viewer", None);
    // No such service: 404, nothing written.
    let m = s.call("POST", path, Some(&proxy), None).error(404, "NotFound");
    assert!(m.contains("\"web\""), "{m}");
    assert_eq!(s.put_json(&svc_path("web"), &service("web")).status, 201);
    let before = s.get(&svc_path("web")).json();

    let r = s.call("POST", path, Some(&proxy), None);
    assert_eq!(r.status, 202, "{}", r.text());
    let first = r.json();
    assert_eq!((first["service"].as_str(), first["recorded"].as_bool()), (Some("web"), Some(true)));
    // Many proxies asking at once cost one write: an ask under a second old stands.
    let again = s.call("POST", path, Some(&proxy), None).json();
    assert_eq!(again["recorded"], false, "{again}");
    assert_eq!(again["requestedAt"], first["requestedAt"]);
    let after = s.get(&svc_path("web")).json();
    assert_eq!(
        after["metadata"]["annotations"]["weft.dev/activation-requested"],
        first["requestedAt"]
    );
    // Only the annotation changed: same spec, same generation.
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["metadata"]["generation"], before["metadata"]["generation"]);

    // Roles, queries and paths.
    let m = s.call("POST", path, Some(&viewer), None).error(403, "Forbidden");
    assert_eq!(m, "a viewer token may not activate services");
    s.call("POST", path, None, None).error(401, "Unauthorized");
    s.call("POST", &format!("{path}?now=1"), Some(&proxy), None).error(400, "BadRequest");
    s.call("POST", "/api/v1/namespaces/Bad_NS/services/web/activate", Some(&proxy), None)
        .error(400, "BadRequest");
    s.call("GET", path, Some(&proxy), None).error(405, "MethodNotAllowed");
}

/// A proxy token bound to a node gets workload certificates for that node's instances only:
/// one compromised node cannot mint another node's identities.
#[test]
fn a_node_bound_proxy_token_is_certified_for_its_own_nodes_instances_only() {
    use serde_json::json;
    use weft_ca::{Csr, SpiffeId};

    let s = Server::start();
    put_instance(&s, "web-1", "n1");
    let create = |node: &str| s.cli(&["token", "create", "--role", "proxy", "--node", node]);
    let on_n1 = create("n1").ok().stdout.trim().to_string();
    let on_n2 = create("n2").ok().stdout.trim().to_string();
    let csr = Csr::generate(&SpiffeId::new("weft.local", "default", "web")).unwrap();
    let ask = json!({"csr": csr.csr_pem, "instance": "web-1"});
    assert_eq!(ask_certificate(&s, &on_n1, &ask).status, 201);
    let msg = ask_certificate(&s, &on_n2, &ask).error(403, "Forbidden");
    assert_eq!(
        msg,
        "this proxy token is bound to node n2, and instance default/web-1 runs on node n1"
    );
    let gw = Csr::generate(&SpiffeId::new("weft.local", "weft-system", "gateway")).unwrap();
    let msg = ask_certificate(&s, &on_n1, &json!({"csr": gw.csr_pem, "gateway": true}))
        .error(403, "Forbidden");
    assert!(msg.contains("may not ask for the gateway identity"), "{msg}");
    let listed = list_cli(&s);
    assert!(listed.contains("NODE") && listed.contains(" n1 "), "{listed}");

    // Bad input, nothing created: a binding on another role, a bad node name.
    let count = || list_cli(&s).lines().count();
    let before = count();
    let out = s.cli(&["token", "create", "--role", "viewer", "--node", "n1"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("only proxy and agent tokens can be bound to a node"),
        "{}",
        out.stderr
    );
    let out = s.cli(&["token", "create", "--role", "proxy", "--node", "Not_A_Node"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("node"), "{}", out.stderr);
    assert_eq!(count(), before, "nothing created");
}

/// What an agent gives each sidecar: a proxy token bound to the sidecar's own instance. It is
/// certified as that instance alone (not as its neighbours on the node), an agent may mint no
/// looser one, and deleting the instance revokes it in the same write.
#[test]
fn an_instance_bound_token_is_certified_as_its_instance_alone_and_dies_with_it() {
    use serde_json::json;
    use weft_ca::{Csr, SpiffeId};

    let s = Server::start();
    put_instance(&s, "web-1", "n1");
    put_instance(&s, "web-2", "n1");
    put_instance(&s, "api-1", "n2");
    let agent = s.create_token("agent", None);
    let mint = |body: serde_json::Value| {
        s.call(
            "POST",
            "/api/v1/tokens",
            Some(&agent),
            Some(("application/json", body.to_string().as_bytes())),
        )
    };
    let r = mint(json!({"role": "proxy", "node": "n1", "instance": "default/web-1"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let created: serde_json::Value = r.json();
    let web1 = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["info"]["instance"], "default/web-1", "{created}");

    let csr = Csr::generate(&SpiffeId::new("weft.local", "default", "web")).unwrap();
    let own = json!({"csr": csr.csr_pem, "instance": "web-1"});
    assert_eq!(ask_certificate(&s, &web1, &own).status, 201);
    // The neighbour on the same node has the same identity, yet this token may not speak for it.
    let neighbour = json!({"csr": csr.csr_pem, "instance": "web-2"});
    let msg = ask_certificate(&s, &web1, &neighbour).error(403, "Forbidden");
    assert_eq!(
        msg,
        "this proxy token is bound to instance default/web-1; it may not ask for default/web-2's identity"
    );
    let gw = Csr::generate(&SpiffeId::new("weft.local", "weft-system", "gateway")).unwrap();
    ask_certificate(&s, &web1, &json!({"csr": gw.csr_pem, "gateway": true}))
        .error(403, "Forbidden");
    // The sidecar can still read what it routes by.
    assert_eq!(s.call("GET", "/api/v1/namespaces/default/services", Some(&web1), None).status, 200);
    let listed = list_cli(&s);
    assert!(listed.contains("INSTANCE") && listed.contains("default/web-1"), "{listed}");

    // An admin may bind one from the CLI; --instance needs --node.
    let out = s.cli(&[
        "token",
        "create",
        "--role",
        "proxy",
        "--node",
        "n1",
        "--instance",
        "default/web-2",
    ]);
    let web2 = out.ok().stdout.trim().to_string();
    let out = s.cli(&["token", "create", "--role", "proxy", "--instance", "default/web-2"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--node"), "{}", out.stderr);

    // Bad input: each refused whole, nothing created.
    let count = || list_cli(&s).lines().count();
    let before = count();
    let cases = [
        (
            json!({"role": "proxy", "node": "n1"}),
            "must bind the proxy tokens it mints to one instance",
        ),
        (
            json!({"role": "proxy"}),
            "must bind the proxy tokens it mints to its node and an instance",
        ),
        (
            json!({"role": "proxy", "node": "n1", "instance": "default/api-1"}),
            "instance default/api-1 runs on node n2, not on node n1",
        ),
        (
            json!({"role": "proxy", "node": "n1", "instance": "default/gone"}),
            "there is no instance default/gone",
        ),
        (
            json!({"role": "proxy", "node": "n1", "instance": "web-1"}),
            "write it as <namespace>/<name>",
        ),
        (json!({"role": "proxy", "node": "n1", "instance": "Bad_NS/web-1"}), "namespace"),
        (json!({"role": "proxy", "node": "n1", "instance": "default/"}), "name"),
        (json!({"role": "proxy", "instance": "default/web-1"}), "must bind"),
    ];
    for (body, want) in cases {
        let msg = mint(body.clone()).error(422, "Invalid");
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let msg = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&s.token),
            Some((
                "application/json",
                json!({"role": "proxy", "instance": "default/web-1"}).to_string().as_bytes(),
            )),
        )
        .error(422, "Invalid");
    assert!(msg.contains("needs the instance's node too"), "{msg}");
    assert_eq!(count(), before, "nothing created");

    // Deleting the instance revokes its tokens, and only its tokens.
    let r = s.call("DELETE", "/api/v1/namespaces/default/instances/web-1", Some(&s.token), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let m = s.call("GET", "/api/v1/namespaces/default/services", Some(&web1), None);
    assert!(m.error(401, "Unauthorized").contains("unknown or revoked"));
    assert!(!list_cli(&s).contains("default/web-1"));
    assert_eq!(s.call("GET", "/api/v1/namespaces/default/services", Some(&web2), None).status, 200);
}

fn put_instance(s: &Server, name: &str, node: &str) {
    let inst = serde_json::json!({
        "apiVersion": "weft/v1", "kind": "Instance",
        "metadata": {"name": name},
        "spec": {"deployment": "web", "node": node, "template": {"command": ["web"]}}
    });
    let r = s.put_json(&format!("/api/v1/namespaces/default/instances/{name}"), &inst);
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
}

fn ask_certificate(s: &Server, token: &str, body: &serde_json::Value) -> common::Resp {
    s.call(
        "POST",
        "/api/v1/certificates",
        Some(token),
        Some(("application/json", body.to_string().as_bytes())),
    )
}

/// The node restriction: an agent trades its join token for one bound to its node, and that
/// token writes its own Node and the Instances bound to it, nothing else; a node taken over
/// cannot rewrite the rest of the cluster.
#[test]
fn a_node_bound_agent_token_writes_its_own_node_and_instances_only() {
    use serde_json::json;

    let s = Server::start();
    let join = s.create_token("agent", None);
    let call = |token: &str, method: &str, path: &str, body: Option<serde_json::Value>| {
        let bytes = body.map(|b| b.to_string().into_bytes());
        s.call(method, path, Some(token), bytes.as_deref().map(|b| ("application/json", b)))
    };
    let node =
        |name: &str| json!({"apiVersion": "weft/v1", "kind": "Node", "metadata": {"name": name}});
    // The trade: an agent token bound to n1.
    let r = call(&join, "POST", "/api/v1/tokens", Some(json!({"role": "agent", "node": "n1"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let n1: serde_json::Value = r.json();
    assert_eq!(n1["info"]["node"], "n1", "{n1}");
    let n1_id = n1["info"]["id"].as_str().unwrap().to_string();
    let n1 = n1["token"].as_str().unwrap().to_string();

    // Its own node: yes. Another: no, by PUT, status or apply; nothing written.
    assert_eq!(call(&n1, "PUT", "/api/v1/nodes/n1", Some(node("n1"))).status, 201);
    s.put_json("/api/v1/nodes/n2", &node("n2"));
    let m = call(&n1, "PUT", "/api/v1/nodes/n2", Some(node("n2"))).error(403, "Forbidden");
    assert_eq!(m, "this agent token is bound to node n1; it may not write node n2");
    let status = json!({"apiVersion": "weft/v1", "kind": "Node", "metadata": {"name": "n2"},
                        "status": {"ready": false}});
    call(&n1, "PUT", "/api/v1/nodes/n2/status", Some(status)).error(403, "Forbidden");
    call(&n1, "DELETE", "/api/v1/nodes/n2", None).error(403, "Forbidden");
    let r = s.call(
        "POST",
        "/api/v1/apply",
        Some(&n1),
        Some(("application/yaml", b"apiVersion: weft/v1\nkind: Node\nmetadata: {name: n3}\n")),
    );
    assert!(r.error(403, "Forbidden").contains("may not write node n3"));
    assert!(s.object("/api/v1/nodes/n3").is_none(), "nothing written");

    // Instances: those bound to n1 only.
    put_instance(&s, "web-1", "n1");
    put_instance(&s, "web-2", "n2");
    let st = |name: &str| {
        json!({"apiVersion": "weft/v1", "kind": "Instance", "metadata": {"name": name},
               "status": {"phase": "Running", "ready": true}})
    };
    let path = |name: &str| format!("/api/v1/namespaces/default/instances/{name}");
    let r = call(&n1, "PUT", &format!("{}/status", path("web-1")), Some(st("web-1")));
    assert_eq!(r.status, 200, "{}", r.text());
    let m = call(&n1, "PUT", &format!("{}/status", path("web-2")), Some(st("web-2")))
        .error(403, "Forbidden");
    assert_eq!(m, "this agent token is bound to node n1; instance default/web-2 runs on node n2");
    call(&n1, "DELETE", &path("web-2"), None).error(403, "Forbidden");
    assert!(s.object(&path("web-2")).is_some(), "web-2 untouched");

    // Sidecar tokens for its own node's instances only; no more agent tokens.
    let mint = |body: serde_json::Value| call(&n1, "POST", "/api/v1/tokens", Some(body));
    assert_eq!(
        mint(json!({"role": "proxy", "node": "n1", "instance": "default/web-1"})).status,
        201
    );
    let m = mint(json!({"role": "proxy", "node": "n2", "instance": "default/web-2"}))
        .error(403, "Forbidden");
    assert_eq!(m, "this agent token is bound to node n1; it may not mint tokens for node n2");
    mint(json!({"role": "agent", "node": "n1"})).error(403, "Forbidden");
    // The join token may trade, but only for a node-bound token.
    let m =
        call(&join, "POST", "/api/v1/tokens", Some(json!({"role": "agent"}))).error(422, "Invalid");
    assert!(m.contains("bound to its node"), "{m}");
    call(&join, "POST", "/api/v1/tokens", Some(json!({"role": "admin", "node": "n1"})))
        .error(403, "Forbidden");
    assert_eq!(call(&n1, "DELETE", &path("web-1"), None).status, 200);

    // Deleting a Node takes its agent's token with it: the node is out of the cluster.
    let r = s.call("DELETE", "/api/v1/nodes/n1", Some(&s.token), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let m = call(&n1, "GET", "/api/v1/nodes", None).error(401, "Unauthorized");
    assert!(m.contains("unknown or revoked"), "{m}");
    assert!(!list_cli(&s).contains(&n1_id), "{}", list_cli(&s));
}
