//! The agent's admin listener (`Node.status.metricsAddress`): `/metrics`, `/healthz`, and
//! `/logs/{ns}/{name}[?follow=true][&tail=N][&sidecar=true]`, which the api server proxies for
//! `weft logs`.

use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;

use crate::logs;
use crate::metrics::{self, Registry};

type Body = BoxBody<Bytes, std::io::Error>;

/// What the admin handlers read.
#[derive(Debug)]
pub(crate) struct Admin {
    pub registry: Arc<Registry>,
    pub logs_dir: PathBuf,
}

pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(&admin, req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

const PLAIN: &str = "text/plain; charset=utf-8";

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "use GET\n");
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/metrics" => {
            let list = admin.registry.list();
            let body = tokio::task::spawn_blocking(move || {
                let measured = metrics::measure(&list);
                metrics::render(&list, &measured)
            })
            .await
            .unwrap_or_default();
            text(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", body)
        }
        p if p.starts_with("/logs/") => {
            let parts: Vec<&str> = p["/logs/".len()..].split('/').collect();
            let [ns, name] = parts[..] else {
                return text(StatusCode::NOT_FOUND, PLAIN, "use /logs/{namespace}/{instance}\n");
            };
            match LogQuery::parse(req.uri().query().unwrap_or("")) {
                Ok(q) => serve_log(admin, ns, name, q).await,
                Err(e) => text(StatusCode::BAD_REQUEST, PLAIN, format!("{e}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /metrics, /healthz or /logs/{ns}/{name}\n",
        ),
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct LogQuery {
    follow: bool,
    tail: Option<u64>,
    sidecar: bool,
}

impl LogQuery {
    fn parse(q: &str) -> Result<LogQuery, String> {
        let mut out = LogQuery::default();
        let flag = |k: &str, v: &str| match v {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{k}={v:?}: use true or false")),
        };
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "follow" => out.follow = flag(k, v)?,
                "sidecar" => out.sidecar = flag(k, v)?,
                "tail" => {
                    out.tail =
                        Some(v.parse().map_err(|_| format!("tail={v:?}: use a number of lines"))?)
                }
                _ => return Err(format!("unknown parameter {k:?} (use follow, tail, sidecar)")),
            }
        }
        Ok(out)
    }
}

/// Most bytes sent at once (a whole log is at most the rotation size, 10 MiB by default).
const LOG_CAP: u64 = 16 << 20;

async fn serve_log(admin: &Admin, ns: &str, name: &str, q: LogQuery) -> Response<Body> {
    let valid = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if !valid(ns) || !valid(name) {
        return text(StatusCode::BAD_REQUEST, PLAIN, "bad namespace or instance name\n");
    }
    let file = if q.sidecar { logs::SIDECAR_LOG } else { logs::APP_LOG };
    let path = admin.logs_dir.join(crate::state::key(ns, name)).join(file);
    let start = {
        let path = path.clone();
        let n = q.tail;
        tokio::task::spawn_blocking(move || {
            let len = std::fs::metadata(&path)?.len();
            let head = logs::tail(&path, n.unwrap_or(u64::MAX), LOG_CAP)?;
            Ok::<_, std::io::Error>((head, len))
        })
        .await
    };
    let (head, offset) = match start {
        Ok(Ok(x)) => x,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                PLAIN,
                format!("no {file} for instance {ns}/{name} on this node\n"),
            );
        }
    };
    if !q.follow {
        return text(StatusCode::OK, PLAIN, head);
    }
    // Follow: the head, then whatever is appended. A shrunken file was rotated (copied and
    // truncated): continue from its start. The stream ends when the log is removed (the
    // instance is gone) or the client goes away (hyper drops the body).
    let first =
        futures::stream::once(
            async move { Ok::<_, std::io::Error>(Frame::data(Bytes::from(head))) },
        );
    let rest = futures::stream::unfold((path, offset), |(path, mut pos)| async move {
        loop {
            let len = match tokio::fs::metadata(&path).await {
                Ok(m) => m.len(),
                Err(_) => return None,
            };
            if len < pos {
                pos = 0;
            }
            if len > pos {
                let mut f = tokio::fs::File::open(&path).await.ok()?;
                f.seek(SeekFrom::Start(pos)).await.ok()?;
                let mut buf = vec![0u8; (len - pos).min(64 * 1024) as usize];
                let n = f.read(&mut buf).await.ok()?;
                buf.truncate(n);
                pos += n as u64;
                return Some((Ok(Frame::data(Bytes::from(buf))), (path, pos)));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let body = BodyExt::boxed(StreamBody::new(first.chain(rest)));
    let mut res = Response::new(body);
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PLAIN));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_queries() {
        assert_eq!(LogQuery::parse("").unwrap(), LogQuery::default());
        let q = LogQuery::parse("follow=true&tail=10&sidecar=1").unwrap();
        assert_eq!(q, LogQuery { follow: true, tail: Some(10), sidecar: true });
        assert!(LogQuery::parse("tail=x").is_err());
        assert!(LogQuery::parse("since=1h").is_err());
    }
}
