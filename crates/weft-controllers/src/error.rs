//! Errors of a reconcile. None is fatal: the key is retried with backoff.

use weft_api::ErrorCode;
use weft_client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the api server failed.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: ClientError,
    },
    /// The cache moved on while deciding; decide again from the newer state.
    #[error("{0} changed while being reconciled")]
    Stale(String),
}

impl Error {
    pub fn api(what: impl Into<String>, source: ClientError) -> Error {
        Error::Api { what: what.into(), source }
    }

    /// Lost a race (409, or the object is gone): not a failure worth a warning, retried as
    /// soon as the watch brings the newer state.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Api { source, .. } => {
                matches!(source.code(), Some(ErrorCode::Conflict | ErrorCode::NotFound))
            }
            Error::Stale(_) => true,
        }
    }
}
