//! A client for weft's api.
//!
//! [`Client`] makes typed requests (`get`, `list`, `put`, `delete`, `apply`) and opens watch
//! streams (push) and long-polls (pull). [`watcher::watcher`] builds on both to give a stream
//! that never misses a change: it lists, watches, resumes from the last revision when a stream
//! breaks, re-lists on 410 Gone, and falls back to long-polling when streaming does not work
//! (a proxy that buffers, say). Errors are [`ClientError`]s that say what to do.

pub mod tls;
pub mod watcher;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weft_api::selector::Selector;
use weft_api::wire::{
    ApplyResponse, CreatedToken, KindList, ObjectList, PollResponse, Role, TokenInfo, TokenRequest,
    WatchEvent,
};
use weft_api::{ApiError, ErrorCode, KindInfo, Resource};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made: the server is down or the address is wrong.
    #[error("cannot reach the weft server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// The server's answer could not be read.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid server address {0:?}: use a URL such as http://127.0.0.1:7070")]
    InvalidUrl(String),
    /// A TLS connection could not be made (untrusted certificate, scheme mismatch, ...).
    #[error("TLS with the weft server at {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// The CA file to trust cannot be used.
    #[error("{0}")]
    CaFile(String),
}

impl ClientError {
    /// The api error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A stream of watch events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Where an object or collection is.
pub fn path(kind: &KindInfo, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut p = match (kind.namespaced, namespace) {
        (true, Some(ns)) => format!("/api/v1/namespaces/{ns}/{}", kind.plural),
        _ => format!("/api/v1/{}", kind.plural),
    };
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

fn encode_query(pairs: &[(&str, String)]) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        q.push(if q.is_empty() { '?' } else { '&' });
        q.push_str(k);
        q.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
    }
    q
}

