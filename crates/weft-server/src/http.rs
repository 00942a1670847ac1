//! Routes and handlers: HTTP in, [`crate::objects`] and [`crate::watch`] calls, HTTP out.
//!
//! Every handler takes a [`Caller`] (so no route is reachable without a valid token, except
//! `/healthz`), checks the role for what it does, and answers errors as JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use weft_api::codec;
use weft_api::selector::Selector;
use weft_api::wire::{ApplyAction, KindDescription, KindList, Role, TokenRequest};
use weft_api::{ApiError, ErrorCode, KindInfo, kinds};

use crate::auth::{Action, Binding, Caller};
use crate::cache::Filter;
use crate::error::{Error, Result};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::objects::{self, ApplyItem, WriteMode};
use crate::state::AppState;
use crate::{openapi, watch};

/// The api's router, with metrics and JSON fallbacks.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_doc))
        .route("/api/v1/kinds", get(kinds_doc))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/certificates", post(crate::ca::create_certificate))
        .route("/api/v1/namespaces/{ns}/{plural}", get(list_namespaced))
        .route(
            "/api/v1/namespaces/{ns}/{plural}/{name}",
            get(get_one).put(put_spec).delete(delete_one),
        )
        .route("/api/v1/namespaces/{ns}/{plural}/{name}/status", put(put_status))
        .route("/api/v1/namespaces/{ns}/instances/{name}/log", get(crate::logs::instance_log))
        .route(
            "/api/v1/namespaces/{ns}/services/{name}/activate",
            post(crate::activate::activate_service),
        )
        .route("/api/v1/{plural}", get(list_all))
        .route("/api/v1/{plural}/{name}", get(get_one).put(put_spec).delete(delete_one))
        .route("/api/v1/{plural}/{name}/status", put(put_status))
        .merge(crate::dashboard::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), crate::audit::layer))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

async fn record(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| crate::metrics::intern(p.as_str()));
    let method = match *req.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    app.metrics
        .request_duration
        .get_or_create(&RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    app.metrics
        .requests
        .get_or_create(&RequestLabels { method, route, code: resp.status().as_u16() })
        .inc();
    resp
}

async fn not_found(uri: axum::http::Uri) -> Error {
    ApiError::not_found(format!("no api route {} (see /openapi.json)", uri.path())).into()
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Error {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
        .into()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(app): State<Arc<AppState>>, caller: Caller) -> Result<Response> {
    caller.require(Action::Discover)?;
    app.metrics.store_revision.set(app.cache.revision() as i64);
    app.metrics.watch_cache_events.set(app.cache.len() as i64);
    let mut resp = app.extra_metrics.append_to(app.metrics.encode()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}

async fn openapi_doc(caller: Caller) -> Result<Response> {
    caller.require(Action::Discover)?;
    Ok(json_response(StatusCode::OK, openapi::document().clone()))
}

async fn kinds_doc(caller: Caller) -> Result<Response> {
    caller.require(Action::Discover)?;
    let mut generator = schemars::SchemaGenerator::default();
    let kinds = kinds::KINDS
        .iter()
        .map(|k| KindDescription {
            kind: k.kind.to_string(),
            plural: k.plural.to_string(),
            singular: k.singular.to_string(),
            short_names: k.short.iter().map(|s| s.to_string()).collect(),
            namespaced: k.namespaced,
            system: k.system,
            schema: k.schema(&mut generator).to_value(),
        })
        .collect();
    Ok(json_body(StatusCode::OK, &KindList { kinds }))
}

// ---- query parameters ---------------------------------------------------------------------

/// Query parameters, checked strictly: a misspelt parameter is an error, not silently ignored.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params> {
        let mut map = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k)?;
            let v = percent_decode(v)?;
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k:?} (this route takes: {})",
                    if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
                ))
                .into());
            }
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    fn flag(&self, name: &str) -> Result<bool> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(other) => {
                Err(ApiError::bad_request(format!("{name}={other:?}: expected true or false"))
                    .into())
            }
        }
    }

    fn revision(&self) -> Result<Option<u64>> {
        match self.0.get("resourceVersion").map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("resourceVersion={v:?} is not a revision number"))
                    .into()
            }),
        }
    }

    fn selector(&self) -> Result<Selector> {
        Ok(Selector::parse(self.0.get("labelSelector").map_or("", String::as_str))?)
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<weft_api::duration::Duration>()
                .map(|d| Some(d.as_std()))
                .map_err(|e| ApiError::bad_request(format!("{name}: {e}")).into()),
        }
    }

    fn number(&self, name: &str) -> Result<Option<u64>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name}={v:?} is not a whole number")).into()
            }),
        }
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => out.push(b),
                    None => {
                        return Err(ApiError::bad_request(
                            "malformed percent-encoding in the query",
                        )
                        .into());
                    }
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("the query is not UTF-8").into())
}

