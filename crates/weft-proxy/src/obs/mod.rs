//! Tracing and access logs of proxied HTTP requests (HTTP/1.1 and HTTP/2; opaque TCP is not
//! traced).
//!
//! Every hop continues the W3C trace context (`trace`): it records its own span, a child of the
//! incoming `traceparent`, and forwards a `traceparent` carrying that span's id. A request that
//! ends becomes one [`Record`], shared (one allocation) by the OTLP exporter (`otlp`, sampled
//! spans only) and the JSON access log (`access_log`, every request). Both take records through
//! bounded queues with `try_send` and do their I/O in their own task: the request path never
//! waits for them, and what does not fit is dropped and counted.
//!
//! With neither configured a request pays nothing here beyond the `traceparent` it always got.

pub(crate) mod access_log;
pub(crate) mod otlp;
pub(crate) mod trace;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Direction;
use crate::dispatch::ListenerKind;
use crate::metrics::ErrorKind;
pub(crate) use trace::{Sampler, TraceHop};

/// Where access log lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "to", content = "path")]
pub enum AccessLog {
    Off,
    Stdout,
    Stderr,
    File(std::path::PathBuf),
}

impl AccessLog {
    pub(crate) fn parse(text: &str) -> Result<AccessLog, String> {
        Ok(match text.trim() {
            "" => return Err("give off, stdout, stderr or a file path".into()),
            "off" => AccessLog::Off,
            "stdout" | "-" => AccessLog::Stdout,
            "stderr" => AccessLog::Stderr,
            path => AccessLog::File(path.into()),
        })
    }
}

/// The tracing and access-log part of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObsConfig {
    /// OTLP/HTTP traces endpoint (`.../v1/traces`), when spans are exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_traces: Option<String>,
    /// Share of the traces this proxy starts that are sampled (0..=1).
    pub trace_sample_ratio: f64,
    pub access_log: AccessLog,
}

impl Default for ObsConfig {
    fn default() -> Self {
        ObsConfig { otlp_traces: None, trace_sample_ratio: 1.0, access_log: AccessLog::Off }
    }
}

/// The OpenTelemetry resource of this proxy's spans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Resource {
    pub(crate) service_name: String,
    pub(crate) service_namespace: String,
    pub(crate) instance_id: String,
}

/// Who this proxy's spans come from: the gateway is `weft-gateway`; a sidecar speaks for its
/// instance's workload (the `deployment` label the controllers set, else `app`, else the
/// instance name); the plain proxy for its `--service`.
pub(crate) fn resource_of(config: &crate::config::Config) -> Resource {
    use crate::sidecar::Source;
    let pid = format!("pid-{}", std::process::id());
    match &config.sidecar {
        Some(side) if side.is_gateway() => Resource {
            service_name: "weft-gateway".into(),
            service_namespace: "weft".into(),
            instance_id: format!("weft-gateway-{pid}"),
        },
        Some(side) => {
            let (labels, instance) = match &side.source {
                Source::Static { labels, .. } => (labels, None),
                Source::Dynamic { labels, instance, .. } => (labels, instance.clone()),
            };
            let name = labels
                .get("deployment")
                .or_else(|| labels.get("app"))
                .cloned()
                .or_else(|| instance.clone())
                .unwrap_or_else(|| "weft-sidecar".into());
            Resource {
                service_name: name,
                service_namespace: side.source.namespace().to_string(),
                instance_id: instance.unwrap_or(pid),
            }
        }
        None => Resource {
            service_name: config.service.clone(),
            service_namespace: "default".into(),
            instance_id: pid,
        },
    }
}

/// One finished request, as traced and logged.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    #[serde(skip)]
    pub(crate) parent: Option<[u8; 16]>,
    #[serde(skip)]
    pub(crate) start_unix_nanos: u64,
    /// When the request ended, RFC 3339 UTC (filled by the log writer).
    #[serde(skip)]
    pub(crate) end_unix_nanos: u64,
    pub(crate) direction: &'static str,
    pub(crate) method: String,
    pub(crate) authority: Option<String>,
    /// Without the query string, which may carry secrets.
    pub(crate) path: String,
    /// 0 when no response was sent (the client went away first).
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
    /// Request body bytes: exact on the HTTP/1 fast path, from `content-length` otherwise
    /// (absent for a streamed body of unknown length).
    pub(crate) bytes_in: Option<u64>,
    /// Response body bytes sent to the client.
    pub(crate) bytes_out: u64,
    /// The Service the request went to (absent when it was not routed).
    pub(crate) upstream: Option<String>,
    /// The endpoint of the last attempt.
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) retries: u32,
    pub(crate) error: Option<&'static str>,
    #[serde(serialize_with = "ser_hex")]
    pub(crate) trace_id: [u8; 32],
    #[serde(serialize_with = "ser_hex")]
    pub(crate) span_id: [u8; 16],
}

