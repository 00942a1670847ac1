/// A constructor argument that cannot work; the api crate validates the YAML first, so in the
/// proxy this means a bug or a hand-built config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} must be a finite number greater than 0, got {value}")]
    NotPositive { what: &'static str, value: f64 },
    #[error("{what} must be between {min} and {max}, got {value}")]
    OutOfRange { what: &'static str, value: f64, min: f64, max: f64 },
    #[error(
        "unknown load balancer {0:?} (expected round-robin, least-request, p2c-ewma or ring-hash)"
    )]
    UnknownAlgorithm(String),
    #[error(
        "unknown retry condition {0:?} (expected connect-failure, reset, 5xx, gateway-error, \
         retriable-4xx or a status code 100-599)"
    )]
    UnknownRetryCondition(String),
}