// ---- bodies -------------------------------------------------------------------------------

/// Reads a request body up to the server's limit (413 past it) as text.
pub(crate) async fn read_body(app: &AppState, headers: &HeaderMap, body: Body) -> Result<String> {
    let limit = app.limits.max_body;
    let too_large = || {
        Error(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the server's limit of {limit} bytes"),
        ))
    };
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let ok = matches!(
            mime.as_str(),
            "application/json"
                | "application/yaml"
                | "application/x-yaml"
                | "text/yaml"
                | "text/x-yaml"
                | "text/plain"
                | "application/octet-stream"
                | ""
        );
        if !ok {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("cannot read a {mime} body; send application/json or application/yaml"),
            )
            .into());
        }
    }
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large()
            } else {
                Error(ApiError::bad_request(format!("reading the request body: {e}")))
            }
        })?
        .to_bytes();
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8 text").into())
}

/// Exactly one object from a body.
fn single_object(text: &str) -> Result<Value> {
    let mut docs = codec::parse_documents(text)?;
    match docs.len() {
        1 => Ok(docs.remove(0).value),
        0 => Err(ApiError::bad_request("the request body holds no object").into()),
        n => Err(ApiError::bad_request(format!(
            "the request body holds {n} objects; send one here, or several to /api/v1/apply"
        ))
        .into()),
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(crate) fn json_body<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    json_response(status, Bytes::from(serde_json::to_vec(value).unwrap_or_default()))
}

// ---- objects ------------------------------------------------------------------------------

/// The kind named by a path segment, which must be a plural.
fn kind_in_path(plural: &str) -> Result<&'static KindInfo> {
    match kinds::by_plural(plural) {
        Some(k) => Ok(k),
        None => {
            let hint = match kinds::lookup(plural) {
                Some(k) => format!(" (paths use the plural: {})", k.plural),
                None => format!(
                    " (known: {})",
                    kinds::KINDS.iter().map(|k| k.plural).collect::<Vec<_>>().join(", ")
                ),
            };
            Err(ApiError::not_found(format!("unknown kind {plural:?}{hint}")).into())
        }
    }
}

fn namespaced(plural: &str) -> Result<&'static KindInfo> {
    let kind = kind_in_path(plural)?;
    if !kind.namespaced {
        return Err(ApiError::not_found(format!(
            "{} are cluster-scoped: use /api/v1/{}/…",
            kind.plural, kind.plural
        ))
        .into());
    }
    Ok(kind)
}

fn cluster_scoped(plural: &str) -> Result<&'static KindInfo> {
    let kind = kind_in_path(plural)?;
    if kind.namespaced {
        return Err(ApiError::not_found(format!(
            "{} are namespaced: use /api/v1/namespaces/<namespace>/{}/…",
            kind.plural, kind.plural
        ))
        .into());
    }
    Ok(kind)
}

fn check_namespace(ns: &str) -> Result<()> {
    weft_api::validate::dns_label(ns)
        .map_err(|e| ApiError::bad_request(format!("namespace in the path: {e}")).into())
}

