//! Tracing and access logs: spans continue the incoming W3C trace context, are exported over
//! OTLP/HTTP to a collector started here, and never hold a request up; access log lines are
//! JSON with the documented fields.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::{AccessLog, Config};

use crate::support::*;

const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// An OTLP/HTTP receiver: records every span POSTed to /v1/traces with its resource's
/// service.name.
#[derive(Clone)]
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let sink = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let sink = sink.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/json");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let doc: Value = serde_json::from_slice(&body).unwrap();
                            for rs in doc["resourceSpans"].as_array().unwrap() {
                                let name = rs["resource"]["attributes"]
                                    .as_array()
                                    .unwrap()
                                    .iter()
                                    .find(|a| a["key"] == "service.name")
                                    .map(|a| a["value"]["stringValue"].as_str().unwrap())
                                    .unwrap()
                                    .to_string();
                                for ss in rs["scopeSpans"].as_array().unwrap() {
                                    for s in ss["spans"].as_array().unwrap() {
                                        sink.lock().unwrap().push((name.clone(), s.clone()));
                                    }
                                }
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("{}"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector { url: format!("http://{addr}/v1/traces"), spans }
    }

    fn of_trace(&self, trace: &str) -> Vec<Value> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|(_, s)| s["traceId"] == trace).map(|(_, s)| s.clone()).collect()
    }

    fn len(&self) -> usize {
        self.spans.lock().unwrap().len()
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    let a = span["attributes"].as_array().unwrap().iter().find(|a| a["key"] == key);
    &a.unwrap_or_else(|| panic!("no attribute {key} in {span}"))["value"]
}

async fn traced_proxy(
    upstream: SocketAddr,
    engine: Engine,
    otlp: Option<String>,
    ratio: f64,
    log: Option<&std::path::Path>,
) -> TestProxy {
    TestProxy::start(&[upstream], engine, |c: &mut Config| {
        c.obs.otlp_traces = otlp;
        c.obs.trace_sample_ratio = ratio;
        if let Some(p) = log {
            c.obs.access_log = AccessLog::File(p.to_path_buf());
        }
    })
    .await
}

