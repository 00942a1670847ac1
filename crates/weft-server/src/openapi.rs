//! The OpenAPI 3.1 document of the whole api (`GET /openapi.json`).
//!
//! Schemas come from the very types the server decodes with (schemars derives them from the
//! serde definitions, unknown fields forbidden), so the document cannot drift from what the
//! server accepts. Paths are written out here, next to nothing else, and a test checks them
//! against the router.

use std::sync::OnceLock;

use bytes::Bytes;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use weft_api::wire::{
    ApplyResponse, CreatedToken, KindList, ListMeta, PollResponse, TokenInfo, TokenRequest,
    WatchEvent,
};
use weft_api::{API_VERSION, ApiError, KindInfo, kinds};

/// The document, built once.
pub fn document() -> &'static Bytes {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    DOC.get_or_init(|| Bytes::from(serde_json::to_vec(&build()).unwrap_or_default()))
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error_responses(codes: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    for code in codes {
        let what = match code {
            400 => "Malformed request (syntax, query parameters)",
            401 => "Missing, unknown, expired or revoked token",
            403 => "The token's role may not do this",
            404 => "No such object or kind",
            409 => "Stale resourceVersion",
            410 => "resourceVersion older than the history kept: list again",
            413 => "Body larger than the server accepts",
            415 => "Body in a format the server does not read",
            422 => "Invalid object (unknown field, wrong type, value out of range)",
            503 => "Unavailable (e.g. the agent holding the logs cannot be reached)",
            _ => "Error",
        };
        m.insert(
            code.to_string(),
            json!({ "description": what, "content": { "application/json": { "schema": schema_ref("ApiError") } } }),
        );
    }
    m
}

fn with_errors(mut ok: Map<String, Value>, codes: &[u16]) -> Value {
    ok.extend(error_responses(codes));
    Value::Object(ok)
}

fn param(name: &str, location: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": location, "required": location == "path", "schema": schema, "description": description })
}

fn dns_label() -> Value {
    json!({ "type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" })
}

