//! The audit log of writes (issue 6, api hardening): one JSON line per write request, accepted
//! or refused, in a file in the data dir (`<data-dir>/audit.log` by default).
//!
//! A line says who (token id and role; never the token or its hash), what (verb, kind,
//! namespace, name, route, resulting resourceVersion), when (RFC 3339, UTC), the outcome (HTTP
//! status, and the error message when refused) and the source address. An apply writes one
//! line per object. Covered: apply, put (and so `weft scale`), status, delete, activate, token
//! create and revoke, certificate issue — every POST, PUT and DELETE.
//!
//! The api never waits for the file: records go through a bounded channel to a writer thread
//! that buffers them and flushes whenever the channel runs dry. When the channel is full the
//! record is dropped and counted (`weft_api_audit_dropped_total`). The file is rotated by size:
//! past `max_bytes` it becomes `<path>.1` (replacing the previous one) and a new file starts.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weft_api::wire::Role;

use crate::auth::Caller;
use crate::metrics::Metrics;
use crate::state::AppState;

/// The file name in the data dir.
pub const AUDIT_FILE: &str = "audit.log";
/// Rotation size when none is given.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Records that may wait for the writer before new ones are dropped.
pub const DEFAULT_QUEUE: usize = 8192;

/// Where and how to write.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub path: PathBuf,
    /// Rotate past this size (keeps one old file, `<path>.1`).
    pub max_bytes: u64,
    pub queue: usize,
}

impl AuditOptions {
    pub fn new(path: PathBuf) -> AuditOptions {
        AuditOptions { path, max_bytes: DEFAULT_MAX_BYTES, queue: DEFAULT_QUEUE }
    }
}

/// One line of the log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub time: String,
    /// The caller's token id; absent when the request had no valid token (401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// apply, put, status, delete, activate, token-create, token-revoke, certificate-issue.
    pub verb: String,
    pub method: String,
    /// The route template (never the raw path: a token revoked by its text is in the path).
    pub route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// created, configured, unchanged (apply); created, updated (put); deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub code: u16,
    /// The error's message when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A running audit log: a handle on the writer's channel.
pub struct AuditLog {
    tx: mpsc::Sender<Record>,
    dropped: Counter,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (appends to) the file, creating it 0600, and starts the writer thread.
    pub fn start(options: AuditOptions, metrics: &Metrics) -> std::io::Result<AuditLog> {
        let file = open(&options.path)?;
        let size = file.metadata().map_or(0, |m| m.len());
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let written = metrics.audit_records.clone();
        let path = options.path.clone();
        std::thread::Builder::new()
            .name("weft-audit".into())
            .spawn(move || write_loop(rx, file, size, &options, &written))?;
        Ok(AuditLog { tx, dropped: metrics.audit_dropped.clone(), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record; never waits.
    pub fn record(&self, record: Record) {
        if self.tx.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)
}

fn write_loop(
    mut rx: mpsc::Receiver<Record>,
    file: std::fs::File,
    mut size: u64,
    options: &AuditOptions,
    written: &Counter,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(512);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            if serde_json::to_writer(&mut line, &record).is_ok() {
                line.push(b'\n');
                if size + line.len() as u64 > options.max_bytes && size > 0 {
                    match rotate(out, &options.path) {
                        Ok(file) => {
                            out = std::io::BufWriter::with_capacity(64 * 1024, file);
                            size = 0;
                        }
                        Err((old, e)) => {
                            tracing::warn!(error = %e, path = %options.path.display(), "cannot rotate the audit log; writing on");
                            out = old;
                        }
                    }
                }
                match out.write_all(&line) {
                    Ok(()) => {
                        size += line.len() as u64;
                        written.inc();
                    }
                    Err(e) => tracing::warn!(error = %e, "writing the audit log failed"),
                }
            }
            next = rx.try_recv().ok();
        }
        // The channel ran dry: put what is buffered in the file.
        if let Err(e) = out.flush() {
            tracing::warn!(error = %e, "flushing the audit log failed");
        }
    }
    let _ = out.flush();
}

type Writer = std::io::BufWriter<std::fs::File>;

fn rotate(mut out: Writer, path: &Path) -> Result<std::fs::File, (Writer, std::io::Error)> {
    if let Err(e) = out.flush() {
        return Err((out, e));
    }
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    if let Err(e) = std::fs::rename(path, &old) {
        return Err((out, e));
    }
    open(path).map_err(|e| (out, e))
}

/// Filled by the [`Caller`] extractor, so the audit layer knows who called.
#[derive(Clone, Default)]
pub struct CallerSlot(pub Arc<OnceLock<Caller>>);

/// The audit layer: records every POST, PUT and DELETE once it has been answered.
pub async fn layer(State(app): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let Some(log) = app.audit.get() else { return next.run(req).await };
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::DELETE) {
        return next.run(req).await;
    }
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().as_str().to_string();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string());
    let path = req.uri().path().to_string();
    let dry_run = req.uri().query().is_some_and(|q| {
        q.split('&').any(|p| matches!(p, "dryRun" | "dryRun=true" | "dryRun=1" | "dryRun="))
    });
    let resp = next.run(req).await;
    let (parts, body) = resp.into_parts();
    // Write answers are small JSON documents already in memory; reading them is cheap.
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let code = parts.status.as_u16();
    let route = route.unwrap_or_else(|| "unmatched".into());
    let params = path_params(&route, &path);
    let caller = slot.0.get();
    let base = Record {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        token_id: caller.map(|c| c.token_id.clone()),
        role: caller.map(|c| c.role),
        verb: verb(&method, &route).to_string(),
        method,
        route,
        dry_run,
        code,
        source,
        ..Record::default()
    };
    for r in describe(base, &params, code, &bytes) {
        log.record(r);
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn verb(method: &str, route: &str) -> &'static str {
    match (method, route) {
        ("POST", "/api/v1/apply") => "apply",
        ("POST", "/api/v1/tokens") => "token-create",
        ("DELETE", r) if r.starts_with("/api/v1/tokens/") => "token-revoke",
        ("POST", "/api/v1/certificates") => "certificate-issue",
        ("POST", r) if r.ends_with("/activate") => "activate",
        ("PUT", r) if r.ends_with("/status") => "status",
        ("PUT", _) => "put",
        ("DELETE", _) => "delete",
        _ => "other",
    }
}

