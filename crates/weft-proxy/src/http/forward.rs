//! Forwarding one request through hyper: routing, header rules, endpoint choice, connection
//! checkout, timeouts, retries of attempts that never reached the upstream, and the mapping of
//! failures to 502/503/504.
//!
//! The request body streams (it is not buffered), so only attempts whose request was not sent
//! (connect failures, a connection closed before the request went out) are retried here; the
//! HTTP/1 fast path, which buffers small bodies, retries by the full policy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use weft_traffic::FailureKind;

use super::body::{Exchange, ProxyBody};
use super::headers;
use super::mesh::{self, Mark, Role};
use super::server::ConnCtx;
use super::upgrade;
use crate::cluster::Cluster;
use crate::dispatch::{self, Headers, RequestView};
use crate::metrics::ErrorKind;
use crate::pool::ConnectError;

/// Why a request got no upstream response head.
pub(crate) enum Failure {
    Connect(ConnectError),
    Upstream(hyper::Error),
}

/// A failed send, with the request when it was never sent (so it can be retried).
type SendError = (Failure, Option<Request<Incoming>>);

/// Answers the client's request with the upstream's response or an error of the proxy's own.
pub(crate) async fn forward(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let mut ex = Exchange::begin(ctx, start);
    if req.method() == Method::CONNECT {
        return Ok(ex.local(
            StatusCode::METHOD_NOT_ALLOWED,
            Some(ErrorKind::Unsupported),
            "CONNECT is not proxied here\n",
        ));
    }
    // Before routing, so that refused requests are traced and logged too.
    let hop = {
        let obs = &ex.ctx().worker.proxy.obs;
        let hop = headers::propagate_traceparent(req.headers_mut(), obs.sampler);
        if hop.restarted {
            obs.metrics.invalid_traceparent.inc();
        }
        hop
    };
    ex.observe(hop, &req);
    let routed = {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let ctx = ex.ctx().clone();
        let view = RequestView {
            method: req.method().as_str(),
            target: req.uri().path_and_query().map_or("/", PathAndQuery::as_str),
            authority: req.uri().authority().map(Authority::as_str).or(host),
            headers: Headers::Map(req.headers()),
            peer: ctx.peer.as_ref(),
        };
        match dispatch::route_or_hold(&ctx.worker.proxy, &ctx.listener, &view, start).await {
            Ok(r) => r,
            Err(refusal) => return Ok(ex.refuse(refusal)),
        }
    };
    let h2 = req.version() == Version::HTTP_2;
    let upgrading = !h2 && headers::is_upgrade_request(req.headers());
    {
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h, upgrading);
        headers::append_forwarded_for(h, &ex.ctx().peer_ip);
        headers::ensure_request_id(h);
    }
    let cluster = routed.cluster.clone();
    let hash_key = routed.hash_key.clone();
    let deadline = start + routed.timeout;
    ex.route(routed);
    let policy = &cluster.policy;
    if !ex.take_request_slot() {
        let msg = format!(
            "circuit breaker open for service {:?}: maxRequests reached\n",
            cluster.service
        );
        return Ok(ex.local(StatusCode::SERVICE_UNAVAILABLE, Some(ErrorKind::Overloaded), msg));
    }
    policy.request_started(start);
    let method = req.method().clone();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries = 0u32;
    loop {
        let now = Instant::now();
        let Some(ep) = cluster.pick(now, hash_key.as_deref(), &tried) else {
            let msg = format!("service {:?} has no ready endpoints\n", cluster.service);
            return Ok(ex.local(StatusCode::SERVICE_UNAVAILABLE, Some(ErrorKind::NoEndpoint), msg));
        };
        let addr = ep.id.0.addr;
        tried.push(addr);
        ex.set_endpoint(ep);
        if upgrading {
            return Ok(upgrade::forward(ex, addr, &cluster, deadline, req).await);
        }
        let remaining = deadline.saturating_duration_since(now);
        let limit = policy.per_try.map_or(remaining, |d| d.min(remaining));
        let sent = if h2 {
            prepare_h2(&mut req, &ep.id.0.name);
            tokio::time::timeout(limit, send_h2(&ex, addr, &cluster, req)).await
        } else {
            prepare_h1(&mut req, &ep.id.0.name);
            tokio::time::timeout(limit, send_h1(&ex, addr, &cluster, req)).await
        };
        let now = Instant::now();
        match sent {
            Ok(Ok((mut res, reuse))) => {
                if cluster.samples_latency() {
                    ex.answered(now.saturating_duration_since(start));
                }
                let role = Role::of(ex.ctx().listener.kind);
                if role.inspects(res.status().as_u16()) {
                    // A callee sidecar's mark is for this hop only (an app's is never trusted).
                    // Unlike the fast path, the request cannot be resent from here whatever the
                    // mark says: it went out and its body streamed through. The endpoint failed
                    // either way, which outlier detection counts below like any 5xx.
                    mesh::take_map(res.headers_mut());
                }
                if res.status().is_server_error() {
                    cluster.record_failure(ep, now);
                } else {
                    cluster.record_success(ep);
                }
                if let Some(tx) = reuse {
                    ex.reuse(addr, tx);
                }
                return Ok(respond(
                    ex,
                    res,
                    false,
                    if h2 { Version::HTTP_2 } else { Version::HTTP_11 },
                ));
            }
            Ok(Err((Failure::Connect(ConnectError::Overloaded(limit)), _))) => {
                let msg = format!(
                    "circuit breaker open for service {:?}: {} ({}) reached\n",
                    cluster.service,
                    policy.max(limit),
                    limit.field()
                );
                return Ok(ex.local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(ErrorKind::Overloaded),
                    msg,
                ));
            }
            Ok(Err((failure, unsent))) => {
                let kind = match (&failure, &unsent) {
                    (Failure::Connect(_), _) => FailureKind::ConnectFailure,
                    (Failure::Upstream(_), Some(_)) => FailureKind::ClosedBeforeSend,
                    (Failure::Upstream(_), None) => FailureKind::Reset,
                };
                if kind.is_endpoint_error() {
                    cluster.record_failure(ep, now);
                }
                if let Some(unsent) = unsent
                    && policy.retry(method.as_str(), kind, retries + 1, now)
                {
                    req = unsent;
                    retries += 1;
                    continue;
                }
                return Ok(fail(ex, failure));
            }
            Err(_elapsed) => {
                cluster.record_failure(ep, now);
                return Ok(ex.local(
                    StatusCode::GATEWAY_TIMEOUT,
                    Some(ErrorKind::UpstreamTimeout),
                    "upstream timed out\n",
                ));
            }
        }
    }
}

