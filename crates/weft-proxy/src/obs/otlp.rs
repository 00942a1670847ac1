//! OTLP/HTTP span export with the JSON encoding (OTLP 1.x: `POST .../v1/traces`,
//! `content-type: application/json`; ids are hex strings, 64-bit integers decimal strings).
//! JSON keeps the proxy free of protobuf code generation and the OpenTelemetry SDK.
//!
//! One task owns the queue's receiving end: it gathers spans into batches (up to
//! [`Batching::max_batch`], or what came within [`Batching::interval`] of the first one),
//! encodes them and POSTs them. A failed POST is retried a little ([`Batching::retries`], with
//! backoff) when the failure may pass (connection refused, 429, 502-504); then the batch is
//! dropped and counted. Meanwhile requests keep queueing with `try_send`, and a full queue
//! drops spans: the exporter can be slow or down without slowing a request. When the proxy
//! stops, a notification on `stop` makes the task send what is queued at once, without waiting
//! for the interval, and end: the last requests of a sidecar being scaled down keep their spans.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, mpsc};

use super::{ObsMetrics, Record, Resource};

/// How spans are gathered and sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub(crate) max_batch: usize,
    pub(crate) interval: Duration,
    /// Further attempts after a failed one that may pass.
    pub(crate) retries: u32,
    /// Wait before the first retry (doubled, then doubled again).
    pub(crate) backoff: Duration,
}

impl Batching {
    pub(crate) const DEFAULT: Batching = Batching {
        max_batch: 512,
        interval: Duration::from_secs(1),
        retries: 2,
        backoff: Duration::from_millis(200),
    };
}

/// Why a POST failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SinkError {
    /// Worth another try: unreachable, 429, 502, 503, 504.
    Transient(String),
    /// Retrying will not help (e.g. 400: the endpoint does not take this).
    Permanent(String),
}

/// Where encoded batches go.
pub(crate) trait Sink: Send + 'static {
    fn send(&mut self, body: Bytes) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The exporter task: runs until the queue is closed, or until `stop` is notified and what was
/// queued then is sent.
pub(crate) async fn run<S: Sink>(
    mut rx: mpsc::Receiver<Arc<Record>>,
    mut sink: S,
    encoder: Encoder,
    batching: Batching,
    metrics: ObsMetrics,
    stop: Arc<Notify>,
) {
    let mut batch: Vec<Arc<Record>> = Vec::with_capacity(batching.max_batch);
    let mut stopping = false;
    loop {
        let mut closed = false;
        if stopping {
            while batch.len() < batching.max_batch {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        } else {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(first) => batch.push(first),
                    None => return,
                },
                () = stop.notified() => {
                    stopping = true;
                    continue;
                }
            }
            let until = tokio::time::Instant::now() + batching.interval;
            while batch.len() < batching.max_batch {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(s) => batch.push(s),
                        None => { closed = true; break; }
                    },
                    () = tokio::time::sleep_until(until) => break,
                    () = stop.notified() => { stopping = true; break; }
                }
            }
        }
        let n = batch.len() as u64;
        let body = encoder.encode(&batch);
        batch.clear();
        let mut attempt = 0;
        loop {
            match sink.send(body.clone()).await {
                Ok(()) => {
                    metrics.exported.inc_by(n);
                    break;
                }
                Err(SinkError::Transient(_)) if attempt < batching.retries => {
                    tokio::time::sleep(batching.backoff * 2u32.pow(attempt)).await;
                    attempt += 1;
                }
                Err(_) => {
                    metrics.dropped("export_failed", n);
                    break;
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// Encodes batches of records as an OTLP `ExportTraceServiceRequest` in JSON, written straight
/// into one buffer (building a `serde_json::Value` tree per span cost tens of microseconds).
pub(crate) struct Encoder {
    /// `{"resourceSpans":[{"resource":{...},"scopeSpans":[{"scope":{...},"spans":[`
    head: Vec<u8>,
}

/// OTLP span kinds.
const SPAN_KIND_SERVER: u8 = 2;
const SPAN_KIND_CLIENT: u8 = 3;
/// OTLP status codes.
const STATUS_UNSET: u8 = 0;
const STATUS_ERROR: u8 = 2;

/// A JSON string (quoted and escaped).
fn put_str(out: &mut Vec<u8>, v: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn put_attr_str(out: &mut Vec<u8>, first: &mut bool, key: &str, v: &str) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.extend_from_slice(b"{\"key\":\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\",\"value\":{\"stringValue\":");
    put_str(out, v);
    out.extend_from_slice(b"}}");
}

fn put_attr_int(out: &mut Vec<u8>, first: &mut bool, key: &str, v: u64) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.extend_from_slice(b"{\"key\":\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\",\"value\":{\"intValue\":\"");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\"}}");
}

impl Encoder {
    pub(crate) fn new(resource: &Resource) -> Encoder {
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
        let mut first = true;
        put_attr_str(&mut head, &mut first, "service.name", &resource.service_name);
        put_attr_str(&mut head, &mut first, "service.namespace", &resource.service_namespace);
        put_attr_str(&mut head, &mut first, "service.instance.id", &resource.instance_id);
        put_attr_str(&mut head, &mut first, "telemetry.sdk.name", "weft-proxy");
        head.extend_from_slice(
            b"]},\"scopeSpans\":[{\"scope\":{\"name\":\"weft-proxy\",\"version\":",
        );
        put_str(&mut head, env!("CARGO_PKG_VERSION"));
        head.extend_from_slice(b"},\"spans\":[");
        Encoder { head }
    }

    pub(crate) fn encode(&self, records: &[Arc<Record>]) -> Bytes {
        let mut out = Vec::with_capacity(self.head.len() + records.len() * 700 + 16);
        out.extend_from_slice(&self.head);
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            span(&mut out, r);
        }
        out.extend_from_slice(b"]}]}]}");
        Bytes::from(out)
    }
}

