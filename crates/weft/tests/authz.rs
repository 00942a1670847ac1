//! Authorization policies and per-namespace mesh settings (issue 6), with real processes: a
//! `weft server`, the dynamic sidecar of `catalog-0` (the callee, inbound port to a test app)
//! and the sidecars of `web-0` and `cart-0` (callers, through their outbound listeners), all
//! with workload certificates from the server's CA.
//!
//! - Policies: a target without policies is open (and stays open when another service gets
//!   one); an allow rule lets its caller in (200) and makes the target default-deny for the
//!   others (403 "no policy allows it"); methods and path prefixes are matched; an explicit
//!   deny beats an allow (403 naming the deny policy and rule); deleting the policies reopens
//!   the target live; the decisions are counted.
//! - MeshConfig: permissive lets a plaintext client in, strict refuses it, switched live;
//!   `authorization.default: deny` closes a target without policies, a rule without `from`
//!   still lets a plaintext caller in; the MeshConfig of `weft-system` applies mesh-wide.
//! - Bad input: the api rejects it whole (422 naming the field) and writes nothing.

mod common;

use std::time::Duration;

use common::mesh::{Proc, app, metric, plain_get, proxy};
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn instance(name: &str, deployment: &str) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Instance",
        "metadata": {"name": name, "labels": {"deployment": deployment}},
        "spec": {"deployment": deployment, "template": {
            "command": [deployment], "ports": [{"name": "http", "port": 8080}]
        }}
    })
}

/// The server, the callee's inbound and admin addresses, the callers' outbound addresses.
struct Mesh {
    s: Server,
    inbound: String,
    admin: String,
    web: String,
    cart: String,
    /// `web-canary-0`, of deployment `web-canary` whose template says `identity: web`.
    canary: String,
    procs: Vec<Proc>,
}

impl Mesh {
    fn start() -> Mesh {
        let s = Server::start();
        let token = s.create_token("proxy", None);
        let deps = [
            ("catalog-0", "catalog"),
            ("web-0", "web"),
            ("cart-0", "cart"),
            ("web-canary-0", "web-canary"),
        ];
        for (name, dep) in deps {
            let mut inst = instance(name, dep);
            if dep == "web-canary" {
                inst["spec"]["template"]["identity"] = json!("web");
            }
            let r = s.put_json(&format!("/api/v1/namespaces/default/instances/{name}"), &inst);
            assert_eq!(r.status, 201, "{}", r.text());
        }
        let app = app();
        let (inbound, admin, web, cart, canary) =
            (closed_port(), closed_port(), closed_port(), closed_port(), closed_port());
        let r = s.apply_json(&json!({
            "apiVersion": "weft/v1", "kind": "Service", "metadata": {"name": "catalog"},
            "spec": {"selector": {"deployment": "catalog"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }));
        assert!(r.status < 300, "{}", r.text());
        let r = s.apply_json(&json!({
            "apiVersion": "weft/v1", "kind": "Endpoints", "metadata": {"name": "catalog"},
            "spec": {"addresses": [{"instance": "catalog-0", "ip": "127.0.0.1", "ports": {"http": inbound}}]}
        }));
        assert!(r.status < 300, "{}", r.text());
        let dir = s.tmp.path().to_path_buf();
        let base = |inst: &str| -> Vec<String> {
            ["--server", &s.url, "--token", &token, "--instance", inst, "--mtls", "strict"]
                .iter()
                .map(|a| a.to_string())
                .collect()
        };
        let mut callee = base("catalog-0");
        callee.extend([
            "--inbound".into(),
            format!("http=127.0.0.1:{inbound}:{app}"),
            "--admin".into(),
            format!("127.0.0.1:{admin}"),
        ]);
        let mut procs = vec![proxy(&dir, "catalog", &callee)];
        for (inst, port) in [("web-0", web), ("cart-0", cart), ("web-canary-0", canary)] {
            let mut args = base(inst);
            args.extend(["--outbound".into(), format!("127.0.0.1:{port}")]);
            procs.push(proxy(&dir, inst, &args));
        }
        let m = Mesh {
            s,
            inbound: format!("127.0.0.1:{inbound}"),
            admin: format!("127.0.0.1:{admin}"),
            web: format!("127.0.0.1:{web}"),
            cart: format!("127.0.0.1:{cart}"),
            canary: format!("127.0.0.1:{canary}"),
            procs,
        };
        m.until("every caller reaches catalog over mTLS", |m| {
            m.call(&m.web, "GET", "/").0 == 200
                && m.call(&m.cart, "GET", "/").0 == 200
                && m.call(&m.canary, "GET", "/").0 == 200
        });
        m
    }

    /// A call to catalog through a caller's outbound listener: status and body.
    fn call(&self, outbound: &str, method: &str, path: &str) -> (u16, String) {
        match request(outbound, method, &format!("http://catalog{path}"), None, &[], None) {
            Ok(r) => (r.status, r.text()),
            Err(e) => (0, e.to_string()),
        }
    }

    fn until(&self, what: &str, mut f: impl FnMut(&Mesh) -> bool) {
        let logs = || self.procs.iter().map(Proc::log_text).collect::<Vec<_>>().join("\n---\n");
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}\n{logs}", logs = logs());
    }

    /// Applies YAML (must succeed); returns the object's resourceVersion.
    fn apply(&self, yaml: &str) -> u64 {
        let r = self.s.apply_yaml(yaml);
        assert!(r.status < 300, "{}", r.text());
        self.s.revision()
    }

    /// Waits until the callee's sidecar has seen revision `rev`.
    fn seen(&self, rev: u64) {
        self.until(&format!("the callee at revision {rev}"), |m| {
            metric(&m.admin, "weft_config_revision", "") >= rev as f64
        });
    }

    fn decisions(&self, policy: &str, result: &str) -> f64 {
        metric(
            &self.admin,
            "weft_authz_decisions_total",
            &format!("service=\"catalog\",policy=\"{policy}\",result=\"{result}\""),
        )
    }
}

fn policy(name: &str, target: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: weft/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name} }}\nspec: {{ target: {{ service: {target} }}, action: {action}, rules: {rules} }}\n"
    )
}

