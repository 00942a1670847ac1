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
                format!("{}expected an object with apiVersion, kind, metadata and spec, found {what}", at_line(d.line)),
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
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = stream.byte_offset();
        match stream.next() {
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
            && line[3..].chars().next().is_none_or(|c| c == ' ' || c == '\t' || c == '\r' || c == '\n');
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
        match serde_yaml_ng::from_str::<Value>(&chunk) {
            Ok(Value::Null) => {}
            Ok(v) => {
                let body_line = first_content_line(&chunk).map_or(first_line, |l| first_line + l - 1);
                out.push((Some(body_line), v));
            }
            Err(e) => {
                let message = strip_position(&e.to_string()).to_string();
                return Err(match e.location() {
                    Some(loc) => ApiError::bad_request(format!(
                        "invalid YAML at line {}, column {}: {message}",
                        first_line + loc.line() - 1,
                        loc.column()
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

fn is_blank_yaml(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

fn first_content_line(chunk: &str) -> Option<usize> {
    chunk.lines().position(|l| {
        let t = l.trim();
        !(t.is_empty() || t.starts_with('#') || t == "---")
    }).map(|i| i + 1)
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
        assert!(e.message.contains("line 2"), "{}", e.message);
    }

    #[test]
    fn json_forms() {
        assert_eq!(parse_documents(r#"{"kind":"A"}"#).unwrap().len(), 1);
        assert_eq!(parse_documents(r#"[{"kind":"A"},{"kind":"B"}]"#).unwrap().len(), 2);
        assert_eq!(parse_documents("{\"kind\":\"A\"}\n{\"kind\":\"B\"}\n").unwrap()[1].line, Some(2));
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
