//! Reading manifests: multi-document YAML, a JSON object, a JSON array, a `List`, or a stream
//! of JSON objects. Syntax errors carry line and column in the text the user wrote.

use serde_json::Value;

use crate::error::ApiError;

/// One object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// 1-based position among the objects read (empty YAML documents are not counted).
    pub index: usize,
    /// 1-based line where the document starts, when read from YAML or a JSON stream.
    pub line: Option<usize>,
    pub value: Value,
}

/// Reads every object in `text`, JSON or YAML (decided by the first non-blank character).
/// Kind-level checks are left to [`crate::kinds::normalize`].
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ApiError> {
    let docs = if looks_like_json(text) { parse_json(text)? } else { parse_yaml(text)? };
    let mut out = Vec::with_capacity(docs.len());
    for (line, value) in docs {
        // A List wraps objects (what `weft get -o yaml` prints for several objects).
        if value.get("kind").and_then(Value::as_str) == Some("List") {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => {
                    return Err(ApiError::invalid("items", "a List's items must be an array"));
                }
            };
            for item in items {
                out.push(Document { index: out.len() + 1, line, value: item });
            }
        } else {
            out.push(Document { index: out.len() + 1, line, value });
        }
    }
    for d in &out {
        if !d.value.is_object() {
            let what = match &d.value {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "something else",
            };
            return Err(ApiError::invalid(
                "",
                format!(
                    "{}expected an object with apiVersion, kind, metadata and spec, found {what}",
                    at_line(d.line)
                ),
            )
            .in_document(d.index, None));
        }
    }
    Ok(out)
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['))
}

fn parse_json(text: &str) -> Result<Vec<(Option<usize>, Value)>, ApiError> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Strict>();
    loop {
        let start = stream.byte_offset();
        match stream.next().map(|r| r.map(|s| s.0)) {
            None => break,
            Some(Ok(Value::Array(items))) => out.extend(items.into_iter().map(|v| (None, v))),
            Some(Ok(v)) => {
                let skipped = text[start..].len() - text[start..].trim_start().len();
                out.push((Some(line_of(text, start + skipped)), v));
            }
            Some(Err(e)) => {
                return Err(ApiError::bad_request(format!(
                    "invalid JSON at line {}, column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e.to_string())
                )));
            }
        }
    }
    Ok(out)
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// serde's messages end with " at line X column Y"; we say where first, so drop the tail.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Splits on `---` lines ourselves (rather than letting the YAML parser iterate documents) so
/// each document's starting line is known exactly: errors can then point into the file.
fn parse_yaml(text: &str) -> Result<Vec<(Option<usize>, Value)>, ApiError> {
    let mut chunks: Vec<(usize, String)> = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_separator = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c == ' ' || c == '\t' || c == '\r' || c == '\n');
        if is_separator && !current.trim().is_empty() {
            chunks.push((start, std::mem::take(&mut current)));
        }
        if is_separator && current.trim().is_empty() {
            current.clear();
            start = i + 1;
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        chunks.push((start, current));
    }
    let mut out = Vec::new();
    for (first_line, chunk) in chunks {
        if is_blank_yaml(&chunk) {
            continue;
        }
        match serde_yaml_ng::from_str::<Strict>(&chunk).map(|s| s.0) {
            Ok(Value::Null) => {}
            Ok(v) => {
                let body_line =
                    first_content_line(&chunk).map_or(first_line, |l| first_line + l - 1);
                out.push((Some(body_line), v));
            }
            Err(e) => {
                let message = strip_position(&e.to_string()).to_string();
                // serde places a duplicate-key error at the start of its mapping; the second
                // occurrence of the key is where the user needs to look.
                let location = duplicate_key_line(&chunk, &message)
                    .or_else(|| e.location().map(|l| (l.line(), l.column())));
                return Err(match location {
                    Some((line, column)) => ApiError::bad_request(format!(
                        "invalid YAML at line {}, column {column}: {message}",
                        first_line + line - 1,
                    )),
                    None => ApiError::bad_request(format!(
                        "invalid YAML in the document starting at line {first_line}: {message}"
                    )),
                });
            }
        }
    }
    Ok(out)
}

