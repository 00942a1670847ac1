//! The response body sent to the client and the bookkeeping of one request/response exchange.
//!
//! An [`Exchange`] lives from the request head to the end of the response (or until it is
//! abandoned) and records everything once, when dropped: metrics, the in-flight gauge, the
//! watchdog phase, balancer feedback and the return of the upstream connection to the pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::headers::GRPC_STATUS;
use super::server::ConnCtx;
use crate::metrics::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No response head yet, or the body is still streaming.
    Open,
    /// The response ended cleanly.
    Complete,
    /// The upstream failed mid-response.
    Reset,
}

pub(crate) struct Exchange {
    ctx: Arc<ConnCtx>,
    start: Instant,
    upstream: Option<usize>,
    status: u16,
    state: State,
    /// A pooled HTTP/1.1 connection to return once the response is complete.
    reuse: Option<http1::SendRequest<Incoming>>,
}

impl Exchange {
    pub(crate) fn begin(ctx: Arc<ConnCtx>, start: Instant) -> Exchange {
        ctx.request_started();
        Exchange { ctx, start, upstream: None, status: 0, state: State::Open, reuse: None }
    }

    pub(crate) fn ctx(&self) -> &Arc<ConnCtx> {
        &self.ctx
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    pub(crate) fn set_upstream(&mut self, idx: usize) {
        self.upstream = Some(idx);
    }

    /// The response head is on its way to the client.
    pub(crate) fn responded(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.status = status.as_u16();
        if let Some(idx) = self.upstream
            && let Some(g) = headers.get(&GRPC_STATUS)
        {
            self.ctx.worker.proxy.upstreams[idx].metrics.grpc_status(g.as_bytes());
        }
    }

    /// Keeps `tx` to return it to the pool if the exchange completes cleanly.
    pub(crate) fn reuse(&mut self, tx: http1::SendRequest<Incoming>) {
        self.reuse = Some(tx);
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
        if let Some(kind) = kind {
            self.ctx.worker.proxy.svc.error(kind);
        }
        self.status = status.as_u16();
        self.state = State::Complete;
        drop(self);
        let mut res = hyper::Response::new(ProxyBody::Local(Some(msg.into())));
        *res.status_mut() = status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }

    fn trailers(&self, trailers: &HeaderMap) {
        if let Some(idx) = self.upstream
            && let Some(g) = trailers.get(&GRPC_STATUS)
        {
            self.ctx.worker.proxy.upstreams[idx].metrics.grpc_status(g.as_bytes());
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let error = match self.state {
            State::Complete => None,
            State::Reset => Some(ErrorKind::UpstreamReset),
            State::Open => Some(ErrorKind::ClientAbort),
        };
        self.ctx.request_ended(self.start, self.upstream, self.status, error);
        if error.is_none()
            && let (Some(idx), Some(tx)) = (self.upstream, self.reuse.take())
        {
            self.ctx.worker.pool.checkin_h1(idx, tx, Instant::now());
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
