//! Shared helpers for the end-to-end tests: a real `weft server` per test (killed on drop), raw
//! HTTP/1.1 over `TcpStream` (exact status, headers and bytes), a raw NDJSON watch reader, the
//! CLI with a deadline, and polling with deadlines instead of sleeps.

#![allow(dead_code)]

pub mod agent;
pub mod mesh;
pub mod up;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_weft");

/// Where the fixtures live.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Polls `f` until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---- the server --------------------------------------------------------------------------

/// A `weft server` on its own data dir, killed (SIGKILL) on drop.
pub struct Server {
    pub tmp: tempfile::TempDir,
    /// The data dir.
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The admin token from `<dir>/admin.token`.
    pub token: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Server::with_args(&[])
    }

    /// Starts a server with extra `weft server` flags (`--history 5`, `--max-body 64Ki`…).
    pub fn with_args(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let log = tmp.path().join("server.log");
        let mut s = Server {
            tmp,
            dir,
            url: String::new(),
            addr: String::new(),
            token: String::new(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            log,
        };
        if let Err(e) = s.spawn("127.0.0.1:0") {
            panic!("{e}");
        }
        s
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("server port")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self, listen: &str) -> Result<(), String> {
        let _ = std::fs::remove_file(self.dir.join("server"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = Command::new(BIN)
            .arg("server")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(listen)
            .args(&self.args)
            .env_remove("WEFT_SERVER")
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_DATA_DIR")
            .env_remove("WEFT_CA_FILE")
            .env("WEFT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {BIN}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("weft server exited early ({status}):\n{}", self.log_text()));
            }
            if let (Some(url), Some(token)) = (
                read_trimmed(&self.dir.join("server")),
                read_trimmed(&self.dir.join("admin.token")),
            ) {
                let tls = url.starts_with("https://");
                let addr = url.trim_start_matches("http://").trim_start_matches("https://");
                let addr = addr.to_string();
                // A TLS server answers plaintext with a 400 that says so: it is serving.
                if let Ok(r) = request(&addr, "GET", "/healthz", None, &[], None)
                    && (r.status == 200 || (tls && r.header("weft-tls-required").is_some()))
                {
                    self.url = url;
                    self.addr = addr;
                    self.token = token;
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "weft server did not come up within 30s:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (no graceful shutdown), and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data dir and the same port.
    pub fn restart(&mut self) {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port());
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn(&listen) {
                Ok(()) => return,
                // The port may linger for a moment; anything else is a real failure too, but
                // both show in the final message.
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart the server on {listen}: {last}");
    }

    /// Sends SIGTERM (graceful shutdown) and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    // ---- HTTP as admin (or any token) ----

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Resp {
        let mut headers = Vec::new();
        if let Some((ct, _)) = body {
            headers.push(("Content-Type", ct));
        }
        request(&self.addr, method, path, token, &headers, body.map(|(_, b)| b))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, Some(&self.token), None)
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, Some(&self.token), None)
    }

    pub fn put_json(&self, path: &str, v: &Value) -> Resp {
        self.call(
            "PUT",
            path,
            Some(&self.token),
            Some(("application/json", v.to_string().as_bytes())),
        )
    }

    pub fn apply_yaml(&self, text: &str) -> Resp {
        self.call(
            "POST",
            "/api/v1/apply",
            Some(&self.token),
            Some(("application/yaml", text.as_bytes())),
        )
    }

    pub fn apply_json(&self, v: &Value) -> Resp {
        self.call(
            "POST",
            "/api/v1/apply",
            Some(&self.token),
            Some(("application/json", v.to_string().as_bytes())),
        )
    }

    /// The store's current revision (a list's resourceVersion).
    pub fn revision(&self) -> u64 {
        let r = self.get("/api/v1/services");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
    }

    /// An object as JSON, or None on 404.
    pub fn object(&self, path: &str) -> Option<Value> {
        let r = self.get(path);
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!("GET {path}: {s} {}", r.text()),
        }
    }

    /// Names in a namespaced list.
    pub fn names(&self, plural: &str) -> Vec<String> {
        let r = self.get(&format!("/api/v1/{plural}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let mut v: Vec<String> = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    pub fn create_token(&self, role: &str, ttl: Option<&str>) -> String {
        let mut body = json!({ "role": role });
        if let Some(t) = ttl {
            body["ttl"] = json!(t);
        }
        let r = self.call(
            "POST",
            "/api/v1/tokens",
            Some(&self.token),
            Some(("application/json", body.to_string().as_bytes())),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_string()
    }

    pub fn client(&self) -> weft_client::Client {
        weft_client::Client::new(&self.url, Some(self.token.clone())).unwrap()
    }

    /// Opens a raw watch (`path` must carry `watch=true`).
    pub fn watch(&self, path: &str) -> Watch {
        match Watch::open(&self.addr, path, Some(&self.token)) {
            Ok(w) => w,
            Err(r) => panic!("watch {path}: {} {}", r.status, r.text()),
        }
    }

    // ---- CLI ----

    /// `weft --data-dir DIR ARGS…`: server and token found in the data dir.
    pub fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec!["--data-dir", self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        weft(&all, None)
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Out {
        let mut all = vec!["--data-dir", self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        weft(&all, Some(stdin))
    }
}

/// A long-running CLI command (`weft get -w`), its stdout read line by line; killed on drop.
pub struct CliStream {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl CliStream {
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for CliStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn cli_stream(&self, args: &[&str]) -> CliStream {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("WEFT_SERVER")
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        CliStream { child, lines: rx }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- the CLI -----------------------------------------------------------------------------

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(&self) -> &Out {
        assert_eq!(
            self.code, 0,
            "expected success; stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        self
    }

    /// stdout lines, sorted.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.stdout.lines().map(str::to_string).collect();
        v.sort();
        v
    }
}

/// Runs the CLI with a clean environment (HOME pointing nowhere useful) and a 60 s deadline.
pub fn weft(args: &[&str], stdin: Option<&str>) -> Out {
    let home = std::env::temp_dir().join("weft-e2e-no-home");
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("WEFT_SERVER")
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_DATA_DIR")
        .env_remove("WEFT_LOG")
        .env_remove("WEFT_CA_FILE")
        .env("HOME", &home)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = w.write_all(input.as_bytes());
        });
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weft {args:?} did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

// ---- raw HTTP/1.1 ------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("status {}: body is not JSON ({e}): {}", self.status, self.text())
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error body's message, after checking the error shape.
    #[track_caller]
    pub fn message(&self) -> String {
        let v = self.json();
        assert!(v["code"].is_string(), "error body has no code: {v}");
        let m = v["message"].as_str().unwrap_or_else(|| panic!("error body has no message: {v}"));
        assert!(!m.contains('\n'), "error message is not one line: {m:?}");
        m.to_string()
    }

    /// Asserts status and error code; returns the message.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text());
        assert_eq!(
            self.header("content-type").map(|c| c.starts_with("application/json")),
            Some(true),
            "error is not JSON: {:?}",
            self.headers
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        self.message()
    }
}

/// One request on its own connection (`Connection: close`).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut bytes = Vec::new();
    match body {
        Some(b) if chunked => {
            head.push_str("\r\n");
            bytes.extend_from_slice(head.as_bytes());
            for piece in b.chunks(8192) {
                bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                bytes.extend_from_slice(piece);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        }
        Some(b) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
            bytes.extend_from_slice(head.as_bytes());
            bytes.extend_from_slice(b);
        }
        None => {
            head.push_str("\r\n");
            bytes.extend_from_slice(head.as_bytes());
        }
    }
    raw(addr, &bytes)
}

/// Sends exact bytes and reads the whole answer (until the server closes). Write errors are
/// ignored when an answer arrives anyway (a server may answer 413 before reading everything).
pub fn raw(addr: &str, bytes: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let write_result = s.write_all(bytes);
    let mut buf = Vec::new();
    let read_result = s.read_to_end(&mut buf);
    if buf.is_empty() {
        write_result?;
        read_result?;
    }
    parse_response(&buf).ok_or_else(|| {
        std::io::Error::other(format!("unparseable response: {:?}", String::from_utf8_lossy(&buf)))
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Status, headers, and where the body starts.
type Head = (u16, Vec<(String, String)>, usize);

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((status, headers, end + 4))
}

/// Decodes as many complete chunks as `raw` holds into `out`; returns (bytes consumed, saw the
/// last chunk).
fn dechunk(raw: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
    let mut pos = 0;
    loop {
        let Some(nl) = find(&raw[pos..], b"\r\n") else { return (pos, false) };
        let size_text = std::str::from_utf8(&raw[pos..pos + nl]).unwrap_or("");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else { return (pos, false) };
        let data_start = pos + nl + 2;
        if size == 0 {
            return (raw.len(), true);
        }
        if raw.len() < data_start + size + 2 {
            return (pos, false);
        }
        out.extend_from_slice(&raw[data_start..data_start + size]);
        pos = data_start + size + 2;
    }
}

fn parse_response(buf: &[u8]) -> Option<Resp> {
    let (status, headers, start) = parse_head(buf)?;
    let rest = &buf[start..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        let mut out = Vec::new();
        dechunk(rest, &mut out);
        out
    } else {
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        match len {
            Some(n) => rest[..n.min(rest.len())].to_vec(),
            None => rest.to_vec(),
        }
    };
    Some(Resp { status, headers, body })
}

// ---- raw watch ---------------------------------------------------------------------------

/// A watch stream read off the socket: chunked framing decoded, NDJSON lines parsed.
pub struct Watch {
    stream: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    pending: VecDeque<Value>,
    ended: bool,
    pub headers: Vec<(String, String)>,
    /// Every line received, exactly as sent (for byte-level checks).
    pub lines: Vec<String>,
}

impl Watch {
    /// Opens a watch; a non-200 answer comes back as the error.
    pub fn open(addr: &str, path: &str, token: Option<&str>) -> Result<Watch, Resp> {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("write");
        let mut raw = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (status, headers, start) = loop {
            if let Some(h) = parse_head(&raw) {
                break h;
            }
            assert!(Instant::now() < deadline, "no response head for {path}");
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut buf = [0u8; 16384];
            match s.read(&mut buf) {
                Ok(0) => panic!("connection closed before a response head for {path}"),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading {path}: {e}"),
            }
        };
        if status != 200 {
            // Read the (small) error body.
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut w = Watch {
                stream: s,
                raw: raw[start..].to_vec(),
                body: Vec::new(),
                pending: VecDeque::new(),
                ended: false,
                headers: headers.clone(),
                lines: Vec::new(),
            };
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok());
            let chunked = len.is_none();
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                if chunked {
                    let (used, done) = dechunk(&w.raw, &mut w.body);
                    w.raw.drain(..used);
                    if done {
                        break;
                    }
                } else if w.raw.len() >= len.unwrap() {
                    w.body = w.raw[..len.unwrap()].to_vec();
                    break;
                }
                if Instant::now() > end || !w.fill(Duration::from_secs(1)) {
                    break;
                }
            }
            if !chunked && w.body.is_empty() {
                w.body = w.raw.clone();
            }
            return Err(Resp { status, headers, body: w.body });
        }
        Ok(Watch {
            stream: s,
            raw: raw[start..].to_vec(),
            body: Vec::new(),
            pending: VecDeque::new(),
            ended: false,
            headers,
            lines: Vec::new(),
        })
    }

    /// Reads more bytes; false at end of stream or on timeout.
    fn fill(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.ended = true;
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => {
                self.ended = true;
                false
            }
        }
    }

    fn decode(&mut self) {
        let (used, done) = dechunk(&self.raw, &mut self.body);
        self.raw.drain(..used);
        if done {
            self.ended = true;
        }
        while let Some(nl) = self.body.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.body.drain(..=nl).collect();
            let text = String::from_utf8(line).expect("watch line is UTF-8");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {text:?}"));
            self.lines.push(text);
            self.pending.push_back(v);
        }
    }

    /// The next event, or None if none arrives within `timeout` (or the stream ended).
    pub fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            self.decode();
            if let Some(v) = self.pending.pop_front() {
                return Some(v);
            }
            if self.ended {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.fill(deadline - now);
        }
    }

    /// The next event; panics if none comes within 10 s.
    #[track_caller]
    pub fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10)).expect("a watch event within 10s")
    }

    /// The next event that is not a BOOKMARK.
    #[track_caller]
    pub fn next_change(&mut self) -> Value {
        loop {
            let v = self.next();
            if v["type"] != "BOOKMARK" {
                return v;
            }
        }
    }

    pub fn has_ended(&mut self) -> bool {
        self.decode();
        self.ended && self.pending.is_empty()
    }
}

