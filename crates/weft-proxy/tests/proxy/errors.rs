//! Limits and failures: what the client gets and what is counted.

use std::time::{Duration, Instant};

use crate::support::*;

fn error_count(p: &TestProxy, kind: &str) -> f64 {
    p.metric("weft_proxy_errors_total", &[&format!("kind=\"{kind}\"")])
}

#[tokio::test]
async fn oversized_headers_get_431() {
    for engine in ENGINES {
        let up = RawUpstream::hello("x").await;
        let p = TestProxy::start(&[up.addr], engine, |c| c.max_header_bytes = 16 * 1024).await;
        let mut conn = Conn::connect(p.addr).await;
        let res = conn
            .request(&format!(
                "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                "a".repeat(32 * 1024)
            ))
            .await
            .unwrap();
        assert_eq!(res.status, 431, "{engine:?}");
        assert_eq!(error_count(&p, "header_too_large"), 1.0, "{engine:?}");
        assert_eq!(up.request_count(), 0);
        // Too many headers, too.
        let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
        let mut conn = Conn::connect(p.addr).await;
        let res = conn.request(&format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n")).await.unwrap();
        assert_eq!(res.status, 431, "{engine:?}");
    }
}

#[tokio::test]
async fn malformed_request_line_gets_400_and_is_counted() {
    for engine in ENGINES {
        let up = RawUpstream::hello("x").await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        for raw in [
            "GET / HTTP/1.1 extra\r\n\r\n",
            "G\0ET / HTTP/1.1\r\nHost: t\r\n\r\n",
            "GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        ] {
            let mut conn = Conn::connect(p.addr).await;
            conn.send(raw.as_bytes()).await.unwrap();
            let res = within("400", conn.read_response("GET")).await.unwrap();
            assert_eq!(res.status, 400, "{engine:?} {raw:?}");
        }
        assert_eq!(error_count(&p, "bad_request"), 3.0, "{engine:?}");
        assert_eq!(up.request_count(), 0);
    }
}

#[tokio::test]
async fn slow_clients_are_cut_by_the_header_timeout() {
    for engine in ENGINES {
        let up = RawUpstream::hello("x").await;
        let p = TestProxy::start(&[up.addr], engine, |c| {
            c.header_timeout = Duration::from_millis(300);
        })
        .await;
        // Slowloris: part of a head, then nothing.
        let start = Instant::now();
        let mut conn = Conn::connect(p.addr).await;
        conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ").await.unwrap();
        conn.read_to_close().await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(5),
            "{engine:?}: {took:?}"
        );
        // A connection that never sends anything.
        let mut idle = Conn::connect(p.addr).await;
        idle.read_to_close().await;
        // After a complete request, the slow next head is timed from its first byte.
        let mut conn = Conn::connect(p.addr).await;
        assert_eq!(conn.request(&get("/")).await.unwrap().status, 200);
        conn.send(b"GET / HT").await.unwrap();
        conn.read_to_close().await;
        wait_until("header timeouts counted", || error_count(&p, "header_timeout") == 3.0).await;
        assert_eq!(up.request_count(), 1);
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    for engine in ENGINES {
        let up = RawUpstream::hello("x").await;
        let p =
            TestProxy::start(&[up.addr], engine, |c| c.idle_timeout = Duration::from_millis(300))
                .await;
        let mut conn = Conn::connect(p.addr).await;
        assert_eq!(conn.request(&get("/")).await.unwrap().status, 200);
        let start = Instant::now();
        conn.read_to_close().await;
        assert!(start.elapsed() >= Duration::from_millis(250), "{engine:?}");
        assert_eq!(error_count(&p, "header_timeout"), 0.0, "an idle close is not an error");
    }
}

#[tokio::test]
async fn connect_refused_is_502() {
    for engine in ENGINES {
        let p = TestProxy::start(&[closed_port().await], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;
        let res = conn.request(&get("/")).await.unwrap();
        assert_eq!(res.status, 502, "{engine:?}");
        // The client connection survives it.
        assert_eq!(conn.request(&get("/")).await.unwrap().status, 502);
        assert_eq!(error_count(&p, "upstream_connect"), 2.0, "{engine:?}");
        assert_eq!(p.metric("weft_requests_total", &["code=\"502\""]), 2.0);
    }
}

#[tokio::test]
async fn upstream_that_never_answers_is_504() {
    for engine in ENGINES {
        let up = RawUpstream::start(|_| Action::Hang).await;
        let p =
            TestProxy::start(&[up.addr], engine, |c| c.timeout = Duration::from_millis(300)).await;
        let mut conn = Conn::connect(p.addr).await;
        let start = Instant::now();
        let res = conn.request(&get("/")).await.unwrap();
        let took = start.elapsed();
        assert_eq!(res.status, 504, "{engine:?}");
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_secs(3),
            "{engine:?}: {took:?}"
        );
        assert_eq!(error_count(&p, "upstream_timeout"), 1.0);
        // The next request on the same client connection is served (and times out again).
        assert_eq!(conn.request(&get("/")).await.unwrap().status, 504);
    }
}

#[tokio::test]
async fn upstream_reset_mid_response_aborts_the_client_connection() {
    for engine in ENGINES {
        let up = RawUpstream::start(|_| {
            Action::RespondClose(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly part of it".to_vec(),
            )
        })
        .await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;
        conn.send(get("/").as_bytes()).await.unwrap();
        let err = within("cut", conn.read_response("GET")).await.unwrap_err();
        assert!(matches!(err, ReadError::Closed), "{engine:?}: {err:?}");
        wait_until("reset counted", || error_count(&p, "upstream_reset") == 1.0).await;
    }
}

#[tokio::test]
async fn malformed_upstream_response_is_502() {
    for engine in ENGINES {
        let up =
            RawUpstream::start(|_| Action::RespondClose(b"HTTP/1.1 2OO Fine\r\n\r\n".to_vec()))
                .await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let res = Conn::connect(p.addr).await.request(&get("/")).await.unwrap();
        assert_eq!(res.status, 502, "{engine:?}");
    }
}

#[tokio::test]
async fn stale_pooled_connections_are_retried_for_idempotent_requests() {
    for engine in ENGINES {
        // Answers as if keeping the connection, then closes it: every pooled connection is dead.
        let up = RawUpstream::start(|_| Action::RespondClose(ok("once", ""))).await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;
        for i in 0..20 {
            let res = conn.request(&get("/")).await.unwrap();
            assert_eq!(res.status, 200, "{engine:?}: request {i}");
        }
        assert_eq!(up.request_count(), 20, "{engine:?}");
    }
}
