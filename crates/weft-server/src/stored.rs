//! Object bytes between the store and the wire.
//!
//! The store keeps an object's canonical JSON without `metadata.resourceVersion`: the revision
//! is the key's `mod_revision`, known only once the write commits. Reads splice it back in
//! without re-parsing, because every stored object starts with the same fixed prefix
//! (`{"apiVersion":"weft/v1","kind":"…","metadata":{`): keys are sorted and both strings are
//! validated. That keeps point reads and watch fan-out free of JSON work.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use weft_api::ApiError;
use weft_api::wire::EventType;

/// Canonical stored form: sorted keys, no resourceVersion.
pub fn encode(mut v: Value) -> Result<Bytes, ApiError> {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

/// The object's JSON with `metadata.resourceVersion` set to `revision`.
pub fn with_revision(stored: &[u8], revision: u64) -> Bytes {
    const MARK: &[u8] = b"\"metadata\":{";
    let mut rv = itoa_buf(revision);
    if let Some(at) = find(stored, MARK) {
        let split = at + MARK.len();
        let empty = stored.get(split) == Some(&b'}');
        let mut out = BytesMut::with_capacity(stored.len() + 40);
        out.put_slice(&stored[..split]);
        out.put_slice(b"\"resourceVersion\":\"");
        out.put_slice(rv.as_bytes());
        out.put_slice(if empty { b"\"" } else { b"\"," });
        out.put_slice(&stored[split..]);
        return out.freeze();
    }
    // Not our canonical form (should not happen); take the slow, certain path.
    match serde_json::from_slice::<Value>(stored) {
        Ok(mut v) => {
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(std::mem::take(&mut rv)));
            }
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => Bytes::copy_from_slice(stored),
    }
}

/// Parses stored bytes into a value carrying its revision.
pub fn decode(stored: &[u8], revision: u64) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(stored)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
    Ok(v)
}

/// An object's labels, read from its stored bytes without decoding the rest.
pub fn labels(stored: &[u8]) -> std::collections::BTreeMap<String, String> {
    #[derive(serde::Deserialize)]
    struct LabelsOnly {
        #[serde(default)]
        metadata: MetaLabels,
    }
    #[derive(serde::Deserialize, Default)]
    struct MetaLabels {
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    }
    serde_json::from_slice::<LabelsOnly>(stored).map(|l| l.metadata.labels).unwrap_or_default()
}

/// One NDJSON watch line: `{"type":"ADDED","object":{…}}\n`.
pub fn event_line(kind: EventType, object: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(object.len() + 32);
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.to_string().as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(object);
    out.put_slice(b"}\n");
    out.freeze()
}

/// A bookmark line for `revision`, for objects of `kind`.
pub fn bookmark_line(kind: &str, revision: u64) -> Bytes {
    let object = format!(
        "{{\"apiVersion\":\"{}\",\"kind\":\"{kind}\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}}}}",
        weft_api::API_VERSION
    );
    event_line(EventType::Bookmark, object.as_bytes())
}

fn itoa_buf(n: u64) -> String {
    n.to_string()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    // The mark sits within the first few dozen bytes; a linear scan is cheapest.
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splice_matches_slow_path() {
        let obj = json!({"apiVersion": "weft/v1", "kind": "Service", "metadata": {"name": "a", "resourceVersion": "9"}, "spec": {"x": 1}});
        let stored = encode(obj).unwrap();
        assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
        let fast: Value = serde_json::from_slice(&with_revision(&stored, 42)).unwrap();
        assert_eq!(fast, decode(&stored, 42).unwrap());
        assert_eq!(fast["metadata"]["resourceVersion"], "42");
        assert_eq!(fast["metadata"]["name"], "a");
    }

    #[test]
    fn splice_into_empty_metadata() {
        let stored = br#"{"apiVersion":"weft/v1","kind":"X","metadata":{}}"#;
        let v: Value = serde_json::from_slice(&with_revision(stored, 7)).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn event_lines_are_json() {
        let line = event_line(EventType::Added, br#"{"a":1}"#);
        assert!(line.ends_with(b"\n"));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "ADDED");
        let b: Value = serde_json::from_slice(&bookmark_line("Service", 5)).unwrap();
        assert_eq!(b["type"], "BOOKMARK");
        assert_eq!(b["object"]["metadata"]["resourceVersion"], "5");
    }
}