#[test]
fn policies_allow_deny_match_methods_and_paths_and_reopen_live() {
    let m = Mesh::start();
    // Another service's policy leaves catalog open.
    let rev =
        m.apply(&policy("pricing-web", "pricing", "allow", "[ { from: [ { service: web } ] } ]"));
    m.seen(rev);
    assert_eq!(m.call(&m.cart, "GET", "/api/items").0, 200);

    // An allow rule for web: web's GETs under /api/ pass, everything else is denied.
    m.apply(&policy(
        "web-reads",
        "catalog",
        "allow",
        "[ { from: [ { service: web } ], methods: [GET, HEAD], paths: [/api/] } ]",
    ));
    m.until("cart denied by default", |m| m.call(&m.cart, "GET", "/api/items").0 == 403);
    let (status, body) = m.call(&m.cart, "GET", "/api/items");
    assert_eq!(status, 403);
    assert!(
        body.contains("no policy allows it")
            && body.contains("spiffe://weft.local/ns/default/svc/cart"),
        "{body}"
    );
    assert_eq!(m.call(&m.web, "GET", "/api/items?page=2").0, 200);
    assert_eq!(m.call(&m.web, "HEAD", "/api/items").0, 200);
    // The canary deployment carries web's identity (template.identity), so the policy for web
    // lets it in too.
    assert_eq!(m.call(&m.canary, "GET", "/api/items").0, 200);
    assert_eq!(m.call(&m.canary, "POST", "/api/items").0, 403);
    let (status, body) = m.call(&m.web, "POST", "/api/items");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("POST /api/items"), "{body}");
    assert_eq!(m.call(&m.web, "GET", "/admin").0, 403);
    assert_eq!(m.call(&m.web, "GET", "/apix").0, 403);

    // An explicit deny beats the allow.
    m.apply(&policy(
        "no-secrets",
        "catalog",
        "deny",
        "[ { methods: [DELETE] }, { from: [ { namespace: default } ], paths: [/api/secret] } ]",
    ));
    m.until("the deny in force", |m| m.call(&m.web, "GET", "/api/secret").0 == 403);
    let (_, body) = m.call(&m.web, "GET", "/api/secret/key");
    assert!(body.contains("AuthorizationPolicy default/no-secrets (rule 1)"), "{body}");
    assert_eq!(m.call(&m.web, "GET", "/api/items").0, 200);

    // The callee's admin view says what its port enforces.
    let config = request(&m.admin, "GET", "/config", None, &[], None).unwrap().json();
    let authz = &config["routes"]["inbound"][0]["authorization"];
    assert_eq!(
        *authz,
        json!({"allow": ["default/web-reads"], "deny": ["default/no-secrets"], "defaultDeny": true}),
        "{config}"
    );

    // Counted, per deciding policy.
    assert!(m.decisions("default/web-reads", "allow") >= 3.0);
    assert!(m.decisions("(default)", "deny") >= 4.0);
    assert!(m.decisions("default/no-secrets", "deny") >= 2.0);
    assert_eq!(m.decisions("default/pricing-web", "allow"), 0.0);

    // Deleting catalog's policies reopens it, live.
    for name in ["web-reads", "no-secrets"] {
        let r = m.s.delete(&format!("/api/v1/namespaces/default/authorizationpolicies/{name}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    m.until("catalog open again", |m| {
        m.call(&m.cart, "GET", "/api/secret").0 == 200 && m.call(&m.web, "POST", "/x").0 == 200
    });
}