// ---- objects -----------------------------------------------------------------------------

pub fn service(name: &str) -> Value {
    json!({
        "apiVersion": "weft/v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": 80 }] }
    })
}

pub fn service_labeled(name: &str, labels: Value) -> Value {
    let mut s = service(name);
    s["metadata"]["labels"] = labels;
    s
}

pub fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "weft/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "replicas": replicas, "template": { "command": ["sleep", "1000"] } }
    })
}

pub fn svc_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/services/{name}")
}

pub fn deploy_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/deployments/{name}")
}

/// `metadata.resourceVersion` as a number.
#[track_caller]
pub fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
        .parse()
        .unwrap()
}

pub fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// A multi-thread tokio runtime for the async parts of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A deployment `web` of the demo's pricing app (`weft-demo`, found on the agent's PATH), ready
/// once `/healthz` answers: for tests that run real instances.
pub fn demo_web(replicas: i64) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "template": {
            "command": ["weft-demo", "pricing"], "env": {"LOG": "warn"},
            "ports": [{"name": "http", "port": 8080, "protocol": "http"}],
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
            "readiness": {"http": {"path": "/healthz"}, "periodSeconds": 1}
        }}
    })
}

/// Service `web` for [`demo_web`], on the gateway at `/`.
pub fn demo_web_service() -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"deployment": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "http"}],
                 "ingress": {"pathPrefix": "/"}}
    })
}

/// (node, address) of each ready, not terminating instance of deployment `web`, sorted: where
/// the multi-node tests' demo instances run.
pub fn ready_web(s: &Server) -> Vec<(String, String)> {
    let list = s.get("/api/v1/namespaces/default/instances").json();
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["spec"]["deployment"] == "web" && i["spec"]["terminating"] != true)
        .filter(|i| i["status"]["ready"] == true)
        .map(|i| {
            let field = |v: &Value| v.as_str().unwrap_or("").to_string();
            (field(&i["spec"]["node"]), field(&i["status"]["address"]))
        })
        .collect();
    out.sort();
    out
}
