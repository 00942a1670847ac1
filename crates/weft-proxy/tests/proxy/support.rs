//! Test upstreams, a raw HTTP/1.1 client and the in-process proxy, all on 127.0.0.1.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_proxy::{Config, Listeners, Proxy, ProxyArgs};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until `cond` holds, checking every few milliseconds, failing after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `fut`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Which HTTP/1.1 engine the proxy under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Fast,
    Hyper,
}

pub const ENGINES: [Engine; 2] = [Engine::Fast, Engine::Hyper];

/// A proxy serving on an ephemeral port of this runtime, with an admin listener.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub proxy: Arc<Proxy>,
    shutdown: Option<oneshot::Sender<()>>,
    pub served: JoinHandle<()>,
}

impl TestProxy {
    pub async fn start(
        upstreams: &[SocketAddr],
        engine: Engine,
        tweak: impl FnOnce(&mut Config),
    ) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let mut config = Config::new(addr, upstreams);
        config.http1_fast_path = engine == Engine::Fast;
        config.admin = Some(admin);
        tweak(&mut config);
        let proxy = Proxy::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let p = proxy.clone();
        tokio::spawn({
            let p = proxy.clone();
            async move { p.serve_admin(admin_listener).await }
        });
        let served = tokio::spawn(async move {
            p.serve_until(listener, async {
                let _ = rx.await;
            })
            .await;
        });
        TestProxy { addr, admin, proxy, shutdown: Some(tx), served }
    }

    /// Starts the drain (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// The value of the first metric sample whose line starts with `name{` and contains every
    /// label in `labels` (e.g. `code="200"`); 0 if there is none.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_value(&self.proxy.metrics().encode(), name, labels)
    }
}

pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|lb| l.contains(lb)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

/// The sum of every sample of `name` (with labels) containing all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|lb| l.contains(lb)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ----- raw HTTP/1.1 messages -----

/// A parsed HTTP/1.1 message (request or response).
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Request method and target, or empty for responses.
    pub method: String,
    pub target: String,
    /// Response status, or 0 for requests.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Message {
    /// Every value of a header (case-insensitive name).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }
}

/// A byte stream with a read buffer, for parsing messages one after another.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (or reset it) before a complete message.
    Closed,
    Malformed(String),
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::new(TcpStream::connect(addr).await.unwrap())
    }

    pub fn new(stream: TcpStream) -> Conn {
        Conn { stream, buf: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// Reads the head of a message; returns it and its length in the buffer.
    async fn head(&mut self, request: bool) -> Result<(Message, usize), ReadError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let parsed = if request {
                let mut r = httparse::Request::new(&mut headers);
                r.parse(&self.buf).map(|s| match s {
                    httparse::Status::Complete(n) => {
                        let m = Message {
                            method: r.method.unwrap_or("").into(),
                            target: r.path.unwrap_or("").into(),
                            headers: collect(r.headers),
                            ..Message::default()
                        };
                        httparse::Status::Complete((m, n))
                    }
                    httparse::Status::Partial => httparse::Status::Partial,
                })
            } else {
                let mut r = httparse::Response::new(&mut headers);
                r.parse(&self.buf).map(|s| match s {
                    httparse::Status::Complete(n) => {
                        let m = Message {
                            status: r.code.unwrap_or(0),
                            headers: collect(r.headers),
                            ..Message::default()
                        };
                        httparse::Status::Complete((m, n))
                    }
                    httparse::Status::Partial => httparse::Status::Partial,
                })
            };
            match parsed {
                Ok(httparse::Status::Complete(v)) => return Ok(v),
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(e) => return Err(ReadError::Malformed(e.to_string())),
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.drain(..i + 2).collect::<Vec<_>>();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            self.fill().await?;
        }
    }

    /// Reads a chunked body and its trailers.
    async fn chunked(&mut self) -> Result<(Vec<u8>, Vec<(String, String)>), ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            body.extend(self.exact(size).await?);
            self.exact(2).await?;
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok((body, trailers));
            }
            if let Some((n, v)) = line.split_once(':') {
                trailers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
    }

    /// Reads one response head (1xx included) and nothing else.
    pub async fn read_head(&mut self) -> Result<Message, ReadError> {
        let (m, n) = self.head(false).await?;
        self.buf.drain(..n);
        Ok(m)
    }

    /// Reads one request (head and body).
    pub async fn read_request(&mut self) -> Result<Message, ReadError> {
        let (mut m, n) = self.head(true).await?;
        self.buf.drain(..n);
        if m.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            let (body, trailers) = self.chunked().await?;
            m.body = body;
            m.trailers = trailers;
        } else if let Some(len) = m.header("content-length") {
            let len: usize =
                len.trim().parse().map_err(|_| ReadError::Malformed("length".into()))?;
            m.body = self.exact(len).await?;
        }
        Ok(m)
    }

    /// Reads one response to a request with `method` (1xx responses are skipped).
    pub async fn read_response(&mut self, method: &str) -> Result<Message, ReadError> {
        let (mut m, n) = loop {
            let (m, n) = self.head(false).await?;
            if (100..200).contains(&m.status) && m.status != 101 {
                self.buf.drain(..n);
                continue;
            }
            break (m, n);
        };
        self.buf.drain(..n);
        if method == "HEAD" || m.status == 204 || m.status == 304 || m.status == 101 {
            return Ok(m);
        }
        if m.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            let (body, trailers) = self.chunked().await?;
            m.body = body;
            m.trailers = trailers;
        } else if let Some(len) = m.header("content-length") {
            let len: usize =
                len.trim().parse().map_err(|_| ReadError::Malformed("length".into()))?;
            m.body = self.exact(len).await?;
        } else {
            // Delimited by close.
            while self.fill().await.is_ok() {}
            m.body = std::mem::take(&mut self.buf);
        }
        Ok(m)
    }

    /// Sends a request and reads its response.
    pub async fn request(&mut self, raw: &str) -> Result<Message, ReadError> {
        let method = raw.split(' ').next().unwrap_or("GET").to_string();
        self.send(raw.as_bytes()).await.map_err(|_| ReadError::Closed)?;
        within("response", self.read_response(&method)).await
    }

    /// Waits until the peer closes; returns everything it sent before.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        within("close", async { while self.fill().await.is_ok() {} }).await;
        std::mem::take(&mut self.buf)
    }
}

