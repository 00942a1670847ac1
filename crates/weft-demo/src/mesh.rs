//! Calling other services by name: `http://catalog/api/products`.
//!
//! Under weft the app knows nothing about where `catalog` runs: `HTTP_PROXY` points at its
//! sidecar, which resolves the name, balances, retries and breaks circuits. So a call is an
//! ordinary proxied HTTP request: a connection to the proxy and an absolute-form request line
//! (`GET http://catalog/api/products HTTP/1.1`), exactly what curl or any other client honouring
//! `HTTP_PROXY` sends.
//!
//! Where a service is reached, first match wins:
//! 1. `--upstream catalog=127.0.0.1:9001` on the command line (direct);
//! 2. `HTTP_PROXY` / `http_proxy`, unless the name is in `NO_PROXY` (through the sidecar);
//! 3. `WEFT_UPSTREAM_CATALOG=127.1.0.7:9001`, a fixed local port of the sidecar (direct);
//! 4. the service's default port on 127.0.0.1 (catalog 9001, ...), so the four services
//!    started by hand without any flags find each other.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::server::INSTANCE_HEADER;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where each name goes; read once at start.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// `--upstream` flags: name → `host:port`.
    pub flags: HashMap<String, String>,
    /// The sidecar's outbound listener, `host:port`.
    pub proxy: Option<String>,
    /// `NO_PROXY` entries: exact names, or suffixes when they start with a dot.
    pub no_proxy: Vec<String>,
    /// `WEFT_UPSTREAM_<NAME>`: name → `host:port`.
    pub fixed: HashMap<String, String>,
}

impl Routes {
    pub fn from_env(flags: &[(String, String)]) -> Result<Routes, String> {
        let var = |names: &[&str]| {
            names.iter().find_map(|n| std::env::var(n).ok()).filter(|v| !v.trim().is_empty())
        };
        let proxy = var(&["HTTP_PROXY", "http_proxy"]).map(|p| proxy_address(&p)).transpose()?;
        let no_proxy = var(&["NO_PROXY", "no_proxy"])
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        // WEFT_UPSTREAM_ORDER_HISTORY names the service `order-history`.
        let fixed = std::env::vars()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("WEFT_UPSTREAM_")?;
                Some((name.to_ascii_lowercase().replace('_', "-"), v))
            })
            .collect();
        Ok(Routes { flags: flags.iter().cloned().collect(), proxy, no_proxy, fixed })
    }

    /// Where to open a TCP connection for `host[:port]`, and whether it is the proxy.
    pub fn target(&self, host: &str, port: Option<u16>) -> (String, bool) {
        let name = host.to_ascii_lowercase();
        if let Some(addr) = self.flags.get(&name) {
            return (addr.clone(), false);
        }
        if let Some(proxy) = &self.proxy
            && !self.bypass(&name)
        {
            return (proxy.clone(), true);
        }
        if let Some(addr) = self.fixed.get(&name) {
            return (addr.clone(), false);
        }
        match (crate::default_port(&name), port) {
            (Some(p), None) => (format!("127.0.0.1:{p}"), false),
            _ => (format!("{host}:{}", port.unwrap_or(80)), false),
        }
    }

    fn bypass(&self, name: &str) -> bool {
        self.no_proxy
            .iter()
            .any(|n| n == "*" || n == name || (n.starts_with('.') && name.ends_with(n.as_str())))
    }
}

/// `http://127.0.0.1:15001`, `http://127.0.0.1:15001/` or plain `127.0.0.1:15001`.
fn proxy_address(value: &str) -> Result<String, String> {
    let bad = |why: &str| format!("HTTP_PROXY={value:?}: {why}");
    let uri: Uri =
        value.trim().parse().map_err(|_| bad("not a URL like http://127.0.0.1:15001"))?;
    if uri.scheme_str().is_some_and(|s| s != "http") {
        return Err(bad("only http:// proxies are supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host:port"))?;
    Ok(format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)))
}

/// Why a call failed, worded for the page and the logs.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{service} is unreachable: {reason}")]
    Unreachable { service: String, reason: String },
    #[error("{service} did not answer within {}", crate::knobs::fmt(*.timeout))]
    Timeout { service: String, timeout: Duration },
    #[error("{service} answered {status}: {body}")]
    Status { service: String, status: u16, body: String },
    #[error("{service} answered something unreadable: {reason}")]
    Decode { service: String, reason: String },
}

/// A successful call's answer and who gave it.
#[derive(Debug)]
pub struct Reply<T> {
    pub body: T,
    /// The instance that served it (its `x-demo-instance` header).
    pub instance: Option<String>,
    pub elapsed: Duration,
}

