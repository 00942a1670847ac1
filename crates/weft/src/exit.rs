//! Exit codes (DESIGN.md): 0 ok, 1 a failure the user can act on, 64 bad configuration or
//! usage, 69 server unreachable. Errors carry their code up to `main`, which prints one line.

use std::fmt;

use weft_api::ErrorCode;
use weft_client::ClientError;

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 64;
pub const UNREACHABLE: u8 = 69;

/// An error that knows its exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A usage or configuration error (exit 64).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Exit { code: USAGE, message: message.into() }.into()
}

/// The exit code for an error chain, and the one line to print for it.
pub fn classify(err: &anyhow::Error) -> (u8, String) {
    let line = err.chain().map(|e| e.to_string()).collect::<Vec<_>>().join(": ");
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Exit>() {
            return (e.code, line);
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            let code = match e {
                ClientError::Unreachable { .. } | ClientError::Tls { .. } => UNREACHABLE,
                ClientError::InvalidUrl(_) | ClientError::CaFile(_) => USAGE,
                ClientError::Api(api)
                    if matches!(api.code, ErrorCode::Invalid | ErrorCode::BadRequest) =>
                {
                    USAGE
                }
                _ => FAILURE,
            };
            let line = match e {
                ClientError::Unreachable { .. } => format!(
                    "{line} (is `weft up` or `weft server` running? point the CLI elsewhere with --server or WEFT_SERVER)"
                ),
                _ => line,
            };
            return (code, line);
        }
    }
    (FAILURE, line)
}
