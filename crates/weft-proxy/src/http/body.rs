//! The response body sent to the client and the bookkeeping of one request/response exchange.
//!
//! An [`Exchange`] lives from the request head to the end of the response (or until it is
//! abandoned) and records everything once, when dropped: metrics, the in-flight gauge, the
//! watchdog phase, balancer feedback and the return of the upstream connection to the pool.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use weft_traffic::{Endpoint, EndpointStats};

use super::headers::GRPC_STATUS;
use super::server::ConnCtx;
use crate::cluster::{Cluster, Ep};
use crate::dispatch::{Refusal, Routed};
use crate::metrics::ErrorKind;
use crate::obs::{Ending, RequestInfo, TraceHop};
use crate::policy::Limit;
use crate::sidecar::inbound::Admitted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No response head yet, or the body is still streaming.
    Open,
    /// The response ended cleanly.
    Complete,
    /// The upstream failed mid-response.
    Reset,
}

/// The endpoint an exchange is on, counted in flight there until the exchange ends.
struct OnEndpoint {
    ep: Ep,
    stats: Arc<EndpointStats>,
    latency: Option<Duration>,
}

pub(crate) struct Exchange {
    ctx: Arc<ConnCtx>,
    start: Instant,
    /// The cluster whose metrics count the request (set when routed or refused by a policy).
    cluster: Option<Arc<Cluster>>,
    /// Whether the request was routed (its in-flight gauge was raised).
    routed: bool,
    /// Holds the cluster's `maxRequests` slot.
    request_slot: bool,
    _admitted: Option<Admitted>,
    endpoint: Option<OnEndpoint>,
    status: u16,
    state: State,
    error: Option<ErrorKind>,
    /// A pooled HTTP/1.1 connection to return once the response is complete.
    reuse: Option<(SocketAddr, http1::SendRequest<Incoming>)>,
    /// What tracing and the access log need, when either is on.
    obs: Option<Box<Observed>>,
    /// Endpoints tried (retries are one less).
    attempts: u32,
    /// Response body bytes relayed to the client.
    bytes_out: u64,
}

/// The request as traced and logged (copied at its start: the request itself goes upstream).
struct Observed {
    hop: TraceHop,
    method: String,
    target: String,
    authority: Option<String>,
    bytes_in: Option<u64>,
}

impl Exchange {
    pub(crate) fn begin(ctx: Arc<ConnCtx>, start: Instant) -> Exchange {
        ctx.request_started();
        Exchange {
            ctx,
            start,
            cluster: None,
            routed: false,
            request_slot: false,
            _admitted: None,
            endpoint: None,
            status: 0,
            state: State::Open,
            error: None,
            reuse: None,
            obs: None,
            attempts: 0,
            bytes_out: 0,
        }
    }

