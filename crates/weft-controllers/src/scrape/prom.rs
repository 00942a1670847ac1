//! A small parser for the Prometheus text format and OpenMetrics, enough for what the sidecars
//! and agents expose: samples with labels (escapes included), `NaN`/`±Inf`, optional
//! timestamps and exemplars (both ignored). Comment lines (`# HELP`, `# TYPE`, `# EOF`) are
//! skipped: the figures we need are known by name, so types are not needed to read them.

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A line that is not a sample, with its 1-based number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole exposition. One bad line fails the whole text: a half-read scrape could
/// read as a counter reset (a series missing looks like zero), which is worse than no scrape.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|message| ParseError { line: i + 1, message })?;
        out.push(sample);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    // OpenMetrics exemplars follow ` # `; they are not part of the value.
    let rest = rest.split(" # ").next().unwrap_or("");
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name}: bad value {value:?}"))?;
    // An optional timestamp may follow; anything more is malformed.
    if fields.nth(1).is_some() {
        return Err(format!("{name}: unexpected text after the value"));
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

type Labels = Vec<(String, String)>;

/// Labels after the `{`; returns them and the text after the closing `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value without quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err("unterminated label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openmetrics_from_prometheus_client() {
        let text = "# HELP weft_requests Requests.\n\
# TYPE weft_requests counter\n\
weft_requests_total{direction=\"inbound\",service=\"shop\",upstream=\"127.0.0.1:1\",code=\"200\"} 2\n\
# TYPE weft_request_duration_seconds histogram\n\
weft_request_duration_seconds_sum{direction=\"inbound\",service=\"shop\",class=\"2xx\"} 0.0123\n\
weft_request_duration_seconds_count{direction=\"inbound\",service=\"shop\",class=\"2xx\"} 1\n\
weft_request_duration_seconds_bucket{le=\"0.0005\",direction=\"inbound\",service=\"shop\",class=\"2xx\"} 0\n\
weft_request_duration_seconds_bucket{le=\"+Inf\",direction=\"inbound\",service=\"shop\",class=\"2xx\"} 1\n\
weft_requests_in_flight{direction=\"inbound\",service=\"shop\"} 3\n\
# EOF\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].name, "weft_requests_total");
        assert_eq!(s[0].label("code"), Some("200"));
        assert_eq!(s[0].value, 2.0);
        assert_eq!(s[1].value, 0.0123);
        assert_eq!(s[4].label("le"), Some("+Inf"));
        assert_eq!(s[5].name, "weft_requests_in_flight");
        assert_eq!(s[5].value, 3.0);
    }

    #[test]
    fn handles_escapes_special_values_timestamps_and_exemplars() {
        let text = "a{x=\"q\\\"uote\",y=\"back\\\\slash\",z=\"new\\nline\",} NaN\n\
b +Inf 1700000000000\n\
c{} -Inf\n\
d_total{k=\"v\"} 5 # {trace_id=\"abc\"} 1.0 1700000000\n\
e 1e3\n";
        let s = parse(text).unwrap();
        assert_eq!(s[0].label("x"), Some("q\"uote"));
        assert_eq!(s[0].label("y"), Some("back\\slash"));
        assert_eq!(s[0].label("z"), Some("new\nline"));
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        assert!(s[2].labels.is_empty());
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert_eq!(s[3].value, 5.0);
        assert_eq!(s[4].value, 1000.0);
    }

    #[test]
    fn rejects_garbage_whole() {
        for bad in ["x{a=\"1\" 2", "x{a=1} 2", "x abc", "x", "9x 1", "x{a=\"1\"} 1 2 3", "<html>"] {
            let e = parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
    }
}
