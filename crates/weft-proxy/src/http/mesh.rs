//! The mesh's failure mark: how an instance's own sidecar tells the calling sidecar (or the
//! gateway) that it answered for an app that failed before responding, so that the caller can
//! retry on another endpoint as if it had seen the failure itself.
//!
//! Without it, an app killed under load shows the caller a plain 502/503 from the callee's
//! inbound sidecar, which a retry policy on `connect-failure`/`reset` does not match, and a POST
//! that never reached the app (its connect was refused) could not be retried at all.
//!
//! - An inbound listener (sidecar → its app) that fails before any response byte answers with
//!   `x-weft-failure: connect` (the app refused the connection: nothing was sent; status 503)
//!   or `x-weft-failure: reset` (the app failed after the request was sent; status 502).
//! - A caller-side listener (outbound, upstream port, gateway) reads the mark on a 5xx response
//!   as [`FailureKind::ConnectFailure`] or [`FailureKind::Reset`] and always removes it before
//!   relaying, so a client outside the mesh never sees it.
//! - An inbound listener also removes it from its app's 5xx responses: only a sidecar marks, an
//!   app cannot make its caller resend a request it may have acted on.
//! - Plain mode neither adds nor reads it. The header is looked at only on 5xx responses, so a
//!   successful response costs nothing more.

use http::HeaderMap;
use weft_traffic::FailureKind;

use crate::dispatch::ListenerKind;

/// The header's name (lower case, as written and as compared).
pub(crate) const HEADER: &str = "x-weft-failure";

/// What an inbound sidecar says about its app's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// The connection to the app failed: nothing of the request reached it.
    Connect,
    /// The app failed after the request (or part of it) was sent, before a response head.
    Reset,
}

impl Mark {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mark::Connect => "connect",
            Mark::Reset => "reset",
        }
    }

    fn parse(v: &[u8]) -> Option<Mark> {
        let v = v.trim_ascii();
        if v.eq_ignore_ascii_case(b"connect") {
            Some(Mark::Connect)
        } else if v.eq_ignore_ascii_case(b"reset") {
            Some(Mark::Reset)
        } else {
            None
        }
    }

    /// How the caller's retry policy sees the failure: as if it had happened on its own
    /// connection to the app.
    pub(crate) fn failure(self) -> FailureKind {
        match self {
            Mark::Connect => FailureKind::ConnectFailure,
            Mark::Reset => FailureKind::Reset,
        }
    }
}

/// What a listener does with the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Plain reverse proxy: the mesh protocol does not apply.
    None,
    /// An instance's inbound listener: marks its own failures, strips its app's.
    Inbound,
    /// Forwards to a service's endpoints (sidecars): reads the mark, strips it.
    Caller,
}

impl Role {
    pub(crate) fn of(kind: ListenerKind) -> Role {
        match kind {
            ListenerKind::Plain => Role::None,
            ListenerKind::Inbound(_) => Role::Inbound,
            ListenerKind::Outbound | ListenerKind::Upstream(_) | ListenerKind::Gateway => {
                Role::Caller
            }
        }
    }

    /// Whether a response with `status` has to be looked at (and cleaned).
    #[inline]
    pub(crate) fn inspects(self, status: u16) -> bool {
        self != Role::None && (500..600).contains(&status)
    }
}

/// Removes the mark from a response's headers; returns it when it was valid.
pub(crate) fn take_map(headers: &mut HeaderMap) -> Option<Mark> {
    // There is only ever one; should there be more, the last valid one counts.
    let mark = headers.get_all(HEADER).iter().filter_map(|v| Mark::parse(v.as_bytes())).next_back();
    headers.remove(HEADER);
    mark
}

/// Removes the mark's lines from a serialized HTTP/1 response head (status line, header lines,
/// blank line, as the fast path writes it for the client); returns the mark when valid.
pub(crate) fn take_raw(head: &mut Vec<u8>) -> Option<Mark> {
    // Skip the status line; then each header line is `name: value\r\n` until the blank line.
    let first = find_crlf(head, 0)?;
    let mut mark = None;
    let mut at = first + 2;
    while let Some(end) = find_crlf(head, at) {
        if end == at {
            break; // the blank line: end of the head
        }
        let line = &head[at..end];
        let is_mark = line.len() > HEADER.len()
            && line[..HEADER.len()].eq_ignore_ascii_case(HEADER.as_bytes())
            && line[HEADER.len()] == b':';
        if is_mark {
            mark = Mark::parse(&line[HEADER.len() + 1..]).or(mark);
            head.drain(at..end + 2);
        } else {
            at = end + 2;
        }
    }
    mark
}

fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_heads_lose_the_mark() {
        let mut h = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nX-Weft-Failure: connect\r\ncontent-length: 3\r\n\r\n".to_vec();
        assert_eq!(take_raw(&mut h), Some(Mark::Connect));
        assert_eq!(
            h,
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\n"
        );
        let mut h = b"HTTP/1.1 502 Bad Gateway\r\nx-weft-failure:reset \r\n\r\n".to_vec();
        assert_eq!(take_raw(&mut h), Some(Mark::Reset));
        assert_eq!(h, b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        // Unknown values are removed too, and do not count.
        let mut h =
            b"HTTP/1.1 500 x\r\nx-weft-failure: maybe\r\nx-weft-failures: 1\r\n\r\n".to_vec();
        assert_eq!(take_raw(&mut h), None);
        assert_eq!(h, b"HTTP/1.1 500 x\r\nx-weft-failures: 1\r\n\r\n");
    }

    #[test]
    fn header_maps_lose_the_mark() {
        let mut m = HeaderMap::new();
        m.insert("x-weft-failure", "reset".parse().unwrap());
        m.insert("content-length", "0".parse().unwrap());
        assert_eq!(take_map(&mut m), Some(Mark::Reset));
        assert!(!m.contains_key(HEADER));
        assert_eq!(m.len(), 1);
        assert_eq!(take_map(&mut m), None);
    }

    #[test]
    fn roles() {
        assert!(!Role::of(ListenerKind::Plain).inspects(502));
        assert!(Role::of(ListenerKind::Gateway).inspects(503));
        assert!(!Role::of(ListenerKind::Outbound).inspects(200));
        assert_eq!(Role::of(ListenerKind::Inbound(0)), Role::Inbound);
        assert_eq!(Role::of(ListenerKind::Upstream(1)), Role::Caller);
    }
}
