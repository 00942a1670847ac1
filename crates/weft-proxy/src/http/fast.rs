//! The HTTP/1.1 fast path: the common request is relayed as bytes, without hyper.
//!
//! Measured reason: through hyper (server and client) a proxied request cost ~32k instructions in
//! user space, mostly building, hashing and re-encoding header maps and passing the request and
//! response between two tasks; this path parses heads with httparse and rewrites them straight
//! into the next hop's buffer, on one task, with one write per direction.
//!
//! It takes a request only when it is plain: HTTP/1.1, origin-form target (or absolute-form
//! `http://authority/path`, as sent to an HTTP proxy: rewritten to origin-form with that `Host`),
//! a `Host`, at most one `Content-Length` of at most 64 KiB (the body is buffered, so a retry can
//! resend it), no `Transfer-Encoding`, `Expect`, `Upgrade` or `Connection` options other than
//! keep-alive/close, at most 64 headers. Anything else, and anything malformed or too large,
//! goes to hyper together with the bytes already read (the connection stays with hyper from then
//! on), so hyper answers 400/431 and handles chunked uploads, 100-continue, upgrades and
//! HTTP/1.0.
//!
//! Each request is routed (`crate::dispatch`), then tried on endpoints the cluster's balancer
//! picks until one answers or the policy stops retrying (per-try and overall deadlines through
//! the connection's watchdog). Responses are relayed as they come: heads rewritten (hop-by-hop
//! headers removed), bodies copied by `Content-Length`, chunked framing (validated, trailers
//! included) or until the upstream closes. Pipelined requests are served in order.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use crate::tls::Conn;
use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_traffic::{Endpoint, FailureKind};

use super::mesh::{self, Mark, Role};
use super::server::ConnCtx;
use super::watchdog::{ms_at, now_ms};
use crate::cluster::{Cluster, Ep, InFlight};
use crate::dispatch::{self, Headers, RequestView, Routed};
use crate::metrics::ErrorKind;
use crate::obs::trace::{self, Sampler, TraceHop};
use crate::obs::{Ending, RequestInfo};
use crate::policy::Limit;
use crate::pool::{ConnectError, RAW_BUF, RawConn};
use crate::rng;

const MAX_HEADERS: usize = 64;
/// Largest request body the fast path buffers; larger ones go to hyper, which streams.
const MAX_BODY: usize = 64 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most headers a response's `Connection` may name.
const MAX_NAMED: usize = 8;

/// How the fast path left the connection.
pub(crate) enum FastEnd {
    /// Closed (by the client, after a response that ends the connection, or for a drain).
    Closed,
    /// A request the fast path does not take: hyper continues with these unread bytes.
    Fallback(Conn, Bytes),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Name {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Upgrade,
    Expect,
    ForwardedFor,
    RequestId,
    Traceparent,
    Tracestate,
}

fn name_of(n: &[u8]) -> Name {
    let is = |s: &str| n.eq_ignore_ascii_case(s.as_bytes());
    match n.len() {
        2 if is("te") => Name::Te,
        4 if is("host") => Name::Host,
        6 if is("expect") => Name::Expect,
        7 if is("upgrade") => Name::Upgrade,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::KeepAlive,
        10 if is("tracestate") => Name::Tracestate,
        11 if is("traceparent") => Name::Traceparent,
        12 if is("x-request-id") => Name::RequestId,
        14 if is("content-length") => Name::ContentLength,
        15 if is("x-forwarded-for") => Name::ForwardedFor,
        16 if is("proxy-connection") => Name::ProxyConnection,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        _ => Name::Other,
    }
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

enum Parsed<T> {
    Done(T),
    Partial,
    /// Not for the fast path: hyper decides (and answers errors).
    Other,
}

/// What routing and the relay need to know about a request after its head was rewritten.
#[derive(Debug)]
struct ReqHead {
    len: usize,
    body: usize,
    close: bool,
    head_method: bool,
    idempotent: bool,
    /// Where the method, the origin-form target and the authority (absolute-form, else `Host`)
    /// are in the head.
    method: Range<usize>,
    target: Range<usize>,
    authority: Range<usize>,
    /// This hop's trace context (the `traceparent` written into the upstream's head).
    hop: TraceHop,
}

impl ReqHead {
    /// The routing view of the request, whose head is `head`.
    fn view<'a>(&self, head: &'a [u8]) -> RequestView<'a> {
        let text = |r: &Range<usize>| std::str::from_utf8(&head[r.clone()]).ok();
        let target = match text(&self.target) {
            Some("") | None => "/",
            Some(t) => t,
        };
        RequestView {
            method: text(&self.method).unwrap_or("GET"),
            target,
            authority: text(&self.authority),
            headers: Headers::Raw(head),
            peer: None,
        }
    }
}

/// Where `part` (a slice of `whole`) starts and ends in `whole`.
fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