async fn list_namespaced(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Path((ns, plural)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Response> {
    let kind = namespaced(&plural)?;
    check_namespace(&ns)?;
    collection(app, caller, kind, Some(ns), None, uri.query()).await
}

async fn list_all(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Path(plural): Path<String>,
    uri: axum::http::Uri,
) -> Result<Response> {
    let kind = kind_in_path(&plural)?;
    collection(app, caller, kind, None, None, uri.query()).await
}

/// GET on a collection (or, with `name`, a watch/poll of one object): list, watch or poll.
async fn collection(
    app: Arc<AppState>,
    caller: Caller,
    kind: &'static KindInfo,
    namespace: Option<String>,
    name: Option<String>,
    query: Option<&str>,
) -> Result<Response> {
    caller.require(Action::Read(kind))?;
    let params = Params::parse(
        query,
        &["watch", "wait", "resourceVersion", "labelSelector", "timeoutSeconds", "limit"],
    )?;
    let selector = params.selector()?;
    let watching = params.flag("watch")?;
    let wait = params.duration("wait")?;
    let filter = Filter {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
        selector: selector.clone(),
    };
    match (watching, wait) {
        (true, Some(_)) => Err(ApiError::bad_request(
            "use either watch=true (push) or wait= (long-poll), not both",
        )
        .into()),
        (true, None) => {
            let timeout = params.number("timeoutSeconds")?.map(Duration::from_secs);
            watch::stream(app, filter, params.revision()?, timeout).await
        }
        (false, Some(wait)) => {
            if wait > app.limits.max_wait {
                return Err(ApiError::bad_request(format!(
                    "wait={} is longer than the server allows ({}s)",
                    weft_api::duration::Duration::from_std(wait)
                        .map_or_else(|| "?".into(), |d| d.to_string()),
                    app.limits.max_wait.as_secs()
                ))
                .into());
            }
            let limit = params.number("limit")?.unwrap_or(1000).clamp(1, 10_000) as usize;
            watch::poll(app, filter, params.revision()?, wait, limit).await
        }
        (false, None) => {
            let (body, _) = objects::list(&app, kind, namespace.as_deref(), &selector).await?;
            Ok(json_response(StatusCode::OK, body))
        }
    }
}

/// The object a path names: `/namespaces/{ns}/{plural}/{name}` for namespaced kinds,
/// `/{plural}/{name}` for cluster-scoped ones. A kind used under the wrong shape is a 404 that
/// says which shape to use.
struct ObjectPath {
    kind: &'static KindInfo,
    namespace: Option<String>,
    name: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ObjectPath {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<ObjectPath> {
        let Path(mut p) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
        let plural = p.remove("plural").unwrap_or_default();
        let name = p.remove("name").unwrap_or_default();
        let namespace = p.remove("ns");
        let kind = match &namespace {
            Some(ns) => {
                check_namespace(ns)?;
                namespaced(&plural)?
            }
            None => cluster_scoped(&plural)?,
        };
        Ok(ObjectPath { kind, namespace, name })
    }
}

async fn get_one(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    ObjectPath { kind, namespace: ns, name }: ObjectPath,
    uri: axum::http::Uri,
) -> Result<Response> {
    let query = uri.query();
    caller.require(Action::Read(kind))?;
    let params =
        Params::parse(query, &["watch", "wait", "resourceVersion", "timeoutSeconds", "limit"])?;
    // Watching or polling one object goes through the collection path with a name filter.
    if params.flag("watch")? || params.0.contains_key("wait") {
        return collection(app, caller, kind, ns, Some(name), query).await;
    }
    if let Some(p) = params.0.keys().find(|p| *p != "watch") {
        return Err(
            ApiError::bad_request(format!("{p} only applies with watch=true or wait=")).into()
        );
    }
    let body = objects::get(&app, kind, ns.as_deref(), &name).await?;
    Ok(json_response(StatusCode::OK, body))
}

/// The body's object, checked against the path it was sent to.
fn object_for_path(text: &str, kind: &KindInfo, ns: Option<&str>, name: &str) -> Result<Value> {
    let mut value = single_object(text)?;
    let body_kind = kinds::kind_of(&value)?;
    if body_kind != kind {
        return Err(ApiError::bad_request(format!(
            "the body is a {} but the path is for {}",
            body_kind.kind, kind.plural
        ))
        .into());
    }
    let meta = value
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::invalid("metadata", "is required"))?;
    match meta.get("name").and_then(Value::as_str) {
        None => {
            meta.insert("name".into(), Value::String(name.to_string()));
        }
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "metadata.name {n:?} does not match the name in the path ({name:?})"
            ))
            .into());
        }
        Some(_) => {}
    }
    if let Some(ns) = ns {
        match meta.get("namespace").and_then(Value::as_str) {
            None => {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
            Some(n) if n != ns => {
                return Err(ApiError::bad_request(format!(
                    "metadata.namespace {n:?} does not match the namespace in the path ({ns:?})"
                ))
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(value)
}

#[allow(clippy::too_many_arguments)]
async fn put_one(
    app: Arc<AppState>,
    caller: Caller,
    kind: &'static KindInfo,
    ns: Option<String>,
    name: String,
    mode: WriteMode,
    query: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    caller.require(match mode {
        WriteMode::Spec => Action::Write(kind),
        WriteMode::Status => Action::WriteStatus(kind),
    })?;
    check_node_restriction(&app, &caller, kind, ns.as_deref(), &name).await?;
    let params = Params::parse(query, &["dryRun"])?;
    let dry_run = params.flag("dryRun")?;
    let text = read_body(&app, &headers, body).await?;
    let value = object_for_path(&text, kind, ns.as_deref(), &name)?;
    let value = match mode {
        WriteMode::Spec => {
            let rv = value.get("metadata").and_then(|m| m.get("resourceVersion")).cloned();
            let mut normalized = kind.normalize(value)?;
            // normalize re-encodes resourceVersion as text; keep what the client sent for the
            // precondition check.
            if let (Some(rv), Some(meta)) =
                (rv, normalized.get_mut("metadata").and_then(Value::as_object_mut))
            {
                meta.insert("resourceVersion".into(), rv);
            }
            normalized
        }
        WriteMode::Status => value,
    };
    let written = objects::write(&app, kind, ns.as_deref(), &name, &value, mode, dry_run).await?;
    let status =
        if written.action == ApplyAction::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, written.object))
}

async fn put_spec(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    ObjectPath { kind, namespace, name }: ObjectPath,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    put_one(app, caller, kind, namespace, name, WriteMode::Spec, uri.query(), headers, body).await
}

async fn put_status(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    ObjectPath { kind, namespace, name }: ObjectPath,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    put_one(app, caller, kind, namespace, name, WriteMode::Status, uri.query(), headers, body).await
}

/// A node-bound agent token writes its own Node and the Instances on it, nothing else.
async fn check_node_restriction(
    app: &AppState,
    caller: &Caller,
    kind: &KindInfo,
    ns: Option<&str>,
    name: &str,
) -> Result<()> {
    if caller.role != Role::Agent || caller.node.is_none() {
        return Ok(());
    }
    if kind == &kinds::NODE {
        caller.require_node(Some(name), || format!("it may not write node {name}"))?;
    } else if kind == &kinds::INSTANCE {
        let bytes = objects::get(app, &kinds::INSTANCE, ns, name).await?;
        let inst: weft_api::Instance = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("stored instance: {e}")))?;
        let on = inst.spec.node.as_deref();
        caller.require_node(on, || {
            format!(
                "instance {}/{name} runs on {}",
                ns.unwrap_or(weft_api::DEFAULT_NAMESPACE),
                on.map_or("no node yet".to_string(), |n| format!("node {n}"))
            )
        })?;
    }
    Ok(())
}