/// One span, with the OpenTelemetry HTTP semantic-convention attribute names.
fn span(out: &mut Vec<u8>, r: &Record) {
    let server = r.direction != "outbound";
    out.extend_from_slice(b"{\"traceId\":\"");
    out.extend_from_slice(&r.trace_id);
    out.extend_from_slice(b"\",\"spanId\":\"");
    out.extend_from_slice(&r.span_id);
    out.push(b'"');
    if let Some(p) = &r.parent {
        out.extend_from_slice(b",\"parentSpanId\":\"");
        out.extend_from_slice(p);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"name\":");
    match &r.upstream {
        Some(u) => put_str(out, &format!("{} {u}", r.method)),
        None => put_str(out, &r.method),
    }
    out.extend_from_slice(b",\"kind\":");
    out.push(b'0' + if server { SPAN_KIND_SERVER } else { SPAN_KIND_CLIENT });
    out.extend_from_slice(b",\"startTimeUnixNano\":\"");
    out.extend_from_slice(r.start_unix_nanos.to_string().as_bytes());
    out.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    out.extend_from_slice(r.end_unix_nanos.to_string().as_bytes());
    out.extend_from_slice(b"\",\"attributes\":[");
    let mut first = true;
    put_attr_str(out, &mut first, "http.request.method", &r.method);
    put_attr_str(out, &mut first, "url.path", &r.path);
    put_attr_str(out, &mut first, "weft.direction", r.direction);
    put_attr_int(out, &mut first, "weft.retries", u64::from(r.retries));
    if r.status != 0 {
        put_attr_int(out, &mut first, "http.response.status_code", u64::from(r.status));
    }
    if let Some(a) = &r.authority {
        let host =
            a.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(&a[..], |(h, _)| h);
        put_attr_str(out, &mut first, "server.address", host);
    }
    if let Some(u) = &r.upstream {
        put_attr_str(out, &mut first, "weft.service", u);
    }
    if let Some(e) = &r.endpoint {
        put_attr_str(out, &mut first, "weft.upstream", &e.to_string());
    }
    // Semantic conventions: a server span is an error for 5xx, a client span from 4xx.
    let failed_status = if server { r.status >= 500 } else { r.status >= 400 };
    let error = match r.error {
        Some(kind) => Some(kind.to_string()),
        None => failed_status.then(|| r.status.to_string()),
    };
    if let Some(kind) = &error {
        put_attr_str(out, &mut first, "error.type", kind);
    }
    out.extend_from_slice(b"],\"status\":{\"code\":");
    out.push(b'0' + if error.is_some() { STATUS_ERROR } else { STATUS_UNSET });
    out.extend_from_slice(b"}}");
}

/// An `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host_port: String,
    pub(crate) path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "'{url}': only http:// endpoints (an OpenTelemetry collector or agent nearby); \
                 e.g. http://127.0.0.1:4318"
            )
        })?;
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port_ok = match host_port.rsplit_once(':') {
            Some((h, p)) => !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0),
            None => !host_port.is_empty(),
        };
        if !port_ok {
            return Err(format!("'{url}': expected http://HOST[:PORT][/PATH]"));
        }
        let host_port = if host_port.contains(':') && !host_port.ends_with(']') {
            host_port.to_string()
        } else {
            format!("{host_port}:80")
        };
        Ok(Target { host_port, path: path.to_string() })
    }
}

