//! `GET /api/v1/namespaces/{ns}/instances/{name}/log`: an instance's logs, streamed from the
//! agent that runs it (like the Kubernetes api server proxying to a kubelet). The api server
//! does the auth; the agent's admin listener serves `/logs/{ns}/{name}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weft_api::{ApiError, ErrorCode, Instance, Node, kinds};

use crate::auth::{Action, Caller};
use crate::error::Result;
use crate::state::AppState;
use crate::{keys, stored};

pub async fn instance_log(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Path((ns, name)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Response> {
    caller.require(Action::Read(&kinds::INSTANCE))?;
    // Only pass on what the agent understands; the rest is a mistake worth reporting.
    let mut query = Vec::new();
    for pair in uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let key = pair.split('=').next().unwrap_or("");
        match key {
            "follow" | "tail" | "sidecar" => query.push(pair),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (this route takes: follow, tail, sidecar)"
                ))
                .into());
            }
        }
    }
    let inst: Instance = read(&app, &kinds::INSTANCE, Some(&ns), &name).await?;
    let Some(node_name) = inst.spec.node.clone() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("instance {name:?} is not running on a node yet (no logs); see `weft describe inst {name}`"),
        )
        .into());
    };
    let node: Node = read(&app, &kinds::NODE, None, &node_name).await?;
    let Some(addr) = node.status.as_ref().and_then(|s| s.metrics_address.clone()) else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("node {node_name:?} does not say where its agent serves logs"),
        )
        .into());
    };
    let url = format!(
        "http://{addr}/logs/{ns}/{name}{}{}",
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri =
        url.parse().map_err(|_| ApiError::internal(format!("bad agent address {addr:?}")))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("the agent on node {node_name:?} did not answer"),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("cannot reach the agent on node {node_name:?} at {addr}: {e}"),
            )
        })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        let code = if status == StatusCode::NOT_FOUND {
            ErrorCode::NotFound
        } else {
            ErrorCode::Unavailable
        };
        return Err(ApiError::new(code, format!("agent on node {node_name:?}: {text}")).into());
    }
    let body = resp.into_body().map_err(|e| std::io::Error::other(e.to_string()));
    let mut out = Response::new(Body::new(body));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(out)
}

async fn read<T: serde::de::DeserializeOwned>(
    app: &AppState,
    kind: &weft_api::KindInfo,
    ns: Option<&str>,
    name: &str,
) -> Result<T> {
    let kv = app.store.get(&keys::object(kind, ns, name)).await?;
    let Some(kv) = kv else {
        let place = ns.map(|n| format!(" in namespace {n:?}")).unwrap_or_default();
        return Err(
            ApiError::not_found(format!("{} {name:?}{place} not found", kind.singular)).into()
        );
    };
    let value = stored::decode(&kv.value, kv.mod_revision)?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::internal(format!("stored {} is unreadable: {e}", kind.singular)).into()
    })
}