fn kind_paths(kind: &KindInfo, paths: &mut Map<String, Value>) {
    let k = kind.kind;
    let list_schema = format!("{k}List");
    let ns_param = param("ns", "path", dns_label(), "Namespace");
    let name_param = param(
        "name",
        "path",
        json!({ "type": "string", "maxLength": 253, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" }),
        "Object name",
    );
    let collection_params = vec![
        param(
            "watch",
            "query",
            json!({ "type": "boolean" }),
            "Stream changes as NDJSON watch events (push)",
        ),
        param(
            "wait",
            "query",
            json!({ "type": "string" }),
            "Long-poll up to this long (e.g. 30s) for events after resourceVersion (pull)",
        ),
        param(
            "resourceVersion",
            "query",
            json!({ "type": "string", "pattern": "^[0-9]*$" }),
            "With watch or wait: events after this revision",
        ),
        param("labelSelector", "query", json!({ "type": "string" }), "e.g. app=web,tier!=db"),
        param(
            "timeoutSeconds",
            "query",
            json!({ "type": "integer", "minimum": 0 }),
            "With watch: end the stream after this long",
        ),
        param(
            "limit",
            "query",
            json!({ "type": "integer", "minimum": 1 }),
            "With wait: most events in one batch",
        ),
    ];
    let collection_get = |params: Vec<Value>| {
        json!({
            "get": {
                "summary": format!("List, watch (watch=true) or long-poll (wait=) {}", kind.plural),
                "tags": [k],
                "parameters": params,
                "responses": with_errors(
                    Map::from_iter([(
                        "200".to_string(),
                        json!({
                            "description": "A list; with wait= a batch of events; with watch=true a stream of events",
                            "content": {
                                "application/json": { "schema": { "anyOf": [schema_ref(&list_schema), schema_ref("PollResponse")] } },
                                "application/x-ndjson": { "schema": schema_ref("WatchEvent") }
                            }
                        }),
                    )]),
                    &[400, 401, 403, 404, 410],
                ),
            }
        })
    };
    let object_body = json!({
        "required": true,
        "content": {
            "application/json": { "schema": schema_ref(k) },
            "application/yaml": { "schema": { "type": "string" } }
        }
    });
    let object_ok = |code: &str, what: &str| {
        (
            code.to_string(),
            json!({ "description": what, "content": { "application/json": { "schema": schema_ref(k) } } }),
        )
    };
    let item = |params: Vec<Value>| {
        let mut read_params = params.clone();
        read_params
            .extend(collection_params.iter().filter(|p| p["name"] != "labelSelector").cloned());
        let mut put_params = params.clone();
        put_params.push(param(
            "dryRun",
            "query",
            json!({ "type": "boolean" }),
            "Validate and show the result without writing",
        ));
        let mut delete_params = params.clone();
        delete_params.push(param(
            "resourceVersion",
            "query",
            json!({ "type": "string", "pattern": "^[0-9]*$" }),
            "Delete only if the object is at this revision",
        ));
        json!({
            "get": {
                "summary": format!("Read a {} (watch=true / wait= to follow it)", kind.singular),
                "tags": [k],
                "parameters": read_params,
                "responses": with_errors(
                    Map::from_iter([(
                        "200".to_string(),
                        json!({
                            "description": "The object; with wait= a batch of its events; with watch=true a stream of them",
                            "content": {
                                "application/json": { "schema": { "anyOf": [schema_ref(k), schema_ref("PollResponse")] } },
                                "application/x-ndjson": { "schema": schema_ref("WatchEvent") }
                            }
                        }),
                    )]),
                    &[400, 401, 403, 404, 410],
                ),
            },
            "put": {
                "summary": format!("Create or replace a {} (status is kept)", kind.singular),
                "tags": [k],
                "parameters": put_params,
                "requestBody": object_body,
                "responses": with_errors(
                    Map::from_iter([object_ok("200", "Updated (or unchanged)"), object_ok("201", "Created")]),
                    &[400, 401, 403, 404, 409, 413, 415, 422],
                ),
            },
            "delete": {
                "summary": format!("Delete a {}", kind.singular),
                "tags": [k],
                "parameters": delete_params,
                "responses": with_errors(Map::from_iter([object_ok("200", "The object as it was")]), &[400, 401, 403, 404, 409]),
            }
        })
    };
    let status = |params: Vec<Value>| {
        let mut put_params = params;
        put_params.push(param(
            "dryRun",
            "query",
            json!({ "type": "boolean" }),
            "Validate without writing",
        ));
        json!({
            "put": {
                "summary": format!("Replace the status of a {} (system writers)", kind.singular),
                "tags": [k],
                "parameters": put_params,
                "requestBody": object_body,
                "responses": with_errors(Map::from_iter([object_ok("200", "The object")]), &[400, 401, 403, 404, 409, 413, 415, 422]),
            }
        })
    };
    let p = kind.plural;
    if kind.namespaced {
        let mut ns_collection = vec![ns_param.clone()];
        ns_collection.extend(collection_params.clone());
        paths.insert(format!("/api/v1/namespaces/{{ns}}/{p}"), collection_get(ns_collection));
        paths.insert(
            format!("/api/v1/namespaces/{{ns}}/{p}/{{name}}"),
            item(vec![ns_param.clone(), name_param.clone()]),
        );
        paths.insert(
            format!("/api/v1/namespaces/{{ns}}/{p}/{{name}}/status"),
            status(vec![ns_param, name_param]),
        );
        paths.insert(format!("/api/v1/{p}"), collection_get(collection_params.clone()));
    } else {
        paths.insert(format!("/api/v1/{p}"), collection_get(collection_params.clone()));
        paths.insert(format!("/api/v1/{p}/{{name}}"), item(vec![name_param.clone()]));
        paths.insert(format!("/api/v1/{p}/{{name}}/status"), status(vec![name_param]));
    }
}

fn build() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut generator = settings.into_generator();
    for kind in kinds::KINDS {
        kind.subschema(&mut generator);
    }
    generator.subschema_for::<ApiError>();
    generator.subschema_for::<WatchEvent>();
    generator.subschema_for::<PollResponse>();
    generator.subschema_for::<ListMeta>();
    generator.subschema_for::<ApplyResponse>();
    generator.subschema_for::<KindList>();
    generator.subschema_for::<TokenRequest>();
    generator.subschema_for::<TokenInfo>();
    generator.subschema_for::<CreatedToken>();
    let mut schemas = generator.take_definitions(true);
    for kind in kinds::KINDS {
        if let Some(props) = schemas
            .get_mut(kind.kind)
            .and_then(|s| s.get_mut("properties"))
            .and_then(Value::as_object_mut)
        {
            props.insert("apiVersion".into(), json!({ "const": API_VERSION }));
            props.insert("kind".into(), json!({ "const": kind.kind }));
        }
        schemas.insert(
            format!("{}List", kind.kind),
            json!({
                "type": "object",
                "required": ["apiVersion", "kind", "metadata", "items"],
                "properties": {
                    "apiVersion": { "const": API_VERSION },
                    "kind": { "const": format!("{}List", kind.kind) },
                    "metadata": schema_ref("ListMeta"),
                    "items": { "type": "array", "items": schema_ref(kind.kind) }
                }
            }),
        );
    }
    let any_object =
        json!({ "oneOf": kinds::KINDS.iter().map(|k| schema_ref(k.kind)).collect::<Vec<_>>() });
    schemas.insert(
        "ApplyRequest".into(),
        json!({
            "description": "One object, an array of objects, or a List with items",
            "anyOf": [
                any_object,
                { "type": "array", "items": any_object },
                { "type": "object", "required": ["kind", "items"], "properties": { "kind": { "const": "List" }, "apiVersion": { "type": "string" }, "items": { "type": "array", "items": any_object } } }
            ]
        }),
    );

    let mut paths = Map::new();
    for kind in kinds::KINDS {
        kind_paths(kind, &mut paths);
    }
    let json_ok = |schema: &str, what: &str| {
        Map::from_iter([(
            "200".to_string(),
            json!({ "description": what, "content": { "application/json": { "schema": schema_ref(schema) } } }),
        )])
    };
    paths.insert(
        "/api/v1/apply".into(),
        json!({ "post": {
            "summary": "Create or update several objects, all or nothing",
            "parameters": [
                param("namespace", "query", dns_label(), "Namespace for objects that name none"),
                param("dryRun", "query", json!({ "type": "boolean" }), "Validate and report without writing")
            ],
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": schema_ref("ApplyRequest") },
                "application/yaml": { "schema": { "type": "string", "description": "Multi-document YAML" } }
            } },
            "responses": with_errors(json_ok("ApplyResponse", "What was done to each object"), &[400, 401, 403, 409, 413, 415, 422]),
        } }),
    );
    paths.insert(
        "/api/v1/namespaces/{ns}/instances/{name}/log".into(),
        json!({ "get": {
            "summary": "An instance's logs, from the agent that runs it",
            "parameters": [
                param("ns", "path", dns_label(), "Namespace"),
                param("name", "path", json!({ "type": "string" }), "Instance name"),
                param("follow", "query", json!({ "type": "boolean" }), "Keep streaming new lines"),
                param("tail", "query", json!({ "type": "integer", "minimum": 0 }), "Only the last N lines"),
                param("sidecar", "query", json!({ "type": "boolean" }), "The sidecar's log instead of the app's")
            ],
            "responses": with_errors(
                Map::from_iter([("200".to_string(), json!({ "description": "Log lines", "content": { "text/plain": { "schema": { "type": "string" } } } }))]),
                &[400, 401, 403, 404, 503],
            ),
        } }),
    );
    paths.insert(
        "/api/v1/namespaces/{ns}/services/{name}/activate".into(),
        json!({ "post": {
            "summary": "Ask for a service at zero instances to be scaled up (proxies holding a request call this)",
            "parameters": [
                param("ns", "path", dns_label(), "Namespace"),
                param("name", "path", json!({ "type": "string" }), "Service name")
            ],
            "responses": with_errors(
                Map::from_iter([("202".to_string(), json!({ "description": "Recorded (or an earlier request under a second old stands)", "content": { "application/json": { "schema": {
                    "type": "object",
                    "required": ["namespace", "service", "requestedAt", "recorded"],
                    "properties": {
                        "namespace": { "type": "string" },
                        "service": { "type": "string" },
                        "requestedAt": { "type": "string", "format": "date-time" },
                        "recorded": { "type": "boolean" }
                    }
                } } } }))]),
                &[400, 401, 403, 404, 409],
            ),
        } }),
    );
    paths.insert("/api/v1/dashboard/graph".into(), dashboard_graph());
    paths.insert(
        "/api/v1/certificates".into(),
        json!({ "post": {
            "summary": "Sign a sidecar's CSR for its instance's workload identity spiffe://<trust-domain>/ns/<ns>/svc/<deployment> (proxy and admin tokens)",
            "requestBody": { "required": true, "content": { "application/json": { "schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["csr"],
                "properties": {
                    "csr": { "type": "string", "description": "PEM PKCS#10 request with the SPIFFE ID as its one URI SAN" },
                    "instance": { "type": "string" },
                    "namespace": { "type": "string" },
                    "gateway": { "type": "boolean" }
                }
            } } } },
            "responses": with_errors(
                Map::from_iter([("201".to_string(), json!({ "description": "The certificate chain (leaf then root, PEM)", "content": { "application/json": { "schema": {
                    "type": "object",
                    "required": ["certificateChain", "caCertificate", "identity", "notAfter", "serial"],
                    "properties": {
                        "certificateChain": { "type": "string" },
                        "caCertificate": { "type": "string" },
                        "identity": { "type": "string" },
                        "notAfter": { "type": "string", "format": "date-time" },
                        "serial": { "type": "string" }
                    }
                } } } }))]),
                &[400, 401, 403, 404, 413, 415, 422, 503],
            ),
        } }),
    );
    paths.insert(
        "/api/v1/kinds".into(),
        json!({ "get": { "summary": "Discovery: the kinds and their JSON schemas", "responses": with_errors(json_ok("KindList", "The kinds"), &[401]) } }),
    );
    paths.insert(
        "/api/v1/tokens".into(),
        json!({
            "get": { "summary": "List tokens (never their secrets)", "responses": with_errors(
                Map::from_iter([("200".to_string(), json!({ "description": "Tokens", "content": { "application/json": { "schema": { "type": "array", "items": schema_ref("TokenInfo") } } } }))]),
                &[401, 403]) },
            "post": { "summary": "Create a token; the secret is shown only here",
                "requestBody": { "required": true, "content": { "application/json": { "schema": schema_ref("TokenRequest") } } },
                "responses": with_errors(
                    Map::from_iter([("201".to_string(), json!({ "description": "The new token", "content": { "application/json": { "schema": schema_ref("CreatedToken") } } }))]),
                    &[400, 401, 403, 413, 415, 422]) }
        }),
    );
    paths.insert(
        "/api/v1/tokens/{id}".into(),
        json!({ "delete": {
            "summary": "Revoke a token (by id or by the token itself)",
            "parameters": [param("id", "path", json!({ "type": "string" }), "Token id")],
            "responses": with_errors(json_ok("TokenInfo", "The revoked token"), &[401, 403, 404]),
        } }),
    );
    paths.insert(
        "/healthz".into(),
        json!({ "get": { "summary": "200 once the server serves; no token needed", "security": [],
            "responses": { "200": { "description": "ok", "content": { "text/plain": { "schema": { "type": "string" } } } } } } }),
    );
    paths.insert(
        "/metrics".into(),
        json!({ "get": { "summary": "Prometheus metrics of the control plane",
            "responses": with_errors(Map::from_iter([("200".to_string(), json!({ "description": "OpenMetrics text", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } }))]), &[401]) } }),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({ "get": { "summary": "This document",
            "responses": with_errors(Map::from_iter([("200".to_string(), json!({ "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } }))]), &[401]) } }),
    );

    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "weft api",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Declarative api of weft: objects, watches (push) and long-polls (pull). Every request but /healthz needs a bearer token."
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

/// Every path template in the document (for checking it against the router).
pub fn paths() -> Vec<String> {
    serde_json::from_slice::<Value>(document())
        .ok()
        .and_then(|d| {
            d.get("paths").and_then(Value::as_object).map(|p| p.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// `GET /api/v1/dashboard/graph` (see `crate::dashboard`).
fn dashboard_graph() -> Value {
    let num = json!({ "type": "number" });
    let opt = json!({ "type": ["number", "null"] });
    let figures = |extra: Value| {
        let mut props = json!({
            "rps": num, "successRate": opt, "p99Ms": opt, "inFlight": num
        });
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        props
    };
    let node = json!({
        "type": "object",
        "required": ["id", "namespace", "name", "kind", "instances", "ready", "rps", "successRate", "p99Ms", "inFlight"],
        "properties": figures(json!({
            "id": { "type": "string", "description": "namespace/name, or ingress" },
            "namespace": { "type": "string" },
            "name": { "type": "string" },
            "kind": { "enum": ["service", "ingress"] },
            "instances": { "type": "integer", "minimum": 0 },
            "ready": { "type": "integer", "minimum": 0 }
        }))
    });
    let edge = json!({
        "type": "object",
        "required": ["from", "to", "rps", "successRate", "p99Ms", "inFlight"],
        "properties": figures(json!({
            "from": { "type": "string" },
            "to": { "type": "string" }
        }))
    });
    json!({ "get": {
        "summary": "The service graph for the dashboard: services, and calls between them with requests/s, success rate (non-5xx share) and p99 over the last few seconds, from the sidecars' metrics",
        "responses": with_errors(
            Map::from_iter([("200".to_string(), json!({ "description": "The graph", "content": { "application/json": { "schema": {
                "type": "object",
                "required": ["at", "windowSeconds", "scraped", "failed", "nodes", "edges"],
                "properties": {
                    "at": { "type": "string", "format": "date-time" },
                    "windowSeconds": { "type": "number", "minimum": 0 },
                    "scraped": { "type": "integer", "minimum": 0 },
                    "failed": { "type": "integer", "minimum": 0 },
                    "nodes": { "type": "array", "items": node },
                    "edges": { "type": "array", "items": edge }
                }
            } } } }))]),
            &[400, 401, 403],
        ),
    } })
}
