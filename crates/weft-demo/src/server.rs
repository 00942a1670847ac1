//! What every demo service shares: the HTTP server, `/healthz`, `/knobs`, the knobs applied to
//! each request, request logs and graceful shutdown. A service only implements [`App`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{debug, info, warn};

use crate::knobs::{self, KnobState};

/// Request bodies are small JSON or form posts; anything bigger is a mistake or an attack.
const MAX_BODY: usize = 64 * 1024;

/// Every response names the instance that served it, so callers (and the frontend's footer)
/// can show how requests spread across replicas.
pub const INSTANCE_HEADER: &str = "x-demo-instance";

pub type Resp = Response<Full<Bytes>>;

/// A request with its body already read, which keeps the services' handlers plain.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// A query parameter, decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        form_value(&self.query, key)
    }

    /// The headers a call made for this request passes on: its request id and its W3C trace
    /// context (what an instrumented app does, so the mesh's spans join one trace).
    pub fn propagated(&self) -> Vec<(&'static str, String)> {
        ["x-request-id", "traceparent", "tracestate"]
            .into_iter()
            .filter_map(|h| self.header(h).map(|v| (h, v.to_string())))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One demo service.
pub trait App: Send + Sync + 'static {
    fn handle(&self, req: Req) -> impl Future<Output = Resp> + Send;
}

pub struct Options {
    pub listen: SocketAddr,
    pub service: &'static str,
    pub instance: String,
    pub knobs: KnobState,
    /// How long in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout: Duration,
}

struct Server<A> {
    app: A,
    service: &'static str,
    instance: String,
    knobs: KnobState,
}

/// Serves `app` until SIGTERM or Ctrl-C, then stops accepting, lets in-flight requests finish
/// and returns.
pub async fn run<A: App>(app: A, opts: Options) -> anyhow::Result<()> {
    let listener = TcpListener::bind(opts.listen).await.with_context(|| {
        format!("cannot listen on {} (is the port in use? set --listen or PORT)", opts.listen)
    })?;
    let addr = listener.local_addr().context("listener has no address")?;
    // Watch SIGTERM before saying we listen, so a stop sent right after start is graceful too.
    let term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    info!(%addr, service = opts.service, instance = %opts.instance, knobs = %opts.knobs.get().to_json(), "listening");
    let server =
        Arc::new(Server { app, service: opts.service, instance: opts.instance, knobs: opts.knobs });

    let mut http = http1::Builder::new();
    // The timer lets hyper cut clients that never finish sending their request head.
    http.timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let shutdown = shutdown_signal(term);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically out of file descriptors: wait a little instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let service = service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.dispatch(req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }

    // Stop accepting at once (new connections are refused, so callers' sidecars move on), then
    // let every connection finish the request it is serving.
    drop(listener);
    info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => info!("all requests finished, bye"),
        () = tokio::time::sleep(opts.shutdown_timeout) => {
            warn!(timeout = %knobs::fmt(opts.shutdown_timeout), "requests still in flight at the shutdown timeout");
        }
    }
    Ok(())
}

async fn shutdown_signal(mut term: Signal) {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
    }
}