#[test]
fn mesh_config_switches_mtls_and_the_authorization_default_live() {
    let m = Mesh::start();
    // The flag (strict) until a MeshConfig says otherwise.
    assert!(plain_get(&m.inbound, "catalog").is_err());
    m.apply("apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: default }\nspec: { mtls: permissive }\n");
    m.until("plaintext let in", |m| plain_get(&m.inbound, "catalog") == Ok(200));
    m.apply("apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: default }\nspec: { mtls: strict }\n");
    m.until("plaintext refused again", |m| plain_get(&m.inbound, "catalog").is_err());
    assert_eq!(m.call(&m.web, "GET", "/").0, 200, "mTLS callers are unaffected");

    // Default deny: a target without policies is closed...
    m.apply(
        "apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: default }\nspec: { mtls: permissive, authorization: { default: deny } }\n",
    );
    m.until("default deny", |m| m.call(&m.web, "GET", "/").0 == 403);
    let (_, body) = m.call(&m.web, "GET", "/");
    assert!(body.contains("no policy allows it") && body.contains("MeshConfig"), "{body}");
    assert_eq!(plain_get(&m.inbound, "catalog"), Ok(403));
    // ...and a rule without `from` is the only kind a plaintext caller can match.
    m.apply(&policy(
        "health",
        "catalog",
        "allow",
        "[ { methods: [GET], paths: [/healthz] }, { from: [ { namespace: default } ] } ]",
    ));
    m.until("health allowed", |m| {
        request(&m.inbound, "GET", "/healthz", None, &[], None).is_ok_and(|r| r.status == 200)
    });
    assert_eq!(plain_get(&m.inbound, "catalog"), Ok(403));
    assert_eq!(m.call(&m.web, "GET", "/anything").0, 200);
    let r = m.s.delete("/api/v1/namespaces/default/authorizationpolicies/health");
    assert_eq!(r.status, 200);

    // Mesh-wide: without its own MeshConfig, the namespace follows weft-system's.
    m.apply(
        "apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: default, namespace: weft-system }\nspec: { authorization: { default: deny } }\n",
    );
    let r = m.s.delete("/api/v1/namespaces/default/meshconfigs/default");
    assert_eq!(r.status, 200);
    m.until("strict again (mesh-wide default)", |m| plain_get(&m.inbound, "catalog").is_err());
    assert_eq!(m.call(&m.web, "GET", "/").0, 403);
    let r = m.s.delete("/api/v1/namespaces/weft-system/meshconfigs/default");
    assert_eq!(r.status, 200);
    m.until("open again", |m| m.call(&m.web, "GET", "/").0 == 200);
    assert!(m.decisions("(default)", "deny") >= 3.0);
}

