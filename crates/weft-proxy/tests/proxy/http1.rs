//! HTTP/1.1 forwarding: balancing, keep-alive, header rules, framing. Each test runs against
//! both engines (the fast path and hyper).

use std::collections::HashMap;

use crate::support::*;

#[tokio::test]
async fn round_robin_spreads_across_upstreams() {
    for engine in ENGINES {
        let a = RawUpstream::hello("a").await;
        let b = RawUpstream::hello("b").await;
        let c = RawUpstream::hello("c").await;
        let p = TestProxy::start(&[a.addr, b.addr, c.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;
        let mut seen = HashMap::new();
        for _ in 0..30 {
            let res = conn.request(&get("/")).await.unwrap();
            assert_eq!(res.status, 200);
            *seen.entry(res.body_str().to_string()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3, "{engine:?}: {seen:?}");
        assert!(seen.values().all(|&n| n == 10), "{engine:?}: {seen:?}");
        for (u, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
            let label = format!("upstream=\"{}\"", u.addr);
            assert_eq!(p.metric("weft_requests_total", &[&label, "code=\"200\""]), 10.0, "{name}");
        }
    }
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    for engine in ENGINES {
        let up = RawUpstream::hello("hi").await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        // Sequential requests over several client connections share pooled upstream connections.
        for _ in 0..5 {
            let mut conn = Conn::connect(p.addr).await;
            for _ in 0..20 {
                assert_eq!(conn.request(&get("/")).await.unwrap().status, 200);
            }
        }
        assert_eq!(up.request_count(), 100);
        let conns = up.connections.load(std::sync::atomic::Ordering::SeqCst);
        assert!(conns <= 2, "{engine:?}: {conns} upstream connections for 100 requests");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    for engine in ENGINES {
        let up = RawUpstream::start(|_| {
            Action::Respond(ok(
                "x",
                "Connection: keep-alive, X-Up-Secret\r\nX-Up-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Up-Kept: 2\r\n",
            ))
        })
        .await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;
        let res = conn
            .request(
                "GET / HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: 1\r\n\r\n",
            )
            .await
            .unwrap();
        assert_eq!(res.status, 200);
        let req = up.last_request();
        for gone in ["connection", "x-secret", "keep-alive", "proxy-connection"] {
            assert!(req.header(gone).is_none(), "{engine:?}: request kept {gone}: {req:?}");
        }
        assert_eq!(req.header("x-kept"), Some("1"));
        assert_eq!(req.header("te"), Some("trailers"));
        for gone in ["x-up-secret", "keep-alive", "proxy-connection"] {
            assert!(res.header(gone).is_none(), "{engine:?}: response kept {gone}: {res:?}");
        }
        assert!(res.header("connection").is_none_or(|v| !v.contains("X-Up")), "{res:?}");
        assert_eq!(res.header("x-up-kept"), Some("2"));
        // The client connection stays usable.
        assert_eq!(conn.request(&get("/again")).await.unwrap().status, 200);
    }
}

fn is_uuid(v: &str) -> bool {
    v.len() == 36
        && v.chars().filter(|c| *c == '-').count() == 4
        && v.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

fn trace_parts(v: &str) -> (String, String, String) {
    let p: Vec<_> = v.split('-').collect();
    assert_eq!(p.len(), 4, "{v}");
    assert_eq!(p[0], "00", "{v}");
    assert!(p[1].len() == 32 && p[2].len() == 16 && p[3].len() == 2, "{v}");
    (p[1].into(), p[2].into(), p[3].into())
}

#[tokio::test]
async fn forwarded_for_request_id_and_traceparent() {
    for engine in ENGINES {
        let up = RawUpstream::hello("x").await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;

        conn.request(&get("/")).await.unwrap();
        let req = up.last_request();
        assert_eq!(req.all("x-forwarded-for"), ["127.0.0.1"], "{engine:?}");
        assert!(is_uuid(req.header("x-request-id").unwrap()), "{req:?}");
        let (trace, span, flags) = trace_parts(req.header("traceparent").unwrap());
        assert_ne!(trace, "0".repeat(32));
        assert_ne!(span, "0".repeat(16));
        assert_eq!(flags, "00");

        conn.request(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nX-Request-Id: mine-1\r\n\
             traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: k=v\r\n\r\n",
        )
        .await
        .unwrap();
        let req = up.last_request();
        assert_eq!(req.all("x-forwarded-for"), ["10.0.0.1, 10.0.0.2, 127.0.0.1"], "{engine:?}");
        assert_eq!(req.all("x-request-id"), ["mine-1"]);
        let (trace, span, flags) = trace_parts(req.header("traceparent").unwrap());
        assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(span, "00f067aa0ba902b7", "the hop gets its own span id");
        assert_eq!(flags, "01");
        assert_eq!(req.header("tracestate"), Some("k=v"));

        conn.request(
            "GET / HTTP/1.1\r\nHost: t\r\ntraceparent: 00-XYZ-bad\r\ntracestate: k=v\r\n\r\n",
        )
        .await
        .unwrap();
        let req = up.last_request();
        assert_eq!(req.all("traceparent").len(), 1);
        let (trace, _, _) = trace_parts(req.header("traceparent").unwrap());
        assert_ne!(trace, "0".repeat(32));
        assert!(
            req.header("tracestate").is_none(),
            "tracestate of a malformed traceparent is dropped"
        );
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    for engine in ENGINES {
        let up = RawUpstream::start(|req| Action::Respond(ok(&req.target, ""))).await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;
        let batch: String = (0..10).map(|i| get(&format!("/{i}"))).collect();
        conn.send(batch.as_bytes()).await.unwrap();
        for i in 0..10 {
            let res = within("pipelined response", conn.read_response("GET")).await.unwrap();
            assert_eq!(res.body_str(), format!("/{i}"), "{engine:?}");
        }
    }
}

#[tokio::test]
async fn bodies_in_every_framing() {
    for engine in ENGINES {
        let up = RawUpstream::start(|req| match req.target.as_str() {
            "/chunked" => Action::Respond(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
            ),
            "/close" => Action::RespondClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()),
            "/big" => Action::Respond(ok(&"z".repeat(1 << 20), "")),
            "/head" => Action::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec()),
            "/continue" => Action::Respond([&b"HTTP/1.1 100 Continue\r\n\r\n"[..], &ok("after", "")].concat()),
            _ => Action::Respond(ok(&format!("{}:{}", req.body.len(), String::from_utf8_lossy(&req.body[..req.body.len().min(8)])), "")),
        })
        .await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;

        let res = conn.request(&get("/chunked")).await.unwrap();
        assert_eq!(res.body_str(), "hello world", "{engine:?}");
        let res = conn.request(&get("/big")).await.unwrap();
        assert_eq!(res.body.len(), 1 << 20, "{engine:?}");
        let res = conn.request("HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        assert_eq!((res.status, res.body.len()), (200, 0));
        let res = conn.request(&get("/continue")).await.unwrap();
        assert_eq!(res.body_str(), "after");

        // Request bodies: small with a length, large (streamed by hyper), chunked, 100-continue.
        let res = conn
            .request("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde")
            .await
            .unwrap();
        assert_eq!(res.body_str(), "5:abcde", "{engine:?}");
        let big = "q".repeat(200_000);
        let res = conn
            .request(&format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            ))
            .await
            .unwrap();
        assert_eq!(res.body_str(), "200000:qqqqqqqq", "{engine:?}");
        let res = conn
            .request("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(res.body_str(), "5:abcde", "{engine:?}");
        conn.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let interim = within("100 Continue", conn.read_head()).await.unwrap();
        assert_eq!(interim.status, 100, "{engine:?}");
        conn.send(b"xyz").await.unwrap();
        let res = within("response after 100", conn.read_response("POST")).await.unwrap();
        assert_eq!(res.body_str(), "3:xyz", "{engine:?}");

        // A response delimited by close ends the client connection too.
        let mut conn = Conn::connect(p.addr).await;
        let res = conn.request(&get("/close")).await.unwrap();
        assert_eq!(res.body_str(), "until close", "{engine:?}");

        // HTTP/1.0 clients are served.
        let mut conn = Conn::connect(p.addr).await;
        let res = conn.request("GET /x HTTP/1.0\r\nHost: t\r\n\r\n").await.unwrap();
        assert_eq!(res.status, 200, "{engine:?}");
    }
}

#[tokio::test]
async fn connect_method_is_refused() {
    let up = RawUpstream::hello("x").await;
    let p = TestProxy::start(&[up.addr], Engine::Fast, |_| {}).await;
    let mut conn = Conn::connect(p.addr).await;
    let res = conn
        .request("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 405);
    assert_eq!(up.request_count(), 0);
}