/// Line and column (1-based) of the second occurrence of a duplicated key at one indentation.
fn duplicate_key_line(chunk: &str, message: &str) -> Option<(usize, usize)> {
    let key = message.rsplit_once("duplicate key \"")?.1.strip_suffix('"')?;
    let mut seen: Vec<usize> = Vec::new();
    for (i, line) in chunk.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        let indent = indent + (trimmed.len() - body.len());
        let body = body.trim_start_matches(['"', '\'']);
        if let Some(rest) = body.strip_prefix(key)
            && rest.trim_start_matches(['"', '\'']).trim_start().starts_with(':')
        {
            if seen.contains(&indent) {
                return Some((i + 1, indent + 1));
            }
            seen.push(indent);
        }
    }
    None
}

fn is_blank_yaml(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

fn first_content_line(chunk: &str) -> Option<usize> {
    chunk
        .lines()
        .position(|l| {
            let t = l.trim();
            !(t.is_empty() || t.starts_with('#') || t == "---")
        })
        .map(|i| i + 1)
}

/// A JSON value that refuses duplicate keys: in a manifest, a repeated key is a mistake (the
/// later one would silently win), so reading one is an error that points at it.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON-compatible value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Renders a value as YAML for people (`weft get -o yaml`).
pub fn to_yaml(value: &Value) -> String {
    serde_yaml_ng::to_string(value).unwrap_or_else(|e| format!("# could not render YAML: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_multi_document_with_lines() {
        let text = "# comment\napiVersion: weft/v1\nkind: Service\n---\n\n---\n# c\napiVersion: weft/v1\nkind: Deployment\n...\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, Some(2));
        assert_eq!(docs[1].line, Some(8));
        assert_eq!(docs[1].index, 2);
        assert_eq!(docs[1].value["kind"], "Deployment");
    }

    #[test]
    fn yaml_syntax_error_points_into_the_file() {
        let text = "kind: A\n---\nkind: B\nmetadata:\n  name: x\n   bad: [\n";
        let e = parse_documents(text).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message.starts_with("invalid YAML at line 6,"), "{}", e.message);
    }

    #[test]
    fn yaml_duplicate_keys_are_errors() {
        let e = parse_documents("kind: A\nkind: B\n").unwrap_err();
        assert_eq!(e.message, "invalid YAML at line 2, column 1: duplicate key \"kind\"");
        let nested = "metadata:\n  name: a\n  labels: {x: y}\n  name: b\n";
        let e = parse_documents(nested).unwrap_err();
        assert!(e.message.starts_with("invalid YAML at line 4, column 3"), "{}", e.message);
    }

    #[test]
    fn json_duplicate_keys_are_errors() {
        let e = parse_documents("{\"kind\": \"A\",\n \"kind\": \"B\"}").unwrap_err();
        assert!(e.message.contains("duplicate key"), "{}", e.message);
    }

    #[test]
    fn json_forms() {
        assert_eq!(parse_documents(r#"{"kind":"A"}"#).unwrap().len(), 1);
        assert_eq!(parse_documents(r#"[{"kind":"A"},{"kind":"B"}]"#).unwrap().len(), 2);
        assert_eq!(
            parse_documents("{\"kind\":\"A\"}\n{\"kind\":\"B\"}\n").unwrap()[1].line,
            Some(2)
        );
        let list = r#"{"kind":"List","items":[{"kind":"A"},{"kind":"B"},{"kind":"C"}]}"#;
        assert_eq!(parse_documents(list).unwrap().len(), 3);
    }

    #[test]
    fn json_syntax_error_has_position() {
        let e = parse_documents("{\n  \"kind\": \"A\",\n  oops\n}").unwrap_err();
        assert!(e.message.starts_with("invalid JSON at line 3, column 3"), "{}", e.message);
    }

    #[test]
    fn non_objects_are_rejected_with_their_document() {
        let e = parse_documents("kind: A\n---\n- just\n- a list\n").unwrap_err();
        assert_eq!(e.document, Some(2));
        assert!(e.message.contains("found a list"), "{}", e.message);
    }

    #[test]
    fn empty_input_is_no_documents() {
        assert!(parse_documents("").unwrap().is_empty());
        assert!(parse_documents("# nothing\n---\n").unwrap().is_empty());
    }
}