/// POSTs batches over HTTP/1.1, one connection kept while it works.
pub(crate) struct HttpSink {
    target: Option<Target>,
    conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

/// A POST that takes longer than this fails (and is retried or dropped).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

impl HttpSink {
    pub(crate) fn new(url: &str) -> HttpSink {
        HttpSink { target: Target::parse(url).ok(), conn: None }
    }

    async fn connect(
        target: &Target,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, SinkError> {
        let stream = tokio::net::TcpStream::connect(&target.host_port)
            .await
            .map_err(|e| SinkError::Transient(format!("connect {}: {e}", target.host_port)))?;
        let _ = stream.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SinkError::Transient(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(tx)
    }

    async fn post(&mut self, body: Bytes) -> Result<(), SinkError> {
        let Some(target) = &self.target else {
            return Err(SinkError::Permanent("bad endpoint".into()));
        };
        let mut tx = match self.conn.take() {
            Some(tx) if !tx.is_closed() => tx,
            _ => Self::connect(target).await?,
        };
        tx.ready().await.map_err(|e| SinkError::Transient(e.to_string()))?;
        let req = http::Request::post(&target.path)
            .header(http::header::HOST, &target.host_port)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| SinkError::Permanent(e.to_string()))?;
        let res = tx.send_request(req).await.map_err(|e| SinkError::Transient(e.to_string()))?;
        let status = res.status();
        // Read the (small) answer so the connection can carry the next batch.
        let _ = res.into_body().collect().await;
        self.conn = Some(tx);
        match status.as_u16() {
            200..=299 => Ok(()),
            429 | 502..=504 => Err(SinkError::Transient(format!("status {status}"))),
            _ => Err(SinkError::Permanent(format!("status {status}"))),
        }
    }
}

impl Sink for HttpSink {
    async fn send(&mut self, body: Bytes) -> Result<(), SinkError> {
        match tokio::time::timeout(SEND_TIMEOUT, self.post(body)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(SinkError::Transient("timed out".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::Mutex;
    use tokio::time::Instant;

    fn record(n: u8, parent: bool) -> Arc<Record> {
        Arc::new(Record {
            parent: parent.then_some(*b"00f067aa0ba902b7"),
            start_unix_nanos: 1_000,
            end_unix_nanos: 2_000,
            direction: if n.is_multiple_of(2) { "inbound" } else { "outbound" },
            method: "GET".into(),
            authority: Some("catalog:80".into()),
            path: "/api".into(),
            status: 200 + u16::from(n),
            duration_ms: 0.001,
            bytes_in: None,
            bytes_out: 5,
            upstream: Some("catalog".into()),
            endpoint: Some("127.0.0.1:9".parse().unwrap()),
            retries: 0,
            error: None,
            trace_id: *b"4bf92f3577b34da6a3ce929d0e0e4736",
            span_id: *b"1111111111111111",
        })
    }

    /// Records what it was sent and when; fails as told.
    #[derive(Clone, Default)]
    struct FakeSink {
        sent: Arc<Mutex<Vec<(Instant, usize)>>>,
        fail: Arc<Mutex<Vec<SinkError>>>,
    }

    impl Sink for FakeSink {
        async fn send(&mut self, body: Bytes) -> Result<(), SinkError> {
            let v: Value = serde_json::from_slice(&body).unwrap();
            let n = v["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap().len();
            self.sent.lock().unwrap().push((Instant::now(), n));
            match self.fail.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    fn resource() -> Resource {
        Resource {
            service_name: "catalog".into(),
            service_namespace: "default".into(),
            instance_id: "catalog-1".into(),
        }
    }

    fn metric(m: &ObsMetrics) -> String {
        let mut r = prometheus_client::registry::Registry::default();
        m.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    const B: Batching = Batching {
        max_batch: 3,
        interval: Duration::from_secs(1),
        retries: 2,
        backoff: Duration::from_millis(100),
    };

    /// The exporter task on a fake sink, with its queue, sink, metrics and stop.
    struct Started {
        tx: mpsc::Sender<Arc<Record>>,
        sink: FakeSink,
        metrics: ObsMetrics,
        stop: Arc<Notify>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start() -> Started {
        let (tx, rx) = mpsc::channel(16);
        let (sink, metrics, stop) = (FakeSink::default(), ObsMetrics::default(), Arc::default());
        let enc = Encoder::new(&resource());
        let task = tokio::spawn(run(rx, sink.clone(), enc, B, metrics.clone(), Arc::clone(&stop)));
        Started { tx, sink, metrics, stop, task }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_sends_what_is_queued_at_once_and_ends() {
        let Started { tx, sink, metrics, stop, task } = start();
        let t0 = Instant::now();
        // Two wait for the interval (a batch is three); five more come after the stop.
        tx.send(record(0, true)).await.unwrap();
        tx.send(record(1, true)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(sink.sent.lock().unwrap().is_empty());
        for i in 2..7 {
            tx.send(record(i, true)).await.unwrap();
        }
        stop.notify_one();
        // The queue is still open (the proxy holds its sender): the task ends on its own.
        tokio::time::timeout(Duration::from_millis(1), task).await.unwrap().unwrap();
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(sent.iter().map(|(_, n)| n).sum::<usize>(), 7, "{sent:?}");
        assert!(sent.iter().all(|(t, _)| *t == t0 + Duration::from_millis(10)), "{sent:?}");
        assert!(metric(&metrics).contains("weft_spans_exported_total 7"));
        drop(tx);

        // A stop with nothing queued ends it at once too.
        let idle = start();
        idle.stop.notify_one();
        tokio::time::timeout(Duration::from_millis(1), idle.task).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_size_and_by_time() {
        let Started { tx, sink, metrics, task, .. } = start();
        let t0 = Instant::now();
        for i in 0..4 {
            tx.send(record(i, true)).await.unwrap();
        }
        // Three make a full batch at once; the fourth waits for the interval.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(sink.sent.lock().unwrap().clone(), vec![(t0, 3)]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1], (t0 + Duration::from_secs(1), 1));
        drop(tx);
        task.await.unwrap();
        assert!(metric(&metrics).contains("weft_spans_exported_total 4"));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_little_then_drops_and_counts() {
        let Started { tx, sink, metrics, task, .. } = start();
        // Three transient failures: the first attempt and both retries fail.
        *sink.fail.lock().unwrap() = vec![SinkError::Transient("down".into()); 3];
        let t0 = Instant::now();
        for i in 0..3 {
            tx.send(record(i, false)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let at: Vec<Duration> = sink.sent.lock().unwrap().iter().map(|(t, _)| *t - t0).collect();
        assert_eq!(at, [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(300)]);
        let text = metric(&metrics);
        assert!(text.contains("weft_spans_dropped_total{reason=\"export_failed\"} 3"), "{text}");
        // A permanent failure is not retried.
        *sink.fail.lock().unwrap() = vec![SinkError::Permanent("400".into())];
        tx.send(record(0, false)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sink.sent.lock().unwrap().len(), 4);
        assert!(metric(&metrics).contains("reason=\"export_failed\"} 4"));
        drop(tx);
        task.await.unwrap();
    }

    #[test]
    fn encodes_otlp_json() {
        let body = Encoder::new(&resource()).encode(&[record(0, true), record(1, false)]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "catalog");
        let spans = rs["scopeSpans"][0]["spans"].as_array().unwrap();
        let server = &spans[0];
        assert_eq!(server["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(server["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(server["kind"], 2);
        assert_eq!(server["startTimeUnixNano"], "1000");
        let attrs: Vec<(&str, &Value)> = server["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["key"].as_str().unwrap(), &a["value"]))
            .collect();
        let get = |k: &str| attrs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert_eq!(get("http.request.method").unwrap()["stringValue"], "GET");
        assert_eq!(get("http.response.status_code").unwrap()["intValue"], "200");
        assert_eq!(get("server.address").unwrap()["stringValue"], "catalog");
        assert_eq!(get("weft.upstream").unwrap()["stringValue"], "127.0.0.1:9");
        assert!(spans[1].get("parentSpanId").is_none());
        // Text from the request is escaped; errors make an error status.
        let mut odd = (*record(1, false)).clone();
        odd.path = "/a\"b\\c\n".into();
        odd.error = Some("upstream_timeout");
        let body = Encoder::new(&resource()).encode(&[Arc::new(odd)]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["attributes"][1]["value"]["stringValue"], "/a\"b\\c\n");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(spans[1]["kind"], 3);
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:4318/v1/traces").unwrap();
        assert_eq!((t.host_port.as_str(), t.path.as_str()), ("127.0.0.1:4318", "/v1/traces"));
        assert_eq!(Target::parse("http://collector/v1/traces").unwrap().host_port, "collector:80");
        for bad in ["https://a:1/", "a:1", "http://", "http://:1/x", "http://a:0/", "http://a:x/"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