fn ser_hex<S: serde::Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(std::str::from_utf8(v).unwrap_or(""))
}

/// What the request was.
pub(crate) struct RequestInfo<'a> {
    pub(crate) method: &'a str,
    /// Origin-form target (path and query); the query is cut here.
    pub(crate) target: &'a str,
    pub(crate) authority: Option<&'a str>,
    pub(crate) bytes_in: Option<u64>,
}

/// How it ended.
pub(crate) struct Ending<'a> {
    pub(crate) status: u16,
    pub(crate) error: Option<ErrorKind>,
    pub(crate) upstream: Option<&'a str>,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) retries: u32,
    pub(crate) bytes_out: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The counters of tracing and logging.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObsMetrics {
    pub(crate) exported: Counter,
    dropped: Family<ReasonLabels, Counter>,
    pub(crate) invalid_traceparent: Counter,
    pub(crate) log_dropped: Counter,
    pub(crate) log_written: Counter,
}

impl ObsMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "weft_spans_exported",
            "Spans accepted by the OTLP endpoint",
            self.exported.clone(),
        );
        registry.register(
            "weft_spans_dropped",
            "Spans not exported, by reason: queue_full (the exporter is behind), export_failed \
             (the endpoint refused or is unreachable, after retries)",
            self.dropped.clone(),
        );
        registry.register(
            "weft_traceparent_invalid",
            "Requests whose traceparent was malformed or repeated (a new trace was started)",
            self.invalid_traceparent.clone(),
        );
        registry.register(
            "weft_access_log_lines",
            "Access log lines written",
            self.log_written.clone(),
        );
        registry.register(
            "weft_access_log_dropped",
            "Access log lines dropped because the writer was behind (or failed)",
            self.log_dropped.clone(),
        );
    }

    pub(crate) fn dropped(&self, reason: &'static str, n: u64) {
        self.dropped.get_or_create(&ReasonLabels { reason }).inc_by(n);
    }
}

/// The receiving ends, taken once by the task that serves the proxy.
type Receivers = (Option<mpsc::Receiver<Arc<Record>>>, Option<mpsc::Receiver<Arc<Record>>>);

