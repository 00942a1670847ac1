//! Header rules of a proxy hop: hop-by-hop removal, `x-forwarded-for`, `x-request-id` and W3C
//! `traceparent`.
//!
//! The common request (no hop-by-hop header, no id, no trace) costs one scan of the header names,
//! two random numbers and two small header values.

use http::HeaderMap;
use http::header::{self, Entry, HeaderName, HeaderValue};

use crate::obs::trace::{self, Sampler, TraceHop};
use crate::rng;

pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// What the hop-by-hop headers said about the connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Hop {
    /// `Connection: close` was present.
    pub(crate) close: bool,
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_token(headers, &header::CONNECTION, "upgrade")
}

/// Removes the hop-by-hop headers: `Connection` and the headers it names, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding` (hyper frames the next hop itself), `TE` except
/// `trailers`, and `Upgrade` unless `upgrade` is true (then `Connection: upgrade` is kept).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) -> Hop {
    let mut hop = Hop::default();
    if !headers.keys().any(is_hop_by_hop) {
        return hop;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("close") {
                hop.close = true;
            } else if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                // The message's framing and target are not the sender's to remove.
                if name != header::HOST && name != header::CONTENT_LENGTH {
                    named.push(name);
                }
            }
        }
    }
    let trailers = has_token(headers, &header::TE, "trailers");
    headers.remove(header::CONNECTION);
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TE);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    hop
}

/// Appends the client's address to `x-forwarded-for` (one comma-separated value).
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(v) => {
            v.insert(peer.clone());
        }
        Entry::Occupied(mut o) => {
            let mut joined = Vec::with_capacity(64);
            for v in o.iter() {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(peer.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                o.insert(v);
            }
        }
    }
}

/// Sets `x-request-id` to a random UUID when the request has none.
pub(crate) fn ensure_request_id(headers: &mut HeaderMap) {
    if let Entry::Vacant(v) = headers.entry(&X_REQUEST_ID)
        && let Ok(id) = HeaderValue::from_bytes(&rng::uuid_v4())
    {
        v.insert(id);
    }
}

/// Propagates W3C trace context through this hop (see [`trace::hop`]): the next hop gets a
/// `traceparent` carrying this hop's span id; `tracestate` passes through unless it came with
/// a malformed `traceparent` (a new trace was started). Returns the hop's span identity.
pub(crate) fn propagate_traceparent(headers: &mut HeaderMap, sampler: Sampler) -> TraceHop {
    let hop = {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let first = values.next();
        let repeated = values.next().is_some();
        trace::hop(first.map(HeaderValue::as_bytes), repeated, sampler)
    };
    if hop.restarted {
        headers.remove(&TRACESTATE);
    }
    if let Ok(v) = HeaderValue::from_bytes(&hop.traceparent) {
        headers.insert(&TRACEPARENT, v);
    }
    hop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_named() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("te", "gzip, trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        let hop = strip_hop_by_hop(&mut h, false);
        assert!(hop.close);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "te"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn keeps_upgrade_when_upgrading() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn connection_cannot_remove_host_or_length() {
        let mut h =
            map(&[("connection", "host, content-length"), ("host", "a"), ("content-length", "1")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.contains_key("host") && h.contains_key("content-length"));
    }

    #[test]
    fn forwarded_for_appends() {
        let peer = HeaderValue::from_static("10.0.0.9");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &peer);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        append_forwarded_for(&mut h, &peer);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
    }

    #[test]
    fn request_id_set_only_when_absent() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        assert_eq!(h["x-request-id"].len(), 36);
        let mut h = map(&[("x-request-id", "mine")]);
        ensure_request_id(&mut h);
        assert_eq!(h["x-request-id"], "mine");
    }

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_keeps_trace_new_span() {
        let mut h = map(&[("traceparent", GOOD), ("tracestate", "a=b")]);
        propagate_traceparent(&mut h, Sampler::OFF);
        let v = h["traceparent"].to_str().unwrap().to_string();
        assert_eq!(&v[..36], &GOOD[..36]);
        assert_ne!(&v[36..52], &GOOD[36..52]);
        assert_eq!(&v[52..], "-01");
        assert_eq!(h["tracestate"], "a=b");
        assert!(trace::parse(v.as_bytes()).is_some());
    }

    #[test]
    fn traceparent_created_or_replaced() {
        let mut h = HeaderMap::new();
        propagate_traceparent(&mut h, Sampler::OFF);
        let v = h["traceparent"].to_str().unwrap().to_string();
        assert!(v.starts_with("00-") && v.ends_with("-00") && v.len() == 55, "{v}");
        assert!(trace::parse(v.as_bytes()).is_some());

        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 with tail
            "garbage",
        ] {
            let mut h = map(&[("traceparent", bad), ("tracestate", "a=b")]);
            propagate_traceparent(&mut h, Sampler::OFF);
            let v = h["traceparent"].to_str().unwrap();
            assert_ne!(&v[3..35], bad.get(3..35).unwrap_or(""), "{bad}");
            assert!(trace::parse(v.as_bytes()).is_some(), "{bad} -> {v}");
            assert!(!h.contains_key("tracestate"), "{bad}");
        }
        // A later version with extra fields is understood and sent on as version 00.
        let mut h =
            map(&[("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")]);
        propagate_traceparent(&mut h, Sampler::OFF);
        assert_eq!(&h["traceparent"].to_str().unwrap()[..36], &GOOD[..36]);
    }
}