/// A handle on an api server, or on several replicas of one (`http://a:7070,http://b:7070`):
/// a request that cannot connect to the current one goes to the next, and clones share which
/// one is current. Cheap to clone; connections are pooled.
#[derive(Clone)]
pub struct Client {
    /// As given (all replicas), for messages and for making more clients.
    spec: String,
    bases: Arc<[String]>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
    http: HyperClient<tls::Connector, Full<Bytes>>,
    ca_file: Option<std::path::PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Client").field("base", &self.spec).finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7070`), or for replicas given
    /// as a comma-separated list. `https://` servers are checked against the process' CA file
    /// ([`tls::default_ca_file`]: set by the binary, else `WEFT_CA_FILE`).
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        Client::with_ca(base, token, tls::default_ca_file())
    }

    /// [`Client::new`] trusting the certificates in `ca_file` (PEM) for `https://` servers.
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        ca_file: Option<std::path::PathBuf>,
    ) -> Result<Client> {
        let mut bases = Vec::new();
        for one in base.split(',').map(str::trim) {
            let one = one.trim_end_matches('/').to_string();
            let uri: Uri = one.parse().map_err(|_| ClientError::InvalidUrl(one.clone()))?;
            match uri.scheme_str() {
                Some("http" | "https") if uri.host().is_some() => {}
                _ => return Err(ClientError::InvalidUrl(one)),
            }
            bases.push(one);
        }
        let https = bases.iter().any(|b| b.starts_with("https://"));
        // The CA file matters only for https; an http client does not fail over a stale one.
        let config = tls::client_config(ca_file.as_deref().filter(|_| https))
            .map_err(ClientError::CaFile)?;
        let spec = bases.join(",");
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let connector = tls::Connector::new(connector, config, ca_file.clone());
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            spec,
            bases: bases.into(),
            current: Arc::new(AtomicUsize::new(0)),
            token,
            http,
            ca_file,
            timeout: Duration::from_secs(30),
        })
    }

    /// The server(s), as given (comma-separated when several).
    pub fn base_url(&self) -> &str {
        &self.spec
    }

    /// The CA file this client trusts for `https://` servers, if any (to hand on to the
    /// processes it starts).
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    fn base(&self, i: usize) -> &str {
        &self.bases[i % self.bases.len()]
    }

    /// Per-request timeout for ordinary calls (not watches or polls).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<Request<Full<Bytes>>> {
        let base = self.base(self.current.load(Ordering::Relaxed));
        let mut b = Request::builder().method(method).uri(format!("{base}{path_and_query}"));
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some((bytes, ct)) => {
                b = b.header(header::CONTENT_TYPE, ct);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        b.body(body).map_err(|e| ClientError::Protocol(format!("building request: {e}")))
    }

    /// Sends `req` (built for the current replica); when no connection could be made, to each
    /// other replica in turn (nothing was sent, so any method may go again), making the one
    /// that answers current.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        if self.bases.len() == 1 {
            // One server: nothing to fall back to, so no copy of the request for a second try.
            let resp = self.http.request(req).await.map_err(|e| unreachable(self.base(0), &e))?;
            return tls_required(self.base(0), resp);
        }
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..self.bases.len() {
            let i = start + k;
            let base = self.base(i);
            let mut b =
                Request::builder().method(parts.method.clone()).uri(format!("{base}{path}"));
            for (name, value) in &parts.headers {
                b = b.header(name, value);
            }
            let req = b
                .body(body.clone())
                .map_err(|e| ClientError::Protocol(format!("building request: {e}")))?;
            match self.http.request(req).await {
                Ok(resp) => {
                    if k > 0 {
                        let _ = self.current.compare_exchange(
                            start,
                            i % self.bases.len(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    return tls_required(base, resp);
                }
                Err(e) => {
                    last = Some(unreachable(base, &e));
                    if !e.is_connect() {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Protocol("no api server to send to".into())))
    }

    /// Sends a request and reads the whole answer; non-2xx answers become `ClientError::Api`.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<(StatusCode, Bytes)> {
        let req = self.request(method, path_and_query, body)?;
        let fut = async {
            let resp = self.send(req).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        if status.is_success() { Ok((status, bytes)) } else { Err(api_error(status, &bytes)) }
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<T> {
        let (_, bytes) = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("decoding the answer: {e}")))
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<()> {
        self.call(Method::GET, "/healthz", None).await.map(|_| ())
    }

    // ---- untyped ------------------------------------------------------------------------

    pub async fn get_value(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        self.call_json(Method::GET, &path(kind, namespace, Some(name)), None).await
    }

    pub async fn list_value(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        selector: Option<&Selector>,
    ) -> Result<ObjectList> {
        let mut q = Vec::new();
        if let Some(s) = selector.filter(|s| !s.is_everything()) {
            q.push(("labelSelector", s.to_string()));
        }
        self.call_json(
            Method::GET,
            &format!("{}{}", path(kind, namespace, None), encode_query(&q)),
            None,
        )
        .await
    }

    /// Creates or replaces an object (its kind, namespace and name come from the object).
    pub async fn put_value(&self, value: &Value, status: bool) -> Result<Value> {
        let kind = weft_api::kinds::kind_of(value).map_err(ClientError::Api)?;
        let meta = &value["metadata"];
        let name = meta["name"]
            .as_str()
            .ok_or_else(|| ClientError::Api(ApiError::invalid("metadata.name", "is required")))?;
        let ns = kind
            .namespaced
            .then(|| meta["namespace"].as_str().unwrap_or(weft_api::DEFAULT_NAMESPACE));
        let mut p = path(kind, ns, Some(name));
        if status {
            p.push_str("/status");
        }
        let body = Bytes::from(
            serde_json::to_vec(value).map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        self.call_json(Method::PUT, &p, Some((body, "application/json"))).await
    }

    pub async fn delete_value(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        self.call_json(Method::DELETE, &path(kind, namespace, Some(name)), None).await
    }

    /// `POST /api/v1/apply`: every object or none.
    pub async fn apply(
        &self,
        objects: &[Value],
        namespace: Option<&str>,
        dry_run: bool,
    ) -> Result<ApplyResponse> {
        let mut q = Vec::new();
        if let Some(ns) = namespace {
            q.push(("namespace", ns.to_string()));
        }
        if dry_run {
            q.push(("dryRun", "true".to_string()));
        }
        let body = Bytes::from(
            serde_json::to_vec(objects).map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        self.call_json(
            Method::POST,
            &format!("/api/v1/apply{}", encode_query(&q)),
            Some((body, "application/json")),
        )
        .await
    }

    pub async fn kinds(&self) -> Result<KindList> {
        self.call_json(Method::GET, "/api/v1/kinds", None).await
    }

    // ---- typed --------------------------------------------------------------------------

    pub async fn get<T: Resource>(&self, namespace: Option<&str>, name: &str) -> Result<T> {
        self.call_json(Method::GET, &path(T::info(), namespace, Some(name)), None).await
    }

    /// Every object of a kind (in one namespace, or all), with the list's revision.
    pub async fn list<T: Resource>(
        &self,
        namespace: Option<&str>,
        selector: Option<&Selector>,
    ) -> Result<(Vec<T>, u64)> {
        let list = self.list_value(T::info(), namespace, selector).await?;
        let revision = list.metadata.resource_version.parse().unwrap_or(0);
        let items = list
            .items
            .into_iter()
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| ClientError::Protocol(format!("decoding a {}: {e}", T::KIND)))
            })
            .collect::<Result<_>>()?;
        Ok((items, revision))
    }

    pub async fn put<T: Resource + Serialize>(&self, object: &T) -> Result<T> {
        let value =
            serde_json::to_value(object).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let out = self.put_value(&value, false).await?;
        serde_json::from_value(out).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn put_status<T: Resource + Serialize>(&self, object: &T) -> Result<T> {
        let value =
            serde_json::to_value(object).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let out = self.put_value(&value, true).await?;
        serde_json::from_value(out).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn delete<T: Resource>(&self, namespace: Option<&str>, name: &str) -> Result<Value> {
        self.delete_value(T::info(), namespace, name).await
    }

    // ---- notify -------------------------------------------------------------------------

    /// Opens a watch stream (push). With `after`, events after that revision; without, the
    /// current objects as ADDED events, a BOOKMARK, then changes.
    pub async fn watch(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: Option<&str>,
        selector: Option<&Selector>,
        after: Option<u64>,
    ) -> Result<EventStream> {
        let mut q = vec![("watch", "true".to_string())];
        if let Some(a) = after {
            q.push(("resourceVersion", a.to_string()));
        }
        if let Some(s) = selector.filter(|s| !s.is_everything()) {
            q.push(("labelSelector", s.to_string()));
        }
        let req = self.request(
            Method::GET,
            &format!("{}{}", path(kind, namespace, name), encode_query(&q)),
            None,
        )?;
        let resp = tokio::time::timeout(self.timeout, self.send(req))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        Ok(Box::pin(lines(resp.into_body())))
    }

    /// One long-poll (pull): events after `after`, waiting up to `wait` for the first.
    pub async fn poll(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        selector: Option<&Selector>,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<PollResponse> {
        let mut q = vec![("wait", format!("{}ms", wait.as_millis()))];
        if let Some(a) = after {
            q.push(("resourceVersion", a.to_string()));
        }
        if let Some(s) = selector.filter(|s| !s.is_everything()) {
            q.push(("labelSelector", s.to_string()));
        }
        let client = self.clone().with_timeout(wait + self.timeout);
        client
            .call_json(
                Method::GET,
                &format!("{}{}", path(kind, namespace, None), encode_query(&q)),
                None,
            )
            .await
    }

    /// An instance's logs as a byte stream (`follow` keeps it open for new lines).
    pub async fn logs(
        &self,
        namespace: &str,
        instance: &str,
        follow: bool,
        tail: Option<u64>,
        sidecar: bool,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        let mut q = Vec::new();
        if follow {
            q.push(("follow", "true".to_string()));
        }
        if let Some(t) = tail {
            q.push(("tail", t.to_string()));
        }
        if sidecar {
            q.push(("sidecar", "true".to_string()));
        }
        let path =
            format!("/api/v1/namespaces/{namespace}/instances/{instance}/log{}", encode_query(&q));
        let req = self.request(Method::GET, &path, None)?;
        let resp = tokio::time::timeout(self.timeout, self.send(req))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        let frames = http_body_util::BodyStream::new(resp.into_body());
        Ok(Box::pin(frames.filter_map(|f| async move {
            match f {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(ClientError::Protocol(format!("log stream broke: {e}")))),
            }
        })))
    }

    // ---- tokens -------------------------------------------------------------------------

    pub async fn create_token(
        &self,
        role: Role,
        ttl: Option<weft_api::duration::Duration>,
        description: &str,
    ) -> Result<CreatedToken> {
        let req = TokenRequest {
            role,
            ttl,
            description: description.to_string(),
            node: None,
            instance: None,
        };
        self.request_token(&req).await
    }

    /// A `proxy` token bound to one Instance on `node`: the only workload certificate it may
    /// ask for is that instance's, and deleting the instance revokes it. What an agent gives
    /// each sidecar.
    pub async fn create_instance_proxy_token(
        &self,
        node: &str,
        namespace: &str,
        instance: &str,
    ) -> Result<CreatedToken> {
        let req = TokenRequest {
            role: Role::Proxy,
            ttl: None,
            description: format!("sidecar of {namespace}/{instance}"),
            node: Some(node.to_string()),
            instance: Some(format!("{namespace}/{instance}")),
        };
        self.request_token(&req).await
    }

    /// Creates a token from a full request (role, ttl, description, node binding).
    pub async fn request_token(&self, req: &TokenRequest) -> Result<CreatedToken> {
        let body =
            Bytes::from(serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?);
        self.call_json(Method::POST, "/api/v1/tokens", Some((body, "application/json"))).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.call_json(Method::GET, "/api/v1/tokens", None).await
    }

    pub async fn revoke_token(&self, id_or_token: &str) -> Result<TokenInfo> {
        self.call_json(Method::DELETE, &format!("/api/v1/tokens/{id_or_token}"), None).await
    }
}

/// The error body of a failed answer, or a stand-in when it has none.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => ClientError::Api(e),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                format!("the server answered {status}")
            } else {
                format!(
                    "the server answered {status}: {}",
                    text.chars().take(200).collect::<String>()
                )
            };
            ClientError::Api(ApiError::new(ErrorCode::from_status(status.as_u16()), message))
        }
    }
}