#[test]
fn bad_policies_and_mesh_configs_are_rejected_whole() {
    let s = Server::start();
    let ok_rule = "[ { from: [ { service: web } ] } ]";
    let cases: Vec<(String, &str, &str)> = vec![
        (policy("a", "catalog", "permit", ok_rule), "spec.action", "permit"),
        (policy("b", "catalog", "allow", "[]"), "spec.rules", "at least one rule"),
        (
            policy("c", "catalog", "allow", "[ { from: [ { spiffe: \"spiffe://weft.local/svc/web\" } ] } ]"),
            "spec.rules[0].from[0].spiffe",
            "not a workload identity",
        ),
        (
            policy("d", "catalog", "allow", "[ { from: [ { spiffe: \"spiffe://weft.local/ns/default/svc/web\", service: web } ] } ]"),
            "spec.rules[0].from[0].spiffe",
            "goes alone",
        ),
        (policy("e", "catalog", "allow", "[ { from: [ {} ] } ]"), "spec.rules[0].from[0]", "names no caller"),
        (policy("f", "catalog", "allow", "[ { methods: [get] } ]"), "spec.rules[0].methods[0]", "upper case"),
        (policy("g", "catalog", "allow", "[ { methods: [\"GE T\"] } ]"), "spec.rules[0].methods[0]", "not an HTTP method"),
        (policy("h", "catalog", "allow", "[ { paths: [api] } ]"), "spec.rules[0].paths[0]", "must start with '/'"),
        (policy("i", "Catalog", "allow", ok_rule), "spec.target.service", ""),
        (
            "apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { mtls: strict }\n".into(),
            "metadata.name",
            "named \"default\"",
        ),
        (
            "apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: default }\nspec: { mtls: sometimes }\n".into(),
            "spec.mtls",
            "sometimes",
        ),
        (
            "apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: default }\nspec: { authorization: { default: maybe } }\n".into(),
            "spec.authorization.default",
            "maybe",
        ),
    ];
    for (yaml, field, words) in &cases {
        let r = s.apply_yaml(yaml);
        let msg = r.error(422, "Invalid");
        assert!(msg.contains(field) && msg.contains(words), "{field} / {words}: {msg}\n{yaml}");
    }
    // A batch with one bad object writes nothing.
    let batch = format!(
        "{}---\n{}",
        policy("good", "catalog", "allow", ok_rule),
        policy("bad", "catalog", "allow", "[ { paths: [nope] } ]")
    );
    s.apply_yaml(&batch).error(422, "Invalid");
    assert!(s.names("authorizationpolicies").is_empty());
    assert!(s.names("meshconfigs").is_empty());

    // A good one is defaulted (a bare service is in the policy's namespace) and listed by the
    // CLI under its short names.
    let r = s.apply_yaml(&policy("good", "catalog", "allow", ok_rule));
    assert!(r.status < 300, "{}", r.text());
    let v = s.object("/api/v1/namespaces/default/authorizationpolicies/good").unwrap();
    assert_eq!(v["spec"]["rules"][0]["from"][0], json!({"namespace": "default", "service": "web"}));
    let out = s.cli(&["get", "authz"]);
    let text = out.ok().stdout.clone();
    assert!(
        text.contains("TARGET") && text.contains("svc/catalog") && text.contains("allow"),
        "{text}"
    );
    let r = s.apply_yaml("apiVersion: weft/v1\nkind: MeshConfig\nmetadata: { name: default }\n");
    assert!(r.status < 300, "{}", r.text());
    let out = s.cli(&["get", "meshconfig", "default", "-o", "json"]);
    let v: Value = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(v["spec"], json!({"mtls": "strict", "authorization": {"default": "allow"}}));
    let out = s.cli(&["describe", "ap", "good"]);
    assert!(out.ok().stdout.contains("Service/catalog"), "{}", out.stdout);

    // The example for the demo shop is valid as written.
    let dir = common::up::repo("examples/authz");
    s.cli(&["apply", "-f", dir.to_str().unwrap()]).ok();
    let names = s.names("authorizationpolicies");
    for n in ["catalog-readers", "cart-owner", "no-cart-deletes", "pricing-readers"] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }
}

/// The demo shop under `weft up` with examples/authz applied: every hop it makes is allowed
/// (the page has no errors, catalog's sidecar counts allows for `catalog-readers`); a deny
/// added for the frontend is enforced (the page loses the catalog, the deny is counted).
#[test]
fn the_shop_runs_under_its_example_policies() {
    use common::up::{Up, http_get, repo};
    let up = Up::start(&["-f", repo("examples/shop").to_str().unwrap()]);
    let page_ok = || {
        let (status, body) = http_get(&up.gateway, "/api/home?user=ann").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["errors"].as_array().is_some_and(|e| e.is_empty())).then_some(())
    };
    wait_for("the shop through the gateway", Duration::from_secs(90), page_ok);
    up.cli(&["apply", "-f", repo("examples/authz").to_str().unwrap()]).ok();
    let admins = |svc: &str| -> Vec<String> {
        up.items("instances")
            .iter()
            .filter(|i| i["spec"]["deployment"] == svc)
            .filter_map(|i| i["status"]["sidecarAdmin"].as_str().map(String::from))
            .collect()
    };
    let counted = |svc: &str, label: &str| -> f64 {
        admins(svc).iter().map(|a| metric(a, "weft_authz_decisions_total", label)).sum()
    };
    wait_for("the policies in force, the page still whole", WAIT, || {
        page_ok()?;
        (counted("catalog", "policy=\"default/catalog-readers\",result=\"allow\"") >= 1.0
            && counted("frontend", "policy=\"default/frontend-from-gateway\",result=\"allow\"")
                >= 1.0)
            .then_some(())
    });
    let deny = policy("no-frontend", "catalog", "deny", "[ { from: [ { service: frontend } ] } ]");
    let file = up.dir.join("no-frontend.yaml");
    std::fs::write(&file, deny).unwrap();
    up.cli(&["apply", "-f", file.to_str().unwrap()]).ok();
    wait_for("the deny enforced", WAIT, || {
        let (_, body) = http_get(&up.gateway, "/api/home?user=ann").ok()?;
        (body.contains("catalog")
            && counted("catalog", "policy=\"default/no-frontend\",result=\"deny\"") >= 1.0)
            .then_some(())
    });
    assert!(page_ok().is_none(), "the page is whole without the catalog");
}
