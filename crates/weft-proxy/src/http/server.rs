//! One accepted client connection: protocol detection (HTTP/1 or h2c prior knowledge), hyper's
//! server side, and a watchdog that applies the header-read and keep-alive timeouts and the drain.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use crate::tls::Conn;
use bytes::Bytes;
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::fast::{self, FastEnd};
use super::forward;
use super::watchdog::{Activity, Check, deadline_instant};
use crate::dispatch::ListenerCtx;
use crate::drain::ConnGuard;
use crate::metrics::{ErrorKind, ServiceMetrics, UpstreamMetrics};
use crate::pool::Pool;
use crate::proxy::Proxy;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What one worker (one runtime) shares between its connections: the proxy, its upstream pool,
/// and the protocol settings.
pub(crate) struct Worker {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) pool: Pool,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Worker {
    pub(crate) fn new(proxy: Arc<Proxy>) -> Worker {
        let cfg = &proxy.config;
        let mut h1 = http1::Builder::new();
        // Our watchdog applies the header timeout without a timer per request.
        h1.header_read_timeout(None)
            .max_header_size(cfg.max_header_bytes)
            .max_buf_size(cfg.max_header_bytes.max(400 * 1024));
        if cfg.max_headers != 100 {
            // hyper parses up to 100 headers on the stack; a different limit costs an allocation.
            h1.max_headers(cfg.max_headers);
        }
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
        let pool = Pool::new(&proxy);
        Worker { proxy, pool, h1, h2 }
    }
}

/// What a request needs from its connection.
pub(crate) struct ConnCtx {
    pub(crate) worker: Arc<Worker>,
    /// The listener the connection came in on (routing, metrics of unrouted requests).
    pub(crate) listener: Arc<ListenerCtx>,
    /// The client's IP as an `x-forwarded-for` element.
    pub(crate) peer_ip: HeaderValue,
    /// The client's verified mesh identity (inbound mTLS connections), for authorization.
    pub(crate) peer: Option<weft_ca::SpiffeId>,
    pub(crate) activity: Activity,
    /// Keeps the connection counted (for the drain) as long as a request or tunnel lives.
    pub(crate) _guard: ConnGuard,
}

impl ConnCtx {
    /// A request head was parsed: the request is being served (the watchdog's phase; the
    /// in-flight gauge of its service moves once it is routed).
    pub(crate) fn request_started(&self) {
        self.activity.request_started();
    }

