//! Which failed requests may be retried. Whether a retry is affordable is
//! [`crate::RetryBudget`]'s question, when to send it [`crate::Backoff`]'s, whether there is
//! time left [`crate::Deadline`]'s.

use std::str::FromStr;

use crate::error::ConfigError;

/// How an attempt failed, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be established (refused, unreachable, TLS handshake failed).
    ConnectFailure,
    /// A pooled connection turned out to be closed by the upstream before any of the request
    /// was written (the keep-alive race).
    ClosedBeforeSend,
    /// The connection was reset or closed after the request (or part of it) was sent, before
    /// a complete response.
    Reset,
    /// The per-try timeout expired.
    Timeout,
    /// The upstream answered with this status (only failures are passed here, but any code is
    /// accepted and 1xx-4xx simply match fewer conditions).
    Status(u16),
}

impl FailureKind {
    /// Nothing reached the upstream application, so any method is safe to retry.
    pub fn before_send(self) -> bool {
        matches!(self, FailureKind::ConnectFailure | FailureKind::ClosedBeforeSend)
    }

    /// Counts toward outlier ejection: the endpoint failed (5xx, connect failure, reset,
    /// timeout). A pooled connection the upstream closed while idle is normal keep-alive
    /// behaviour, not a failure of the endpoint.
    pub fn is_endpoint_error(self) -> bool {
        match self {
            FailureKind::ConnectFailure | FailureKind::Reset | FailureKind::Timeout => true,
            FailureKind::ClosedBeforeSend => false,
            FailureKind::Status(code) => (500..600).contains(&code),
        }
    }

    fn no_response(self) -> bool {
        !matches!(self, FailureKind::Status(_))
    }
}

/// The Service's `retries.on:` conditions, as a set. Names follow Envoy's `retry_on`:
///
/// | condition        | matches |
/// |------------------|---------|
/// | `connect-failure`| connect failure, pooled connection closed before send |
/// | `reset`          | any failure without a response: the above, reset, per-try timeout |
/// | `5xx`            | any 5xx status, and any failure without a response |
/// | `gateway-error`  | 502, 503, 504, and any failure without a response |
/// | `retriable-4xx`  | 409 |
/// | `503` (a code)   | exactly that status |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    connect_failure: bool,
    reset: bool,
    /// Status codes 100..=611 as a bitset; `5xx` and `gateway-error` set their codes here.
    statuses: [u64; 8],
}

impl RetryOn {
    pub const NONE: RetryOn = RetryOn { connect_failure: false, reset: false, statuses: [0; 8] };

    /// Parses condition names (see the type docs); unknown names are an error.
    pub fn parse<S: AsRef<str>>(
        conditions: impl IntoIterator<Item = S>,
    ) -> Result<Self, ConfigError> {
        let mut on = RetryOn::NONE;
        for c in conditions {
            on = on.with(c.as_ref())?;
        }
        Ok(on)
    }

    /// Adds one condition.
    pub fn with(mut self, condition: &str) -> Result<Self, ConfigError> {
        match condition {
            "connect-failure" => self.connect_failure = true,
            "reset" => self.reset = true,
            "5xx" => {
                self.reset = true;
                (500..600).for_each(|c| self.set(c));
            }
            "gateway-error" => {
                self.reset = true;
                [502, 503, 504].into_iter().for_each(|c| self.set(c));
            }
            "retriable-4xx" => self.set(409),
            code => match code.parse::<u16>() {
                Ok(c @ 100..=599) => self.set(c),
                _ => return Err(ConfigError::UnknownRetryCondition(code.to_owned())),
            },
        }
        Ok(self)
    }

    fn set(&mut self, code: u16) {
        let i = usize::from(code - 100);
        self.statuses[i / 64] |= 1 << (i % 64);
    }

    fn has_status(&self, code: u16) -> bool {
        let Some(i) = code.checked_sub(100).map(usize::from).filter(|&i| i < 512) else {
            return false;
        };
        self.statuses[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether a failure of this kind meets one of the conditions.
    pub fn matches(&self, failure: FailureKind) -> bool {
        match failure {
            FailureKind::Status(code) => self.has_status(code),
            f if f.before_send() => self.connect_failure || self.reset,
            f => self.reset && f.no_response(),
        }
    }
}

impl FromStr for RetryOn {
    type Err = ConfigError;

    /// Comma-separated conditions, e.g. `connect-failure,503` (Envoy's header format).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        RetryOn::parse(s.split(',').map(str::trim).filter(|c| !c.is_empty()))
    }
}

/// A route's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (the Service's `retries.attempts`, as in Istio): 2 means at
    /// most 3 tries in all.
    pub max_retries: u32,
    pub on: RetryOn,
}