/// The values of a route template's `{param}` segments in `path`.
fn path_params(route: &str, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if route == "unmatched" {
        return out;
    }
    for (t, p) in route.split('/').zip(path.split('/')) {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            out.push((name.to_string(), p.to_string()));
        }
    }
    out
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    metadata: Option<ObjectMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    #[serde(default)]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    info: Option<weft_api::wire::TokenInfo>,
    // A created token's answer also holds the token text; it is not read here.
}

#[derive(Deserialize)]
struct CertificateAnswer {
    identity: Option<String>,
    serial: Option<String>,
}

/// The record(s) for one answered request.
fn describe(base: Record, params: &[(String, String)], code: u16, body: &[u8]) -> Vec<Record> {
    let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let ok = (200..300).contains(&code);
    let mut r = base;
    if !ok {
        r.error = serde_json::from_slice::<weft_api::ApiError>(body)
            .ok()
            .map(|e| e.message.chars().take(300).collect());
    }
    match r.verb.as_str() {
        "apply" => {
            if ok && let Ok(resp) = serde_json::from_slice::<weft_api::wire::ApplyResponse>(body) {
                return resp
                    .results
                    .into_iter()
                    .map(|a| Record {
                        kind: Some(a.kind),
                        namespace: a.namespace,
                        name: Some(a.name),
                        action: Some(a.action.to_string()),
                        resource_version: Some(a.resource_version),
                        ..r.clone()
                    })
                    .collect();
            }
        }
        "token-create" | "token-revoke" => {
            r.kind = Some("Token".into());
            if ok && let Ok(TokenAnswer { info: Some(info) }) = serde_json::from_slice(body) {
                r.name = Some(info.id);
                r.action = Some(format!("{} token", info.role));
            } else if let Some(id) = param("id") {
                // Revoking by the token's text puts the secret in the path: keep only its id.
                r.name = Some(match crate::auth::parse_id(&id) {
                    Some(id) => id.to_string(),
                    None if id.starts_with("weft_") => "(redacted)".into(),
                    None => id,
                });
            }
        }
        "certificate-issue" => {
            r.kind = Some("Certificate".into());
            if ok && let Ok(c) = serde_json::from_slice::<CertificateAnswer>(body) {
                r.name = c.identity;
                r.action = c.serial.map(|s| format!("serial {s}"));
            }
        }
        _ => {
            if let Some(plural) = param("plural") {
                r.kind = Some(
                    weft_api::kinds::by_plural(&plural).map_or(plural, |k| k.kind.to_string()),
                );
            } else if r.verb == "activate" {
                r.kind = Some("Service".into());
            }
            r.namespace = param("ns");
            r.name = param("name");
            if ok {
                r.action = Some(
                    match (r.verb.as_str(), code) {
                        ("delete", _) => "deleted",
                        (_, 201) => "created",
                        _ => "updated",
                    }
                    .into(),
                );
                r.resource_version = serde_json::from_slice::<Meta>(body)
                    .ok()
                    .and_then(|m| m.metadata?.resource_version);
            }
        }
    }
    vec![r]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(verb: &str, route: &str) -> Record {
        Record { verb: verb.into(), route: route.into(), ..Record::default() }
    }

    #[test]
    fn params_from_templates() {
        let p = path_params(
            "/api/v1/namespaces/{ns}/{plural}/{name}/status",
            "/api/v1/namespaces/default/instances/web-1/status",
        );
        assert_eq!(
            p,
            vec![
                ("ns".into(), "default".into()),
                ("plural".into(), "instances".into()),
                ("name".into(), "web-1".into())
            ]
        );
        assert!(path_params("unmatched", "/x").is_empty());
        assert_eq!(verb("PUT", "/api/v1/namespaces/{ns}/{plural}/{name}/status"), "status");
        assert_eq!(verb("DELETE", "/api/v1/tokens/{id}"), "token-revoke");
        assert_eq!(verb("POST", "/api/v1/namespaces/{ns}/services/{name}/activate"), "activate");
    }

    #[test]
    fn records_never_hold_token_text() {
        let secret = "weft_0123456789ab_deadbeefdeadbeef";
        let created = format!(
            r#"{{"token":"{secret}","info":{{"id":"0123456789ab","role":"viewer","created":"2026-01-01T00:00:00Z"}}}}"#
        );
        let r = describe(base("token-create", "/api/v1/tokens"), &[], 201, created.as_bytes());
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains("deadbeef"), "{line}");
        assert_eq!(r[0].name.as_deref(), Some("0123456789ab"));
        // Revoking by text, refused: the id only.
        let params = vec![("id".to_string(), secret.to_string())];
        let r = describe(base("token-revoke", "/api/v1/tokens/{id}"), &params, 404, b"{}");
        assert_eq!(r[0].name.as_deref(), Some("0123456789ab"));
        let params = vec![("id".to_string(), "weft_garbage_secret".to_string())];
        let r = describe(base("token-revoke", "/api/v1/tokens/{id}"), &params, 404, b"{}");
        assert_eq!(r[0].name.as_deref(), Some("(redacted)"));
    }

    #[test]
    fn apply_gives_a_line_per_object_and_refusals_their_message() {
        let body = br#"{"results":[{"kind":"Deployment","namespace":"default","name":"web","action":"created","resourceVersion":"7"},{"kind":"Service","namespace":"default","name":"web","action":"unchanged","resourceVersion":"3"}]}"#;
        let r = describe(base("apply", "/api/v1/apply"), &[], 200, body);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].resource_version.as_deref(), Some("7"));
        assert_eq!(r[1].action.as_deref(), Some("unchanged"));
        let err = br#"{"code":"Forbidden","message":"a viewer token may not write deployments"}"#;
        let params = vec![
            ("ns".to_string(), "default".to_string()),
            ("plural".to_string(), "deployments".to_string()),
            ("name".to_string(), "web".to_string()),
        ];
        let r = describe(base("put", "/api/v1/namespaces/{ns}/{plural}/{name}"), &params, 403, err);
        assert_eq!(r[0].kind.as_deref(), Some("Deployment"));
        assert_eq!(r[0].error.as_deref(), Some("a viewer token may not write deployments"));
        assert_eq!(r[0].resource_version, None);
    }

    #[test]
    fn writes_rotate_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let metrics = Metrics::new();
        let log = AuditLog::start(
            AuditOptions { path: path.clone(), max_bytes: 400, queue: 1000 },
            &metrics,
        )
        .unwrap();
        for i in 0..10 {
            log.record(Record { name: Some(format!("n{i}")), code: 200, ..base("put", "/x") });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while metrics.audit_records.get() < 10 {
            assert!(std::time::Instant::now() < deadline, "writer did not catch up");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let current = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains(r#""n9""#) && text.ends_with('\n') {
                break text;
            }
            assert!(std::time::Instant::now() < deadline, "not flushed: {text}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(dir.path().join("audit.log.1").exists());
        assert!(current.len() <= 400, "{}", current.len());
        assert!(current.trim_end().ends_with(r#""code":200}"#), "{current}");
        // A full queue drops (and counts) instead of waiting.
        let (tx, _rx) = mpsc::channel(1);
        let full = AuditLog { tx, dropped: metrics.audit_dropped.clone(), path };
        full.record(base("put", "/x"));
        full.record(base("put", "/x"));
        assert_eq!(metrics.audit_dropped.get(), 1);
    }
}
