//! Forwarding one request: header rules, upstream choice, connection checkout, timeout, and the
//! mapping of failures to 502/504.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::body::{Exchange, ProxyBody};
use super::headers;
use super::server::ConnCtx;
use super::upgrade;
use crate::metrics::ErrorKind;
use crate::pool::ConnectError;

/// Why a request got no upstream response head.
pub(crate) enum Failure {
    Connect(ConnectError),
    Upstream(hyper::Error),
}

/// Answers the client's request with the upstream's response or an error of the proxy's own.
pub(crate) async fn forward(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut ex = Exchange::begin(ctx, Instant::now());
    if req.method() == Method::CONNECT {
        return Ok(ex.local(
            StatusCode::METHOD_NOT_ALLOWED,
            Some(ErrorKind::Unsupported),
            "CONNECT is not proxied here\n",
        ));
    }
    let h2 = req.version() == Version::HTTP_2;
    let upgrading = !h2 && headers::is_upgrade_request(req.headers());
    {
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h, upgrading);
        headers::append_forwarded_for(h, &ex.ctx().peer_ip);
        headers::ensure_request_id(h);
        headers::propagate_traceparent(h);
    }
    let proxy = &ex.ctx().worker.proxy;
    let idx = proxy.balancer.pick();
    let timeout = proxy.config.timeout;
    ex.set_upstream(idx);

    if upgrading {
        return Ok(upgrade::forward(ex, idx, req).await);
    }

    let sent = if h2 {
        prepare_h2(&mut req, &ex, idx);
        tokio::time::timeout(timeout, send_h2(&ex, idx, req)).await
    } else {
        prepare_h1(&mut req, &ex, idx);
        tokio::time::timeout(timeout, send_h1(&ex, idx, req)).await
    };
    Ok(match sent {
        Ok(Ok((res, reuse))) => {
            if let Some(tx) = reuse {
                ex.reuse(tx);
            }
            respond(ex, res, false, if h2 { Version::HTTP_2 } else { Version::HTTP_11 })
        }
        Ok(Err(failure)) => fail(ex, failure),
        Err(_elapsed) => ex.local(
            StatusCode::GATEWAY_TIMEOUT,
            Some(ErrorKind::UpstreamTimeout),
            "upstream timed out\n",
        ),
    })
}

/// Maps a failure before the response head to the proxy's own response.
pub(crate) fn fail(ex: Exchange, failure: Failure) -> Response<ProxyBody> {
    match failure {
        Failure::Connect(e) => ex.local(
            StatusCode::BAD_GATEWAY,
            Some(ErrorKind::UpstreamConnect),
            format!("upstream unavailable: {e}\n"),
        ),
        // hyper reports the request body it could not read (the client's) as a user error.
        Failure::Upstream(e) if e.is_user() => ex.local(
            StatusCode::BAD_REQUEST,
            Some(ErrorKind::BadRequest),
            format!("bad request body: {e}\n"),
        ),
        Failure::Upstream(e) => ex.local(
            StatusCode::BAD_GATEWAY,
            Some(ErrorKind::UpstreamError),
            format!("upstream failed before responding: {e}\n"),
        ),
    }
}

/// Turns the upstream's response into the client's.
pub(crate) fn respond(
    mut ex: Exchange,
    res: Response<Incoming>,
    upgraded: bool,
    version: Version,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    // The client's protocol, whatever the upstream spoke (hyper frames the body accordingly).
    parts.version = version;
    let hop = headers::strip_hop_by_hop(&mut parts.headers, upgraded);
    if hop.close {
        // The upstream closes this connection after the response: do not pool it.
        ex.no_reuse();
    }
    ex.responded(parts.status, &parts.headers);
    Response::from_parts(parts, ProxyBody::upstream(body, ex))
}

/// HTTP/1.1 to the upstream: origin-form target, a Host header.
fn prepare_h1(req: &mut Request<Incoming>, ex: &Exchange, idx: usize) {
    *req.version_mut() = Version::HTTP_11;
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let authority = req.uri().authority().cloned();
        let pq =
            req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        if let Some(a) = authority
            && let Ok(v) = HeaderValue::try_from(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    if !req.headers().contains_key(header::HOST) {
        let name = &ex.ctx().worker.proxy.upstreams[idx].name;
        if let Ok(host) = HeaderValue::try_from(name.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
}

/// HTTP/2 to the upstream: scheme and authority pseudo-headers.
fn prepare_h2(req: &mut Request<Incoming>, ex: &Exchange, idx: usize) {
    if req.uri().scheme().is_none() || req.uri().authority().is_none() {
        let mut parts = req.uri().clone().into_parts();
        parts.scheme.get_or_insert(Scheme::HTTP);
        if parts.authority.is_none() {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok());
            parts.authority = Some(
                host.or_else(|| {
                    Authority::try_from(ex.ctx().worker.proxy.upstreams[idx].name.as_str()).ok()
                })
                .unwrap_or_else(|| Authority::from_static("localhost")),
            );
        }
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

async fn send_h1(
    ex: &Exchange,
    idx: usize,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Option<http1::SendRequest<Incoming>>), Failure> {
    let pool = &ex.ctx().worker.pool;
    loop {
        let (mut tx, reused) = pool.checkout_h1(idx, ex.start()).await.map_err(Failure::Connect)?;
        match tx.try_send_request(req).await {
            Ok(res) => return Ok((res, Some(tx))),
            Err(mut e) => match e.take_message() {
                // A pooled connection closed before the request was written: try a fresh one.
                Some(unsent) if reused => req = unsent,
                _ => return Err(Failure::Upstream(e.into_error())),
            },
        }
    }
}

async fn send_h2(
    ex: &Exchange,
    idx: usize,
    req: Request<Incoming>,
) -> Result<(Response<Incoming>, Option<http1::SendRequest<Incoming>>), Failure> {
    let mut tx = ex.ctx().worker.pool.h2(idx).await.map_err(Failure::Connect)?;
    let res = tx.send_request(req).await.map_err(Failure::Upstream)?;
    Ok((res, None))
}
