//! Label selectors as Kubernetes writes them: `app=web,tier!=db,env in (prod,staging),!legacy`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::ApiError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

impl Selector {
    /// Matches everything.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// The selector matching exactly these labels (a Service's `selector`).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Selector {
        Selector {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn parse(text: &str) -> Result<Selector, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term).map_err(|m| {
                ApiError::bad_request(format!("invalid label selector {text:?}: {m}"))
            })?);
        }
        Ok(Selector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Commas inside `in (a,b)` do not separate terms.
fn split_terms(text: &str) -> Result<Vec<&str>, ApiError> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(ApiError::bad_request(format!(
                "invalid label selector {text:?}: unbalanced parentheses"
            )));
        }
    }
    if depth != 0 {
        return Err(ApiError::bad_request(format!(
            "invalid label selector {text:?}: unbalanced parentheses"
        )));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key_of(key)?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key_of(k)?, value_of(v)?));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key_of(k)?, value_of(v)?));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = term.split_once(op) {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("expected a parenthesised list after {:?}", op.trim()))?;
            let set = inner.split(',').map(value_of).collect::<Result<BTreeSet<_>, _>>()?;
            let key = key_of(k)?;
            return Ok(if negate {
                Requirement::NotIn(key, set)
            } else {
                Requirement::In(key, set)
            });
        }
    }
    Ok(Requirement::Exists(key_of(term)?))
}

fn key_of(k: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c)) {
        return Err(format!("{k:?} is not a label key"));
    }
    Ok(k.to_string())
}

fn value_of(v: &str) -> Result<String, String> {
    let v = v.trim();
    if !v.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
        return Err(format!("{v:?} is not a label value"));
    }
    Ok(v.to_string())
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, s) => format!("{k} in ({})", join(s)),
                Requirement::NotIn(k, s) => format!("{k} notin ({})", join(s)),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn all_operators() {
        let s =
            Selector::parse("app=web, tier!=db,env in (prod, staging),!legacy,release").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("release", "1")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("release", "1")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("release", "1"),
            ("legacy", "")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        let n = Selector::parse("env notin (prod)").unwrap();
        assert!(n.matches(&labels(&[])));
        assert!(!n.matches(&labels(&[("env", "prod")])));
        assert_eq!(Selector::parse("a==b").unwrap().to_string(), "a=b");
    }

    #[test]
    fn empty_matches_everything() {
        assert!(Selector::parse("").unwrap().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn bad_selectors() {
        for bad in ["a=(b", "env in prod", "a b=c", "x=y z", "env in (a,(b))"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