fn log_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn a_span_continues_the_incoming_trace_and_the_log_line_matches() {
    for engine in ENGINES {
        let up = RawUpstream::hello("hi").await;
        let collector = Collector::start().await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let p = traced_proxy(up.addr, engine, Some(collector.url.clone()), 1.0, Some(&log)).await;
        let mut c = Conn::connect(p.addr).await;
        let res = c
            .request(&format!(
                "GET /a/b?token=secret HTTP/1.1\r\nHost: shop.test\r\ntraceparent: {SPEC}\r\ntracestate: v=1\r\n\r\n"
            ))
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{engine:?}");
        let seen = up.last_request();
        let tp = seen.header("traceparent").unwrap().to_string();
        assert_eq!(&tp[..36], &SPEC[..36], "{engine:?}: same trace");
        assert_eq!(&tp[52..], "-01", "{engine:?}: still sampled");
        assert_eq!(seen.header("tracestate"), Some("v=1"), "{engine:?}");
        let span_id = tp[36..52].to_string();

        wait_until("the span", || !collector.of_trace(&SPEC[3..35]).is_empty()).await;
        let spans = collector.of_trace(&SPEC[3..35]);
        assert_eq!(spans.len(), 1, "{engine:?}: {spans:?}");
        let s = &spans[0];
        assert_eq!(s["spanId"], span_id, "{engine:?}: the forwarded traceparent carries it");
        assert_eq!(s["parentSpanId"], SPEC[36..52], "{engine:?}: child of the caller's span");
        assert_eq!(s["kind"], 2, "{engine:?}: server (plain inbound)");
        assert_eq!(attr(s, "http.request.method")["stringValue"], "GET");
        assert_eq!(attr(s, "url.path")["stringValue"], "/a/b");
        assert_eq!(attr(s, "http.response.status_code")["intValue"], "200");
        assert_eq!(attr(s, "server.address")["stringValue"], "shop.test");
        assert_eq!(attr(s, "weft.upstream")["stringValue"], up.addr.to_string());
        let (start, end): (u64, u64) = (
            s["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            s["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        );
        assert!(start > 0 && end >= start);

        wait_until("the access log line", || !log_lines(&log).is_empty()).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("secret"), "{engine:?}: no query string in the log: {text}");
        let l = &log_lines(&log)[0];
        for field in [
            "time",
            "direction",
            "method",
            "authority",
            "path",
            "status",
            "duration_ms",
            "bytes_in",
            "bytes_out",
            "upstream",
            "endpoint",
            "retries",
            "error",
            "trace_id",
            "span_id",
        ] {
            assert!(l.get(field).is_some(), "{engine:?}: no {field} in {l}");
        }
        assert_eq!(l["path"], "/a/b");
        assert_eq!(l["method"], "GET");
        assert_eq!(l["status"], 200);
        assert_eq!(l["bytes_out"], 2);
        assert_eq!(l["authority"], "shop.test");
        assert_eq!(l["endpoint"], up.addr.to_string());
        assert_eq!(l["trace_id"], SPEC[3..35]);
        assert_eq!(l["span_id"], span_id);
        assert_eq!(l["error"], Value::Null);
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_is_counted() {
    for engine in ENGINES {
        let up = RawUpstream::hello("hi").await;
        let collector = Collector::start().await;
        let p = traced_proxy(up.addr, engine, Some(collector.url.clone()), 1.0, None).await;
        let mut c = Conn::connect(p.addr).await;
        let bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let res = c
            .request(&format!(
                "GET / HTTP/1.1\r\nHost: x\r\ntraceparent: {bad}\r\ntracestate: v=1\r\n\r\n"
            ))
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{engine:?}: never fails the request");
        let tp = up.last_request().header("traceparent").unwrap().to_string();
        assert_ne!(&tp[3..35], &bad[3..35].to_ascii_lowercase(), "{engine:?}: a new trace");
        assert_eq!(&tp[52..], "-01", "{engine:?}: sampled at ratio 1");
        assert_eq!(up.last_request().header("tracestate"), None, "{engine:?}");
        assert!(p.proxy.metrics().encode().contains("weft_traceparent_invalid_total 1"));
        wait_until("the span", || !collector.of_trace(&tp[3..35]).is_empty()).await;
        let s = &collector.of_trace(&tp[3..35])[0];
        assert!(s.get("parentSpanId").is_none(), "{engine:?}: a root span: {s}");
    }
}

#[tokio::test]
async fn unsampled_traces_are_logged_but_not_exported() {
    let up = RawUpstream::hello("hi").await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // Ratio 0: the traces this proxy starts are not sampled; an incoming unsampled one neither.
    let p = traced_proxy(up.addr, Engine::Fast, Some(collector.url.clone()), 0.0, Some(&log)).await;
    let mut c = Conn::connect(p.addr).await;
    let unsampled = SPEC.replace("-01", "-00");
    for head in ["", &format!("traceparent: {unsampled}\r\n")] {
        let res = c.request(&format!("GET / HTTP/1.1\r\nHost: x\r\n{head}\r\n")).await.unwrap();
        assert_eq!(res.status, 200);
        assert!(up.last_request().header("traceparent").unwrap().ends_with("-00"));
    }
    // A sampled one is exported: by then the two before would have been too.
    let res = c
        .request(&format!("GET / HTTP/1.1\r\nHost: x\r\ntraceparent: {SPEC}\r\n\r\n"))
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    wait_until("the sampled span", || collector.len() == 1).await;
    wait_until("three log lines", || log_lines(&log).len() == 3).await;
    assert_eq!(collector.of_trace(&SPEC[3..35]).len(), 1);
}

#[tokio::test]
async fn an_unreachable_collector_never_fails_a_request_and_drops_are_counted() {
    for engine in ENGINES {
        let up = RawUpstream::hello("hi").await;
        let down = closed_port().await;
        let p = traced_proxy(up.addr, engine, Some(format!("http://{down}/v1/traces")), 1.0, None)
            .await;
        let mut c = Conn::connect(p.addr).await;
        for _ in 0..20 {
            let res = within("a request", c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            assert_eq!(res.unwrap().status, 200, "{engine:?}");
        }
        // One batch, three attempts (about 0.6 s of backoff), then dropped and counted.
        wait_until("the drop", || {
            p.metric("weft_spans_dropped_total", &["reason=\"export_failed\""]) == 20.0
        })
        .await;
        assert!(!p.proxy.metrics().encode().contains("weft_spans_exported_total 20"));
    }
}

/// A proxy that stops sends the spans it still holds before it ends, rather than dropping the
/// last second of them (the exporter batches for up to a second).
#[tokio::test]
async fn a_stopping_proxy_sends_its_last_spans_before_it_ends() {
    for engine in ENGINES {
        let up = RawUpstream::hello("hi").await;
        let collector = Collector::start().await;
        let mut p = traced_proxy(up.addr, engine, Some(collector.url.clone()), 1.0, None).await;
        let mut c = Conn::connect(p.addr).await;
        for _ in 0..3 {
            let res = within("a request", c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            assert_eq!(res.unwrap().status, 200, "{engine:?}");
        }
        drop(c);
        p.shutdown();
        within("the proxy to stop", &mut p.served).await.unwrap();
        // Ended means sent (the batch interval is a second): no waiting here.
        assert_eq!(collector.len(), 3, "{engine:?}");
        let metrics = p.proxy.metrics().encode();
        assert!(metrics.contains("weft_spans_exported_total 3"), "{engine:?}: {metrics}");
    }
}

/// An h2c upstream that answers with the `traceparent` it received in `x-saw-traceparent`.
async fn h2_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let mut res = Response::new(Full::new(Bytes::from("hi")));
                    if let Some(tp) = req.headers().get("traceparent") {
                        res.headers_mut().insert("x-saw-traceparent", tp.clone());
                    }
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http2_requests_are_traced() {
    let up = h2_upstream().await;
    let collector = Collector::start().await;
    let p = traced_proxy(up, Engine::Fast, Some(collector.url.clone()), 1.0, None).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://svc.test/h2?x=1")
        .header("traceparent", SPEC)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = within("h2 response", tx.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    let tp = res.headers()["x-saw-traceparent"].to_str().unwrap().to_string();
    assert_eq!(&tp[..36], &SPEC[..36]);
    wait_until("the span", || !collector.of_trace(&SPEC[3..35]).is_empty()).await;
    let s = &collector.of_trace(&SPEC[3..35])[0];
    assert_eq!(s["spanId"], tp[36..52]);
    assert_eq!(attr(s, "url.path")["stringValue"], "/h2");
    assert_eq!(attr(s, "server.address")["stringValue"], "svc.test");
}
