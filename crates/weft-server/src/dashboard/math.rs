//! The dashboard's figures, pure: Prometheus text in, per-series counters out, and from two
//! scrapes of the same sidecar the change (requests, 5xx, latency buckets) between them; from
//! summed changes, requests/s, success rate and p99. No sockets and no clocks: the caller passes
//! the time between scrapes, so the tests drive it.
//!
//! (The controllers have their own parser in `weft-controllers::scrape::prom`; the api server
//! does not depend on the controllers, so this is a small copy of the same idea.)

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text / OpenMetrics. One bad line fails the whole text: half a scrape
/// would read as counters that went backwards.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|m| format!("line {}: {m}", i + 1))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(mut s) = rest.strip_prefix('{') {
        loop {
            s = s.trim_start();
            if let Some(tail) = s.strip_prefix('}') {
                rest = tail;
                break;
            }
            let eq = s.find('=').ok_or("label without '='")?;
            let key = s[..eq].trim().to_string();
            s = s[eq + 1..].trim_start().strip_prefix('"').ok_or("label value without quotes")?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key, value));
            s = s[close + 1..].trim_start();
            if let Some(tail) = s.strip_prefix(',') {
                s = tail;
            } else if !s.starts_with('}') {
                return Err("expected ',' or '}' after a label".into());
            }
        }
    }
    let rest = rest.split(" # ").next().unwrap_or("");
    let value = rest.split_ascii_whitespace().next().ok_or_else(|| format!("{name}: no value"))?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{name}: bad value {v:?}"))?,
    };
    Ok(Sample { name: name.to_string(), labels, value })
}

/// Cumulative histogram buckets `(upper bound, count at or below it)`, ascending by bound.
pub type Buckets = Vec<(f64, f64)>;

/// Counters of one `(direction, service)` on one sidecar.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub requests: f64,
    /// Answers with a 5xx code (the proxy's own 502/503/504 included).
    pub errors: f64,
    pub buckets: Buckets,
    pub in_flight: f64,
}

/// `(direction, service)`: `("outbound", "catalog")` is this instance's calls to catalog.
pub type SeriesKey = (String, String);

/// What one scrape of one sidecar says, per direction and service.
pub type Scrape = BTreeMap<SeriesKey, Counters>;

/// Sums a sidecar's samples per `(direction, service)` over upstreams, codes and classes.
pub fn counters(samples: &[Sample]) -> Scrape {
    let mut out: Scrape = BTreeMap::new();
    // Buckets by bound first (keyed by the bound's bits: bounds are finite or +Inf, no NaN).
    let mut buckets: BTreeMap<SeriesKey, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for s in samples {
        if !s.value.is_finite() {
            continue;
        }
        let (Some(dir), Some(svc)) = (s.label("direction"), s.label("service")) else {
            continue;
        };
        let key = (dir.to_string(), svc.to_string());
        match s.name.as_str() {
            "weft_requests_total" | "weft_requests" => {
                let c = out.entry(key).or_default();
                c.requests += s.value;
                if s.label("code").is_some_and(|code| code.starts_with('5')) {
                    c.errors += s.value;
                }
            }
            "weft_requests_in_flight" => out.entry(key).or_default().in_flight += s.value,
            "weft_request_duration_seconds_bucket" => {
                let Some(le) = s.label("le").and_then(parse_le) else { continue };
                buckets.entry(key).or_default().entry(order_key(le)).or_insert((le, 0.0)).1 +=
                    s.value;
            }
            _ => {}
        }
    }
    for (key, b) in buckets {
        out.entry(key).or_default().buckets = b.into_values().collect();
    }
    out
}

fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        v => v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0),
    }
}

/// Orders non-negative bounds (and +Inf) by their bits, which sort like the numbers.
fn order_key(le: f64) -> u64 {
    le.to_bits()
}

/// A counter's increase from `before` to `after`. A counter lower than before restarted from
/// zero (a restarted sidecar), so all of it is the increase, as Prometheus' `rate()` has it.
pub fn increase(before: f64, after: f64) -> f64 {
    if after >= before { after - before } else { after }
}

/// The change of one series between two scrapes of the same sidecar.
pub fn delta(before: &Counters, after: &Counters) -> Counters {
    let reset = after.requests < before.requests;
    let inc = |b: f64, a: f64| if reset { a } else { increase(b, a) };
    let buckets = after
        .buckets
        .iter()
        .map(|&(le, a)| {
            let b = before.buckets.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
            (le, inc(b, a))
        })
        .collect();
    Counters {
        requests: inc(before.requests, after.requests),
        errors: inc(before.errors, after.errors),
        buckets,
        in_flight: after.in_flight,
    }
}