    /// Records the end of a request, whichever engine served it: the service's in-flight gauge
    /// (if it was `routed`, which raised it), watchdog phase, error counter, status counter and
    /// duration (when a status was sent).
    pub(crate) fn request_ended(
        &self,
        start: Instant,
        svc: &ServiceMetrics,
        routed: bool,
        upstream: Option<&UpstreamMetrics>,
        status: u16,
        error: Option<ErrorKind>,
    ) {
        if routed {
            svc.in_flight.dec();
        }
        self.activity.set_deadline(0);
        self.activity.request_finished();
        if let Some(kind) = error {
            svc.error(kind);
        }
        if status != 0 {
            svc.observe(status, start, Instant::now());
            if let Some(u) = upstream {
                u.response(status);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves one client connection to the end.
pub(crate) async fn serve_connection(
    worker: Arc<Worker>,
    listener: Arc<ListenerCtx>,
    mut stream: Conn,
    peer: SocketAddr,
) {
    let proxy = &worker.proxy;
    let guard = proxy.drain.track(&listener.svc.downstream_connections);
    let _ = stream.set_nodelay(true);
    let cfg = &proxy.config;
    let mut activity = Activity::new(cfg.header_timeout, cfg.idle_timeout);

    let detected = tokio::select! {
        biased;
        d = tokio::time::timeout(cfg.header_timeout, detect(&mut stream)) => d,
        () = proxy.drain.signaled() => return,
    };
    let (protocol, prefix) = match detected {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) | Ok(Err(_)) => return, // closed before sending anything
        Err(_) => {
            listener.svc.error(ErrorKind::HeaderTimeout);
            return;
        }
    };
    if protocol == Protocol::Http2 {
        activity.set_multiplexed();
    }
    let peer_ip = HeaderValue::try_from(peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let ctx = Arc::new(ConnCtx {
        worker: worker.clone(),
        listener: listener.clone(),
        peer_ip,
        peer: stream.peer().cloned(),
        activity,
        _guard: guard,
    });
    let (stream, prefix) = if protocol == Protocol::Http1 && cfg.http1_fast_path && prefix.is_none()
    {
        match drive(fast::serve(&ctx, stream), &ctx, |_| ctx.activity.close()).await {
            Ended::Done(FastEnd::Fallback(stream, rest)) => {
                (stream, (!rest.is_empty()).then_some(rest))
            }
            Ended::HeadTimeout => return listener.svc.error(ErrorKind::HeaderTimeout),
            Ended::Done(FastEnd::Closed) | Ended::Idle | Ended::Forced => return,
        }
    } else {
        (stream, prefix)
    };
    let io = TokioIo::new(ServerIo { stream, prefix, ctx: ctx.clone() });
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| forward::forward(svc_ctx.clone(), req));
    let result = match protocol {
        Protocol::Http1 => {
            let conn = worker.h1.serve_connection(io, svc).with_upgrades();
            drive(conn, &ctx, |c| c.graceful_shutdown()).await
        }
        Protocol::Http2 => {
            let conn = worker.h2.serve_connection(io, svc);
            drive(conn, &ctx, |c| c.graceful_shutdown()).await
        }
    };
    let svc = &listener.svc;
    match result {
        Ended::Done(Ok(())) | Ended::Forced | Ended::Idle => {}
        Ended::HeadTimeout => svc.error(ErrorKind::HeaderTimeout),
        Ended::Done(Err(e)) => {
            if e.is_parse_too_large() {
                svc.error(ErrorKind::HeaderTooLarge);
            } else if e.is_parse() || e.is_parse_status() {
                svc.error(ErrorKind::BadRequest);
            }
            // Other errors are the client going away or upstream body errors, counted where
            // they are seen.
        }
    }
}

/// Peeks at the first bytes: the h2c preface means HTTP/2 with prior knowledge, anything else
/// HTTP/1. Returns `None` if the client closed without sending anything. A preface split across
/// packets is read (and later replayed to hyper) rather than peeked.
async fn detect(stream: &mut Conn) -> io::Result<Option<(Protocol, Option<Bytes>)>> {
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf[..n] != H2_PREFACE[..n] {
        return Ok(Some((Protocol::Http1, None)));
    }
    if n == H2_PREFACE.len() {
        return Ok(Some((Protocol::Http2, None)));
    }
    // A prefix of the preface so far: consume until it is complete or differs.
    let mut got = Vec::with_capacity(H2_PREFACE.len());
    let mut chunk = [0u8; 24];
    loop {
        let want = H2_PREFACE.len() - got.len();
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        got.extend_from_slice(&chunk[..n]);
        if got[..] != H2_PREFACE[..got.len()] {
            return Ok(Some((Protocol::Http1, Some(got.into()))));
        }
        if got.len() == H2_PREFACE.len() {
            return Ok(Some((Protocol::Http2, Some(got.into()))));
        }
    }
}

/// The client socket as hyper sees it: replays bytes consumed by detection and tells the
/// watchdog when a request head starts arriving.
struct ServerIo {
    stream: Conn,
    prefix: Option<Bytes>,
    ctx: Arc<ConnCtx>,
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(prefix) = &mut this.prefix {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if prefix.is_empty() {
                this.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.ctx.activity.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

pub(crate) enum Ended<T> {
    Done(T),
    HeadTimeout,
    Idle,
    Forced,
}

/// Polls a connection future together with the watchdog timer and the drain signals. The drain
/// futures are polled once to register this task's waker and afterwards only an atomic flag is
/// read, and the timer moves only when it fires or the connection's next deadline comes before
/// it, so a request usually costs no timer operation and no extra synchronisation. The connection future is
/// polled again after `shutdown` and after a response deadline passed (the HTTP/1 fast path
/// answers 504 from within that poll).
pub(crate) async fn drive<C: Future>(
    conn: C,
    ctx: &ConnCtx,
    shutdown: impl Fn(Pin<&mut C>),
) -> Ended<C::Output> {
    let activity = &ctx.activity;
    let drain = &ctx.worker.proxy.drain;
    let mut conn = pin!(conn);
    let mut timer_at = activity.first_deadline();
    let mut timer = pin!(tokio::time::sleep_until(deadline_instant(timer_at)));
    let mut signaled = pin!(drain.signaled());
    let mut forced = pin!(drain.forced());
    let (mut signal_armed, mut force_armed, mut draining) = (false, false, false);
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(Ended::Done(r));
            }
            if !draining {
                let fired = if signal_armed {
                    drain.is_draining()
                } else {
                    signal_armed = true;
                    signaled.as_mut().poll(cx).is_ready()
                };
                if fired {
                    draining = true;
                    shutdown(conn.as_mut());
                    continue; // poll the connection again: it may close right away
                }
            } else {
                let fired = if force_armed {
                    drain.is_forced()
                } else {
                    force_armed = true;
                    forced.as_mut().poll(cx).is_ready()
                };
                if fired {
                    return Poll::Ready(Ended::Forced);
                }
            }
            let hint = activity.hint();
            if hint < timer_at {
                timer_at = hint;
                timer.as_mut().reset(deadline_instant(hint));
            }
            if timer.as_mut().poll(cx).is_ready() {
                match activity.check() {
                    Check::Wait(at) => {
                        timer_at = at;
                        timer.as_mut().reset(deadline_instant(at));
                    }
                    Check::ResponseTimeout => {}
                    Check::HeadTimeout => return Poll::Ready(Ended::HeadTimeout),
                    Check::IdleTimeout => return Poll::Ready(Ended::Idle),
                }
                continue;
            }
            return Poll::Pending;
        }
    })
    .await
}
