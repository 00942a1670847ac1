//! Validation helpers: collect every invalid field of an object, each with its path, so a user
//! fixes a manifest in one round trip instead of one error at a time.

use std::collections::BTreeMap;

use crate::error::{ApiError, Cause, ErrorCode};

/// Collects field errors while walking an object.
#[derive(Debug, Default)]
pub struct Validator {
    causes: Vec<Cause>,
}

impl Validator {
    pub fn new() -> Validator {
        Validator::default()
    }

    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.causes.push(Cause { field: field.into(), message: message.into() });
    }

    /// Records `message` against `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.error(field, message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.causes.is_empty()
    }

    /// `Ok(())` if nothing was recorded; otherwise one `Invalid` error naming the first field in
    /// its message and carrying all of them as causes.
    pub fn finish(self) -> Result<(), ApiError> {
        let mut causes = self.causes;
        if causes.is_empty() {
            return Ok(());
        }
        let first = causes[0].clone();
        let more = causes.len() - 1;
        let mut message = if first.field.is_empty() {
            first.message.clone()
        } else {
            format!("{}: {}", first.field, first.message)
        };
        if more > 0 {
            message.push_str(&format!(" (and {more} more invalid field{})", plural(more)));
        }
        causes.dedup();
        Err(ApiError {
            code: ErrorCode::Invalid,
            message,
            field: (!first.field.is_empty()).then_some(first.field),
            document: None,
            causes,
        })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A DNS-1123 label: what names of services, deployments and namespaces must be, because they
/// become host names (`catalog.default`) and label values.
pub fn dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 63 {
        return Err(format!("{value:?} is longer than 63 characters"));
    }
    if !is_label_shaped(value) {
        return Err(format!(
            "{value:?} is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: dot-separated labels, 253 characters at most (node names are host
/// names).
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 253 {
        return Err(format!("{value:?} is longer than 253 characters"));
    }
    if !value.split('.').all(|part| !part.is_empty() && part.len() <= 63 && is_label_shaped(part)) {
        return Err(format!(
            "{value:?} is not a valid name: use lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn is_label_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && edge(&b[0]) && edge(&b[b.len() - 1]) && b.iter().all(inner)
}

/// Label keys and values follow Kubernetes: an optional DNS-subdomain prefix and a name of at
/// most 63 characters of alphanumerics, `-`, `_` and `.`.
pub fn labels(v: &mut Validator, path: &str, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        let field = format!("{path}[{key:?}]");
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        if let Some(p) = prefix
            && let Err(e) = dns_subdomain(p)
        {
            v.error(&field, format!("label key prefix {e}"));
        }
        if name.is_empty() || name.len() > 63 || !is_label_value_shaped(name) {
            v.error(
                &field,
                "label key must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            );
        }
        if value.len() > 63 || (!value.is_empty() && !is_label_value_shaped(value)) {
            v.error(
                &field,
                format!(
                    "label value {value:?} must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
                ),
            );
        }
    }
}

fn is_label_value_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner)
}

/// An environment variable name as POSIX shells accept it.
pub fn env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "catalog", "web-1", "0abc", &"a".repeat(63)] {
            assert!(dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"a".repeat(64), "ä"] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_subdomains() {
        assert!(dns_subdomain("node-1.example.com").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(dns_subdomain(".a").is_err());
        assert!(dns_subdomain("A.b").is_err());
    }

    #[test]
    fn label_rules() {
        let mut v = Validator::new();
        let ok: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("weft.dev/tier".to_string(), "Front_End.1".to_string()),
            ("empty".to_string(), String::new()),
        ]
        .into();
        labels(&mut v, "metadata.labels", &ok);
        assert!(v.is_empty());
        let bad: BTreeMap<String, String> = [
            ("-app".to_string(), "x".to_string()),
            ("Bad_Prefix/x".to_string(), "x".to_string()),
            ("k".to_string(), "-v".to_string()),
        ]
        .into();
        labels(&mut v, "metadata.labels", &bad);
        let err = v.finish().unwrap_err();
        assert_eq!(err.causes.len(), 3);
        assert!(err.message.contains("and 2 more"), "{}", err.message);
    }

    #[test]
    fn finish_reports_first_field() {
        let mut v = Validator::new();
        v.check(false, "spec.replicas", "must be at least 0");
        let e = v.finish().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spec.replicas"));
        assert_eq!(e.message, "spec.replicas: must be at least 0");
    }

    #[test]
    fn env_names() {
        assert!(env_name("LOG_LEVEL"));
        assert!(env_name("_x1"));
        assert!(!env_name("1X"));
        assert!(!env_name("A-B"));
        assert!(!env_name(""));
    }
}
