//! Upstream connections of one worker: per upstream address, a LIFO stack of idle raw HTTP/1.1
//! connections (for the HTTP/1 fast path), a LIFO stack of idle hyper HTTP/1.1 connections (for
//! the general path) and one shared HTTP/2 connection.
//!
//! Each worker (one runtime) has its own pool, so the lock is never contended; a checkout is a
//! lock, a hash lookup, a pop and a readiness check. Addresses come and go with the
//! configuration: an entry is created on first use and dropped by the sweeper once it holds
//! nothing. A connection goes back on the stack when its response ended cleanly; stale ones are
//! dropped on checkout and by the sweeper.
//!
//! New connections count against the cluster's circuit breaker: a pending slot while
//! connecting, a connection slot for as long as the connection lives.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use crate::tls::{Conn, Mesh};

use crate::cluster::Cluster;
use crate::policy::{Limit, Policy};
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
    #[error("mTLS handshake with {0}: {1}")]
    Tls(SocketAddr, std::io::Error),
    /// A circuit-breaker limit refused a new connection (not the endpoint's fault).
    #[error("circuit breaker open: {} reached", .0.field())]
    Overloaded(Limit),
}

impl ConnectError {
    /// A failure of the endpoint (counts toward ejection, retried as connect-failure).
    pub(crate) fn is_endpoint_error(&self) -> bool {
        !matches!(self, ConnectError::Overloaded(_))
    }
}

/// Initial read buffer of a raw upstream connection.
pub(crate) const RAW_BUF: usize = 8 * 1024;

struct Idle {
    tx: http1::SendRequest<Incoming>,
    since: Instant,
    peer: u64,
}

/// A raw upstream connection of the HTTP/1 fast path, with its read buffer.
pub(crate) struct RawConn {
    pub(crate) stream: Conn,
    pub(crate) buf: Vec<u8>,
    since: Instant,
    /// The cluster's `peer_tag` under mTLS (see [`Pool::tag`]).
    peer: u64,
    _counted: Counted,
}

#[derive(Default)]
struct Endpoint {
    raw: Vec<RawConn>,
    h1: Vec<Idle>,
    h2: Option<(u64, http2::SendRequest<Incoming>)>,
}

impl Endpoint {
    fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.h1.is_empty() && self.h2.is_none()
    }
}

/// FxHash: socket addresses are not attacker-chosen keys, and SipHash would cost more than the
/// rest of a checkout.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type Map = HashMap<SocketAddr, Endpoint, BuildHasherDefault<Fx>>;

pub(crate) struct Pool {
    endpoints: Mutex<Map>,
    idle_timeout: Duration,
    connect_timeout: Duration,
    max_idle: usize,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// mTLS to other sidecars (none when off).
    mesh: Option<Arc<Mesh>>,
}

/// Keeps an upstream connection counted (gauge, breaker slot) until the connection is gone.
pub(crate) struct Counted {
    gauge: Gauge,
    policy: Option<Arc<Policy>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.dec();
        if let Some(p) = &self.policy {
            p.release(Limit::Connections);
        }
    }
}

