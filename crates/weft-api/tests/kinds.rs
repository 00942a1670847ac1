//! The resource model end to end: manifests in, canonical objects or field-precise errors out.

use serde_json::{Value, json};
use weft_api::codec::parse_documents;
use weft_api::kinds::{self, Resource};
use weft_api::{Autoscaler, Deployment, ErrorCode, Service};

const DESIGN_EXAMPLE: &str = include_str!("../../../examples/catalog.yaml");

fn normalize(v: Value) -> Result<Value, weft_api::ApiError> {
    kinds::normalize(v).map(|(_, v)| v)
}

fn deployment(spec: Value) -> Value {
    json!({"apiVersion": "weft/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec})
}

/// The error for an object, asserting it is a 422 naming `field`.
fn invalid(v: Value, field: &str) -> String {
    let e = normalize(v).expect_err("should be invalid");
    assert_eq!(e.code, ErrorCode::Invalid, "{e:?}");
    assert!(
        e.causes.iter().any(|c| c.field == field) || e.field.as_deref() == Some(field),
        "expected an error on {field}, got {e:?}"
    );
    e.message
}

#[test]
fn design_example_is_valid_and_defaults_are_written_out() {
    let docs = parse_documents(DESIGN_EXAMPLE).unwrap();
    assert_eq!(docs.len(), 3);
    let out: Vec<Value> = docs.into_iter().map(|d| normalize(d.value).unwrap()).collect();
    let d: Deployment = serde_json::from_value(out[0].clone()).unwrap();
    assert_eq!(d.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(d.spec.replicas, 2);
    assert_eq!(d.spec.template.resources.requests.cpu_millis(), 100);
    assert_eq!(d.spec.template.resources.limits.memory_bytes(), 256 * 1024 * 1024);
    assert_eq!(out[0]["spec"]["template"]["readiness"]["failureThreshold"], 3);
    let s: Service = serde_json::from_value(out[1].clone()).unwrap();
    assert_eq!(s.spec.traffic.timeout.as_std(), std::time::Duration::from_secs(2));
    assert_eq!(out[1]["spec"]["traffic"]["retries"]["on"], json!(["connect-failure", 503]));
    let a: Autoscaler = serde_json::from_value(out[2].clone()).unwrap();
    assert_eq!(a.spec.min_replicas, 0);
    assert_eq!(out[2]["spec"]["behavior"]["scaleUp"]["cooldown"], "3m");
    assert_eq!(out[2]["spec"]["behavior"]["scaleDown"]["stabilizationWindow"], "5m");
    // Normalizing is idempotent: what the server stores reads back to itself.
    for o in out {
        assert_eq!(normalize(o.clone()).unwrap(), o);
    }
}

#[test]
fn minimal_objects_get_every_default() {
    let d = normalize(deployment(json!({"template": {"command": ["app"]}}))).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"], json!({"maxSurge": 1, "maxUnavailable": 0}));
    assert_eq!(d["spec"]["template"]["terminationGracePeriod"], "10s");
    let a =
        normalize(json!({"apiVersion": "weft/v1", "kind": "Autoscaler", "metadata": {"name": "a"},
        "spec": {"target": {"name": "web"}, "maxReplicas": 5}}))
        .unwrap();
    assert_eq!(a["spec"]["minReplicas"], 1);
    assert_eq!(a["spec"]["metrics"], json!([{"type": "concurrency", "target": 100.0}]));
    assert_eq!(a["spec"]["behavior"]["panic"], json!({"window": "6s", "threshold": 2.0}));
    assert_eq!(a["spec"]["behavior"]["scaleToZeroGracePeriod"], "30s");
    let s =
        normalize(json!({"apiVersion": "weft/v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"selector": {"deployment": "web"}, "ports": [{"port": 80}]}}))
        .unwrap();
    assert_eq!(s["spec"]["traffic"]["loadBalancer"], "p2c-ewma");
    assert_eq!(s["spec"]["traffic"]["circuitBreaker"]["maxEjectionPercent"], 50);
    let n = normalize(
        json!({"apiVersion": "weft/v1", "kind": "Node", "metadata": {"name": "node-1.local"}}),
    )
    .unwrap();
    assert!(n["metadata"].get("namespace").is_none(), "nodes are cluster-scoped");
}

#[test]
fn limits_imply_requests() {
    let d = normalize(deployment(json!({"template": {"command": ["a"], "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}})))
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["resources"]["requests"],
        json!({"cpu": "500m", "memory": "1Gi"})
    );
}

#[test]
fn quantities_and_durations_are_canonical() {
    let d = normalize(deployment(json!({"template": {"command": ["a"],
        "resources": {"requests": {"cpu": 0.25, "memory": "1.5Gi"}}, "terminationGracePeriod": "90s"}})))
    .unwrap();
    assert_eq!(
        d["spec"]["template"]["resources"]["requests"],
        json!({"cpu": "250m", "memory": "1536Mi"})
    );
    assert_eq!(d["spec"]["template"]["terminationGracePeriod"], "1m30s");
}

#[test]
fn every_rule_names_its_field() {
    invalid(deployment(json!({"replicas": -1, "template": {"command": ["a"]}})), "spec.replicas");
    invalid(
        deployment(json!({"replicas": 20000, "template": {"command": ["a"]}})),
        "spec.replicas",
    );
    invalid(deployment(json!({"template": {"command": []}})), "spec.template.command");
    invalid(
        deployment(json!({"template": {"command": ["a"], "identity": "Not_A_Label"}})),
        "spec.template.identity",
    );
    invalid(deployment(json!({"template": {"command": ["  "]}})), "spec.template.command[0]");
    invalid(
        deployment(json!({"template": {"command": ["a"], "env": {"1BAD": "x"}}})),
        "spec.template.env[\"1BAD\"]",
    );
    invalid(
        deployment(
            json!({"template": {"command": ["a"], "ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}}),
        ),
        "spec.template.ports[1].name",
    );
    invalid(
        deployment(json!({"template": {"command": ["a"], "ports": [{"name": "h", "port": 0}]}})),
        "spec.template.ports[0].port",
    );
    invalid(
        deployment(
            json!({"template": {"command": ["a"], "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}),
        ),
        "spec.template.resources.requests.cpu",
    );
    invalid(
        deployment(json!({"template": {"command": ["a"], "readiness": {"periodSeconds": 1}}})),
        "spec.template.readiness",
    );
    invalid(
        deployment(
            json!({"template": {"command": ["a"], "ports": [{"name": "http", "port": 80}], "readiness": {"http": {"path": "/x", "port": "grpc"}}}}),
        ),
        "spec.template.readiness.http.port",
    );
    invalid(
        deployment(
            json!({"template": {"command": ["a"], "ports": [{"name": "http", "port": 80}], "liveness": {"http": {"path": "nope"}}}}),
        ),
        "spec.template.liveness.http.path",
    );
    invalid(
        deployment(
            json!({"template": {"command": ["a"]}, "strategy": {"maxSurge": 0, "maxUnavailable": 0}}),
        ),
        "spec.strategy",
    );
    invalid(
        deployment(
            json!({"template": {"command": ["a"], "upstreams": [{"service": "x", "localPort": 0}]}}),
        ),
        "spec.template.upstreams[0].localPort",
    );
    let svc = |spec: Value| json!({"apiVersion": "weft/v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec});
    invalid(svc(json!({"selector": {}, "ports": [{"port": 80}]})), "spec.selector");
    invalid(svc(json!({"selector": {"a": "b"}, "ports": []})), "spec.ports");
    invalid(
        svc(json!({"selector": {"a": "b"}, "ports": [{"port": 80}, {"port": 81}]})),
        "spec.ports[0].name",
    );
    invalid(
        svc(
            json!({"selector": {"a": "b"}, "ports": [{"port": 80}], "traffic": {"loadBalancer": "ring-hash"}}),
        ),
        "spec.traffic.hashHeader",
    );
    invalid(
        svc(
            json!({"selector": {"a": "b"}, "ports": [{"port": 80}], "traffic": {"timeout": "1s", "perTryTimeout": "2s"}}),
        ),
        "spec.traffic.perTryTimeout",
    );
    invalid(
        svc(
            json!({"selector": {"a": "b"}, "ports": [{"port": 80}], "traffic": {"rateLimit": {"requestsPerSecond": 0}}}),
        ),
        "spec.traffic.rateLimit.requestsPerSecond",
    );
    invalid(
        svc(
            json!({"selector": {"a": "b"}, "ports": [{"port": 80}], "traffic": {"retries": {"attempts": 11}}}),
        ),
        "spec.traffic.retries.attempts",
    );
    let asc = |spec: Value| json!({"apiVersion": "weft/v1", "kind": "Autoscaler", "metadata": {"name": "a"}, "spec": spec});
    let m = invalid(
        asc(json!({"target": {"name": "web"}, "minReplicas": 5, "maxReplicas": 2})),
        "spec.minReplicas",
    );
    assert!(m.contains("5 is more than maxReplicas 2"), "{m}");
    invalid(
        asc(json!({"target": {"name": "web"}, "maxReplicas": 2, "metrics": [{"type": "rps"}]})),
        "spec.metrics[0].target",
    );
    invalid(
        asc(
            json!({"target": {"name": "web"}, "maxReplicas": 2, "metrics": [{"type": "rps", "target": 0}]}),
        ),
        "spec.metrics[0].target",
    );
    invalid(
        asc(
            json!({"target": {"name": "web"}, "maxReplicas": 2, "metrics": [{"type": "cpu", "target": 5}]}),
        ),
        "spec.metrics[0].targetUtilization",
    );
    invalid(
        asc(json!({"target": {"name": "web"}, "maxReplicas": 2, "metrics": []})),
        "spec.metrics",
    );
    invalid(
        asc(json!({"target": {"kind": "Service", "name": "web"}, "maxReplicas": 2})),
        "spec.target.kind",
    );
    invalid(
        asc(
            json!({"target": {"name": "web"}, "maxReplicas": 2, "behavior": {"panic": {"threshold": 1.0}}}),
        ),
        "spec.behavior.panic.threshold",
    );
    invalid(
        asc(json!({"target": {"name": "web"}, "maxReplicas": 2, "behavior": {"tolerance": 1.5}})),
        "spec.behavior.tolerance",
    );
}

#[test]
fn metadata_rules() {
    let d = |meta: Value| json!({"apiVersion": "weft/v1", "kind": "Deployment", "metadata": meta, "spec": {"template": {"command": ["a"]}}});
    invalid(d(json!({"name": "Bad_Name"})), "metadata.name");
    invalid(d(json!({"name": "a".repeat(64)})), "metadata.name");
    invalid(d(json!({"name": ""})), "metadata.name");
    invalid(d(json!({"name": "ok", "namespace": "Not-OK"})), "metadata.namespace");
    invalid(d(json!({"name": "ok", "labels": {"-x": "y"}})), "metadata.labels[\"-x\"]");
    invalid(d(json!({"name": "ok", "resourceVersion": "abc"})), "metadata.resourceVersion");
    let missing = invalid(d(json!({})), "metadata.name");
    assert_eq!(missing, "metadata.name: is required");
    invalid(
        json!({"apiVersion": "weft/v1", "kind": "Node", "metadata": {"name": "n", "namespace": "default"}}),
        "metadata.namespace",
    );
    // a resourceVersion may be a number or a string
    assert_eq!(
        normalize(d(json!({"name": "ok", "resourceVersion": 5}))).unwrap()["metadata"]["resourceVersion"],
        "5"
    );
}

#[test]
fn decoding_errors_name_the_path() {
    let e =
        invalid(deployment(json!({"replica": 2, "template": {"command": ["a"]}})), "spec.replica");
    assert!(e.contains("unknown field `replica`"), "{e}");
    invalid(
        deployment(
            json!({"template": {"command": ["a"], "resources": {"requests": {"cpu": "12Xi"}}}}),
        ),
        "spec.template.resources.requests.cpu",
    );
    invalid(
        deployment(json!({"template": {"command": ["a"], "resources": {"requests": {"gpu": 1}}}})),
        "spec.template.resources.requests.gpu",
    );
    invalid(
        deployment(json!({"template": {"command": ["a"], "terminationGracePeriod": 5}})),
        "spec.template.terminationGracePeriod",
    );
    let e = invalid(
        deployment(json!({"template": {"command": ["a"], "terminationGracePeriod": "3d"}})),
        "spec.template.terminationGracePeriod",
    );
    assert!(e.contains("days"), "{e}");
    invalid(
        deployment(json!({"replicas": "two", "template": {"command": ["a"]}})),
        "spec.replicas",
    );
    invalid(deployment(json!({})), "spec.template");
    invalid(
        json!({"apiVersion": "weft/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
        "spec",
    );
}

#[test]
fn kind_and_version_checks() {
    let e = normalize(json!({"kind": "Deployment"})).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("apiVersion"));
    let e = normalize(json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap_err();
    assert!(e.message.contains("use weft/v1"), "{}", e.message);
    let e = normalize(json!({"apiVersion": "weft/v1", "kind": "deployment"})).unwrap_err();
    assert!(e.message.contains("did you mean Deployment"), "{}", e.message);
    let e = normalize(json!({"apiVersion": "weft/v1", "kind": "Pod"})).unwrap_err();
    assert!(e.message.contains("known kinds"), "{}", e.message);
}

#[test]
fn lookup_by_every_name() {
    for (name, kind) in [
        ("deploy", "Deployment"),
        ("Deployments", "Deployment"),
        ("svc", "Service"),
        ("as", "Autoscaler"),
        ("hpa", "Autoscaler"),
        ("inst", "Instance"),
        ("instances", "Instance"),
        ("ep", "Endpoints"),
        ("no", "Node"),
        ("node", "Node"),
        ("authz", "AuthorizationPolicy"),
        ("ap", "AuthorizationPolicy"),
        ("AuthorizationPolicies", "AuthorizationPolicy"),
        ("mesh", "MeshConfig"),
        ("meshconfig", "MeshConfig"),
    ] {
        assert_eq!(kinds::lookup(name).map(|k| k.kind), Some(kind), "{name}");
    }
    assert!(kinds::lookup("pods").is_none());
    assert_eq!(Deployment::info().plural, "deployments");
}

#[test]
fn schemas_forbid_unknown_fields() {
    let mut g = schemars::SchemaGenerator::default();
    for k in kinds::KINDS {
        let s = k.schema(&mut g).to_value();
        assert_eq!(s["additionalProperties"], false, "{}", k.kind);
        assert_eq!(s["properties"]["kind"]["const"], k.kind);
    }
}