    /// Keeps what the span and the log line of this request need, when they are on.
    pub(crate) fn observe<B>(&mut self, hop: TraceHop, req: &http::Request<B>) {
        if !self.ctx.worker.proxy.obs.enabled() {
            return;
        }
        let h = req.headers();
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| h.get(http::header::HOST).and_then(|v| v.to_str().ok()));
        let bytes_in = h
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .or_else(|| (req.method() == http::Method::GET).then_some(0));
        self.obs = Some(Box::new(Observed {
            hop,
            method: req.method().as_str().to_string(),
            target: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string(),
            authority: authority.map(str::to_string),
            bytes_in,
        }));
    }

    pub(crate) fn ctx(&self) -> &Arc<ConnCtx> {
        &self.ctx
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// The request was routed: it counts in flight for its service from now on.
    pub(crate) fn route(&mut self, routed: Routed) {
        routed.cluster.svc().in_flight.inc();
        self.cluster = Some(routed.cluster);
        self._admitted = routed._admitted;
        self.routed = true;
    }

    /// Takes the cluster's `maxRequests` slot (false: the breaker refused).
    pub(crate) fn take_request_slot(&mut self) -> bool {
        let ok = self.cluster.as_ref().is_none_or(|c| c.policy.acquire(Limit::Requests));
        self.request_slot = ok && self.cluster.is_some();
        ok
    }

    /// The next attempt goes to `ep`.
    pub(crate) fn set_endpoint(&mut self, ep: &Endpoint<Ep>) {
        self.end_attempt();
        self.attempts += 1;
        ep.stats.begin();
        self.endpoint =
            Some(OnEndpoint { ep: ep.id.clone(), stats: ep.stats.clone(), latency: None });
    }

    /// The endpoint answered after `latency` (a p2c-ewma sample).
    pub(crate) fn answered(&mut self, latency: Duration) {
        if let Some(e) = &mut self.endpoint {
            e.latency = Some(latency);
        }
    }

    fn end_attempt(&mut self) {
        if let Some(e) = self.endpoint.take() {
            e.stats.end(self.start + e.latency.unwrap_or_default(), e.latency);
        }
    }

    /// The response head is on its way to the client.
    pub(crate) fn responded(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.status = status.as_u16();
        if let Some(e) = &self.endpoint
            && let Some(g) = headers.get(&GRPC_STATUS)
        {
            e.ep.0.metrics.grpc_status(g.as_bytes());
        }
    }

    /// Keeps `tx` to return it to the pool if the exchange completes cleanly.
    pub(crate) fn reuse(&mut self, addr: SocketAddr, tx: http1::SendRequest<Incoming>) {
        self.reuse = Some((addr, tx));
    }

    /// Forgets the connection: it will not be reused.
    pub(crate) fn no_reuse(&mut self) {
        self.reuse = None;
    }

    /// Ends the exchange with a response made by the proxy.
    pub(crate) fn local(
        mut self,
        status: StatusCode,
        kind: Option<ErrorKind>,
        msg: impl Into<Bytes>,
    ) -> hyper::Response<ProxyBody> {
        let msg = msg.into();
        self.error = kind;
        self.status = status.as_u16();
        self.state = State::Complete;
        self.bytes_out = msg.len() as u64;
        drop(self);
        let mut res = hyper::Response::new(ProxyBody::Local(Some(msg)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }

    /// Ends the exchange with the proxy's refusal (unknown service, rate limit...).
    pub(crate) fn refuse(mut self, refusal: Refusal) -> hyper::Response<ProxyBody> {
        self.cluster = refusal.cluster;
        let retry_after = refusal.retry_after;
        let mut res = self.local(refusal.status, Some(refusal.kind), refusal.message);
        if let Some(secs) = retry_after {
            res.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        res
    }

    fn trailers(&self, trailers: &HeaderMap) {
        if let Some(e) = &self.endpoint
            && let Some(g) = trailers.get(&GRPC_STATUS)
        {
            e.ep.0.metrics.grpc_status(g.as_bytes());
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let error = match self.state {
            State::Complete => self.error,
            State::Reset => Some(ErrorKind::UpstreamReset),
            State::Open => Some(ErrorKind::ClientAbort),
        };
        let listener = &self.ctx.listener;
        let (svc, local) = match &self.cluster {
            Some(c) => (c.svc(), c.local()),
            None => (&listener.svc, &listener.local),
        };
        let upstream = self.endpoint.as_ref().map_or(local, |e| &e.ep.0.metrics);
        self.ctx.request_ended(self.start, svc, self.routed, Some(upstream), self.status, error);
        if let Some(o) = self.obs.take() {
            let req = RequestInfo {
                method: &o.method,
                target: &o.target,
                authority: o.authority.as_deref(),
                bytes_in: o.bytes_in,
            };
            let end = Ending {
                status: self.status,
                error,
                upstream: self.cluster.as_ref().map(|c| c.service.as_str()),
                endpoint: self.endpoint.as_ref().map(|e| e.ep.0.addr),
                retries: self.attempts.saturating_sub(1),
                bytes_out: self.bytes_out,
            };
            self.ctx.worker.proxy.obs.record(listener.kind, &o.hop, self.start, &req, &end);
        }
        if self.request_slot
            && let Some(c) = &self.cluster
        {
            c.policy.release(Limit::Requests);
        }
        self.end_attempt();
        if error.is_none()
            && let Some((addr, tx)) = self.reuse.take()
        {
            self.ctx.worker.pool.checkin_h1(addr, self.cluster.as_deref(), tx, Instant::now());
        }
    }
}

/// A response body: the upstream's, streamed, or a short one made by the proxy.
pub(crate) enum ProxyBody {
    Upstream(UpstreamBody),
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub(crate) fn upstream(inner: Incoming, exchange: Exchange) -> ProxyBody {
        ProxyBody::Upstream(UpstreamBody { inner, exchange })
    }
}

pub(crate) struct UpstreamBody {
    inner: Incoming,
    exchange: Exchange,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper drops a body it knows has ended without polling it to the end.
        if self.exchange.state == State::Open && self.inner.is_end_stream() {
            self.exchange.state = State::Complete;
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(b) => match Pin::new(&mut b.inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        b.exchange.bytes_out += d.len() as u64;
                    }
                    if let Some(t) = frame.trailers_ref() {
                        b.exchange.trailers(t);
                    }
                    if b.inner.is_end_stream() {
                        b.exchange.state = State::Complete;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    b.exchange.state = State::Reset;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    b.exchange.state = State::Complete;
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(data) => data.is_none(),
            ProxyBody::Upstream(b) => b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream(b) => b.inner.size_hint(),
        }
    }
}