/// An HTTP client for calls between services, pooling connections per service name.
#[derive(Clone)]
pub struct Mesh {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

/// Opens connections where [`Routes`] says; hyper's pool keeps them per service name.
#[derive(Clone)]
struct Connector(Arc<Routes>);

impl tower::Service<Uri> for Connector {
    type Response = MeshStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<MeshStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let routes = self.0.clone();
        Box::pin(async move { connect(&routes, &dst).await })
    }
}

impl Mesh {
    pub fn new(routes: Routes, timeout: Duration) -> Mesh {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(Connector(Arc::new(routes)));
        Mesh { client, timeout }
    }

    /// `GET http://{service}{path}`, decoded from JSON. `headers` are passed along (the caller's
    /// request id, the cart's affinity key).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        service: &str,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Reply<T>, CallError> {
        self.call_json(Method::GET, service, path, headers, None).await
    }

    pub async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        service: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<Reply<T>, CallError> {
        let started = Instant::now();
        let unreachable =
            |reason: String| CallError::Unreachable { service: service.into(), reason };

        let mut req = Request::builder().method(method).uri(format!("http://{service}{path}"));
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let body = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::default(),
        };
        let req = req.body(body).map_err(|e| unreachable(format!("bad request: {e}")))?;

        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| unreachable(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.map_err(|e| unreachable(error_chain(&e)))?.to_bytes();
            Ok::<_, CallError>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout { service: service.into(), timeout: self.timeout })??;

        if !parts.status.is_success() {
            return Err(CallError::Status {
                service: service.into(),
                status: parts.status.as_u16(),
                body: snippet(&bytes),
            });
        }
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Decode { service: service.into(), reason: e.to_string() })?;
        let instance =
            parts.headers.get(INSTANCE_HEADER).and_then(|v| v.to_str().ok()).map(String::from);
        Ok(Reply { body, instance, elapsed: started.elapsed() })
    }
}

impl CallError {
    /// The status a caller should pass on: 504 for timeouts, 502 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The first line or so of an error body, enough to say what went wrong.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let cut = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    text[..cut].to_string()
}

/// hyper's errors say "client error (Connect)"; the cause ("Connection refused") is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn connect(routes: &Routes, dst: &Uri) -> io::Result<MeshStream> {
    let host = dst.host().unwrap_or_default();
    let (addr, proxied) = routes.target(host, dst.port_u16());
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr} timed out"))
        })?
        .map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?;
    tcp.set_nodelay(true)?;
    Ok(MeshStream { io: TokioIo::new(tcp), proxied })
}

/// A TCP connection that tells hyper whether it goes to a proxy. That one flag is what makes
/// hyper write the absolute-form request line a proxy needs; the rest just forwards.
pub struct MeshStream {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for MeshStream {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl Read for MeshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for MeshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_proxy_which_beats_fixed_ports() {
        let routes = Routes {
            flags: [("pricing".to_string(), "127.0.0.1:7000".to_string())].into(),
            proxy: Some("127.0.0.1:15001".into()),
            no_proxy: vec!["localhost".into(), "127.0.0.1".into(), ".local".into()],
            fixed: [("catalog".to_string(), "127.1.0.2:9001".to_string())].into(),
        };
        assert_eq!(routes.target("pricing", None), ("127.0.0.1:7000".into(), false));
        assert_eq!(routes.target("Catalog", None), ("127.0.0.1:15001".into(), true));
        assert_eq!(routes.target("localhost", Some(81)), ("localhost:81".into(), false));
        assert_eq!(routes.target("box.local", None), ("box.local:80".into(), false));

        let no_proxy = Routes { proxy: None, ..routes };
        assert_eq!(no_proxy.target("catalog", None), ("127.1.0.2:9001".into(), false));
        assert_eq!(no_proxy.target("cart", None), ("127.0.0.1:9003".into(), false));
        assert_eq!(no_proxy.target("elsewhere", None), ("elsewhere:80".into(), false));
    }

    #[test]
    fn proxy_addresses() {
        assert_eq!(proxy_address("http://127.0.0.1:15001/").unwrap(), "127.0.0.1:15001");
        assert_eq!(proxy_address("127.0.0.1:15001").unwrap(), "127.0.0.1:15001");
        assert_eq!(proxy_address("http://proxy").unwrap(), "proxy:80");
        assert!(proxy_address("https://proxy:443").unwrap_err().contains("only http://"));
        assert!(proxy_address("::nonsense::").is_err());
    }
}
