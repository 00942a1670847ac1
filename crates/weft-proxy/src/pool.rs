//! Upstream connections of one worker: per upstream, a LIFO stack of idle raw HTTP/1.1
//! connections (for the HTTP/1 fast path), a LIFO stack of idle hyper HTTP/1.1 connections (for
//! the general path) and one shared HTTP/2 connection.
//!
//! Each worker (one runtime) has its own pool, so the locks are never contended; a checkout is a
//! lock, a pop and a readiness check. A connection goes back on the stack when its response body
//! ended cleanly; stale ones are dropped on checkout and by a sweeper.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use crate::proxy::Proxy;

/// Why no upstream connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("connect to {0}: timed out")]
    Timeout(SocketAddr),
    #[error("handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// Initial read buffer of a raw upstream connection.
pub(crate) const RAW_BUF: usize = 8 * 1024;

struct Idle {
    tx: http1::SendRequest<Incoming>,
    since: Instant,
}

/// A raw upstream connection of the HTTP/1 fast path, with its read buffer.
pub(crate) struct RawConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Vec<u8>,
    since: Instant,
    _counted: Counted,
}

#[derive(Default)]
struct Endpoint {
    raw: Mutex<Vec<RawConn>>,
    h1: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<Incoming>>>,
}

pub(crate) struct Pool {
    endpoints: Box<[Endpoint]>,
    addrs: Box<[SocketAddr]>,
    idle_timeout: Duration,
    connect_timeout: Duration,
    max_idle: usize,
    gauge: Gauge,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// Decrements the upstream connection gauge when the connection task ends.
struct Counted(Gauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (push/pop/replace).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub(crate) fn new(proxy: &Proxy) -> Pool {
        let cfg = &proxy.config;
        let h1 = http1::Builder::new();
        let h2 = http2::Builder::new(TokioExecutor::new());
        Pool {
            endpoints: cfg.upstreams.iter().map(|_| Endpoint::default()).collect(),
            addrs: cfg.upstreams.iter().map(|u| u.addr).collect(),
            idle_timeout: cfg.upstream_idle_timeout,
            connect_timeout: cfg.connect_timeout,
            max_idle: cfg.max_idle_per_upstream,
            gauge: proxy.svc.upstream_connections.clone(),
            h1,
            h2,
        }
    }

    /// A connection to upstream `idx` ready for a request; `reused` says whether it came from
    /// the pool (a request it fails to send may be retried on a fresh one).
    pub(crate) async fn checkout_h1(
        &self,
        idx: usize,
        now: Instant,
    ) -> Result<(http1::SendRequest<Incoming>, bool), ConnectError> {
        loop {
            let idle = lock(&self.endpoints[idx].h1).pop();
            let Some(mut idle) = idle else { break };
            if now.saturating_duration_since(idle.since) >= self.idle_timeout {
                // Everything below it is older still.
                lock(&self.endpoints[idx].h1).clear();
                break;
            }
            if idle.tx.is_ready() {
                return Ok((idle.tx, true));
            }
            if !idle.tx.is_closed() && idle.tx.ready().await.is_ok() {
                return Ok((idle.tx, true));
            }
        }
        Ok((self.connect_h1(idx).await?, false))
    }

    /// An idle raw connection to upstream `idx` (`true`: reused) or a new one.
    pub(crate) async fn checkout_raw(
        &self,
        idx: usize,
        now: Instant,
    ) -> Result<(RawConn, bool), ConnectError> {
        let idle = {
            let mut raw = lock(&self.endpoints[idx].raw);
            match raw.pop() {
                Some(c) if now.saturating_duration_since(c.since) >= self.idle_timeout => {
                    // Everything below it is older still.
                    raw.clear();
                    None
                }
                other => other,
            }
        };
        if let Some(conn) = idle {
            return Ok((conn, true));
        }
        let (stream, counted) = self.connect(idx).await?;
        let conn =
            RawConn { stream, buf: Vec::with_capacity(RAW_BUF), since: now, _counted: counted };
        Ok((conn, false))
    }

    /// Returns a raw connection whose response ended cleanly with nothing left over.
    pub(crate) fn checkin_raw(&self, idx: usize, mut conn: RawConn, now: Instant) {
        conn.since = now;
        conn.buf.clear();
        let mut raw = lock(&self.endpoints[idx].raw);
        if raw.len() < self.max_idle {
            raw.push(conn);
        }
    }

    /// Returns a connection whose exchange completed cleanly.
    pub(crate) fn checkin_h1(&self, idx: usize, tx: http1::SendRequest<Incoming>, now: Instant) {
        if tx.is_closed() {
            return;
        }
        let mut idle = lock(&self.endpoints[idx].h1);
        if idle.len() < self.max_idle {
            idle.push(Idle { tx, since: now });
        }
    }

    /// A new TCP connection to upstream `idx`, counted in the upstream connection gauge until
    /// the returned guard is dropped.
    async fn connect(&self, idx: usize) -> Result<(TcpStream, Counted), ConnectError> {
        let addr = self.addrs[idx];
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
                Err(_) => return Err(ConnectError::Timeout(addr)),
            };
        let _ = stream.set_nodelay(true);
        self.gauge.inc();
        Ok((stream, Counted(self.gauge.clone())))
    }

    /// A new HTTP/1.1 connection (its task runs until the connection closes). It may switch
    /// protocols: upgrades get a connection of their own, which is never pooled.
    pub(crate) async fn connect_h1(
        &self,
        idx: usize,
    ) -> Result<http1::SendRequest<Incoming>, ConnectError> {
        let (stream, counted) = self.connect(idx).await?;
        let (tx, conn) = self
            .h1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(self.addrs[idx], e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            drop(counted);
        });
        Ok(tx)
    }

    /// The shared HTTP/2 connection to upstream `idx`, connecting if there is none.
    pub(crate) async fn h2(
        &self,
        idx: usize,
    ) -> Result<http2::SendRequest<Incoming>, ConnectError> {
        if let Some(tx) = lock(&self.endpoints[idx].h2).as_ref()
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        let (stream, counted) = self.connect(idx).await?;
        let (tx, conn) = self
            .h2
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(self.addrs[idx], e))?;
        tokio::spawn(async move {
            let _ = conn.await;
            drop(counted);
        });
        *lock(&self.endpoints[idx].h2) = Some(tx.clone());
        Ok(tx)
    }

    /// Closes idle connections older than the idle timeout (and dead ones).
    pub(crate) fn sweep(&self, now: Instant) {
        for ep in self.endpoints.iter() {
            lock(&ep.raw).retain(|c| now.saturating_duration_since(c.since) < self.idle_timeout);
            lock(&ep.h1).retain(|i| {
                now.saturating_duration_since(i.since) < self.idle_timeout && !i.tx.is_closed()
            });
            let mut h2 = lock(&ep.h2);
            if h2.as_ref().is_some_and(|tx| tx.is_closed()) {
                *h2 = None;
            }
        }
    }

    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 2).max(Duration::from_millis(100))
    }

    /// Closes every idle connection (at the end of a drain).
    pub(crate) fn clear(&self) {
        for ep in self.endpoints.iter() {
            lock(&ep.raw).clear();
            lock(&ep.h1).clear();
            *lock(&ep.h2) = None;
        }
    }
}
