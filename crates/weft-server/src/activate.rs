//! `POST /api/v1/namespaces/{ns}/services/{name}/activate`: a proxy holds a request for a
//! service that has no ready instance (it scaled to zero) and asks for one.
//!
//! The request is recorded on the Service as the [`ACTIVATION_ANNOTATION`] (a timestamp), so it
//! survives a server restart and reaches the autoscaler controller through the watch it already
//! has, whichever server it runs beside. Many proxies holding requests for one service cost at
//! most one write per [`DEDUP`]: a newer request than that is already on record.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weft_api::kinds::service::ACTIVATION_ANNOTATION;
use weft_api::{ApiError, ErrorCode, kinds};

use crate::auth::{Action, Caller};
use crate::error::Result;
use crate::objects::{self, WriteMode};
use crate::state::AppState;

/// A request recorded less than this long ago stands for new ones.
const DEDUP: Duration = Duration::from_secs(1);

/// Tries against concurrent writers of the same Service.
const TRIES: usize = 4;

pub async fn activate_service(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Path((ns, name)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Response> {
    caller.require(Action::Activate)?;
    if let Some(q) = uri.query().filter(|q| !q.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameters {q:?} (this route takes none)"
        ))
        .into());
    }
    weft_api::validate::dns_label(&ns)
        .map_err(|e| ApiError::bad_request(format!("namespace in the path: {e}")))?;
    let kind = &kinds::SERVICE;
    for _ in 0..TRIES {
        let bytes = objects::get(&app, kind, Some(&ns), &name).await?;
        let mut obj: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored service: {e}")))?;
        let now = SystemTime::now();
        let recorded = obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ACTIVATION_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        if let Some(at) = recorded
            && now.duration_since(at).unwrap_or_default() < DEDUP
        {
            return Ok(answer(&ns, &name, at, false));
        }
        let stamp = humantime::format_rfc3339_millis(now).to_string();
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(ApiError::new(ErrorCode::Internal, "stored service has no metadata").into());
        };
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(ACTIVATION_ANNOTATION.into(), Value::String(stamp));
        }
        // The stored revision rides along as the precondition: a spec written meanwhile by
        // someone else is never overwritten with the copy read here.
        match objects::write(&app, kind, Some(&ns), &name, &obj, WriteMode::Spec, false).await {
            Ok(_) => return Ok(answer(&ns, &name, now, true)),
            Err(e) if e.0.code == ErrorCode::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(format!(
        "service {name:?} in namespace {ns:?} is being changed by others too often; retry"
    ))
    .into())
}

fn answer(ns: &str, name: &str, at: SystemTime, recorded: bool) -> Response {
    let body = json!({
        "namespace": ns,
        "service": name,
        "requestedAt": humantime::format_rfc3339_millis(at).to_string(),
        "recorded": recorded,
    });
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}