/// Splits an absolute-form `http://authority/path?query` target into authority and the rest.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let scheme = target.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = &target[7..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || path.starts_with('#') {
        return None;
    }
    Some((authority, path))
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses a request head and, if the fast path takes it, writes the upstream's head into `out`.
fn build_request(
    input: &[u8],
    peer: &[u8],
    sampler: Sampler,
    out: &mut Vec<u8>,
) -> Parsed<ReqHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    if method == "CONNECT" {
        return Parsed::Other;
    }
    // Absolute-form (a request to a proxy): its authority replaces any Host header.
    let (path, absolute) = if path.starts_with('/') || path == "*" {
        (path, None)
    } else {
        match absolute_form(path) {
            Some((authority, rest)) => (rest, Some(authority)),
            None => return Parsed::Other,
        }
    };
    let mut authority = absolute.map(|a| range_in(input, a.as_bytes()));
    let mut body: Option<u64> = None;
    let (mut close, mut host, mut request_id) = (false, absolute.is_some(), false);
    let mut forwarded: [&[u8]; 4] = [&[]; 4];
    let mut n_forwarded = 0;
    let (mut trace, mut traces, mut tracestate) = (None, 0, false);
    let mut names = [Name::Other; MAX_HEADERS];
    for (h, kind) in req.headers.iter().zip(names.iter_mut()) {
        *kind = name_of(h.name.as_bytes());
        match *kind {
            Name::TransferEncoding | Name::Expect | Name::Upgrade => return Parsed::Other,
            Name::Te if !h.value.trim_ascii().eq_ignore_ascii_case(b"trailers") => {
                return Parsed::Other;
            }
            Name::Connection => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        return Parsed::Other; // names headers to remove: hyper's path does that
                    }
                }
            }
            Name::ContentLength => match (parse_length(h.value), body) {
                (Some(n), None) => body = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Parsed::Other,
            },
            Name::Host if absolute.is_some() => {}
            Name::Host if host => return Parsed::Other,
            Name::Host => {
                host = true;
                authority = Some(range_in(input, h.value));
            }
            Name::ForwardedFor if n_forwarded == forwarded.len() => return Parsed::Other,
            Name::ForwardedFor => {
                forwarded[n_forwarded] = h.value;
                n_forwarded += 1;
            }
            Name::RequestId => request_id = true,
            Name::Traceparent => {
                trace = Some(h.value);
                traces += 1;
            }
            Name::Tracestate => tracestate = true,
            _ => {}
        }
    }
    let body = body.unwrap_or(0);
    if !host || body > MAX_BODY as u64 {
        return Parsed::Other;
    }
    let hop = trace::hop(trace, traces > 1, sampler);
    let drop_tracestate = hop.restarted && tracestate;

    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if !path.starts_with('/') && path != "*" {
        out.push(b'/'); // absolute-form without a path, or with only a query
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(a) = absolute {
        put_header(out, b"host", a.as_bytes());
    }
    for (h, kind) in req.headers.iter().zip(names) {
        match kind {
            Name::Connection
            | Name::KeepAlive
            | Name::ProxyConnection
            | Name::ForwardedFor
            | Name::Traceparent => {}
            Name::Tracestate if drop_tracestate => {}
            Name::Host if absolute.is_some() => {}
            _ => put_header(out, h.name.as_bytes(), h.value),
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for v in &forwarded[..n_forwarded] {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer);
    out.extend_from_slice(b"\r\n");
    if !request_id {
        put_header(out, b"x-request-id", &rng::uuid_v4());
    }
    put_header(out, b"traceparent", &hop.traceparent);
    out.extend_from_slice(b"\r\n");
    Parsed::Done(ReqHead {
        len,
        body: body as usize,
        close,
        head_method: method == "HEAD",
        idempotent: weft_traffic::is_idempotent(method),
        method: range_in(input, method.as_bytes()),
        target: range_in(input, path.as_bytes()),
        authority: authority.unwrap_or(0..0),
        hop,
    })
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes (the client connection closes too).
    Close,
}

#[derive(Debug)]
struct RespHead {
    len: usize,
    status: u16,
    framing: Framing,
    /// The upstream connection may be reused after this response.
    reusable: bool,
    /// The client connection closes after this response.
    close_client: bool,
}

enum RespParsed {
    Final(RespHead),
    /// A 1xx response of this length, skipped.
    Interim(usize),
    Partial,
    Invalid,
}

/// Parses an upstream response head and writes the client's head into `out`.
fn build_response(input: &[u8], req: &ReqHead, draining: bool, out: &mut Vec<u8>) -> RespParsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return RespParsed::Partial,
        Err(_) => return RespParsed::Invalid,
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return RespParsed::Invalid;
    };
    if (100..200).contains(&status) {
        // 101 was not asked for (upgrades take hyper's path); other 1xx are informational.
        return if status == 101 { RespParsed::Invalid } else { RespParsed::Interim(len) };
    }
    let mut upstream_close = version == 0;
    let mut named: [&[u8]; MAX_NAMED] = [&[]; MAX_NAMED];
    let mut n_named = 0;
    let (mut te, mut chunked, mut length) = (false, false, None);
    let mut names = [Name::Other; MAX_HEADERS];
    for (h, kind) in res.headers.iter().zip(names.iter_mut()) {
        *kind = name_of(h.name.as_bytes());
        match *kind {
            Name::Connection => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        upstream_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        upstream_close &= version != 0;
                    } else if n_named < MAX_NAMED {
                        named[n_named] = t;
                        n_named += 1;
                    } else {
                        return RespParsed::Invalid;
                    }
                }
            }
            Name::TransferEncoding => {
                te = true;
                chunked =
                    tokens(h.value).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            }
            Name::ContentLength => match (parse_length(h.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return RespParsed::Invalid,
            },
            _ => {}
        }
    }
    let framing = if req.head_method || status == 204 || status == 304 {
        Framing::None
    } else if te {
        if chunked { Framing::Chunked } else { Framing::Close }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let close_client = req.close || draining || framing == Framing::Close;

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (h, kind) in res.headers.iter().zip(names) {
        let name = h.name.as_bytes();
        match kind {
            Name::Connection | Name::KeepAlive | Name::ProxyConnection | Name::Upgrade => {}
            Name::ContentLength if te => {}
            _ if named[..n_named].iter().any(|n| n.eq_ignore_ascii_case(name)) => {}
            _ => put_header(out, name, h.value),
        }
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    RespParsed::Final(RespHead {
        len,
        status,
        framing,
        reusable: !upstream_close && framing != Framing::Close,
        close_client,
    })
}

/// Follows chunked framing over relayed bytes to find where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    Size { value: u64, digits: u8 },
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

impl Chunked {
    const START: Chunked = Chunked::Size { value: 0, digits: 0 };

    /// Consumes bytes up to the end of the body; returns how many, or an error for bad framing.
    fn feed(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        let mut i = 0;
        while i < bytes.len() && *self != Chunked::Done {
            if let Chunked::Data(n) = *self {
                let take = n.min((bytes.len() - i) as u64);
                i += take as usize;
                *self = if take == n { Chunked::DataCr } else { Chunked::Data(n - take) };
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match (*self, b) {
                (Chunked::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return Err(());
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    Chunked::Size { value: value * 16 + u64::from(d), digits: digits + 1 }
                }
                (Chunked::Size { value, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                    Chunked::Extension(value)
                }
                (Chunked::Size { value, digits }, b'\r') if digits > 0 => Chunked::SizeLf(value),
                (Chunked::Extension(v), b'\r') => Chunked::SizeLf(v),
                (Chunked::Extension(v), _) if b != b'\n' => Chunked::Extension(v),
                (Chunked::SizeLf(0), b'\n') => Chunked::TrailerStart,
                (Chunked::SizeLf(v), b'\n') => Chunked::Data(v),
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::START,
                (Chunked::TrailerStart, b'\r') => Chunked::FinalLf,
                (Chunked::TrailerStart | Chunked::TrailerLine, _) if b != b'\r' && b != b'\n' => {
                    Chunked::TrailerLine
                }
                (Chunked::TrailerLine, b'\r') => Chunked::TrailerLf,
                (Chunked::TrailerLf, b'\n') => Chunked::TrailerStart,
                (Chunked::FinalLf, b'\n') => Chunked::Done,
                _ => return Err(()),
            };
        }
        Ok(i)
    }
}

/// Reads client bytes into `buf`; while `idle`, a drain makes it return an error at once.
async fn read_client(
    client: &mut Conn,
    buf: &mut Vec<u8>,
    ctx: &ConnCtx,
    idle: bool,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let mut read = pin!(client.read_buf(buf));
    poll_fn(|cx| {
        if idle && ctx.activity.closing() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        read.as_mut().poll(cx)
    })
    .await
}

/// Runs `fut` until it completes or the request's response deadline passes (`None`).
/// Writes all of `bytes` and flushes: a TLS connection may keep the last record buffered when
/// the socket is full (a no-op for plain TCP).
#[inline]
async fn write_out(conn: &mut Conn, bytes: &[u8]) -> io::Result<()> {
    conn.write_all(bytes).await?;
    conn.flush().await
}

async fn before_deadline<F: Future>(ctx: &ConnCtx, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if ctx.activity.timed_out() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

async fn read_upstream(up: &mut RawConn) -> io::Result<usize> {
    if up.buf.capacity() - up.buf.len() < 1024 {
        up.buf.reserve(RAW_BUF);
    }
    up.stream.read_buf(&mut up.buf).await
}

/// What happened to one request.
enum Outcome {
    /// The response was relayed in full (`bytes`: its body).
    Relayed { status: u16, close_client: bool, bytes: u64 },
    /// No response head came: the proxy answers (with the mesh's failure mark, on an inbound
    /// listener whose app failed).
    Local(StatusCode, ErrorKind, Cow<'static, str>, Option<Mark>),
    /// The response started but could not be finished: the client connection is cut.
    Cut { status: u16, kind: ErrorKind, bytes: u64 },
}

impl Outcome {
    fn timed_out() -> Outcome {
        Outcome::Local(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamTimeout,
            "upstream timed out\n".into(),
            None,
        )
    }

    fn upstream_failed(mark: Option<Mark>) -> Outcome {
        let msg = "upstream failed before responding\n";
        Outcome::Local(StatusCode::BAD_GATEWAY, ErrorKind::UpstreamError, msg.into(), mark)
    }
}

enum HeadError {
    TimedOut,
    /// The upstream closed or failed before sending anything.
    Nothing,
    Broken,
}

/// Reads the upstream's final response head (skipping 1xx) and writes the client's head into
/// `resp`; returns the head and where its body starts in `up.buf`.
async fn response_head(
    ctx: &ConnCtx,
    up: &mut RawConn,
    req: &ReqHead,
    resp: &mut Vec<u8>,
) -> Result<(RespHead, usize), HeadError> {
    let mut off = 0;
    loop {
        resp.clear();
        match build_response(&up.buf[off..], req, ctx.activity.closing(), resp) {
            RespParsed::Final(h) => {
                let start = off + h.len;
                return Ok((h, start));
            }
            RespParsed::Interim(n) if off + n <= MAX_RESPONSE_HEAD => {
                off += n;
                continue;
            }
            RespParsed::Interim(_) => return Err(HeadError::Broken),
            RespParsed::Invalid => return Err(HeadError::Broken),
            RespParsed::Partial if up.buf.len() - off > MAX_RESPONSE_HEAD => {
                return Err(HeadError::Broken);
            }
            RespParsed::Partial => {}
        }
        match before_deadline(ctx, read_upstream(up)).await {
            None => return Err(HeadError::TimedOut),
            Some(Ok(n)) if n > 0 => {}
            Some(_) if up.buf.is_empty() => return Err(HeadError::Nothing),
            Some(_) => return Err(HeadError::Broken),
        }
    }
}

/// Why an attempt got no response head.
enum TryError {
    /// No connection (before anything was sent).
    Connect(ConnectError),
    /// The attempt's deadline (per-try or overall) passed.
    TimedOut,
    /// The upstream closed, reset or sent something unparseable.
    Failed,
}

/// One attempt on the endpoint at `addr`: checkout, send, read the response head. A pooled
/// connection the upstream closed while idle fails before the request is out: the request is
/// then sent once more on a fresh connection (for any method if the write failed, for
/// idempotent ones if the connection closed without a byte of response), without counting as
/// a retry.
async fn attempt(
    ctx: &ConnCtx,
    addr: SocketAddr,
    cluster: &Arc<Cluster>,
    req: &ReqHead,
    request: &[u8],
    resp: &mut Vec<u8>,
    now: Instant,
) -> Result<(RawConn, RespHead, usize), TryError> {
    let pool = &ctx.worker.pool;
    let mut first_try = true;
    loop {
        let (mut up, reused) =
            match before_deadline(ctx, pool.checkout_raw(addr, cluster, now)).await {
                None => return Err(TryError::TimedOut),
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(TryError::Connect(e)),
            };
        let stale = reused && first_try;
        first_try = false;
        match before_deadline(ctx, write_out(&mut up.stream, request)).await {
            None => return Err(TryError::TimedOut),
            Some(Err(_)) if stale => continue,
            Some(Err(_)) => return Err(TryError::Failed),
            Some(Ok(())) => {}
        }
        match response_head(ctx, &mut up, req, resp).await {
            Ok((head, body_start)) => return Ok((up, head, body_start)),
            Err(HeadError::TimedOut) => return Err(TryError::TimedOut),
            Err(HeadError::Nothing) if stale && req.idempotent => continue,
            Err(_) => return Err(TryError::Failed),
        }
    }
}

/// Releases a circuit-breaker slot when the request ends.
struct Slot<'a>(&'a crate::policy::Policy, Limit);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// Sends the request (head and body in `request`) to endpoints of the routed cluster until one
/// answers or the policy stops retrying, and relays the response to the client. Returns the
/// outcome, the endpoint of the last attempt and the number of retries.
#[allow(clippy::too_many_arguments)]
async fn exchange<'r>(
    ctx: &ConnCtx,
    routed: &'r Routed,
    req: &ReqHead,
    method: &str,
    request: &[u8],
    resp: &mut Vec<u8>,
    client: &mut Conn,
    start: Instant,
) -> (Outcome, Option<&'r Endpoint<Ep>>, u32) {
    let cluster = &routed.cluster;
    let policy = &*cluster.policy;
    if !policy.acquire(Limit::Requests) {
        return (overloaded(cluster, Limit::Requests), None, 0);
    }
    let _slot = Slot(policy, Limit::Requests);
    policy.request_started(start);
    let overall = ms_at(start) + routed.timeout.as_millis() as u64;
    let mut tried = [SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); 4];
    let mut n_tried = 0;
    let mut retries = 0u32;
    let mut last = None;
    let role = Role::of(ctx.listener.kind);
    loop {
        let now = if retries == 0 { start } else { Instant::now() };
        let Some(ep) = cluster.pick(now, routed.hash_key.as_deref(), &tried[..n_tried]) else {
            return (no_endpoint(cluster), last, retries);
        };
        last = Some(ep);
        let addr = ep.id.0.addr;
        if n_tried < tried.len() {
            tried[n_tried] = addr;
            n_tried += 1;
        }
        let deadline = match policy.per_try {
            Some(d) => overall.min(ms_at(now) + d.as_millis() as u64),
            None => overall,
        };
        ctx.activity.set_deadline(deadline);
        let mut in_flight = InFlight::begin(&ep.stats, now);
        let failed = match attempt(ctx, addr, cluster, req, request, resp, now).await {
            Ok((up, head, body_start)) => {
                let status = head.status;
                if cluster.samples_latency() {
                    in_flight.answered(now.elapsed());
                }
                let mut failure = FailureKind::Status(status);
                // Only a 5xx can carry the mark: other responses cost nothing more.
                if role.inspects(status)
                    && let Some(mark) = mesh::take_raw(resp)
                    && role == Role::Caller
                {
                    // The callee's sidecar answered for its failed app: retry as if the
                    // connect or reset had happened here.
                    failure = mark.failure();
                }
                if status >= 500 {
                    cluster.record_failure(ep, Instant::now());
                } else {
                    cluster.record_success(ep);
                }
                if status >= 400 && policy.retry(method, failure, retries + 1, Instant::now()) {
                    retries += 1;
                    continue; // the response is dropped with its connection
                }
                ctx.activity.set_deadline(0);
                return (
                    relay(ctx, up, addr, &head, body_start, resp, client).await,
                    last,
                    retries,
                );
            }
            Err(e) => e,
        };
        drop(in_flight);
        let (kind, outcome) = match failed {
            TryError::Connect(ConnectError::Overloaded(limit)) => {
                return (overloaded(cluster, limit), last, retries);
            }
            TryError::Connect(e) => {
                let msg = format!("upstream unavailable: {e}\n");
                // An instance whose app does not accept (restarting) is momentarily unavailable:
                // 503, and the caller may resend any method, since nothing reached the app.
                let (status, mark) = match role {
                    Role::Inbound => (StatusCode::SERVICE_UNAVAILABLE, Some(Mark::Connect)),
                    _ => (StatusCode::BAD_GATEWAY, None),
                };
                let outcome = Outcome::Local(status, ErrorKind::UpstreamConnect, msg.into(), mark);
                (FailureKind::ConnectFailure, outcome)
            }
            TryError::TimedOut => (FailureKind::Timeout, Outcome::timed_out()),
            TryError::Failed => {
                let mark = (role == Role::Inbound).then_some(Mark::Reset);
                (FailureKind::Reset, Outcome::upstream_failed(mark))
            }
        };
        let now = Instant::now();
        cluster.record_failure(ep, now);
        if kind == FailureKind::Timeout && now_ms() >= overall {
            return (outcome, last, retries);
        }
        if policy.retry(method, kind, retries + 1, now) {
            retries += 1;
            continue;
        }
        return (outcome, last, retries);
    }
}

fn overloaded(cluster: &Cluster, limit: Limit) -> Outcome {
    let msg = format!(
        "circuit breaker open for service {:?}: {} ({}) reached\n",
        cluster.service,
        cluster.policy.max(limit),
        limit.field()
    );
    Outcome::Local(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Overloaded, msg.into(), None)
}

fn no_endpoint(cluster: &Cluster) -> Outcome {
    let msg = format!("service {:?} has no ready endpoints\n", cluster.service);
    Outcome::Local(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::NoEndpoint, msg.into(), None)
}

/// Relays a response whose head was read to the client; returns the connection to the pool
/// when the response ended cleanly.
async fn relay(
    ctx: &ConnCtx,
    mut up: RawConn,
    addr: SocketAddr,
    head: &RespHead,
    body_start: usize,
    resp: &mut Vec<u8>,
    client: &mut Conn,
) -> Outcome {
    let status = head.status;
    // Body bytes written to the client.
    let mut sent = 0u64;
    let mut reusable = head.reusable;

    // The head and whatever body bytes came with it go out in one write.
    let first = &up.buf[body_start..];
    let (mut remaining, mut chunked) = (0u64, Chunked::START);
    let take = match head.framing {
        Framing::None => 0,
        Framing::Length(n) => {
            let take = n.min(first.len() as u64);
            remaining = n - take;
            take as usize
        }
        Framing::Chunked => match chunked.feed(first) {
            Ok(n) => n,
            Err(()) => return Outcome::Cut { status, kind: ErrorKind::UpstreamReset, bytes: sent },
        },
        Framing::Close => first.len(),
    };
    if take < first.len() {
        reusable = false; // bytes after the response: the upstream is confused
    }
    let head_len = resp.len();
    resp.extend_from_slice(&first[..take]);
    if write_out(client, resp).await.is_err() {
        return Outcome::Cut { status, kind: ErrorKind::ClientAbort, bytes: sent };
    }
    sent += (resp.len() - head_len) as u64;
    let more = match head.framing {
        Framing::None => false,
        Framing::Length(_) => remaining > 0,
        Framing::Chunked => chunked != Chunked::Done,
        Framing::Close => true,
    };
    if more {
        loop {
            up.buf.clear();
            if up.buf.capacity() < 32 * 1024 {
                up.buf.reserve(32 * 1024);
            }
            let n = match up.stream.read_buf(&mut up.buf).await {
                Ok(0) if head.framing == Framing::Close => break,
                Ok(0) | Err(_) => {
                    return Outcome::Cut { status, kind: ErrorKind::UpstreamReset, bytes: sent };
                }
                Ok(n) => n,
            };
            let (take, done) = match head.framing {
                Framing::Length(_) => {
                    let take = remaining.min(n as u64);
                    remaining -= take;
                    (take as usize, remaining == 0)
                }
                Framing::Chunked => match chunked.feed(&up.buf) {
                    Ok(t) => (t, chunked == Chunked::Done),
                    Err(()) => {
                        return Outcome::Cut {
                            status,
                            kind: ErrorKind::UpstreamReset,
                            bytes: sent,
                        };
                    }
                },
                _ => (n, false),
            };
            if take < n {
                reusable = false;
            }
            if write_out(client, &up.buf[..take]).await.is_err() {
                return Outcome::Cut { status, kind: ErrorKind::ClientAbort, bytes: sent };
            }
            sent += take as u64;
            if done {
                break;
            }
        }
    }
    if reusable {
        ctx.worker.pool.checkin_raw(addr, up, Instant::now());
    }
    Outcome::Relayed { status, close_client: head.close_client, bytes: sent }
}

fn local_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    msg: &str,
    close: bool,
    retry_after: Option<u64>,
    mark: Option<Mark>,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    if let Some(secs) = retry_after {
        out.extend_from_slice(b"\r\nretry-after: ");
        out.extend_from_slice(secs.to_string().as_bytes());
    }
    if let Some(mark) = mark {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(mesh::HEADER.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(mark.as_str().as_bytes());
    }
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.extend_from_slice(if close {
        b"\r\nconnection: close\r\n\r\n".as_slice()
    } else {
        b"\r\n\r\n"
    });
    out.extend_from_slice(msg.as_bytes());
}

fn fallback(client: Conn, buf: Vec<u8>, pos: usize) -> FastEnd {
    FastEnd::Fallback(client, Bytes::from(buf).slice(pos..))
}

/// Serves a client connection on the fast path until it closes or a request needs hyper.
pub(crate) async fn serve(ctx: &ConnCtx, mut client: Conn) -> FastEnd {
    let proxy = &ctx.worker.proxy;
    let cfg = &proxy.config;
    let timeout_ms = cfg.timeout.as_millis() as u64;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut pos = 0;
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut resp: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // The request head: from the buffer (pipelining) or read until complete.
        out.clear();
        let req = loop {
            if pos < buf.len() {
                match build_request(
                    &buf[pos..],
                    ctx.peer_ip.as_bytes(),
                    proxy.obs.sampler,
                    &mut out,
                ) {
                    Parsed::Done(req) => break req,
                    Parsed::Other => return fallback(client, buf, pos),
                    Parsed::Partial if buf.len() - pos > cfg.max_header_bytes => {
                        return fallback(client, buf, pos);
                    }
                    Parsed::Partial => {}
                }
            }
            if pos == buf.len() {
                buf.clear();
                pos = 0;
            } else if pos > 0 {
                buf.drain(..pos);
                pos = 0;
            }
            let idle = buf.is_empty();
            match read_client(&mut client, &mut buf, ctx, idle).await {
                Ok(n) if n > 0 => ctx.activity.on_read(),
                _ => return FastEnd::Closed,
            }
        };
        let head_at = pos;
        pos += req.len;

        let start = Instant::now();
        ctx.request_started();
        ctx.activity.set_deadline(ms_at(start) + timeout_ms);
        let unrouted = &ctx.listener;
        if req.hop.restarted {
            proxy.obs.metrics.invalid_traceparent.inc();
        }

        // The body (at most MAX_BODY) is buffered whole, so a retry can resend it.
        let have = (buf.len() - pos).min(req.body);
        out.extend_from_slice(&buf[pos..pos + have]);
        pos += have;
        let mut missing = req.body - have;
        while missing > 0 {
            out.reserve(missing);
            let mut limited = (&mut client).take(missing as u64);
            let kind = match before_deadline(ctx, limited.read_buf(&mut out)).await {
                Some(Ok(n)) if n > 0 => {
                    missing -= n;
                    continue;
                }
                None => ErrorKind::HeaderTimeout,
                Some(_) => ErrorKind::ClientAbort,
            };
            ctx.request_ended(start, &unrouted.svc, false, None, 0, Some(kind));
            let view = req.view(&buf[head_at..head_at + req.len]);
            observe(ctx, &req, &view, start, 0, Some(kind), None, None, 0, 0);
            return FastEnd::Closed;
        }

        let head = &buf[head_at..head_at + req.len];
        let mut view = req.view(head);
        view.peer = ctx.peer.as_ref();
        let routed = match dispatch::route_or_hold(proxy, unrouted, &view, start).await {
            Ok(r) => r,
            Err(refusal) => {
                let close = req.close || ctx.activity.closing();
                local_response(
                    &mut resp,
                    refusal.status,
                    &refusal.message,
                    close,
                    refusal.retry_after,
                    None,
                );
                let written = write_out(&mut client, &resp).await;
                let (svc, local) = match &refusal.cluster {
                    Some(c) => (c.svc(), c.local()),
                    None => (&unrouted.svc, &unrouted.local),
                };
                ctx.request_ended(
                    start,
                    svc,
                    false,
                    Some(local),
                    refusal.status.as_u16(),
                    Some(refusal.kind),
                );
                let service = refusal.cluster.as_deref().map(|c| c.service.as_str());
                let len = refusal.message.len() as u64;
                let (status, kind) = (refusal.status.as_u16(), Some(refusal.kind));
                observe(ctx, &req, &view, start, status, kind, service, None, 0, len);
                if close || written.is_err() {
                    let _ = client.shutdown().await;
                    return FastEnd::Closed;
                }
                continue;
            }
        };
        let svc = routed.cluster.svc();
        svc.in_flight.inc();
        let (outcome, ep, retries) =
            exchange(ctx, &routed, &req, view.method, &out, &mut resp, &mut client, start).await;
        let upstream = Some(ep.map_or_else(|| routed.cluster.local(), |e| &e.id.0.metrics));
        let service = Some(routed.cluster.service.as_str());
        let addr = ep.map(|e| e.id.0.addr);
        match outcome {
            Outcome::Relayed { status, close_client, bytes } => {
                ctx.request_ended(start, svc, true, upstream, status, None);
                observe(ctx, &req, &view, start, status, None, service, addr, retries, bytes);
                if close_client {
                    let _ = client.shutdown().await;
                    return FastEnd::Closed;
                }
            }
            Outcome::Local(status, kind, msg, mark) => {
                let close = req.close || ctx.activity.closing();
                local_response(&mut resp, status, &msg, close, None, mark);
                let written = write_out(&mut client, &resp).await;
                ctx.request_ended(start, svc, true, upstream, status.as_u16(), Some(kind));
                let (status, len) = (status.as_u16(), msg.len() as u64);
                observe(ctx, &req, &view, start, status, Some(kind), service, addr, retries, len);
                if close || written.is_err() {
                    let _ = client.shutdown().await;
                    return FastEnd::Closed;
                }
            }
            Outcome::Cut { status, kind, bytes } => {
                ctx.request_ended(start, svc, true, upstream, status, Some(kind));
                observe(ctx, &req, &view, start, status, Some(kind), service, addr, retries, bytes);
                return FastEnd::Closed;
            }
        }
    }
}

/// Hands a finished request to tracing and the access log (nothing when both are off).
#[allow(clippy::too_many_arguments)]
#[inline]
fn observe(
    ctx: &ConnCtx,
    req: &ReqHead,
    view: &RequestView<'_>,
    start: Instant,
    status: u16,
    error: Option<ErrorKind>,
    upstream: Option<&str>,
    endpoint: Option<SocketAddr>,
    retries: u32,
    bytes_out: u64,
) {
    let obs = &ctx.worker.proxy.obs;
    if !obs.enabled() {
        return;
    }
    let info = RequestInfo {
        method: view.method,
        target: view.target,
        authority: view.authority,
        bytes_in: Some(req.body as u64),
    };
    let end = Ending { status, error, upstream, endpoint, retries, bytes_out };
    obs.record(ctx.listener.kind, &req.hop, start, &info, &end);
}

/// The request parser on arbitrary input, as the fuzz target drives it: `Some` (the routing
/// view) when the fast path takes the request.
pub(crate) fn parse_for_fuzz<'a>(input: &'a [u8], out: &mut Vec<u8>) -> Option<RequestView<'a>> {
    match build_request(input, b"10.0.0.1", Sampler::OFF, out) {
        Parsed::Done(req) if req.len <= input.len() => Some(req.view(&input[..req.len])),
        _ => None,
    }
}