async fn delete_one(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    ObjectPath { kind, namespace: ns, name }: ObjectPath,
    uri: axum::http::Uri,
) -> Result<Response> {
    caller.require(Action::Delete(kind))?;
    check_node_restriction(&app, &caller, kind, ns.as_deref(), &name).await?;
    let params = Params::parse(uri.query(), &["resourceVersion"])?;
    let body = objects::delete(&app, kind, ns.as_deref(), &name, params.revision()?).await?;
    Ok(json_response(StatusCode::OK, body))
}

async fn apply(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let params = Params::parse(uri.query(), &["namespace", "dryRun"])?;
    let dry_run = params.flag("dryRun")?;
    let default_ns = params.0.get("namespace").cloned();
    if let Some(ns) = &default_ns {
        check_namespace(ns)?;
    }
    let text = read_body(&app, &headers, body).await?;
    let docs = codec::parse_documents(&text)?;
    if docs.is_empty() {
        return Err(ApiError::bad_request("nothing to apply: the body holds no objects").into());
    }
    let mut items = Vec::with_capacity(docs.len());
    for doc in docs {
        let label = kinds::describe_raw(&doc.value);
        let in_doc = |e: ApiError| Error(e.in_document(doc.index, label.as_deref()));
        let mut value = doc.value;
        let kind = kinds::kind_of(&value).map_err(in_doc)?;
        caller.require(Action::Write(kind)).map_err(in_doc)?;
        if kind == &kinds::NODE {
            let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
            caller
                .require_node(Some(&name), || format!("it may not write node {name}"))
                .map_err(in_doc)?;
        }
        if kind.namespaced
            && let Some(ns) = &default_ns
            && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
            && !meta.contains_key("namespace")
        {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        let rv = value.get("metadata").and_then(|m| m.get("resourceVersion")).cloned();
        let mut normalized = kind.normalize(value).map_err(in_doc)?;
        if let (Some(rv), Some(meta)) =
            (rv, normalized.get_mut("metadata").and_then(Value::as_object_mut))
        {
            meta.insert("resourceVersion".into(), rv);
        }
        items.push(ApplyItem { kind, value: normalized, document: doc.index });
    }
    let response = objects::apply(&app, &items, dry_run).await?;
    Ok(json_body(StatusCode::OK, &response))
}

// ---- tokens -------------------------------------------------------------------------------

async fn list_tokens(State(app): State<Arc<AppState>>, caller: Caller) -> Result<Response> {
    caller.require(Action::ManageTokens)?;
    Ok(json_body(StatusCode::OK, &app.auth.list()))
}

async fn create_token(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    if !caller.allowed(Action::ManageTokens) && !caller.allowed(Action::CreateToken(Role::Proxy)) {
        caller.require(Action::ManageTokens)?;
    }
    let text = read_body(&app, &headers, body).await?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let req: TokenRequest = kinds::from_value(value)?;
    caller.require(Action::CreateToken(req.role))?;
    check_binding(&app, &caller, &req).await?;
    let ttl = req.ttl.map(|t| t.as_std());
    let binding = Binding { node: req.node.as_deref(), instance: req.instance.as_deref() };
    let created = app.auth.create(req.role, ttl, &req.description, binding).await?;
    tracing::info!(id = %created.info.id, role = %created.info.role, by = %caller.token_id, "token created");
    Ok(json_body(StatusCode::CREATED, &created))
}

/// A binding is for proxy tokens only. A node binding names a node; an instance binding names
/// an existing Instance on that node. An agent must give both: each sidecar's token then gets
/// its own instance's certificate alone, and dies with the instance.
async fn check_binding(app: &AppState, caller: &Caller, req: &TokenRequest) -> Result<()> {
    match req.role {
        Role::Proxy => {}
        Role::Agent if req.instance.is_none() => {}
        Role::Agent => {
            return Err(ApiError::invalid(
                "instance",
                "an agent token binds to a node, not an instance",
            )
            .into());
        }
        _ if req.node.is_some() || req.instance.is_some() => {
            let field = if req.node.is_some() { "node" } else { "instance" };
            return Err(ApiError::invalid(
                field,
                "only proxy and agent tokens can be bound to a node, and only proxy tokens to an instance",
            )
            .into());
        }
        _ => {}
    }
    if let Some(node) = &req.node {
        weft_api::validate::dns_subdomain(node)
            .map_err(|e| ApiError::invalid("node", format!("{node:?}: {e}")))?;
    }
    // A node-bound agent mints only for its own node.
    if let (Role::Agent, Some(bound), Some(node)) = (caller.role, &caller.node, &req.node)
        && bound != node
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this agent token is bound to node {bound}; it may not mint tokens for node {node}"
            ),
        )
        .into());
    }
    if req.role == Role::Agent {
        if caller.role == Role::Agent && req.node.is_none() {
            return Err(ApiError::invalid(
                "node",
                "an agent trades its join token for one bound to its node (node: <node name>)",
            )
            .into());
        }
        return Ok(());
    }
    match (&req.node, &req.instance) {
        (None, _) if caller.role == Role::Agent => {
            return Err(ApiError::invalid(
                "node",
                "an agent must bind the proxy tokens it mints to its node and an instance (node: <node name>, instance: <namespace>/<name>)",
            )
            .into());
        }
        (Some(_), None) if caller.role == Role::Agent => {
            return Err(ApiError::invalid(
                "instance",
                "an agent must bind the proxy tokens it mints to one instance on its node (instance: <namespace>/<name>)",
            )
            .into());
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "instance",
                "an instance binding needs the instance's node too (node: <node name>)",
            )
            .into());
        }
        _ => {}
    }
    let (Some(node), Some(instance)) = (&req.node, &req.instance) else { return Ok(()) };
    let bad = |m: String| ApiError::invalid("instance", m);
    let (ns, name) = instance
        .split_once('/')
        .ok_or_else(|| bad(format!("{instance:?}: write it as <namespace>/<name>")))?;
    weft_api::validate::dns_label(ns).map_err(|e| bad(format!("{instance:?}: namespace: {e}")))?;
    weft_api::validate::dns_subdomain(name).map_err(|e| bad(format!("{instance:?}: name: {e}")))?;
    let stored = match objects::get(app, &kinds::INSTANCE, Some(ns), name).await {
        Ok(bytes) => bytes,
        Err(e) if e.0.code == ErrorCode::NotFound => {
            return Err(bad(format!("there is no instance {ns}/{name}")).into());
        }
        Err(e) => return Err(e),
    };
    let inst: weft_api::Instance = serde_json::from_slice(&stored)
        .map_err(|e| ApiError::internal(format!("stored instance: {e}")))?;
    if inst.spec.node.as_deref() != Some(node.as_str()) {
        let on =
            inst.spec.node.as_deref().map_or("no node yet".to_string(), |n| format!("node {n}"));
        return Err(bad(format!("instance {ns}/{name} runs on {on}, not on node {node}")).into());
    }
    Ok(())
}

async fn revoke_token(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    caller.require(Action::ManageTokens)?;
    let info = app.auth.revoke(&id).await?;
    tracing::info!(id = %info.id, by = %caller.token_id, "token revoked");
    Ok(json_body(StatusCode::OK, &info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_strict() {
        let p = Params::parse(Some("watch=true&resourceVersion=5"), &["watch", "resourceVersion"])
            .unwrap();
        assert!(p.flag("watch").unwrap());
        assert_eq!(p.revision().unwrap(), Some(5));
        assert!(Params::parse(Some("wacth=true"), &["watch"]).is_err());
        let p = Params::parse(Some("resourceVersion=x"), &["resourceVersion"]).unwrap();
        assert!(p.revision().is_err());
        let p =
            Params::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29"), &["labelSelector"])
                .unwrap();
        assert_eq!(p.0["labelSelector"], "app=web,tier in (a)");
        assert!(Params::parse(Some("a=%zz"), &["a"]).is_err());
        assert!(Params::parse(Some("a=%2"), &["a"]).is_err());
    }
}