impl<A: App> Server<A> {
    async fn dispatch(&self, req: Request<Incoming>) -> Resp {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let request_id = req.headers().get("x-request-id").cloned();

        let mut resp = self.route(req).await;

        if let Ok(v) = HeaderValue::from_str(&self.instance) {
            resp.headers_mut().insert(INSTANCE_HEADER, v);
        }
        let status = resp.status().as_u16();
        let ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
        let rid = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
        // Server errors are worth seeing at the default level; everything else is noise
        // under load, so it is debug.
        if resp.status().is_server_error() {
            info!(%method, %path, status, ms, request_id = rid, "request failed");
        } else {
            debug!(%method, %path, status, ms, request_id = rid, "request");
        }
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        match req.uri().path() {
            "/healthz" => {
                return if self.knobs.get().fail_health {
                    text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy (failHealth knob)\n")
                } else {
                    text(StatusCode::OK, "ok\n")
                };
            }
            "/knobs" => return self.knobs_endpoint(req).await,
            _ => {}
        }

        let req = match read(req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };

        // The knobs, in the order a slow, busy, flaky service would show them.
        let knobs = self.knobs.get();
        let delay = knobs.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !knobs.cpu.is_zero() {
            // Off the async workers, so a cpu-heavy instance still answers /healthz and
            // /knobs; the cores are busy all the same.
            let cpu = knobs.cpu;
            let _ = tokio::task::spawn_blocking(move || knobs::burn_cpu(cpu)).await;
        }
        if knobs.roll_error() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "injected failure (errorRate knob)");
        }
        self.app.handle(req).await
    }

    async fn knobs_endpoint(&self, req: Request<Incoming>) -> Resp {
        let method = req.method().clone();
        match method {
            Method::GET => {}
            Method::POST => {
                let req = match read(req).await {
                    Ok(r) => r,
                    Err(resp) => return resp,
                };
                match self.knobs.get().patched(&req.body) {
                    Ok(k) => {
                        info!(service = self.service, knobs = %k.to_json(), "knobs changed");
                        self.knobs.set(k);
                    }
                    Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
                }
            }
            Method::DELETE => {
                let k = self.knobs.reset();
                info!(service = self.service, knobs = %k.to_json(), "knobs reset");
            }
            _ => return error(StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE on /knobs"),
        }
        json_resp(StatusCode::OK, &self.knobs.get().to_json())
    }
}

/// Reads the body (bounded) so handlers get a plain [`Req`].
async fn read(req: Request<Incoming>) -> Result<Req, Resp> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is over {MAX_BODY} bytes"),
            ));
        }
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}"))),
    };
    Ok(Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        body,
    })
}

pub fn text(status: StatusCode, body: &str) -> Resp {
    with_type(status, "text/plain; charset=utf-8", Bytes::copy_from_slice(body.as_bytes()))
}

pub fn html(status: StatusCode, body: String) -> Resp {
    with_type(status, "text/html; charset=utf-8", Bytes::from(body))
}

pub fn json_resp(status: StatusCode, value: &Value) -> Resp {
    let mut body = value.to_string();
    body.push('\n');
    with_type(status, "application/json", Bytes::from(body))
}

/// Errors are JSON `{"error": "..."}`, for people reading curl output as much as for programs.
pub fn error(status: StatusCode, message: &str) -> Resp {
    json_resp(status, &json!({ "error": message }))
}

pub fn not_found(req: &Req) -> Resp {
    error(StatusCode::NOT_FOUND, &format!("no route for {} {}", req.method, req.path))
}

/// `303 See Other`: after a form post, the browser loads `location` with GET.
pub fn redirect(location: &str) -> Resp {
    let mut resp = text(StatusCode::SEE_OTHER, "");
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The first value of `key` in a query string or `application/x-www-form-urlencoded` body.
pub fn form_value(encoded: &str, key: &str) -> Option<String> {
    encoded.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

/// Percent-decoding with `+` as space; a malformed escape is kept as written.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                // Checked by hand: from_str_radix would also take a sign ("%+5").
                let hex = &bytes[i + 1..i + 3];
                let digits = hex.iter().all(u8::is_ascii_hexdigit);
                let value =
                    std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match value.filter(|_| digits) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        let q = "id=green+tea&user=al%69ce&empty=&flag&bad=%zz%4";
        assert_eq!(form_value(q, "id").as_deref(), Some("green tea"));
        assert_eq!(form_value(q, "user").as_deref(), Some("alice"));
        assert_eq!(form_value(q, "empty").as_deref(), Some(""));
        assert_eq!(form_value(q, "flag").as_deref(), Some(""));
        assert_eq!(form_value(q, "bad").as_deref(), Some("%zz%4"));
        assert_eq!(form_value(q, "missing"), None);
        assert_eq!(form_value("", "x"), None);
    }
}