/// The response-head parser and the chunked-framing reader on arbitrary input.
pub(crate) fn response_for_fuzz(input: &[u8], out: &mut Vec<u8>) -> usize {
    let req = ReqHead {
        len: 0,
        body: 0,
        close: false,
        head_method: input.first().is_some_and(|b| b & 1 == 1),
        idempotent: true,
        method: 0..0,
        target: 0..0,
        authority: 0..0,
        hop: TraceHop::default(),
    };
    match build_response(input, &req, false, out) {
        RespParsed::Final(h) if h.framing == Framing::Chunked => {
            let mut c = Chunked::START;
            c.feed(&input[h.len..]).unwrap_or(0)
        }
        RespParsed::Final(h) => h.len,
        RespParsed::Interim(n) => n,
        RespParsed::Partial | RespParsed::Invalid => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(input: &str) -> (Parsed<ReqHead>, String) {
        let mut out = Vec::new();
        let p = build_request(input.as_bytes(), b"10.1.2.3", Sampler::OFF, &mut out);
        (p, String::from_utf8(out).unwrap())
    }

    #[test]
    fn rewrites_a_plain_request() {
        let head = "GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nAccept: */*\r\n\r\n";
        let (p, out) = req(&format!("{head}rest"));
        let Parsed::Done(r) = p else { panic!("not taken") };
        assert_eq!(r.len, head.len());
        assert!(out.starts_with("GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nx-forwarded-for: 1.1.1.1, 10.1.2.3\r\nx-request-id: "), "{out}");
        assert!(out.contains("\r\ntraceparent: 00-"), "{out}");
        assert!(out.ends_with("\r\n\r\n"));
        assert!(!out.to_ascii_lowercase().contains("keep-alive"), "{out}");
    }

    #[test]
    fn leaves_unusual_requests_to_hyper() {
        for r in [
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: x-secret\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET https://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "BAD REQUEST\r\n\r\n",
        ] {
            assert!(matches!(req(r).0, Parsed::Other), "{r}");
        }
        assert!(matches!(req("GET / HTTP/1.1\r\nHost: x\r\n").0, Parsed::Partial));
    }

    fn head(body: usize) -> ReqHead {
        ReqHead {
            len: 0,
            body,
            close: false,
            head_method: false,
            idempotent: true,
            method: 0..0,
            target: 0..0,
            authority: 0..0,
            hop: TraceHop::default(),
        }
    }

    #[test]
    fn rewrites_absolute_form_and_exposes_the_route() {
        for (input, first, authority, target) in [
            (
                "GET http://catalog/items?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
                "GET /items?x=1 HTTP/1.1\r\nhost: catalog\r\n",
                "catalog",
                "/items?x=1",
            ),
            (
                "GET HTTP://catalog.prod:8080 HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: catalog.prod:8080\r\n",
                "catalog.prod:8080",
                "/",
            ),
            ("GET http://c?q HTTP/1.1\r\n\r\n", "GET /?q HTTP/1.1\r\nhost: c\r\n", "c", "/"),
            (
                "POST /a HTTP/1.1\r\nHost: cart:81\r\nContent-Length: 0\r\n\r\n",
                "POST /a HTTP/1.1\r\nHost: cart:81\r\n",
                "cart:81",
                "/a",
            ),
        ] {
            let (p, out) = req(input);
            let Parsed::Done(r) = p else { panic!("not taken: {input:?}") };
            assert!(out.starts_with(first), "{input:?} -> {out:?}");
            assert!(!out.contains("Host: other"), "{out}");
            let view = r.view(input.as_bytes());
            assert_eq!(view.authority, Some(authority), "{input:?}");
            if target != "/" || !input.contains("?q") {
                assert_eq!(view.target, target, "{input:?}");
            }
            assert_eq!(view.method, input.split(' ').next().unwrap());
        }
    }

    fn resp(input: &str, req: &ReqHead) -> (RespHead, String) {
        let mut out = Vec::new();
        match build_response(input.as_bytes(), req, false, &mut out) {
            RespParsed::Final(h) => (h, String::from_utf8(out).unwrap()),
            _ => panic!("not final: {input}"),
        }
    }

    #[test]
    fn response_framing_and_hop_by_hop() {
        let (h, out) = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\n\r\n",
            &head(0),
        );
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.reusable && !h.close_client);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kept: 2\r\n\r\n");

        let (h, out) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            &head(0),
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");

        let (h, out) = resp("HTTP/1.0 200 OK\r\n\r\n", &head(0));
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.reusable && h.close_client);
        assert!(out.ends_with("connection: close\r\n\r\n"));

        let (h, _) = resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", &head(0));
        assert_eq!(h.framing, Framing::None);
        let mut r = head(0);
        r.head_method = true;
        assert_eq!(
            resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", &r).0.framing,
            Framing::None
        );
        let mut out = Vec::new();
        assert!(matches!(
            build_response(b"HTTP/1.1 100 Continue\r\n\r\n", &head(0), false, &mut out),
            RespParsed::Interim(25)
        ));
        assert!(matches!(
            build_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &head(0),
                false,
                &mut out
            ),
            RespParsed::Invalid
        ));
    }

    #[test]
    fn chunked_framing() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nGrpc-Status: 0\r\n\r\nNEXT";
        for split in 0..=body.len() - 4 {
            let mut c = Chunked::START;
            let a = c.feed(&body[..split]).unwrap();
            assert_eq!(a, split);
            let b = c.feed(&body[split..]).unwrap();
            assert_eq!(a + b, body.len() - 4, "split {split}");
            assert_eq!(c, Chunked::Done);
        }
        for bad in [&b"x\r\n"[..], b"5\r\nhelloX", b"\r\n", b"fffffffffffffffff\r\n"] {
            let mut c = Chunked::START;
            assert!(c.feed(bad).is_err(), "{bad:?}");
        }
    }
}
