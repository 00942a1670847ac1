//! `weft-demo load`: an open-loop load generator.
//!
//! Requests start on a fixed schedule (`--rps`) whether or not earlier ones have finished, as
//! real users do; a closed loop would slow down with the server and hide the very overload the
//! demo is about. Latency is measured from when a request was due, not when it was sent, for
//! the same reason. Every second it prints a line: requests finished, achieved rate,
//! p50/p99/max latency and failures by status.
//!
//! Requests go straight to `--url`, never through `HTTP_PROXY`: the point is to load the
//! gateway or an instance from outside.
//!
//! With `--fail-on-json-errors`, a response that succeeded by its status but carries a
//! non-empty `errors` array in a JSON body (the frontend's `/api/home` when a downstream call
//! failed) is a failure too, `json-errors`; at the end the most frequent failure messages are
//! listed, so a run that failed says why.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// URL to GET (http only), e.g. http://127.0.0.1:8080/ (the gateway).
    #[arg(long)]
    url: String,
    /// Requests started per second.
    #[arg(long, default_value_t = 50.0)]
    rps: f64,
    /// How long to run, e.g. 30s or 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Most requests in flight. A request due while this many are pending is not sent and is
    /// counted as skipped (queueing it would turn the open loop into a closed one).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// A request without a response after this long counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Extra request header, e.g. `x-user-id: alice` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Count a 2xx/3xx response whose JSON body has a non-empty `errors` array as a failure
    /// (`json-errors`): the shop's frontend answers 200 with what went wrong downstream.
    /// Also lists the most frequent failure messages at the end.
    #[arg(long)]
    fail_on_json_errors: bool,
}

/// How one request ended.
enum Outcome {
    Status(u16),
    /// Succeeded by its status, but the JSON body lists errors (`--fail-on-json-errors`).
    JsonErrors,
    Timeout,
    Failed,
    /// Not sent: `--concurrency` requests were already in flight.
    Skipped,
}

/// Results within one reporting period, or the whole run.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: u64,
    /// Status codes that are not 2xx or 3xx, `json-errors`, `timeout`, `error`.
    failures: BTreeMap<String, u64>,
    skipped: u64,
    /// What failed responses said, and how often (`--fail-on-json-errors` only).
    messages: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, outcome: &Outcome, latency: Duration) {
        let failure = match outcome {
            Outcome::Skipped => {
                self.skipped += 1;
                return;
            }
            Outcome::Status(s) if *s < 400 => None,
            Outcome::Status(s) => Some(s.to_string()),
            Outcome::JsonErrors => Some("json-errors".to_string()),
            Outcome::Timeout => Some("timeout".to_string()),
            Outcome::Failed => Some("error".to_string()),
        };
        self.latencies.push(latency);
        match failure {
            None => self.ok += 1,
            Some(f) => *self.failures.entry(f).or_default() += 1,
        }
    }

    fn note(&mut self, messages: &[String]) {
        for m in messages {
            *self.messages.entry(m.clone()).or_default() += 1;
        }
    }

    /// The `n` most frequent failure messages, most frequent first.
    fn top_messages(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.messages.iter().map(|(m, c)| (m.as_str(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }

    fn done(&self) -> u64 {
        self.latencies.len() as u64
    }

    fn failures(&self) -> String {
        let mut out = String::new();
        for (what, n) in &self.failures {
            let _ = write!(out, "{}{what}:{n}", if out.is_empty() { "" } else { " " });
        }
        if self.skipped > 0 {
            let _ =
                write!(out, "{}skipped:{}", if out.is_empty() { "" } else { " " }, self.skipped);
        }
        if out.is_empty() { "-".to_string() } else { out }
    }
}

/// Longest failure message kept, in characters.
const MESSAGE_MAX: usize = 200;

/// The `errors` a JSON body lists (an array of strings, or of anything, shown as JSON); empty
/// when the body is not a JSON object or has no such array.
fn json_errors(body: &[u8]) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return Vec::new();
    };
    match map.get("errors") {
        Some(serde_json::Value::Array(errors)) => errors
            .iter()
            .map(|e| match e {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .map(|m| shorten(&m))
            .collect(),
        _ => Vec::new(),
    }
}

/// What a failed response's body says: its `errors`, else its `error`, else its start.
fn failure_message(status: u16, body: &[u8]) -> Vec<String> {
    let errors = json_errors(body);
    if !errors.is_empty() {
        return errors.into_iter().map(|e| format!("{status}: {e}")).collect();
    }
    let said = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => match map.get("error") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => String::from_utf8_lossy(body).into_owned(),
        },
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    vec![format!("{status}: {}", shorten(said.trim()))]
}

fn shorten(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MESSAGE_MAX) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// How a finished exchange counts, and what it said when it failed.
fn classify(status: u16, body: &[u8], fail_on_json_errors: bool) -> (Outcome, Vec<String>) {
    if !fail_on_json_errors {
        return (Outcome::Status(status), Vec::new());
    }
    if status >= 400 {
        return (Outcome::Status(status), failure_message(status, body));
    }
    let errors = json_errors(body);
    if errors.is_empty() {
        (Outcome::Status(status), Vec::new())
    } else {
        (Outcome::JsonErrors, errors.into_iter().map(|e| format!("{status}: {e}")).collect())
    }
}

/// The `q` quantile (0..=1) of sorted latencies, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1))).copied()
}