fn collect(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
        .collect()
}

/// `GET path` with a Host header.
pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

// ----- a scriptable raw upstream -----

/// What the raw upstream does with a request.
pub enum Action {
    /// Writes these bytes (a whole response) and keeps the connection.
    Respond(Vec<u8>),
    /// Writes these bytes and closes the connection.
    RespondClose(Vec<u8>),
    /// Reads nothing more and never answers (until the connection is dropped by the peer).
    Hang,
    /// Waits for the gate to open, then writes the bytes.
    RespondAfter(Arc<tokio::sync::Notify>, Vec<u8>),
    /// Writes 101 and then echoes every byte back.
    UpgradeEcho,
    /// Writes the bytes after a delay (a slow endpoint).
    Delay(Duration, Vec<u8>),
}

/// A response with a body and a content length.
pub fn ok(body: &str, extra_headers: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}", body.len())
        .into_bytes()
}

type Handler = Arc<dyn Fn(&Message) -> Action + Send + Sync>;

/// An HTTP/1.1 upstream over raw sockets that records what it receives.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Message>>>,
}

impl RawUpstream {
    pub async fn start(
        handler: impl Fn(&Message) -> Action + Send + Sync + 'static,
    ) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (r, handler) = (r.clone(), handler.clone());
                tokio::spawn(async move {
                    let mut conn = Conn::new(stream);
                    while let Ok(req) = conn.read_request().await {
                        r.lock().unwrap().push(req.clone());
                        match handler(&req) {
                            Action::Respond(bytes) => {
                                if conn.send(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Action::RespondClose(bytes) => {
                                let _ = conn.send(&bytes).await;
                                return;
                            }
                            Action::Hang => {
                                let _ = conn.read_to_close_quiet().await;
                                return;
                            }
                            Action::RespondAfter(gate, bytes) => {
                                gate.notified().await;
                                if conn.send(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Action::Delay(d, bytes) => {
                                tokio::time::sleep(d).await;
                                if conn.send(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Action::UpgradeEcho => {
                                let head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
                                if conn.send(head).await.is_err() {
                                    return;
                                }
                                let leftover = std::mem::take(&mut conn.buf);
                                let _ = conn.send(&leftover).await;
                                let (mut rd, mut wr) = conn.stream.split();
                                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        RawUpstream { addr, connections, requests }
    }

    /// An upstream answering every request with 200 and `body`.
    pub async fn hello(body: &'static str) -> RawUpstream {
        RawUpstream::start(move |_| Action::Respond(ok(body, ""))).await
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last_request(&self) -> Message {
        self.requests.lock().unwrap().last().cloned().expect("no request reached the upstream")
    }
}

impl Conn {
    async fn read_to_close_quiet(&mut self) {
        while self.fill().await.is_ok() {}
    }
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ----- a sidecar from a configuration file -----

/// A sidecar configured by a YAML file (listeners on port 0), serving on this runtime.
pub struct TestSidecar {
    pub proxy: Arc<Proxy>,
    pub addrs: Vec<(String, SocketAddr)>,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl TestSidecar {
    /// Starts a sidecar from `yaml` (written to a file and read as `--config`).
    pub async fn start(yaml: &str, engine: Engine) -> TestSidecar {
        TestSidecar::with_args(yaml, engine, |_| {}).await
    }

    pub async fn with_args(
        yaml: &str,
        engine: Engine,
        tweak: impl FnOnce(&mut ProxyArgs),
    ) -> TestSidecar {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut args = ProxyArgs {
            config: Some(path.to_str().unwrap().to_string()),
            admin: Some("127.0.0.1:0".into()),
            http1: if engine == Engine::Fast { "fast".into() } else { "hyper".into() },
            ..ProxyArgs::default()
        };
        tweak(&mut args);
        let config = Config::from_args(&args).unwrap_or_else(|e| panic!("{e}"));
        TestSidecar::serve(config, dir).await
    }

    /// Serves an already built configuration (dynamic mode tests).
    pub async fn serve(config: Config, dir: tempfile::TempDir) -> TestSidecar {
        let proxy = Proxy::new(config);
        let mut listeners: Listeners = proxy.bind().unwrap();
        let addrs = listeners.addrs(&proxy);
        if let Some(admin) = listeners.admin.take() {
            let p = proxy.clone();
            tokio::spawn(async move { p.serve_admin(admin).await });
        }
        let (tx, rx) = oneshot::channel::<()>();
        let p = proxy.clone();
        tokio::spawn(async move {
            let drain = p.clone();
            tokio::spawn(async move {
                let _ = rx.await;
                drain.shutdown();
            });
            p.serve_bound(listeners).await;
        });
        TestSidecar { proxy, addrs, shutdown: Some(tx), _dir: dir }
    }

    /// The address of the listener labelled `label` (`outbound`, `inbound:http`,
    /// `upstream:catalog`, `admin`).
    pub fn addr(&self, label: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {label} in {:?}", self.addrs))
    }

    /// The sum of every sample of `name` whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.proxy.metrics().encode(), name, labels)
    }

    /// A GET through the outbound listener with this Host; returns status and body.
    pub async fn get_host(&self, host: &str, path: &str) -> Message {
        let mut c = Conn::connect(self.addr("outbound")).await;
        c.request(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")).await.unwrap()
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A Service object (YAML flow mapping) with `traffic` (YAML flow mapping text).
pub fn service_yaml(name: &str, namespace: &str, ports: &str, traffic: &str) -> String {
    format!(
        "  - {{ apiVersion: weft/v1, kind: Service, metadata: {{ name: {name}, namespace: {namespace} }}, \
         spec: {{ selector: {{ deployment: {name} }}, ports: {ports}, traffic: {traffic} }} }}\n"
    )
}

/// An Endpoints object putting `addrs` behind port `port` of service `name`.
pub fn endpoints_yaml(name: &str, namespace: &str, port: &str, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!("{{ instance: {name}-{i}, ip: {}, ports: {{ {port}: {} }} }}", a.ip(), a.port())
        })
        .collect();
    format!(
        "  - {{ apiVersion: weft/v1, kind: Endpoints, metadata: {{ name: {name}, namespace: {namespace} }}, \
         spec: {{ addresses: [ {} ] }} }}\n",
        list.join(", ")
    )
}

/// A sidecar file with an outbound listener and `objects` (from `service_yaml`/`endpoints_yaml`).
pub fn outbound_config(objects: &str) -> String {
    format!("outbound: {{ listen: 127.0.0.1:0 }}\nobjects:\n{objects}")
}

/// Upstreams answering 200 with their own name as the body.
pub async fn named_upstreams(names: &[&'static str]) -> Vec<RawUpstream> {
    let mut v = Vec::new();
    for n in names {
        v.push(RawUpstream::hello(n).await);
    }
    v
}

/// xorshift64*: reproducible inputs from a fixed seed, for the fuzz-style tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