/// Splits a streamed body into NDJSON watch events.
fn lines(body: hyper::body::Incoming) -> impl Stream<Item = Result<WatchEvent>> + Send {
    let frames = http_body_util::BodyStream::new(body);
    futures::stream::unfold(
        (frames, BytesMut::new(), false),
        |(mut frames, mut buf, mut done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(pos + 1);
                    let line = &line[..line.len() - 1];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = serde_json::from_slice::<WatchEvent>(line)
                        .map_err(|e| ClientError::Protocol(format!("bad watch event: {e}")));
                    return Some((item, (frames, buf, done)));
                }
                if done {
                    return None;
                }
                match frames.next().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            buf.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        done = true;
                        buf.clear();
                        return Some((
                            Err(ClientError::Protocol(format!("watch stream broke: {e}"))),
                            (frames, buf, done),
                        ));
                    }
                    None => {
                        done = true;
                        if buf.is_empty() {
                            return None;
                        }
                        buf.extend_from_slice(b"\n");
                    }
                }
            }
        },
    )
}

/// A failed send to `url`, with the innermost cause (e.g. "Connection refused"), or the TLS
/// failure said plainly.
fn unreachable(url: &str, e: &hyper_util::client::legacy::Error) -> ClientError {
    use std::error::Error as _;
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<tls::TlsFailure>() {
            return ClientError::Tls { url: url.to_string(), reason: t.0.clone() };
        }
        reason = s.to_string();
        source = s.source();
    }
    if url.starts_with("http://")
        && (reason.contains("connection closed before message completed")
            || reason.contains("Connection reset"))
    {
        reason.push_str(" (if the server serves TLS, use https://)");
    }
    ClientError::Unreachable { url: url.to_string(), reason }
}