/// Maps a failure before the response head to the proxy's own response.
///
/// On an inbound listener the app's failure is marked for the calling sidecar (`http::mesh`):
/// a refused connect is `connect` and 503 (the instance is momentarily unavailable, nothing
/// reached the app), a failure after sending is `reset`.
pub(crate) fn fail(ex: Exchange, failure: Failure) -> Response<ProxyBody> {
    let inbound = Role::of(ex.ctx().listener.kind) == Role::Inbound;
    let marked = |mut res: Response<ProxyBody>, mark: Mark| {
        if inbound {
            res.headers_mut().insert(mesh::HEADER, HeaderValue::from_static(mark.as_str()));
        }
        res
    };
    match failure {
        Failure::Connect(e) if inbound && e.is_endpoint_error() => marked(
            ex.local(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(ErrorKind::UpstreamConnect),
                format!("upstream unavailable: {e}\n"),
            ),
            Mark::Connect,
        ),
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
        Failure::Upstream(e) => marked(
            ex.local(
                StatusCode::BAD_GATEWAY,
                Some(ErrorKind::UpstreamError),
                format!("upstream failed before responding: {e}\n"),
            ),
            Mark::Reset,
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
    if Role::of(ex.ctx().listener.kind).inspects(parts.status.as_u16()) {
        // Also for upgrade requests, which do not pass through `forward`'s check.
        mesh::take_map(&mut parts.headers);
    }
    if hop.close {
        // The upstream closes this connection after the response: do not pool it.
        ex.no_reuse();
    }
    ex.responded(parts.status, &parts.headers);
    Response::from_parts(parts, ProxyBody::upstream(body, ex))
}

/// HTTP/1.1 to the upstream: origin-form target, a Host header (the absolute-form authority,
/// else the client's, else the endpoint's address).
pub(crate) fn prepare_h1(req: &mut Request<Incoming>, endpoint: &str) {
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
    if !req.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::try_from(endpoint)
    {
        req.headers_mut().insert(header::HOST, host);
    }
}

/// HTTP/2 to the upstream: scheme and authority pseudo-headers.
fn prepare_h2(req: &mut Request<Incoming>, endpoint: &str) {
    if req.uri().scheme().is_none() || req.uri().authority().is_none() {
        let mut parts = req.uri().clone().into_parts();
        parts.scheme.get_or_insert(Scheme::HTTP);
        if parts.authority.is_none() {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok());
            parts.authority = Some(
                host.or_else(|| Authority::try_from(endpoint).ok())
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
    addr: SocketAddr,
    cluster: &Arc<Cluster>,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Option<http1::SendRequest<Incoming>>), SendError> {
    let pool = &ex.ctx().worker.pool;
    loop {
        let (mut tx, reused) = match pool.checkout_h1(addr, cluster, ex.start()).await {
            Ok(c) => c,
            Err(e) => return Err((Failure::Connect(e), Some(req))),
        };
        match tx.try_send_request(req).await {
            Ok(res) => return Ok((res, Some(tx))),
            Err(mut e) => match e.take_message() {
                // A pooled connection closed before the request was written: try a fresh one.
                Some(unsent) if reused => req = unsent,
                unsent => return Err((Failure::Upstream(e.into_error()), unsent)),
            },
        }
    }
}

async fn send_h2(
    ex: &Exchange,
    addr: SocketAddr,
    cluster: &Arc<Cluster>,
    req: Request<Incoming>,
) -> Result<(Response<Incoming>, Option<http1::SendRequest<Incoming>>), SendError> {
    let mut tx = match ex.ctx().worker.pool.h2(addr, cluster).await {
        Ok(tx) => tx,
        Err(e) => return Err((Failure::Connect(e), Some(req))),
    };
    let res = tx.send_request(req).await.map_err(|e| (Failure::Upstream(e), None))?;
    Ok((res, None))
}
