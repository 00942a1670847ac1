//! Object semantics (status subresource, generation, server-owned metadata), discovery and the
//! OpenAPI document, checked against the running server and with a JSON Schema validator.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{Value, json};

#[test]
fn status_subresource_and_server_owned_metadata() {
    let s = Server::start();
    let path = deploy_path("web");
    let created = s.put_json(&path, &deployment("web", 1));
    assert_eq!(created.status, 201);
    let v1 = created.json();
    let uid = v1["metadata"]["uid"].as_str().unwrap().to_string();
    let ts = v1["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 36, "{uid}");
    assert!(humantime_like(&ts), "{ts}");
    assert_eq!(v1["metadata"]["generation"], 1);
    assert!(v1.get("status").is_none());

    // A status write changes only the status: the spec in its body is ignored.
    let mut body = v1.clone();
    body["spec"]["replicas"] = json!(9);
    body["metadata"]["labels"] = json!({ "sneaky": "yes" });
    body["status"] = json!({ "observedGeneration": 1, "replicas": 2, "readyReplicas": 1 });
    let r = s.put_json(&format!("{path}/status"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v2 = r.json();
    assert_eq!(v2["spec"], v1["spec"]);
    assert!(v2["metadata"].get("labels").is_none(), "{v2}");
    assert_eq!(v2["status"]["replicas"], 2);
    assert_eq!(v2["status"]["readyReplicas"], 1);
    assert_eq!(v2["metadata"]["generation"], 1, "a status write is not a spec change");
    assert!(rv(&v2) > rv(&v1));
    assert_eq!(s.object(&path).unwrap(), v2);

    // The same status again: unchanged, no new revision.
    let rev = s.revision();
    let r = s.put_json(&format!("{path}/status"), &body);
    assert!(
        r.error(409, "Conflict").contains("was modified since"),
        "the body still carries v1's revision"
    );
    body["metadata"]["resourceVersion"] = v2["metadata"]["resourceVersion"].clone();
    let r = s.put_json(&format!("{path}/status"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rv(&r.json()), rv(&v2));
    assert_eq!(s.revision(), rev);

    // A write to the main resource ignores status (and server-owned metadata).
    let mut body = v2.clone();
    body["status"] = json!({ "replicas": 99 });
    body["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000000");
    body["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    body["metadata"]["generation"] = json!(77);
    let r = s.put_json(&path, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v3 = r.json();
    assert_eq!(v3["status"], v2["status"]);
    assert_eq!(v3["metadata"]["uid"], uid.as_str());
    assert_eq!(v3["metadata"]["creationTimestamp"], ts.as_str());
    assert_eq!(v3["metadata"]["generation"], 1);
    assert_eq!(s.revision(), rev, "nothing the user owns changed: no write");

    // A spec change bumps the generation, keeps status, uid and creation time.
    let mut body = v3.clone();
    body["spec"]["replicas"] = json!(3);
    body.as_object_mut().unwrap().remove("status");
    let v4 = s.put_json(&path, &body).json();
    assert_eq!(v4["metadata"]["generation"], 2);
    assert_eq!(v4["status"], v2["status"]);
    assert_eq!(v4["metadata"]["uid"], uid.as_str());
    assert_eq!(v4["metadata"]["creationTimestamp"], ts.as_str());
    // A label change is not a spec change.
    let mut body = v4.clone();
    body["metadata"]["labels"] = json!({ "team": "a" });
    let v5 = s.put_json(&path, &body).json();
    assert_eq!(v5["metadata"]["generation"], 2);
    assert!(rv(&v5) > rv(&v4));
    // Apply ignores status too, and counts generations the same way.
    let mut applied = deployment("web", 4);
    applied["metadata"]["labels"] = json!({ "team": "a" });
    applied["status"] = json!({ "replicas": 42 });
    let r = s.apply_json(&applied);
    assert_eq!(r.json()["results"][0]["action"], "configured");
    let v6 = s.object(&path).unwrap();
    assert_eq!(v6["metadata"]["generation"], 3);
    assert_eq!(v6["status"], v2["status"]);
    assert_eq!(v6["metadata"]["uid"], uid.as_str());

    // Status writes: invalid, stale, missing, on a status-less kind.
    let rev = s.revision();
    let mut bad = v6.clone();
    bad["status"] = json!({ "replicas": "lots" });
    let r = s.put_json(&format!("{path}/status"), &bad);
    assert_eq!(r.error(422, "Invalid"), r.json()["message"].as_str().unwrap());
    assert!(r.json()["field"].as_str().unwrap().starts_with("status.replicas"), "{}", r.text());
    let mut stale = v6.clone();
    stale["metadata"]["resourceVersion"] = json!(rv(&v1).to_string());
    stale["status"] = json!({ "replicas": 5 });
    s.put_json(&format!("{path}/status"), &stale).error(409, "Conflict");
    let r = s.put_json(&format!("{}/status", deploy_path("ghost")), &deployment("ghost", 1));
    assert_eq!(r.error(404, "NotFound"), "deployment \"ghost\" in namespace \"default\" not found");
    assert_eq!(s.revision(), rev);
    assert_eq!(s.object(&path).unwrap(), v6);

    // Delete answers with the object as it was; the uid of a re-created object is new.
    let r = s.delete(&path);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["uid"], uid.as_str());
    let again = s.put_json(&path, &deployment("web", 1)).json();
    assert_ne!(again["metadata"]["uid"], uid.as_str());
    assert_eq!(again["metadata"]["generation"], 1);
}

fn humantime_like(ts: &str) -> bool {
    ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T'
}

#[test]
fn get_one_object_with_watch_false_returns_it() {
    let s = Server::start();
    s.put_json(&svc_path("a"), &service("a"));
    let r = s.get(&format!("{}?watch=false", svc_path("a")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(name_of(&r.json()), "a");
}

// ---- discovery, OpenAPI, schemas ------------------------------------------------------------

fn kinds(s: &Server) -> Vec<Value> {
    let r = s.get("/api/v1/kinds");
    assert_eq!(r.status, 200);
    r.json()["kinds"].as_array().unwrap().clone()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// Every object in a fixture file, read with weft's own manifest codec.
fn fixture_objects(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    weft_api::codec::parse_documents(&text).unwrap().into_iter().map(|d| d.value).collect()
}

#[test]
fn discovery_lists_the_kinds_with_schemas_that_match_the_server() {
    let s = Server::start();
    let kinds = kinds(&s);
    let summary: Vec<(String, String, bool, bool)> = kinds
        .iter()
        .map(|k| {
            (
                k["kind"].as_str().unwrap().into(),
                k["plural"].as_str().unwrap().into(),
                k["namespaced"].as_bool().unwrap(),
                k["system"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        ("Deployment", "deployments", true, false),
        ("Service", "services", true, false),
        ("Autoscaler", "autoscalers", true, false),
        ("Instance", "instances", true, true),
        ("Endpoints", "endpoints", true, true),
        ("Node", "nodes", false, true),
        ("NodePool", "nodepools", false, false),
        ("AuthorizationPolicy", "authorizationpolicies", true, false),
        ("MeshConfig", "meshconfigs", true, false),
    ];
    assert_eq!(
        summary,
        want.iter().map(|w| (w.0.to_string(), w.1.to_string(), w.2, w.3)).collect::<Vec<_>>()
    );
    let shorts: Vec<&Value> = kinds.iter().map(|k| &k["shortNames"]).collect();
    assert_eq!(shorts[0], &json!(["deploy"]));
    assert_eq!(shorts[1], &json!(["svc"]));
    let validators: BTreeMap<String, jsonschema::Validator> = kinds
        .iter()
        .map(|k| {
            let schema = &k["schema"];
            assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
            assert_eq!(schema["properties"]["kind"]["const"], k["kind"]);
            assert_eq!(schema["properties"]["apiVersion"]["const"], "weft/v1");
            (k["kind"].as_str().unwrap().to_string(), validator(schema))
        })
        .collect();

    // Every fixture object is valid by its kind's schema, and accepted by the server.
    let mut objects = fixture_objects("example.yaml");
    objects.extend(fixture_objects("system.yaml"));
    objects.extend(fixture_objects("dir/a-service.yaml"));
    objects.extend(fixture_objects("dir/b-deployment.json"));
    assert_eq!(objects.len(), 9);
    for o in &objects {
        let kind = o["kind"].as_str().unwrap();
        let errs = errors(&validators[kind], o);
        assert!(errs.is_empty(), "fixture {kind} {} fails its schema: {errs:?}", name_of(o));
    }
    let r = s.apply_json(&Value::Array(objects.clone()));
    assert_eq!(r.status, 200, "{}", r.text());

    // What the server returns (defaults filled in, metadata and status added) is valid too.
    let status = json!({ "phase": "Running", "ready": true, "restarts": 1, "address": "127.0.0.1", "ports": { "http": 41001 } });
    let mut inst = s.object("/api/v1/namespaces/default/instances/catalog-abc12").unwrap();
    inst["status"] = status;
    assert_eq!(
        s.put_json("/api/v1/namespaces/default/instances/catalog-abc12/status", &inst).status,
        200
    );
    let mut returned = 0;
    for k in &kinds {
        let r = s.get(&format!("/api/v1/{}", k["plural"].as_str().unwrap()));
        for o in r.json()["items"].as_array().unwrap() {
            let errs = errors(&validators[k["kind"].as_str().unwrap()], o);
            assert!(
                errs.is_empty(),
                "server's {} {} fails its schema: {errs:?}\n{o}",
                k["kind"],
                name_of(o)
            );
            returned += 1;
        }
    }
    assert_eq!(returned, 9);

    // Invalid objects: the schema and the server both refuse them.
    let rev = s.revision();
    let mut invalid = Vec::new();
    let mut o = deployment("x", 1);
    o["spec"]["replica"] = json!(2);
    invalid.push(("unknown field", o));
    let mut o = deployment("x", 1);
    o["spec"]["replicas"] = json!("two");
    invalid.push(("wrong type", o));
    let mut o = deployment("x", 1);
    o["spec"].as_object_mut().unwrap().remove("template");
    invalid.push(("missing template", o));
    let mut o = deployment("x", 1);
    o["spec"]["template"]["resources"] = json!({ "requests": { "memory": "12Xi" } });
    invalid.push(("bad quantity", o));
    let mut o = service("x");
    o["spec"]["traffic"] = json!({ "timeout": "3d" });
    invalid.push(("bad duration", o));
    let mut o = service("x");
    o["spec"]["traffic"] = json!({ "timeout": "5" });
    invalid.push(("duration without unit", o));
    let mut o = service("x");
    o["kind"] = json!("Deployment");
    invalid.push(("wrong kind for the body", o));
    let mut o = service("x");
    o["apiVersion"] = json!("v1");
    invalid.push(("wrong apiVersion", o));
    for (what, o) in &invalid {
        let schema_kind = if *what == "wrong kind for the body" {
            "Deployment"
        } else {
            o["kind"].as_str().unwrap()
        };
        assert!(!errors(&validators[schema_kind], o).is_empty(), "{what}: the schema accepts it");
        let r = s.apply_json(o);
        assert_eq!(r.status, 422, "{what}: {}", r.text());
    }
    assert_eq!(s.revision(), rev);
}

/// A concrete path for a template: `{ns}` → default, `{name}` → `probe`, `{id}` → a made-up id.
fn concrete(template: &str) -> String {
    template.replace("{ns}", "default").replace("{name}", "probe").replace("{id}", "000000000000")
}

fn probe_object(kind: &str) -> Value {
    match kind {
        "Deployment" => deployment("probe", 1),
        "Service" => service("probe"),
        "Autoscaler" => {
            json!({ "apiVersion": "weft/v1", "kind": "Autoscaler", "metadata": { "name": "probe" }, "spec": { "target": { "name": "probe" }, "maxReplicas": 3 } })
        }
        "Instance" => {
            json!({ "apiVersion": "weft/v1", "kind": "Instance", "metadata": { "name": "probe" }, "spec": { "template": { "command": ["x"] } } })
        }
        "Endpoints" => {
            json!({ "apiVersion": "weft/v1", "kind": "Endpoints", "metadata": { "name": "probe" }, "spec": {} })
        }
        "Node" => {
            json!({ "apiVersion": "weft/v1", "kind": "Node", "metadata": { "name": "probe" }, "spec": {} })
        }
        "NodePool" => {
            json!({ "apiVersion": "weft/v1", "kind": "NodePool", "metadata": { "name": "probe" }, "spec": { "provider": "local", "maxNodes": 1, "template": { "capacity": { "cpu": "1", "memory": "1Gi" } } } })
        }
        "AuthorizationPolicy" => {
            json!({ "apiVersion": "weft/v1", "kind": "AuthorizationPolicy", "metadata": { "name": "probe" }, "spec": { "target": { "service": "probe" }, "action": "allow", "rules": [{}] } })
        }
        // Only `default` is a valid name: the probe gets the documented 422.
        "MeshConfig" => {
            json!({ "apiVersion": "weft/v1", "kind": "MeshConfig", "metadata": { "name": "probe" }, "spec": {} })
        }
        other => panic!("{other}"),
    }
}

/// The kind a path is about, if any.
fn kind_of_path<'a>(path: &str, kinds: &'a [Value]) -> Option<&'a Value> {
    let segs: Vec<&str> = path.split('/').collect();
    kinds.iter().find(|k| segs.contains(&k["plural"].as_str().unwrap()))
}

/// Is this answer "there is no such route" (rather than an answer from a real route)?
fn not_served(r: &Resp) -> bool {
    if r.status == 405 {
        return true;
    }
    if r.status != 404 {
        return false;
    }
    let m = r.json()["message"].as_str().unwrap_or("").to_string();
    m.starts_with("no api route")
        || m.starts_with("unknown kind")
        || m.contains("are namespaced")
        || m.contains("are cluster-scoped")
}

#[test]
fn openapi_document_matches_the_router_and_the_answers() {
    let s = Server::start();
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // Without a token: 401 like everything but /healthz.
    s.call("GET", "/openapi.json", None, None).error(401, "Unauthorized");
    let kinds = kinds(&s);
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object().unwrap().keys().map(move |m| (p.clone(), m.to_uppercase()))
        })
        .collect();

    // A validator for a component schema, resolving refs inside the document.
    let component = |schema: &Value| {
        let mut root = schema.clone();
        root["components"] = doc["components"].clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        validator(&root)
    };
    // (The validator does resolve into the document: an empty error body is refused.)
    assert!(
        !errors(&component(&json!({ "$ref": "#/components/schemas/ApiError" })), &json!({}))
            .is_empty()
    );

    // Every documented route answers from a real handler, and its JSON answers (2xx and
    // errors) match the documented schema for their status.
    let mut order: Vec<&(String, String)> = documented.iter().collect();
    order.sort_by_key(|(p, m)| (m == "DELETE", p.clone())); // deletes last
    for (template, method) in order {
        let path = concrete(template);
        let kind = kind_of_path(template, &kinds);
        let body = match (method.as_str(), template.as_str(), kind) {
            ("PUT", _, Some(k)) => Some(probe_object(k["kind"].as_str().unwrap()).to_string()),
            ("POST", "/api/v1/apply", _) => Some(service("applied").to_string()),
            ("POST", "/api/v1/tokens", _) => {
                Some(json!({ "role": "viewer", "ttl": "1h" }).to_string())
            }
            _ => None,
        };
        let r = s.call(
            method,
            &path,
            Some(&s.token),
            body.as_deref().map(|b| ("application/json", b.as_bytes())),
        );
        assert!(
            !not_served(&r),
            "{method} {template} is documented but not served: {} {}",
            r.status,
            r.text()
        );
        let op = &paths[template.as_str()][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        let documented_status = responses.get(&r.status.to_string()).unwrap_or_else(|| {
            panic!(
                "{method} {template} answered {}, which is not documented ({:?}): {}",
                r.status,
                responses.keys().collect::<Vec<_>>(),
                r.text()
            )
        });
        let ct = r.header("content-type").unwrap_or("").to_string();
        if ct.starts_with("application/json") {
            let schema = &documented_status["content"]["application/json"]["schema"];
            assert!(
                !schema.is_null(),
                "{method} {template} {}: JSON answer without a JSON schema",
                r.status
            );
            let errs = errors(&component(schema), &r.json());
            assert!(
                errs.is_empty(),
                "{method} {template} {}: answer does not match its schema: {errs:?}\n{}",
                r.status,
                r.text()
            );
        } else {
            let media = ct.split(';').next().unwrap_or("").trim().to_string();
            assert!(
                documented_status["content"].get(&media).is_some(),
                "{method} {template} {}: content-type {ct} not documented",
                r.status
            );
        }
    }

    // Every route the router serves for a kind is in the document.
    let methods = ["GET", "PUT", "DELETE", "POST", "PATCH"];
    let templates = [
        "/api/v1/{plural}",
        "/api/v1/{plural}/{name}",
        "/api/v1/{plural}/{name}/status",
        "/api/v1/namespaces/{ns}/{plural}",
        "/api/v1/namespaces/{ns}/{plural}/{name}",
        "/api/v1/namespaces/{ns}/{plural}/{name}/status",
    ];
    for k in &kinds {
        let plural = k["plural"].as_str().unwrap();
        for t in templates {
            let template = t.replace("{plural}", plural);
            for m in methods {
                let body = probe_object(k["kind"].as_str().unwrap()).to_string();
                let r = s.call(
                    m,
                    &concrete(&template),
                    Some(&s.token),
                    Some(("application/json", body.as_bytes())),
                );
                if !not_served(&r) {
                    assert!(
                        documented.contains(&(template.clone(), m.to_string())),
                        "{m} {template} is served ({}) but not documented",
                        r.status
                    );
                }
            }
        }
    }
    for (p, m) in [
        ("/healthz", "GET"),
        ("/metrics", "GET"),
        ("/openapi.json", "GET"),
        ("/api/v1/kinds", "GET"),
        ("/api/v1/apply", "POST"),
        ("/api/v1/tokens", "GET"),
        ("/api/v1/tokens", "POST"),
        ("/api/v1/tokens/{id}", "DELETE"),
    ] {
        assert!(
            documented.contains(&(p.to_string(), m.to_string())),
            "{m} {p} missing from the document"
        );
    }

    // The kinds' schemas in the document agree with discovery's (same fixtures valid).
    for k in &kinds {
        let name = k["kind"].as_str().unwrap();
        let v = component(&json!({ "$ref": format!("#/components/schemas/{name}") }));
        let path = concrete(&if k["namespaced"].as_bool().unwrap() {
            format!("/api/v1/namespaces/{{ns}}/{}/{{name}}", k["plural"].as_str().unwrap())
        } else {
            format!("/api/v1/{}/{{name}}", k["plural"].as_str().unwrap())
        });
        let mut object = probe_object(name);
        let path = if name == "MeshConfig" {
            object["metadata"]["name"] = json!("default");
            path.replace("/probe", "/default")
        } else {
            path
        };
        let put = s.put_json(&path, &object);
        assert!(put.status == 200 || put.status == 201, "{}", put.text());
        let o = s.object(&path).unwrap();
        let errs = errors(&v, &o);
        assert!(errs.is_empty(), "{name}: {errs:?}");
    }
}

#[test]
fn last_writer_wins_never_conflicts_under_contention() {
    let s = Server::start();
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let addr = s.addr.clone();
            let token = s.token.clone();
            std::thread::spawn(move || {
                let mut conflicts = Vec::new();
                for i in 0..50 {
                    let body =
                        service_labeled("hot", json!({ "w": w.to_string(), "i": i.to_string() }))
                            .to_string();
                    let r = request(
                        &addr,
                        "PUT",
                        &svc_path("hot"),
                        Some(&token),
                        &[("Content-Type", "application/json")],
                        Some(body.as_bytes()),
                    )
                    .unwrap();
                    match r.status {
                        200 | 201 => {}
                        409 => conflicts.push(r.text()),
                        other => panic!("{other}: {}", r.text()),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        conflicts.is_empty(),
        "{} of 400 unconditional writes got 409, e.g. {}",
        conflicts.len(),
        conflicts[0]
    );
}

#[test]
fn following_one_object_answers_as_documented() {
    let s = Server::start();
    s.put_json(&svc_path("a"), &service("a"));
    let doc = s.get("/openapi.json").json();
    let op = &doc["paths"]["/api/v1/namespaces/{ns}/services/{name}"]["get"]["responses"]["200"]["content"];
    let mut root = op["application/json"]["schema"].clone();
    root["components"] = doc["components"].clone();
    let v = validator(&root);
    let r = s.get(&format!("{}?wait=100ms&resourceVersion=0", svc_path("a")));
    assert_eq!(r.status, 200);
    let errs = errors(&v, &r.json());
    assert!(errs.is_empty(), "long-poll answer does not match the documented schema: {errs:?}");
    assert!(
        op.get("application/x-ndjson").is_some(),
        "GET ?watch=true on one object streams NDJSON, which is not documented"
    );
}