/// A TLS-only weft server answers a plaintext request with a 400 marked so: say it plainly.
fn tls_required(
    url: &str,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    if resp.headers().contains_key("weft-tls-required") {
        let https = url.replacen("http://", "https://", 1);
        return Err(ClientError::Tls {
            url: url.to_string(),
            reason: format!(
                "the server speaks TLS only: use {https} (and trust its CA bundle, <data-dir>/api-ca.crt on its machine, with --ca-file or WEFT_CA_FILE)"
            ),
        });
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        let k = &weft_api::kinds::DEPLOYMENT;
        assert_eq!(
            path(k, Some("default"), Some("web")),
            "/api/v1/namespaces/default/deployments/web"
        );
        assert_eq!(path(k, None, None), "/api/v1/deployments");
        assert_eq!(path(&weft_api::kinds::NODE, Some("x"), Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(
            encode_query(&[("labelSelector", "app=web,x in (a)".into())]),
            "?labelSelector=app%3Dweb%2Cx%20in%20%28a%29"
        );
    }

    #[test]
    fn bad_urls() {
        assert!(matches!(Client::new("localhost:7070", None), Err(ClientError::InvalidUrl(_))));
        assert!(Client::new("http://127.0.0.1:7070/", None).is_ok());
        assert!(Client::with_ca("https://127.0.0.1:7070,http://b:1", None, None).is_ok());
        assert!(matches!(Client::new("ftp://h:1", None), Err(ClientError::InvalidUrl(_))));
        let missing = std::path::PathBuf::from("/nonexistent/ca.crt");
        let e = Client::with_ca("https://127.0.0.1:7070", None, Some(missing.clone())).unwrap_err();
        assert!(matches!(&e, ClientError::CaFile(m) if m.contains("/nonexistent/ca.crt")), "{e}");
        // Only https needs it.
        assert!(Client::with_ca("http://127.0.0.1:7070", None, Some(missing)).is_ok());
    }
}