/// A new connection to `addr`, counted in the cluster's upstream connection gauge and breaker
/// until the returned guard is dropped (a pending slot is held while connecting). With `mesh`
/// (mTLS on) a connection to a Service's endpoint (another sidecar's inbound port) is mTLS,
/// handshaken within the connect timeout.
pub(crate) async fn connect_counted(
    addr: SocketAddr,
    cluster: &Arc<Cluster>,
    connect_timeout: Duration,
    mesh: Option<&Mesh>,
) -> Result<(Conn, Counted), ConnectError> {
    let policy = &cluster.policy;
    if !policy.acquire(Limit::Pending) {
        return Err(ConnectError::Overloaded(Limit::Pending));
    }
    let connected = async {
        if !policy.acquire(Limit::Connections) {
            return Err(ConnectError::Overloaded(Limit::Connections));
        }
        let counted = Counted {
            gauge: cluster.svc().upstream_connections.clone(),
            policy: policy.breaker.is_some().then(|| policy.clone()),
        };
        cluster.svc().upstream_connections.inc();
        let tls = match (mesh, &cluster.target) {
            (Some(m), Some(target)) if m.enabled() => Some((m, target)),
            _ => None,
        };
        let connect = async {
            let s = TcpStream::connect(addr).await.map_err(|e| ConnectError::Io(addr, e))?;
            let _ = s.set_nodelay(true);
            match tls {
                None => Ok(Conn::Tcp(s)),
                Some((m, (ns, name))) => m
                    .connect(s, ns, name, cluster.metrics())
                    .await
                    .map_err(|e| ConnectError::Tls(addr, e)),
            }
        };
        match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok(s)) => Ok((s, counted)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Timeout(addr)),
        }
    }
    .await;
    policy.release(Limit::Pending);
    connected
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (push/pop/replace).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub(crate) fn new(proxy: &Proxy) -> Pool {
        let cfg = &proxy.config;
        Pool {
            endpoints: Mutex::new(Map::default()),
            idle_timeout: cfg.upstream_idle_timeout,
            connect_timeout: cfg.connect_timeout,
            max_idle: cfg.max_idle_per_upstream,
            h1: http1::Builder::new(),
            h2: http2::Builder::new(TokioExecutor::new()),
            mesh: cfg.mtls.mesh.clone(),
        }
    }

    /// A connection to `addr` ready for a request; `reused` says whether it came from the pool
    /// (a request it fails to send may be retried on a fresh one).
    pub(crate) async fn checkout_h1(
        &self,
        addr: SocketAddr,
        cluster: &Arc<Cluster>,
        now: Instant,
    ) -> Result<(http1::SendRequest<Incoming>, bool), ConnectError> {
        let tag = self.tag(cluster);
        loop {
            let idle = {
                let mut map = lock(&self.endpoints);
                match map.get_mut(&addr) {
                    Some(ep) => match ep.h1.pop() {
                        Some(i) if now.saturating_duration_since(i.since) >= self.idle_timeout => {
                            // Everything below it is older still.
                            ep.h1.clear();
                            None
                        }
                        other => other,
                    },
                    None => None,
                }
            };
            let Some(mut idle) = idle else { break };
            if idle.peer != tag {
                continue;
            }
            if idle.tx.is_ready() {
                return Ok((idle.tx, true));
            }
            if !idle.tx.is_closed() && idle.tx.ready().await.is_ok() {
                return Ok((idle.tx, true));
            }
        }
        Ok((self.connect_h1(addr, cluster).await?, false))
    }

    /// An idle raw connection to `addr` (`true`: reused) or a new one.
    #[inline]
    pub(crate) async fn checkout_raw(
        &self,
        addr: SocketAddr,
        cluster: &Arc<Cluster>,
        now: Instant,
    ) -> Result<(RawConn, bool), ConnectError> {
        let idle = {
            let mut map = lock(&self.endpoints);
            match map.get_mut(&addr) {
                Some(ep) => match ep.raw.pop() {
                    Some(c) if now.saturating_duration_since(c.since) >= self.idle_timeout => {
                        // Everything below it is older still.
                        ep.raw.clear();
                        None
                    }
                    other => other,
                },
                None => None,
            }
        };
        let peer = self.tag(cluster);
        if let Some(conn) = idle.filter(|c| c.peer == peer) {
            return Ok((conn, true));
        }
        let (stream, counted) = self.connect(addr, cluster).await?;
        let conn = RawConn {
            stream,
            buf: Vec::with_capacity(RAW_BUF),
            since: now,
            peer,
            _counted: counted,
        };
        Ok((conn, false))
    }

    /// Returns a raw connection whose response ended cleanly with nothing left over.
    #[inline]
    pub(crate) fn checkin_raw(&self, addr: SocketAddr, mut conn: RawConn, now: Instant) {
        conn.since = now;
        conn.buf.clear();
        let mut map = lock(&self.endpoints);
        let ep = map.entry(addr).or_default();
        if ep.raw.len() < self.max_idle {
            ep.raw.push(conn);
        }
    }

    /// Returns a connection whose exchange completed cleanly.
    pub(crate) fn checkin_h1(
        &self,
        addr: SocketAddr,
        cluster: Option<&Cluster>,
        tx: http1::SendRequest<Incoming>,
        now: Instant,
    ) {
        let peer = cluster.map_or(0, |c| self.tag(c));
        if tx.is_closed() {
            return;
        }
        let mut map = lock(&self.endpoints);
        let ep = map.entry(addr).or_default();
        if ep.h1.len() < self.max_idle {
            ep.h1.push(Idle { tx, since: now, peer });
        }
    }

    /// Which Service's identity a connection to `cluster` is verified for: under mTLS the
    /// cluster's `peer_tag`, else 0 (plain connections serve every cluster of an address).
    #[inline]
    fn tag(&self, cluster: &Cluster) -> u64 {
        if self.mesh.is_some() { cluster.peer_tag } else { 0 }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        cluster: &Arc<Cluster>,
    ) -> Result<(Conn, Counted), ConnectError> {
        connect_counted(addr, cluster, self.connect_timeout, self.mesh.as_deref()).await
    }

    /// A new HTTP/1.1 connection (its task runs until the connection closes). It may switch
    /// protocols: upgrades get a connection of their own, which is never pooled.
    pub(crate) async fn connect_h1(
        &self,
        addr: SocketAddr,
        cluster: &Arc<Cluster>,
    ) -> Result<http1::SendRequest<Incoming>, ConnectError> {
        let (stream, counted) = self.connect(addr, cluster).await?;
        let (tx, conn) = self
            .h1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(addr, e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            drop(counted);
        });
        Ok(tx)
    }

    /// The shared HTTP/2 connection to `addr`, connecting if there is none.
    pub(crate) async fn h2(
        &self,
        addr: SocketAddr,
        cluster: &Arc<Cluster>,
    ) -> Result<http2::SendRequest<Incoming>, ConnectError> {
        let tag = self.tag(cluster);
        if let Some((peer, tx)) = lock(&self.endpoints).get(&addr).and_then(|e| e.h2.as_ref())
            && *peer == tag
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        let (stream, counted) = self.connect(addr, cluster).await?;
        let (tx, conn) = self
            .h2
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(addr, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
            drop(counted);
        });
        lock(&self.endpoints).entry(addr).or_default().h2 = Some((tag, tx.clone()));
        Ok(tx)
    }

    /// Closes idle connections older than the idle timeout (and dead ones), and forgets
    /// addresses with nothing left.
    pub(crate) fn sweep(&self, now: Instant) {
        let mut map = lock(&self.endpoints);
        for ep in map.values_mut() {
            ep.raw.retain(|c| now.saturating_duration_since(c.since) < self.idle_timeout);
            ep.h1.retain(|i| {
                now.saturating_duration_since(i.since) < self.idle_timeout && !i.tx.is_closed()
            });
            if ep.h2.as_ref().is_some_and(|(_, tx)| tx.is_closed()) {
                ep.h2 = None;
            }
        }
        map.retain(|_, ep| !ep.is_empty());
    }

    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 2).max(Duration::from_millis(100))
    }

    /// Closes every idle connection (at the end of a drain).
    pub(crate) fn clear(&self) {
        lock(&self.endpoints).clear();
    }
}
