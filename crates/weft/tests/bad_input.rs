//! Bad input, via raw HTTP and via the CLI: the right status or exit code, one clear line, and
//! nothing written.

mod common;

use common::*;
use serde_json::{Value, json};

/// One line on stderr, `error: …`, and nothing on stdout.
#[track_caller]
fn cli_error(out: &Out, code: i32) -> String {
    assert_eq!(out.code, code, "exit code; stderr: {}", out.stderr);
    assert_eq!(out.stdout, "", "stdout on error");
    let line = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    assert!(!line.contains('\n'), "more than one line on stderr: {:?}", out.stderr);
    assert!(line.starts_with("error: "), "{line:?}");
    assert!(!line.contains("panicked") && !line.contains("RUST_BACKTRACE"), "{line:?}");
    line.trim_start_matches("error: ").to_string()
}

fn write(s: &Server, name: &str, text: &str) -> String {
    let p = s.tmp.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const SVC_OK: &str = "apiVersion: weft/v1\nkind: Service\nmetadata: {name: fine}\nspec:\n  selector: {a: b}\n  ports: [{name: http, port: 80}]\n";

struct Case {
    name: &'static str,
    yaml: &'static str,
    field: &'static str,
    /// In the message after `field: `.
    message: &'static str,
}

const INVALID: &[Case] = &[
    Case {
        name: "unknown kind",
        yaml: "apiVersion: weft/v1\nkind: Foo\nmetadata: {name: x}\nspec: {}\n",
        field: "kind",
        message: "unknown kind \"Foo\" (known kinds: Deployment, Service, Autoscaler, Instance, Endpoints, Node, NodePool, AuthorizationPolicy, MeshConfig)",
    },
    Case {
        name: "unknown field",
        yaml: "apiVersion: weft/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n  template: {command: [a]}\n",
        field: "spec.replica",
        message: "unknown field `replica`, expected one of `replicas`, `template`, `strategy`",
    },
    Case {
        name: "invalid quantity",
        yaml: "apiVersion: weft/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template: {command: [a], resources: {requests: {memory: 12Xi}}}\n",
        field: "spec.template.resources.requests.memory",
        message: "invalid quantity \"12Xi\"",
    },
    Case {
        name: "duration without unit",
        yaml: "apiVersion: weft/v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selector: {a: b}\n  ports: [{name: http, port: 80}]\n  traffic: {timeout: 5}\n",
        field: "spec.traffic.timeout",
        message: "invalid duration \"5\": missing unit",
    },
    Case {
        name: "duration in days",
        yaml: "apiVersion: weft/v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selector: {a: b}\n  ports: [{name: http, port: 80}]\n  traffic: {timeout: 3d}\n",
        field: "spec.traffic.timeout",
        message: "invalid duration \"3d\": unknown unit \"d\"",
    },
    Case {
        name: "missing name",
        yaml: "apiVersion: weft/v1\nkind: Service\nmetadata: {}\nspec:\n  selector: {a: b}\n  ports: [{name: http, port: 80}]\n",
        field: "metadata.name",
        message: "is required",
    },
    Case {
        name: "name not DNS-1123",
        yaml: "apiVersion: weft/v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec:\n  selector: {a: b}\n  ports: [{name: http, port: 80}]\n",
        field: "metadata.name",
        message: "\"Bad_Name\" is not a valid name",
    },
    Case {
        name: "min > max",
        yaml: "apiVersion: weft/v1\nkind: Autoscaler\nmetadata: {name: a}\nspec:\n  target: {name: catalog}\n  minReplicas: 5\n  maxReplicas: 2\n",
        field: "spec.minReplicas",
        message: "5 is more than maxReplicas 2",
    },
];

#[test]
fn invalid_objects_are_422_via_http_and_64_via_cli_and_write_nothing() {
    let s = Server::start();
    assert_eq!(s.apply_yaml(SVC_OK).status, 200);
    let rev = s.revision();
    for c in INVALID {
        // POST /api/v1/apply
        let r = s.apply_yaml(c.yaml);
        let m = r.error(422, "Invalid");
        let body = r.json();
        assert_eq!(body["field"], c.field, "{}: {body}", c.name);
        assert_eq!(body["document"], 1, "{}: {body}", c.name);
        assert!(m.starts_with("document 1 ("), "{}: {m}", c.name);
        assert!(m.contains(&format!("{}: {}", c.field, c.message)), "{}: {m}", c.name);

        // PUT to the object's path (unknown kinds have no path; the name must match the path).
        if c.field != "kind" {
            let (kind, name) = kind_and_name(c.yaml);
            let kind = kind.to_lowercase();
            let path = format!("/api/v1/namespaces/default/{kind}s/{name}");
            let r =
                s.call("PUT", &path, Some(&s.token), Some(("application/yaml", c.yaml.as_bytes())));
            if c.field == "metadata.name" && name == "x" {
                // No name in the body: the path's name is used, so it is valid there.
                assert_eq!(r.status, 201, "{}: {}", c.name, r.text());
                assert_eq!(s.delete(&path).status, 200);
            } else {
                let m = r.error(422, "Invalid");
                assert_eq!(r.json()["field"], c.field, "{}", c.name);
                assert!(m.starts_with(&format!("{}: {}", c.field, c.message)), "{}: {m}", c.name);
            }
        }

        // The CLI: exit 64, `file:line: Kind name: field: message`.
        let file = write(&s, "bad.yaml", c.yaml);
        let line = cli_error(&s.cli(&["apply", "-f", &file]), 64);
        assert!(line.starts_with(&format!("{file}:1: ")), "{}: {line}", c.name);
        assert!(line.contains(&format!("{}: {}", c.field, c.message)), "{}: {line}", c.name);
    }
    let rev_after = s.revision();
    // The PUT to the path's name was created then deleted: two writes. Nothing else.
    assert_eq!(rev_after, rev + 2, "an invalid object was written");
    assert_eq!(s.names("services"), vec!["fine"]);
    assert!(s.names("deployments").is_empty());
    assert!(s.names("autoscalers").is_empty());
}

/// Kind and name of the simple flow-style cases above (enough to pick the object's path).
fn kind_and_name(yaml: &str) -> (String, String) {
    let kind = yaml.lines().find_map(|l| l.strip_prefix("kind: ")).unwrap_or("Service");
    let name = yaml
        .lines()
        .find_map(|l| l.strip_prefix("metadata: {name: ").and_then(|r| r.strip_suffix('}')))
        .unwrap_or("x");
    (kind.to_string(), name.to_string())
}

#[test]
fn malformed_yaml_and_json_are_400_via_http_and_64_via_cli() {
    let s = Server::start();
    let rev = s.revision();
    let yaml = "apiVersion: weft/v1\nkind: Service\nmetadata:\n  name: x\n   bad: [\n";
    let r = s.apply_yaml(yaml);
    let m = r.error(400, "BadRequest");
    assert!(m.starts_with("invalid YAML at line 5, column 7: "), "{m}");
    let r =
        s.call("PUT", &svc_path("x"), Some(&s.token), Some(("application/yaml", yaml.as_bytes())));
    assert!(r.error(400, "BadRequest").starts_with("invalid YAML at line 5, column 7: "));
    // A later document's line is counted from the top of the file.
    let r = s.apply_yaml(&format!("{SVC_OK}---\n{yaml}"));
    let m = r.error(400, "BadRequest");
    assert!(m.starts_with("invalid YAML at line 12, column 7: "), "{m}");

    let file = write(&s, "bad.yaml", yaml);
    let line = cli_error(&s.cli(&["apply", "-f", &file]), 64);
    assert!(line.starts_with(&format!("{file}: invalid YAML at line 5, column 7: ")), "{line}");
    let line = cli_error(&s.cli_stdin(&["apply", "-f", "-"], yaml), 64);
    assert!(line.starts_with("stdin: invalid YAML at line 5, column 7"), "{line}");

    let json_text = "{\n  \"apiVersion\": \"weft/v1\",\n  oops\n}";
    let r = s.call(
        "POST",
        "/api/v1/apply",
        Some(&s.token),
        Some(("application/json", json_text.as_bytes())),
    );
    let m = r.error(400, "BadRequest");
    assert!(m.starts_with("invalid JSON at line 3, column 3"), "{m}");
    let r = s.call(
        "PUT",
        &svc_path("x"),
        Some(&s.token),
        Some(("application/json", json_text.as_bytes())),
    );
    assert!(r.error(400, "BadRequest").starts_with("invalid JSON at line 3, column 3"));
    let file = write(&s, "bad.json", json_text);
    let line = cli_error(&s.cli(&["apply", "-f", &file]), 64);
    assert!(line.starts_with(&format!("{file}: invalid JSON at line 3, column 3")), "{line}");

    // Not UTF-8, not an object, nothing at all, the wrong media type.
    let r = s.call(
        "POST",
        "/api/v1/apply",
        Some(&s.token),
        Some(("application/yaml", b"kind: \xff\xfe\n")),
    );
    r.error(400, "BadRequest");
    let r =
        s.call("POST", "/api/v1/apply", Some(&s.token), Some(("application/yaml", b"- a\n- b\n")));
    let m = r.error(422, "Invalid");
    assert!(m.contains("found a list"), "{m}");
    let r =
        s.call("POST", "/api/v1/apply", Some(&s.token), Some(("application/yaml", b"# nothing\n")));
    assert_eq!(r.error(400, "BadRequest"), "nothing to apply: the body holds no objects");
    let r = s.call("POST", "/api/v1/apply", Some(&s.token), Some(("text/html", SVC_OK.as_bytes())));
    r.error(415, "UnsupportedMediaType");
    assert_eq!(s.revision(), rev);
    assert!(s.names("services").is_empty());
}

#[test]
fn unknown_kinds_routes_methods_and_query_parameters() {
    let s = Server::start();
    assert_eq!(s.apply_yaml(SVC_OK).status, 200);
    let rev = s.revision();
    let r = s.get("/api/v1/namespaces/default/foos");
    assert_eq!(
        r.error(404, "NotFound"),
        "unknown kind \"foos\" (known: deployments, services, autoscalers, instances, endpoints, nodes, nodepools, authorizationpolicies, meshconfigs)"
    );
    let r = s.get("/api/v1/namespaces/default/service");
    assert_eq!(
        r.error(404, "NotFound"),
        "unknown kind \"service\" (paths use the plural: services)"
    );
    let r = s.put_json("/api/v1/namespaces/default/foos/x", &service("x"));
    r.error(404, "NotFound");
    let r = s.get("/api/v1/namespaces/default/nodes");
    assert!(r.error(404, "NotFound").contains("cluster-scoped"));
    let r = s.get("/api/v1/services/fine");
    assert!(r.error(404, "NotFound").contains("namespaced"));
    let r = s.get("/api/v2/things");
    assert!(r.error(404, "NotFound").starts_with("no api route /api/v2/things"));
    let r = s.call(
        "POST",
        "/api/v1/namespaces/default/services",
        Some(&s.token),
        Some(("application/json", b"{}")),
    );
    r.error(405, "MethodNotAllowed");

    let r = s.get("/api/v1/namespaces/default/services?bogus=1");
    assert_eq!(
        r.error(400, "BadRequest"),
        "unknown query parameter \"bogus\" (this route takes: watch, wait, resourceVersion, labelSelector, timeoutSeconds, limit)"
    );
    let r = s.get("/api/v1/namespaces/default/services?watch=maybe");
    assert_eq!(r.error(400, "BadRequest"), "watch=\"maybe\": expected true or false");
    let r = s.get("/api/v1/namespaces/default/services?wait=5&resourceVersion=1");
    assert!(r.error(400, "BadRequest").starts_with("wait: "));
    let r = s.get("/api/v1/namespaces/default/services?wait=1s&resourceVersion=x");
    r.error(400, "BadRequest");
    let r = s.get("/api/v1/namespaces/default/services?watch=true&wait=1s");
    r.error(400, "BadRequest");
    let r = s.get("/api/v1/namespaces/default/services?labelSelector=%3D%3D");
    r.error(400, "BadRequest");
    let r = s.get("/api/v1/namespaces/default/services/fine?bogus=1");
    r.error(400, "BadRequest");
    let r = s.call(
        "POST",
        "/api/v1/apply?force=true",
        Some(&s.token),
        Some(("application/yaml", SVC_OK.as_bytes())),
    );
    r.error(400, "BadRequest");
    let r = s.get("/api/v1/namespaces/Bad_NS/services");
    assert!(r.error(400, "BadRequest").starts_with("namespace in the path: "));
    assert_eq!(s.revision(), rev);

    // The CLI: unknown kind, subcommand, flag.
    let line = cli_error(&s.cli(&["get", "foo"]), 64);
    assert!(line.starts_with("unknown kind \"foo\""), "{line}");
    let out = s.cli(&["frobnicate"]);
    assert_eq!(out.code, 64);
    assert!(
        out.stderr.starts_with("error: unrecognized subcommand 'frobnicate'"),
        "{}",
        out.stderr
    );
    let out = s.cli(&["get", "deploy", "--bogus"]);
    assert_eq!(out.code, 64);
    assert!(out.stderr.starts_with("error: unexpected argument '--bogus'"), "{}", out.stderr);
    let out = s.cli(&["get", "deploy", "-o", "xml"]);
    assert_eq!(out.code, 64);
    let out = s.cli(&["apply"]);
    assert_eq!(out.code, 64);
    let line = cli_error(&s.cli(&["apply", "-f", "/nonexistent/x.yaml"]), 64);
    assert_eq!(line, "/nonexistent/x.yaml: no such file or directory");
    let line = cli_error(&s.cli(&["get", "svc", "-l", "=="]), 64);
    assert!(!line.is_empty());
    let line = cli_error(&s.cli(&["token", "create", "--role", "king"]), 64);
    assert_eq!(line, "unknown role \"king\" (use admin, viewer, agent or proxy)");
    let line = cli_error(&s.cli(&["token", "create", "--role", "viewer", "--ttl", "3d"]), 64);
    assert!(line.starts_with("--ttl: "), "{line}");
    assert_eq!(s.revision(), rev);
}

#[test]
fn oversized_bodies_are_413() {
    let s = Server::with_args(&["--max-body", "64Ki"]);
    let rev = s.revision();
    let mut big = String::new();
    for i in 0..400 {
        big.push_str(&format!(
            "---\napiVersion: weft/v1\nkind: Service\nmetadata: {{name: big-{i}, annotations: {{pad: {}}}}}\nspec:\n  selector: {{a: b}}\n  ports: [{{name: http, port: 80}}]\n",
            "x".repeat(120)
        ));
    }
    assert!(big.len() > 64 * 1024);
    let limit_msg = "the request body is larger than the server's limit of 65536 bytes";
    // With a Content-Length.
    let r = s.apply_yaml(&big);
    assert_eq!(r.error(413, "PayloadTooLarge"), limit_msg);
    // Chunked, so the server only finds out while reading.
    let r = request(
        &s.addr,
        "POST",
        "/api/v1/apply",
        Some(&s.token),
        &[("Content-Type", "application/yaml"), ("Transfer-Encoding", "chunked")],
        Some(big.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.error(413, "PayloadTooLarge"), limit_msg);
    // A single object too.
    let mut one = service("huge");
    one["metadata"]["annotations"] = json!({ "pad": "y".repeat(70 * 1024) });
    let r = s.put_json(&svc_path("huge"), &one);
    assert_eq!(r.error(413, "PayloadTooLarge"), limit_msg);
    // Just under the limit is fine.
    let mut ok = service("fits");
    ok["metadata"]["annotations"] = json!({ "pad": "z".repeat(60 * 1024) });
    assert_eq!(s.put_json(&svc_path("fits"), &ok).status, 201);
    let rev = rev + 1;
    assert_eq!(s.revision(), rev);

    // The CLI says so in one line, exit 1 (not "unreachable").
    let file = write(&s, "big.yaml", &big);
    let line = cli_error(&s.cli(&["apply", "-f", &file]), 1);
    assert_eq!(line, limit_msg);
    assert_eq!(s.revision(), rev);
    assert_eq!(s.names("services"), vec!["fits"]);
}

#[test]
fn stale_resource_version_is_409_for_put_apply_and_delete() {
    let s = Server::start();
    let created = s.put_json(&svc_path("a"), &service("a"));
    assert_eq!(created.status, 201);
    let v1 = created.json();
    let mut changed = service_labeled("a", json!({ "x": "1" }));
    let r = s.put_json(&svc_path("a"), &changed);
    assert_eq!(r.status, 200);
    let current = r.json();
    let rev = s.revision();

    // PUT with the old revision.
    changed["metadata"]["resourceVersion"] = v1["metadata"]["resourceVersion"].clone();
    changed["metadata"]["labels"] = json!({ "x": "2" });
    let r = s.put_json(&svc_path("a"), &changed);
    let m = r.error(409, "Conflict");
    assert_eq!(
        m,
        format!(
            "service \"a\" in namespace \"default\" was modified since resourceVersion {} (it is now at {}); get it again and reapply your change",
            rv(&v1),
            rv(&current)
        )
    );
    assert_eq!(r.json()["field"], "metadata.resourceVersion");
    // Apply with the old revision, as the 2nd document.
    let r = s.apply_json(&json!([service("b"), changed]));
    let m = r.error(409, "Conflict");
    assert!(m.starts_with("document 2: service \"a\""), "{m}");
    // Delete with the old revision.
    let r = s.delete(&format!("{}?resourceVersion={}", svc_path("a"), rv(&v1)));
    r.error(409, "Conflict");
    // A revision for an object that does not exist.
    let mut ghost = service("ghost");
    ghost["metadata"]["resourceVersion"] = json!("1");
    let m = s.put_json(&svc_path("ghost"), &ghost).error(409, "Conflict");
    assert!(m.contains("it no longer exists"), "{m}");
    assert_eq!(s.revision(), rev);
    assert_eq!(s.object(&svc_path("a")).unwrap(), current);
    assert_eq!(s.names("services"), vec!["a"]);

    // The current revision works.
    changed["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    assert_eq!(s.put_json(&svc_path("a"), &changed).status, 200);

    // The CLI: re-applying an old `get -o yaml` is a conflict, pointed at the file and line.
    let old = s.cli(&["get", "svc", "a", "-o", "yaml"]);
    old.ok();
    assert_eq!(s.put_json(&svc_path("a"), &service("a")).status, 200);
    let rev = s.revision();
    let file = write(&s, "old.yaml", &format!("{SVC_OK}---\n{}", old.stdout));
    let line = cli_error(&s.cli(&["apply", "-f", &file]), 1);
    assert!(
        line.starts_with(&format!(
            "{file}:8: Service a: service \"a\" in namespace \"default\" was modified since"
        )),
        "{line}"
    );
    assert_eq!(s.revision(), rev);
    assert!(s.object(&svc_path("fine")).is_none(), "all or nothing");
}

#[test]
fn apply_is_all_or_nothing() {
    let s = Server::start();
    let rev = s.revision();
    let doc = |name: &str| {
        format!(
            "apiVersion: weft/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{a: b}}\n  ports: [{{name: http, port: 80}}]\n"
        )
    };
    let bad = "apiVersion: weft/v1\nkind: Service\nmetadata: {name: three}\nspec:\n  selector: {a: b}\n  ports: [{name: http, port: 80}]\n  traffic: {timeout: 3d}\n";
    let text = format!("{}---\n{}---\n{bad}", doc("one"), doc("two"));
    let r = s.apply_yaml(&text);
    let m = r.error(422, "Invalid");
    assert!(
        m.starts_with("document 3 (Service three): spec.traffic.timeout: invalid duration \"3d\""),
        "{m}"
    );
    assert_eq!(r.json()["document"], 3);
    assert_eq!(s.revision(), rev);
    assert!(s.object(&svc_path("one")).is_none());
    assert!(s.object(&svc_path("two")).is_none());

    // The CLI names the file and the line where document 3 starts.
    let file = write(&s, "three.yaml", &text);
    let line = cli_error(&s.cli(&["apply", "-f", &file]), 64);
    assert!(
        line.starts_with(&format!(
            "{file}:15: Service three: spec.traffic.timeout: invalid duration \"3d\""
        )),
        "{line}"
    );
    assert_eq!(s.revision(), rev);

    // Duplicates in one apply.
    let r = s.apply_yaml(&format!("{}---\n{}", doc("one"), doc("one")));
    let m = r.error(422, "Invalid");
    assert!(m.contains("also appears in document 1"), "{m}");
    assert_eq!(s.revision(), rev);

    // A failure only the server can see (a stale revision in document 3): still nothing.
    assert_eq!(s.put_json(&svc_path("three"), &service("three")).status, 201);
    let rev = s.revision();
    let stale = format!(
        "apiVersion: weft/v1\nkind: Service\nmetadata: {{name: three, resourceVersion: '{}'}}\nspec:\n  selector: {{a: b}}\n  ports: [{{name: http, port: 80}}]\n",
        rev - 1
    );
    let r = s.apply_yaml(&format!("{}---\n{}---\n{stale}", doc("one"), doc("two")));
    let m = r.error(409, "Conflict");
    assert!(m.starts_with("document 3: "), "{m}");
    assert_eq!(s.revision(), rev);
    assert_eq!(s.names("services"), vec!["three"]);
    let file = write(&s, "stale.yaml", &format!("{}---\n{}---\n{stale}", doc("one"), doc("two")));
    let line = cli_error(&s.cli(&["apply", "-f", &file]), 1);
    assert!(line.starts_with(&format!("{file}:15: Service three: service \"three\"")), "{line}");
    assert_eq!(s.revision(), rev);
    assert_eq!(s.names("services"), vec!["three"]);
}

#[test]
fn tokens_and_roles_401_403() {
    let s = Server::start();
    assert_eq!(s.apply_yaml(SVC_OK).status, 200);
    let r = s.apply_yaml(&std::fs::read_to_string(fixture("system.yaml")).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    let viewer = s.create_token("viewer", None);
    let proxy = s.create_token("proxy", None);
    let agent = s.create_token("agent", None);
    let rev = s.revision();
    let body = service("new").to_string();
    let svc_body = Some(("application/json", body.as_bytes()));

    // 401: none, unknown, malformed, wrong scheme.
    let r = s.call("GET", "/api/v1/services", None, None);
    assert!(r.error(401, "Unauthorized").starts_with("missing bearer token"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"weft\""));
    let r = s.call("GET", "/api/v1/services", Some("weft_0123456789ab_00ff"), None);
    assert_eq!(r.error(401, "Unauthorized"), "unknown or revoked token");
    let r = s.call("PUT", &svc_path("new"), Some("weft_0123456789ab_00ff"), svc_body);
    assert_eq!(r.error(401, "Unauthorized"), "unknown or revoked token");
    let r = s.call("GET", "/api/v1/services", Some("nonsense"), None);
    assert!(r.error(401, "Unauthorized").starts_with("malformed token"));
    let r = request(
        &s.addr,
        "GET",
        "/api/v1/services",
        None,
        &[("Authorization", "Basic Zm9vOmJhcg==")],
        None,
    )
    .unwrap();
    assert!(r.error(401, "Unauthorized").contains("Bearer <token>"));
    // A valid id with the wrong secret.
    let forged = format!("{}_{}", &viewer[..17], "0".repeat(64));
    let r = s.call("GET", "/api/v1/services", Some(&forged), None);
    assert_eq!(r.error(401, "Unauthorized"), "unknown or revoked token");

    // 403: a viewer writes; a proxy reads deployments; an agent writes a Deployment.
    let r = s.call("PUT", &svc_path("new"), Some(&viewer), svc_body);
    assert_eq!(r.error(403, "Forbidden"), "a viewer token may not write services");
    let r = s.call(
        "POST",
        "/api/v1/apply",
        Some(&viewer),
        Some(("application/yaml", SVC_OK.as_bytes())),
    );
    assert_eq!(
        r.error(403, "Forbidden"),
        "document 1 (Service fine): a viewer token may not write services"
    );
    let r = s.call("DELETE", &svc_path("fine"), Some(&viewer), None);
    assert_eq!(r.error(403, "Forbidden"), "a viewer token may not delete services");
    let r = s.call("GET", "/api/v1/tokens", Some(&viewer), None);
    assert_eq!(r.error(403, "Forbidden"), "a viewer token may not manage tokens");
    let r = s.call("GET", "/api/v1/namespaces/default/deployments", Some(&proxy), None);
    assert_eq!(r.error(403, "Forbidden"), "a proxy token may not read deployments");
    let r = s.call("GET", "/api/v1/deployments?watch=true", Some(&proxy), None);
    assert_eq!(r.error(403, "Forbidden"), "a proxy token may not read deployments");
    let dep = deployment("web", 1).to_string();
    let r = s.call(
        "PUT",
        &deploy_path("web"),
        Some(&agent),
        Some(("application/json", dep.as_bytes())),
    );
    assert!(r.error(403, "Forbidden").ends_with(" token may not write deployments"));
    let inst_path = "/api/v1/namespaces/default/instances/catalog-abc12";
    let inst = s.object(inst_path).unwrap();
    let r = s.call(
        "PUT",
        inst_path,
        Some(&agent),
        Some(("application/json", inst.to_string().as_bytes())),
    );
    assert!(r.error(403, "Forbidden").ends_with(" token may not write instances"));
    assert_eq!(s.revision(), rev, "a refused request wrote something");

    // The CLI with a bad token: exit 1, the server's line.
    let line = cli_error(&s.cli(&["--token", "weft_0123456789ab_00ff", "get", "svc"]), 1);
    assert_eq!(line, "unknown or revoked token");
    let file = write(&s, "fine.yaml", SVC_OK);
    let line = cli_error(&s.cli(&["--token", &viewer, "apply", "-f", &file]), 1);
    assert!(line.ends_with("a viewer token may not write services"), "{line}");
    assert_eq!(s.revision(), rev);

    // What each role may do.
    assert_eq!(s.call("GET", "/api/v1/services", Some(&viewer), None).status, 200);
    assert_eq!(
        s.call("GET", "/api/v1/namespaces/default/services", Some(&proxy), None).status,
        200
    );
    assert_eq!(s.call("GET", "/api/v1/endpoints", Some(&proxy), None).status, 200);
    assert_eq!(s.call("GET", "/api/v1/deployments", Some(&agent), None).status, 200);
    let node = json!({ "apiVersion": "weft/v1", "kind": "Node", "metadata": { "name": "node-2" }, "spec": {} }).to_string();
    let r = s.call(
        "PUT",
        "/api/v1/nodes/node-2",
        Some(&agent),
        Some(("application/json", node.as_bytes())),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mut with_status = inst.clone();
    with_status["status"] = json!({ "phase": "Running", "ready": true, "restarts": 0 });
    let r = s.call(
        "PUT",
        &format!("{inst_path}/status"),
        Some(&agent),
        Some(("application/json", with_status.to_string().as_bytes())),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"]["phase"], "Running");
    let mut node_status: Value = serde_json::from_str(&node).unwrap();
    node_status["status"] = json!({ "ready": true, "address": "127.0.0.1" });
    let r = s.call(
        "PUT",
        "/api/v1/nodes/node-2/status",
        Some(&agent),
        Some(("application/json", node_status.to_string().as_bytes())),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.revision(), rev + 3);
}

#[test]
fn watch_and_poll_from_a_compacted_revision_are_410() {
    let s = Server::with_args(&["--history", "5"]);
    let first = s.put_json(&svc_path("s0"), &service("s0"));
    assert_eq!(first.status, 201);
    let first_rev = rv(&first.json());
    for i in 1..20 {
        assert_eq!(s.put_json(&svc_path(&format!("s{i}")), &service(&format!("s{i}"))).status, 201);
    }
    let rev = s.revision();
    let gone = |r: Resp| {
        let m = r.error(410, "Gone");
        assert!(m.starts_with(&format!("resourceVersion {first_rev} is too old")), "{m}");
        assert!(m.contains("list again"), "{m}");
    };
    match Watch::open(
        &s.addr,
        &format!("/api/v1/namespaces/default/services?watch=true&resourceVersion={first_rev}"),
        Some(&s.token),
    ) {
        Ok(_) => panic!("watch from a compacted revision was accepted"),
        Err(r) => gone(r),
    }
    gone(
        s.get(&format!("/api/v1/namespaces/default/services?wait=2s&resourceVersion={first_rev}")),
    );
    gone(s.get(&format!("/api/v1/services?wait=1s&resourceVersion={first_rev}")));
    gone(s.get(&format!("{}?watch=true&resourceVersion={first_rev}", svc_path("s0"))));
    // Recent revisions still resume.
    let r = s.get(&format!("/api/v1/services?wait=1s&resourceVersion={}", rev - 2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 2);
    assert_eq!(s.revision(), rev);
}

#[test]
fn unreachable_server_is_exit_69_naming_the_url() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let empty = tempfile::tempdir().unwrap();
    for args in [
        vec!["get", "deploy"],
        vec!["describe", "svc", "x"],
        vec!["delete", "svc", "x"],
        vec!["token", "list"],
    ] {
        let mut all = vec!["--server", url.as_str(), "--data-dir", empty.path().to_str().unwrap()];
        all.extend(args.iter().copied());
        let out = weft(&all, None);
        let line = cli_error(&out, 69);
        assert!(line.starts_with(&format!("cannot reach the weft server at {url}: ")), "{line}");
        assert!(line.contains("--server or WEFT_SERVER"), "{line}");
    }
    // apply validates first, then reaches for the server.
    let file = empty.path().join("ok.yaml");
    std::fs::write(&file, SVC_OK).unwrap();
    let out = weft(
        &[
            "--server",
            &url,
            "--data-dir",
            empty.path().to_str().unwrap(),
            "apply",
            "-f",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(cli_error(&out, 69).contains(&url));
    // A malformed address is a usage error.
    let out = weft(
        &[
            "--server",
            "localhost:7070",
            "--data-dir",
            empty.path().to_str().unwrap(),
            "get",
            "deploy",
        ],
        None,
    );
    cli_error(&out, 64);
}

#[test]
fn forbidden_message_grammar_for_agent() {
    let s = Server::start();
    let agent = s.create_token("agent", None);
    let dep = deployment("web", 1).to_string();
    let r = s.call(
        "PUT",
        &deploy_path("web"),
        Some(&agent),
        Some(("application/json", dep.as_bytes())),
    );
    assert_eq!(r.error(403, "Forbidden"), "an agent token may not write deployments");
}
