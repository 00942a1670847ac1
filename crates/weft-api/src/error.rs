//! The api's error shape: one JSON body for every failure, with the status it travels under.
//!
//! Clients (the CLI above all) print `message` as the one line a user reads, so messages are
//! written to stand alone: what is wrong, where, and if it is not obvious, what to do.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Machine-readable error class. Each maps to exactly one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ErrorCode {
    /// 400: the request itself is malformed (syntax, query parameters, path).
    BadRequest,
    /// 401: no token, or a token that is unknown, expired or revoked.
    Unauthorized,
    /// 403: the token's role may not do this.
    Forbidden,
    /// 404: no such object, kind or route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: a stale `resourceVersion`, or the object already exists.
    Conflict,
    /// 410: a watch or poll from a revision older than the history kept.
    Gone,
    /// 413: the request body is larger than the server accepts.
    PayloadTooLarge,
    /// 415: a body in a format the server does not read.
    UnsupportedMediaType,
    /// 422: well-formed but invalid: unknown fields, wrong types, values out of range.
    Invalid,
    /// 500: the server failed; nothing the client sent is wrong.
    Internal,
    /// 503: the server cannot serve this now (shutting down, store unavailable).
    Unavailable,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::Gone => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Invalid => 422,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The code a status maps back to, for clients reading a response without a JSON body.
    pub fn from_status(status: u16) -> ErrorCode {
        match status {
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            410 => ErrorCode::Gone,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            422 => ErrorCode::Invalid,
            503 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// One invalid field among several found in the same object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    /// Path of the field, e.g. `spec.template.ports[1].port`.
    pub field: String,
    pub message: String,
}

/// The body of every error response: `{"code": "...", "message": "...", "field": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub code: ErrorCode,
    /// One line for people: what is wrong and, where useful, what to do.
    pub message: String,
    /// Path of the offending field, when one field is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For multi-document requests: the 1-based document the error is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// Every invalid field, when validation found more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), field: None, document: None, causes: Vec::new() }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let field = field.into();
        let message = message.into();
        let text = if field.is_empty() { message.clone() } else { format!("{field}: {message}") };
        ApiError {
            code: ErrorCode::Invalid,
            message: text,
            field: (!field.is_empty()).then(|| field.clone()),
            document: None,
            causes: vec![Cause { field, message }],
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Conflict, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// Places the error in document `index` (1-based) of a multi-document request, and says so
    /// in the message so that a user reading only the message knows where to look.
    pub fn in_document(mut self, index: usize, what: Option<&str>) -> ApiError {
        if self.document.is_none() {
            self.document = Some(index);
            self.message = match what {
                Some(what) => format!("document {index} ({what}): {}", self.message),
                None => format!("document {index}: {}", self.message),
            };
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_status() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::Gone,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::Invalid,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ] {
            assert_eq!(ErrorCode::from_status(code.status()), code);
        }
    }

    #[test]
    fn invalid_names_its_field_in_message_and_body() {
        let e = ApiError::invalid("spec.replicas", "must be at least 0");
        assert_eq!(e.message, "spec.replicas: must be at least 0");
        assert_eq!(e.field.as_deref(), Some("spec.replicas"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "Invalid");
        assert_eq!(json["field"], "spec.replicas");
    }

    #[test]
    fn document_context_is_added_once() {
        let e = ApiError::invalid("spec.replicas", "bad")
            .in_document(2, Some("Deployment web"))
            .in_document(3, None);
        assert_eq!(e.document, Some(2));
        assert_eq!(e.message, "document 2 (Deployment web): spec.replicas: bad");
    }
}