/// Tracing and logging of one proxy.
pub(crate) struct Obs {
    pub(crate) config: ObsConfig,
    /// New traces are sampled by this (never when spans are not exported).
    pub(crate) sampler: Sampler,
    pub(crate) resource: Resource,
    pub(crate) metrics: ObsMetrics,
    plain_direction: Direction,
    spans: Option<mpsc::Sender<Arc<Record>>>,
    log: Option<mpsc::Sender<Arc<Record>>>,
    receivers: Mutex<Receivers>,
    /// Tells the span exporter to send what is queued and end ([`Obs::flush`]).
    stop_exporter: Arc<tokio::sync::Notify>,
    /// Completes when the span exporter has ended (or was dropped with its runtime).
    exporter_done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for Obs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Obs").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Spans waiting for the exporter; past this they are dropped.
pub(crate) const SPAN_QUEUE: usize = 4096;
/// Log lines waiting for the writer.
pub(crate) const LOG_QUEUE: usize = 8192;

impl Obs {
    pub(crate) fn new(
        config: ObsConfig,
        resource: Resource,
        plain_direction: Direction,
        registry: &mut Registry,
    ) -> Obs {
        let metrics = ObsMetrics::default();
        metrics.register(registry);
        let (spans, span_rx) = match &config.otlp_traces {
            Some(_) => {
                let (tx, rx) = mpsc::channel(SPAN_QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let (log, log_rx) = match &config.access_log {
            AccessLog::Off => (None, None),
            _ => {
                let (tx, rx) = mpsc::channel(LOG_QUEUE);
                (Some(tx), Some(rx))
            }
        };
        let sampler =
            if spans.is_some() { Sampler::ratio(config.trace_sample_ratio) } else { Sampler::OFF };
        Obs {
            config,
            sampler,
            resource,
            metrics,
            plain_direction,
            spans,
            log,
            receivers: Mutex::new((span_rx, log_rx)),
            stop_exporter: Arc::new(tokio::sync::Notify::new()),
            exporter_done: Mutex::new(None),
        }
    }

    /// Whether requests are recorded at all (a span exporter or an access log).
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.spans.is_some() || self.log.is_some()
    }

    /// Starts the exporter and the log writer on the current runtime (the first call does).
    pub(crate) fn spawn(&self) {
        let (span_rx, log_rx) = {
            let mut r = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
            (r.0.take(), r.1.take())
        };
        if let (Some(rx), Some(url)) = (span_rx, self.config.otlp_traces.clone()) {
            let sink = otlp::HttpSink::new(&url);
            let encoder = otlp::Encoder::new(&self.resource);
            let metrics = self.metrics.clone();
            let stop = self.stop_exporter.clone();
            let (done, done_rx) = tokio::sync::oneshot::channel();
            *self.exporter_done.lock().unwrap_or_else(|e| e.into_inner()) = Some(done_rx);
            tokio::spawn(async move {
                otlp::run(rx, sink, encoder, otlp::Batching::DEFAULT, metrics, stop).await;
                let _ = done.send(());
            });
        }
        if let Some(rx) = log_rx {
            let to = self.config.access_log.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(access_log::run(rx, to, metrics));
        }
    }

    /// Sends the spans still queued, waiting at most `within`: called once the proxy has
    /// drained, so that a stopping proxy's last requests are not lost. Spans recorded after
    /// this are dropped. Without an exporter, returns at once.
    pub(crate) async fn flush(&self, within: std::time::Duration) {
        let done = self.exporter_done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(done) = done {
            self.stop_exporter.notify_one();
            let _ = tokio::time::timeout(within, done).await;
        }
    }

    fn direction(&self, kind: ListenerKind) -> &'static str {
        match kind {
            ListenerKind::Plain => self.plain_direction.as_str(),
            ListenerKind::Inbound(_) => "inbound",
            ListenerKind::Outbound | ListenerKind::Upstream(_) => "outbound",
            ListenerKind::Gateway => "gateway",
        }
    }

    /// Records a finished request: a span when the trace is sampled and spans are exported, a
    /// log line when the access log is on. Never waits.
    pub(crate) fn record(
        &self,
        kind: ListenerKind,
        hop: &TraceHop,
        start: Instant,
        req: &RequestInfo<'_>,
        end: &Ending<'_>,
    ) {
        let span = self.spans.as_ref().filter(|_| hop.sampled());
        if span.is_none() && self.log.is_none() {
            return;
        }
        let duration = start.elapsed();
        let end_unix_nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let path = req.target.split(['?', '#']).next().unwrap_or("/");
        let mut trace_id = [0u8; 32];
        trace_id.copy_from_slice(hop.trace_id());
        let mut span_id = [0u8; 16];
        span_id.copy_from_slice(hop.span_id());
        let record = Arc::new(Record {
            parent: hop.parent,
            start_unix_nanos: end_unix_nanos.saturating_sub(duration.as_nanos() as u64),
            end_unix_nanos,
            direction: self.direction(kind),
            method: req.method.to_string(),
            authority: req.authority.map(str::to_string),
            path: if path.is_empty() { "/".into() } else { path.to_string() },
            status: end.status,
            duration_ms: (duration.as_micros() as f64) / 1000.0,
            bytes_in: req.bytes_in,
            bytes_out: end.bytes_out,
            upstream: end.upstream.map(str::to_string),
            endpoint: end.endpoint,
            retries: end.retries,
            error: end.error.map(ErrorKind::as_str),
            trace_id,
            span_id,
        });
        if let Some(tx) = span {
            match tx.try_send(record.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => self.metrics.dropped("queue_full", 1),
                Err(mpsc::error::TrySendError::Closed(_)) => self.metrics.dropped("shutdown", 1),
            }
        }
        if let Some(tx) = &self.log
            && tx.try_send(record).is_err()
        {
            self.metrics.log_dropped.inc();
        }
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL), else `--otlp-endpoint` /
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` appended): the URL spans are POSTed
/// to. Only `http://` (a local collector or agent): TLS is the collector's business.
pub(crate) fn traces_url(base: Option<&str>, full: Option<&str>) -> Result<Option<String>, String> {
    let url = match (full.map(str::trim).filter(|s| !s.is_empty()), base) {
        (Some(full), _) => full.to_string(),
        (None, Some(base)) if !base.trim().is_empty() => {
            format!("{}/v1/traces", base.trim().trim_end_matches('/'))
        }
        _ => return Ok(None),
    };
    otlp::Target::parse(&url)?;
    Ok(Some(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What recording one sampled request costs on the request's thread (building the record,
    /// the clock, one queue send), the exporter draining on another thread. A measurement, not a
    /// check: `cargo test --release -p weft-proxy --lib record_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn record_cost() {
        let config = ObsConfig {
            otlp_traces: Some("http://127.0.0.1:9/v1/traces".into()),
            ..ObsConfig::default()
        };
        let resource = Resource {
            service_name: "s".into(),
            service_namespace: "n".into(),
            instance_id: "i".into(),
        };
        let mut registry = Registry::default();
        let obs = Obs::new(config, resource, Direction::Inbound, &mut registry);
        let mut rx = obs.receivers.lock().unwrap().0.take().unwrap();
        let drain = std::thread::spawn(move || {
            let mut n = 0u64;
            while rx.blocking_recv().is_some() {
                n += 1;
            }
            n
        });
        let req = RequestInfo {
            method: "GET",
            target: "/api/products?ids=a,b",
            authority: Some("catalog"),
            bytes_in: Some(0),
        };
        let end = Ending {
            status: 200,
            error: None,
            upstream: Some("catalog"),
            endpoint: Some("127.0.0.1:9".parse().unwrap()),
            retries: 0,
            bytes_out: 12,
        };
        let n = 500_000;
        let t = Instant::now();
        for _ in 0..n {
            let hop = trace::hop(None, false, Sampler::ratio(1.0));
            obs.record(ListenerKind::Plain, &hop, Instant::now(), &req, &end);
        }
        let per = t.elapsed().as_nanos() as f64 / f64::from(n);
        drop(obs);
        let got = drain.join().unwrap();
        println!("record: {per:.0} ns per sampled request ({got} of {n} queued, rest dropped)");

        // The exporter's side: encoding a full batch as OTLP JSON.
        let hop = trace::hop(None, false, Sampler::ratio(1.0));
        let one = Arc::new(Record {
            parent: None,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            direction: "inbound",
            method: "GET".into(),
            authority: Some("catalog".into()),
            path: "/api/products".into(),
            status: 200,
            duration_ms: 0.1,
            bytes_in: Some(0),
            bytes_out: 12,
            upstream: Some("catalog".into()),
            endpoint: end.endpoint,
            retries: 0,
            error: None,
            trace_id: hop.trace_id().try_into().unwrap(),
            span_id: hop.span_id().try_into().unwrap(),
        });
        let batch = vec![one; 512];
        let enc = otlp::Encoder::new(&Resource {
            service_name: "s".into(),
            service_namespace: "n".into(),
            instance_id: "i".into(),
        });
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..200 {
            bytes += enc.encode(&batch).len();
        }
        let per = t.elapsed().as_nanos() as f64 / (200.0 * 512.0);
        println!("encode: {per:.0} ns and {} bytes per span", bytes / (200 * 512));
    }

    #[test]
    fn access_log_targets() {
        assert_eq!(AccessLog::parse("off"), Ok(AccessLog::Off));
        assert_eq!(AccessLog::parse("stdout"), Ok(AccessLog::Stdout));
        assert_eq!(AccessLog::parse("stderr"), Ok(AccessLog::Stderr));
        assert_eq!(
            AccessLog::parse("/var/log/a.log"),
            Ok(AccessLog::File("/var/log/a.log".into()))
        );
        assert!(AccessLog::parse(" ").is_err());
    }

    #[test]
    fn traces_urls() {
        assert_eq!(traces_url(None, None), Ok(None));
        assert_eq!(
            traces_url(Some("http://127.0.0.1:4318/"), None),
            Ok(Some("http://127.0.0.1:4318/v1/traces".into()))
        );
        assert_eq!(
            traces_url(Some("http://a:4318"), Some("http://b:9/x")),
            Ok(Some("http://b:9/x".into()))
        );
        for bad in ["https://collector:4318", "collector:4318", "http://", "http://a:b"] {
            assert!(traces_url(Some(bad), None).is_err(), "{bad}");
        }
    }
}