fn ms(d: Option<Duration>) -> String {
    match d {
        None => "-".to_string(),
        Some(d) if d >= Duration::from_secs(1) => format!("{:.2}s", d.as_secs_f64()),
        Some(d) => format!("{:.1}ms", d.as_secs_f64() * 1e3),
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let uri: Uri =
        args.url.parse().with_context(|| format!("--url {:?} is not a URL", args.url))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        bail!("--url must be an http:// URL with a host, e.g. http://127.0.0.1:8080/");
    }
    if !(args.rps.is_finite() && args.rps > 0.0) {
        bail!("--rps must be more than 0");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) =
            h.split_once(':').with_context(|| format!("--header {h:?}: expected NAME: VALUE"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("--header {h:?}: bad name"))?;
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("--header {h:?}: bad value"))?;
        headers.push((name, value));
    }
    let headers = Arc::new(headers);

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(args.timeout));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build(connector);

    println!(
        "loading {} at {} rps for {} (at most {} in flight)",
        args.url,
        args.rps,
        humantime::format_duration(args.duration),
        args.concurrency
    );
    println!(
        "{:>6} {:>7} {:>8} {:>9} {:>9} {:>9}  failures",
        "t", "done", "rps", "p50", "p99", "max"
    );

    let (tx, mut rx) = mpsc::unbounded_channel::<(Outcome, Duration, Vec<String>)>();
    let fail_on_json_errors = args.fail_on_json_errors;
    let start = Instant::now();
    // Computed up front, and each due time from its index, so rounding never adds a request.
    let count = (args.duration.as_secs_f64() * args.rps).round() as u64;
    let rps = args.rps;
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let generator = {
        let (uri, timeout, end) = (uri.clone(), args.timeout, start + args.duration);
        tokio::spawn(async move {
            for n in 0..=count {
                // One more turn than requests: the last waits for the end of the run, so the
                // channel stays open, and the report runs, for the whole duration.
                let due =
                    if n == count { end } else { start + Duration::from_secs_f64(n as f64 / rps) };
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                if n == count {
                    break;
                }
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    let _ = tx.send((Outcome::Skipped, Duration::ZERO, Vec::new()));
                    continue;
                };
                let mut req = hyper::Request::get(uri.clone());
                for (name, value) in headers.iter() {
                    req = req.header(name, value);
                }
                let Ok(req) = req.body(Empty::new()) else { break };
                let (client, tx) = (client.clone(), tx.clone());
                tokio::spawn(async move {
                    let exchange = async {
                        let resp = client.request(req).await.ok()?;
                        let status = resp.status().as_u16();
                        // Read the whole body: a response is not done until it is.
                        let body = resp.into_body().collect().await.ok()?.to_bytes();
                        Some((status, body))
                    };
                    let (outcome, messages) = match tokio::time::timeout(timeout, exchange).await {
                        Ok(Some((status, body))) => classify(status, &body, fail_on_json_errors),
                        Ok(None) => (Outcome::Failed, Vec::new()),
                        Err(_) => (Outcome::Timeout, Vec::new()),
                    };
                    let _ = tx.send((outcome, due.elapsed(), messages));
                    drop(permit);
                });
            }
        })
    };

    let (mut period, mut total) = (Tally::default(), Tally::default());
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut seconds = 0u64;
    loop {
        tokio::select! {
            // The tick first: at the end of the run it is due together with the channel's close.
            biased;
            _ = tick.tick() => {
                seconds += 1;
                report(&format!("{seconds}s"), &mut period, Some(Duration::from_secs(1)));
            }
            sample = rx.recv() => match sample {
                Some((outcome, latency, messages)) => {
                    period.record(&outcome, latency);
                    total.record(&outcome, latency);
                    total.note(&messages);
                }
                // Every sender is gone: the schedule ended and every request finished.
                None => break,
            },
        }
    }
    let _ = generator.await;
    let elapsed = start.elapsed();
    // Requests that finished after the last full second (slow ones, or all of them after
    // Ctrl-C); a rate over a fraction of a second would mislead, so none is shown.
    if period.done() + period.skipped > 0 {
        report(&format!("{:.1}s", elapsed.as_secs_f64()), &mut period, None);
    }

    total.latencies.sort_unstable();
    let started = total.done() + total.skipped;
    println!(
        "total: {started} due, {} done, {} ok, {:.1} rps over {:.1}s; p50 {} p90 {} p99 {} p99.9 {} max {}; failures {}",
        total.done(),
        total.ok,
        total.done() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        ms(quantile(&total.latencies, 0.5)),
        ms(quantile(&total.latencies, 0.9)),
        ms(quantile(&total.latencies, 0.99)),
        ms(quantile(&total.latencies, 0.999)),
        ms(total.latencies.last().copied()),
        total.failures(),
    );
    if fail_on_json_errors && !total.messages.is_empty() {
        println!("most frequent failure messages:");
        for (message, n) in total.top_messages(10) {
            println!("  {n:>7}  {message}");
        }
    }
    Ok(())
}