/// Idempotent methods (RFC 9110 §9.2.2): repeating them has the effect of sending them once.
/// Methods are case-sensitive, so `get` is not `GET`.
pub fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}

/// Whether the try numbered `attempt` (1 = the original request), which failed with
/// `failure`, may be followed by another: the policy still has retries left, the failure meets
/// one of its conditions, and retrying is safe — the method is idempotent, or the request never
/// left the proxy. Budget, backoff and deadline are separate checks; ask the budget last, since
/// it spends a token.
pub fn retry_allowed(
    method: &str,
    failure: FailureKind,
    attempt: u32,
    policy: &RetryPolicy,
) -> bool {
    attempt <= policy.max_retries
        && policy.on.matches(failure)
        && (failure.before_send() || is_idempotent(method))
}

#[cfg(test)]
mod tests {
    use super::FailureKind::*;
    use super::*;

    fn policy(on: &str, max_retries: u32) -> RetryPolicy {
        RetryPolicy { max_retries, on: on.parse().unwrap() }
    }

    #[test]
    fn decision_table() {
        let p = policy("connect-failure,503", 2);
        // (method, failure, attempt, allowed)
        let table = [
            ("GET", Status(503), 1, true),
            ("POST", Status(503), 1, false), // the upstream may have acted on it
            ("POST", ConnectFailure, 1, true), // never sent
            ("POST", ClosedBeforeSend, 1, true),
            ("POST", Reset, 1, false),
            ("PUT", Status(503), 2, true),
            ("PUT", Status(503), 3, false), // 2 retries used
            ("GET", Status(500), 1, false), // not a listed condition
            ("GET", Status(502), 1, false),
            ("GET", Reset, 1, false), // connect-failure does not cover resets
            ("GET", Timeout, 1, false),
            ("DELETE", ConnectFailure, 1, true),
            ("PATCH", Status(503), 1, false),
            ("get", Status(503), 1, false),
            ("HEAD", Status(503), 1, true),
            ("OPTIONS", Status(503), 1, true),
            ("TRACE", Status(503), 1, true),
        ];
        for (method, failure, attempt, want) in table {
            assert_eq!(
                retry_allowed(method, failure, attempt, &p),
                want,
                "{method} {failure:?} #{attempt}"
            );
        }
        assert!(!retry_allowed("GET", ConnectFailure, 1, &policy("503", 0)), "no retries");
    }

    #[test]
    fn condition_names() {
        let five = policy("5xx", 1);
        for f in [Status(500), Status(599), ConnectFailure, ClosedBeforeSend, Reset, Timeout] {
            assert!(five.on.matches(f), "5xx {f:?}");
        }
        assert!(!five.on.matches(Status(429)) && !five.on.matches(Status(600)));

        let gw = policy("gateway-error", 1);
        for (f, want) in [
            (Status(502), true),
            (Status(503), true),
            (Status(504), true),
            (Status(500), false),
            (Reset, true),
            (Timeout, true),
        ] {
            assert_eq!(gw.on.matches(f), want, "gateway-error {f:?}");
        }
        let reset = policy("reset", 1);
        for (f, want) in
            [(Reset, true), (Timeout, true), (ConnectFailure, true), (Status(503), false)]
        {
            assert_eq!(reset.on.matches(f), want, "reset {f:?}");
        }
        assert!(policy("retriable-4xx", 1).on.matches(Status(409)));
        assert!(!RetryOn::NONE.matches(ConnectFailure));
        assert_eq!("".parse::<RetryOn>().unwrap(), RetryOn::NONE);
        assert_eq!(
            RetryOn::parse(["connect-failure", "503"]).unwrap(),
            " connect-failure, 503".parse().unwrap()
        );
        for bad in ["connection-failure", "99", "600", "5XX"] {
            assert_eq!(
                RetryOn::NONE.with(bad),
                Err(ConfigError::UnknownRetryCondition(bad.into()))
            );
        }
        assert!(!five.on.matches(Status(0)) && !five.on.matches(Status(u16::MAX)));
    }

    #[test]
    fn endpoint_errors_for_outlier_detection() {
        for (f, want) in [
            (Status(503), true),
            (Status(404), false),
            (ConnectFailure, true),
            (ClosedBeforeSend, false),
            (Reset, true),
            (Timeout, true),
        ] {
            assert_eq!(f.is_endpoint_error(), want, "{f:?}");
        }
    }
}
