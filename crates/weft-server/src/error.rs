//! Turning failures into the api's JSON error responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weft_api::{ApiError, ErrorCode};
use weft_store::StoreError;

/// An [`ApiError`] on its way out as a response.
#[derive(Debug)]
pub struct Error(pub ApiError);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Error {
        Error(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error(match e {
            StoreError::Compacted { requested, compacted } => ApiError::new(
                ErrorCode::Gone,
                format!(
                    "resourceVersion {requested} is too old (history starts after {compacted}); list again and watch from the list's resourceVersion"
                ),
            ),
            StoreError::PreconditionFailed { key, .. } => ApiError::conflict(format!(
                "{key} was changed by someone else; read it again and retry"
            )),
            StoreError::Closed => {
                ApiError::new(ErrorCode::Unavailable, "the server is shutting down")
            }
            // Not the caller's fault and not a bug here: the store's backend is down or has
            // lost quorum. 503 tells clients to retry (or try another api server).
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "store unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the cluster store is unavailable, retry shortly: {why}"),
                )
            }
            StoreError::TooLarge(why) => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the change is too large for the store to write at once: {why}; apply fewer \
                     objects per request (or raise the store's limit)"
                ),
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal(format!("store failure: {other}"))
            }
        })
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.0.code == ErrorCode::Unavailable {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.0.code == ErrorCode::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weft\""),
            );
        }
        resp
    }
}