/// The change of every series of a sidecar between two scrapes; a series absent before
/// counts from zero (it appears with its first request).
pub fn scrape_delta(before: &Scrape, after: &Scrape) -> Scrape {
    after
        .iter()
        .map(|(k, a)| (k.clone(), delta(before.get(k).unwrap_or(&Counters::default()), a)))
        .collect()
}

/// Adds `other`'s increases into `sum` (summing sidecars of one caller or callee).
pub fn add(sum: &mut Counters, other: &Counters) {
    sum.requests += other.requests;
    sum.errors += other.errors;
    sum.in_flight += other.in_flight;
    for &(le, c) in &other.buckets {
        match sum.buckets.iter_mut().find(|(l, _)| *l == le) {
            Some(b) => b.1 += c,
            None => sum.buckets.push((le, c)),
        }
    }
    sum.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// The `q` quantile (0..=1) of cumulative buckets, interpolated linearly inside the bucket it
/// falls in, as Prometheus' `histogram_quantile`: `None` without observations; a quantile in
/// the `+Inf` bucket is the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank && count > lower.1 {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = (rank - lower.1) / (count - lower.1);
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// What the dashboard shows for an edge or a node over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    pub rps: f64,
    /// Non-5xx share of the requests; `None` without requests.
    pub success_rate: Option<f64>,
    /// Seconds; `None` without requests.
    pub p99: Option<f64>,
    pub in_flight: f64,
}

