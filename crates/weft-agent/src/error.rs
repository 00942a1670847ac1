//! The agent's errors: one line each, saying what to do.

use std::path::PathBuf;

use weft_client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A flag or option is wrong (`weft agent` exits 64).
    #[error("bad agent configuration: {0}")]
    Config(String),
    /// The data dir cannot be created or written.
    #[error("cannot use the agent's data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    /// The api server refused the token (wrong role, revoked, expired).
    #[error(
        "the api server refused the agent's token: {0} (create one with `weft token create --role agent`)"
    )]
    Unauthorized(String),
    /// Talking to the api server failed in a way retrying will not fix.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The admin listener (metrics, logs) cannot listen.
    #[error(
        "cannot listen on {addr} for the agent's admin endpoint: {source} (pick another with --admin)"
    )]
    Admin { addr: String, source: std::io::Error },
}

impl AgentError {
    /// Whether this is a configuration mistake (exit code 64) rather than a runtime failure.
    pub fn is_config(&self) -> bool {
        matches!(self, AgentError::Config(_))
    }
}