/// Prints one period's line and starts the next period.
fn report(label: &str, period: &mut Tally, length: Option<Duration>) {
    let mut p = std::mem::take(period);
    p.latencies.sort_unstable();
    let rate =
        length.map_or("-".to_string(), |l| format!("{:.1}", p.done() as f64 / l.as_secs_f64()));
    println!(
        "{label:>6} {:>7} {rate:>8} {:>9} {:>9} {:>9}  {}",
        p.done(),
        ms(quantile(&p.latencies, 0.5)),
        ms(quantile(&p.latencies, 0.99)),
        ms(p.latencies.last().copied()),
        p.failures(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn failures_are_counted_by_kind() {
        let mut t = Tally::default();
        t.record(&Outcome::Status(200), Duration::ZERO);
        t.record(&Outcome::Status(503), Duration::ZERO);
        t.record(&Outcome::Status(503), Duration::ZERO);
        t.record(&Outcome::Timeout, Duration::ZERO);
        t.record(&Outcome::Skipped, Duration::ZERO);
        assert_eq!(t.failures(), "503:2 timeout:1 skipped:1");
        assert_eq!((t.ok, t.done()), (1, 4));
    }

    #[test]
    fn json_errors_fail_only_when_asked() {
        let failed = br#"{"user":"bench","products":[],"errors":["cart is unreachable: reset"]}"#;
        let fine = br#"{"user":"bench","products":[{"id":"tea"}],"errors":[]}"#;

        // Without the flag, the status alone decides, and nothing is kept.
        let (o, m) = classify(200, failed, false);
        assert!(matches!(o, Outcome::Status(200)) && m.is_empty());

        let (o, m) = classify(200, failed, true);
        assert!(matches!(o, Outcome::JsonErrors));
        assert_eq!(m, vec!["200: cart is unreachable: reset".to_string()]);
        let (o, m) = classify(200, fine, true);
        assert!(matches!(o, Outcome::Status(200)) && m.is_empty());
        // Not JSON, or JSON without an `errors` array: its status decides.
        for body in [&b"<html>ok</html>"[..], br#"{"errors":"x"}"#, b"[1,2]", b""] {
            let (o, m) = classify(200, body, true);
            assert!(matches!(o, Outcome::Status(200)) && m.is_empty());
        }

        let mut t = Tally::default();
        for body in [&failed[..], fine, failed] {
            let (o, m) = classify(200, body, true);
            t.record(&o, Duration::ZERO);
            t.note(&m);
        }
        assert_eq!(t.failures(), "json-errors:2");
        assert_eq!((t.ok, t.done()), (1, 3));
        assert_eq!(t.top_messages(5), vec![("200: cart is unreachable: reset", 2)]);
    }

    #[test]
    fn failed_responses_say_why() {
        let (o, m) = classify(502, br#"{"error":"catalog is unreachable"}"#, true);
        assert!(matches!(o, Outcome::Status(502)));
        assert_eq!(m, vec!["502: catalog is unreachable".to_string()]);
        let (_, m) = classify(503, b"no healthy upstream\n", true);
        assert_eq!(m, vec!["503: no healthy upstream".to_string()]);
        let (_, m) = classify(502, br#"{"errors":["catalog answered 503: x"]}"#, true);
        assert_eq!(m, vec!["502: catalog answered 503: x".to_string()]);
        let long = "x".repeat(500);
        let (_, m) = classify(500, long.as_bytes(), true);
        assert_eq!(m[0].chars().count(), "500: ".len() + MESSAGE_MAX + 1);
    }
}