/// Figures from the summed increases over `seconds`.
pub fn figures(sum: &Counters, seconds: f64) -> Figures {
    let rps = if seconds > 0.0 { sum.requests / seconds } else { 0.0 };
    let success_rate =
        (sum.requests > 0.0).then(|| (1.0 - sum.errors / sum.requests).clamp(0.0, 1.0));
    let p99 = if sum.requests > 0.0 { quantile(0.99, &sum.buckets) } else { None };
    Figures { rps, success_rate, p99, in_flight: sum.in_flight }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP weft_requests Requests.\n\
# TYPE weft_requests counter\n\
weft_requests_total{direction=\"outbound\",service=\"catalog\",upstream=\"127.0.0.1:1\",code=\"200\"} 90\n\
weft_requests_total{direction=\"outbound\",service=\"catalog\",upstream=\"127.0.0.1:2\",code=\"503\"} 10\n\
weft_requests_total{direction=\"inbound\",service=\"frontend\",upstream=\"127.0.0.1:3\",code=\"200\"} 5\n\
weft_request_duration_seconds_bucket{le=\"0.01\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 50\n\
weft_request_duration_seconds_bucket{le=\"0.1\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 90\n\
weft_request_duration_seconds_bucket{le=\"+Inf\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 90\n\
weft_request_duration_seconds_bucket{le=\"0.01\",direction=\"outbound\",service=\"catalog\",class=\"5xx\"} 10\n\
weft_request_duration_seconds_bucket{le=\"0.1\",direction=\"outbound\",service=\"catalog\",class=\"5xx\"} 10\n\
weft_request_duration_seconds_bucket{le=\"+Inf\",direction=\"outbound\",service=\"catalog\",class=\"5xx\"} 10\n\
weft_requests_in_flight{direction=\"outbound\",service=\"catalog\"} 3\n\
# EOF\n";

    fn out(svc: &str) -> SeriesKey {
        ("outbound".into(), svc.into())
    }

    #[test]
    fn parses_and_sums_per_direction_and_service() {
        let s = parse(TEXT).unwrap();
        assert_eq!(s.len(), 10);
        assert_eq!(s[0].label("upstream"), Some("127.0.0.1:1"));
        let c = counters(&s);
        let cat = &c[&out("catalog")];
        assert_eq!(cat.requests, 100.0);
        assert_eq!(cat.errors, 10.0);
        assert_eq!(cat.in_flight, 3.0);
        assert_eq!(cat.buckets, vec![(0.01, 60.0), (0.1, 100.0), (f64::INFINITY, 100.0)]);
        assert_eq!(c[&("inbound".to_string(), "frontend".to_string())].requests, 5.0);
    }

    #[test]
    fn bad_text_is_refused_whole() {
        assert!(parse("weft_requests_total{direction=\"in 1\n").is_err());
        assert!(parse("weft_requests_total 1\nbad-name 2\n").is_err());
        assert!(
            parse("x{a=\"q\\\"uote\"} 1 1700000000\n").unwrap()[0].label("a") == Some("q\"uote")
        );
    }

    #[test]
    fn quantile_interpolates_like_histogram_quantile() {
        let b = vec![(0.01, 50.0), (0.1, 100.0), (f64::INFINITY, 100.0)];
        // Rank 50 is the top of the first bucket.
        assert!((quantile(0.5, &b).unwrap() - 0.01).abs() < 1e-12);
        // Rank 99: 49/50 of the way from 0.01 to 0.1.
        assert!((quantile(0.99, &b).unwrap() - (0.01 + 0.09 * 49.0 / 50.0)).abs() < 1e-12);
        // In the +Inf bucket: the highest finite bound.
        let tail = vec![(0.01, 10.0), (0.1, 20.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.99, &tail), Some(0.1));
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
        // Empty lower buckets are skipped, not divided by.
        let b = vec![(0.001, 0.0), (0.002, 0.0), (0.004, 4.0), (f64::INFINITY, 4.0)];
        let q = quantile(0.5, &b).unwrap();
        assert!((q - 0.003).abs() < 1e-12, "{q}");
    }

    #[test]
    fn deltas_and_counter_resets() {
        assert_eq!(increase(10.0, 15.0), 5.0);
        assert_eq!(increase(10.0, 3.0), 3.0); // restarted from zero
        let before = Counters {
            requests: 100.0,
            errors: 10.0,
            buckets: vec![(0.01, 60.0), (f64::INFINITY, 100.0)],
            in_flight: 1.0,
        };
        let after = Counters {
            requests: 150.0,
            errors: 10.0,
            buckets: vec![(0.01, 70.0), (0.1, 5.0), (f64::INFINITY, 150.0)],
            in_flight: 2.0,
        };
        let d = delta(&before, &after);
        assert_eq!(d.requests, 50.0);
        assert_eq!(d.errors, 0.0);
        assert_eq!(d.buckets, vec![(0.01, 10.0), (0.1, 5.0), (f64::INFINITY, 50.0)]);
        assert_eq!(d.in_flight, 2.0);
        // A reset: everything after counts, buckets included (never negative).
        let restarted = Counters {
            requests: 4.0,
            errors: 1.0,
            buckets: vec![(0.01, 4.0), (f64::INFINITY, 4.0)],
            in_flight: 0.0,
        };
        let d = delta(&after, &restarted);
        assert_eq!((d.requests, d.errors), (4.0, 1.0));
        assert_eq!(d.buckets, vec![(0.01, 4.0), (f64::INFINITY, 4.0)]);
    }

    #[test]
    fn figures_from_summed_deltas() {
        let before = counters(&parse(TEXT).unwrap());
        let later = TEXT
            .replace("code=\"200\"} 90", "code=\"200\"} 280")
            .replace(
                "le=\"0.01\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 50",
                "le=\"0.01\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 240",
            )
            .replace(
                "le=\"0.1\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 90",
                "le=\"0.1\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 280",
            )
            .replace(
                "le=\"+Inf\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 90",
                "le=\"+Inf\",direction=\"outbound\",service=\"catalog\",class=\"2xx\"} 280",
            )
            .replace("code=\"503\"} 10", "code=\"503\"} 20")
            .replace("class=\"5xx\"} 10", "class=\"5xx\"} 20");
        let after = counters(&parse(&later).unwrap());
        let d = scrape_delta(&before, &after);
        // Two sidecars calling catalog, summed.
        let mut sum = Counters::default();
        add(&mut sum, &d[&out("catalog")]);
        add(&mut sum, &d[&out("catalog")]);
        assert_eq!(sum.requests, 400.0);
        let f = figures(&sum, 2.0);
        assert_eq!(f.rps, 200.0);
        assert!((f.success_rate.unwrap() - 0.95).abs() < 1e-12);
        // 400 requests, all under 10 ms: p99 inside the first bucket.
        let p99 = f.p99.unwrap();
        assert!(p99 > 0.0 && p99 <= 0.01, "{p99}");
        // A quiet window: no rate, and no made-up success rate or latency.
        let quiet = figures(&scrape_delta(&after, &after)[&out("catalog")], 2.0);
        assert_eq!((quiet.rps, quiet.success_rate, quiet.p99), (0.0, None, None));
        // A series that appears between scrapes counts from zero.
        let d = scrape_delta(&Scrape::new(), &after);
        assert_eq!(d[&out("catalog")].requests, 300.0);
    }
}
