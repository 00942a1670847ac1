//! Graceful drain: readiness flips, the listener closes, idle connections close, in-flight
//! requests finish, then serving ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::support::*;

async fn admin_get(p: &TestProxy, path: &str) -> Message {
    Conn::connect(p.admin).await.request(&get(path)).await.unwrap()
}

#[tokio::test]
async fn drain_finishes_in_flight_requests() {
    for engine in ENGINES {
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let up = RawUpstream::start(move |req| {
            if req.target == "/slow" {
                Action::RespondAfter(g.clone(), ok("finished", ""))
            } else {
                Action::Respond(ok("fast", ""))
            }
        })
        .await;
        let mut p =
            TestProxy::start(&[up.addr], engine, |c| c.drain_grace = Duration::from_secs(10)).await;
        assert_eq!(admin_get(&p, "/ready").await.status, 200);
        assert_eq!(admin_get(&p, "/live").await.status, 200);

        let mut idle = Conn::connect(p.addr).await;
        assert_eq!(idle.request(&get("/fast")).await.unwrap().status, 200);
        let mut busy = Conn::connect(p.addr).await;
        busy.send(get("/slow").as_bytes()).await.unwrap();
        wait_until("the slow request reaches the upstream", || up.request_count() == 2).await;

        p.shutdown();
        wait_until("not ready", || !p.proxy.is_ready()).await;
        let ready = admin_get(&p, "/ready").await;
        assert_eq!(ready.status, 503, "{engine:?}");
        assert_eq!(ready.body_str(), "draining\n");

        // New connections are refused once the listener is closed.
        let end = Instant::now() + DEADLINE;
        while TcpStream::connect(p.addr).await.is_ok() {
            assert!(Instant::now() < end, "{engine:?}: still accepting");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The idle keep-alive connection is closed; the busy one is not.
        idle.read_to_close().await;
        assert!(!p.served.is_finished());

        gate.notify_one();
        let res = within("in-flight response", busy.read_response("GET")).await.unwrap();
        assert_eq!(res.status, 200, "{engine:?}");
        assert_eq!(res.body_str(), "finished");
        assert!(
            res.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
            "{engine:?}: {res:?}"
        );
        busy.read_to_close().await;
        within("serve returns", &mut p.served).await.unwrap();
        assert_eq!(p.proxy.open_connections(), 0);
    }
}

#[tokio::test]
async fn drain_grace_period_cuts_what_is_left() {
    let up = RawUpstream::start(|_| Action::Hang).await;
    let mut p = TestProxy::start(&[up.addr], Engine::Fast, |c| {
        c.drain_grace = Duration::from_millis(300);
        c.timeout = Duration::from_secs(60);
    })
    .await;
    let mut busy = Conn::connect(p.addr).await;
    busy.send(get("/").as_bytes()).await.unwrap();
    wait_until("request in flight", || up.request_count() == 1).await;
    let start = Instant::now();
    p.shutdown();
    within("serve returns after the grace period", &mut p.served).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(250));
    busy.read_to_close().await;
}

#[tokio::test]
async fn admin_endpoints() {
    let up = RawUpstream::hello("x").await;
    let p = TestProxy::start(&[up.addr], Engine::Fast, |c| c.service = "shop".into()).await;
    Conn::connect(p.addr).await.request(&get("/")).await.unwrap();
    let metrics = admin_get(&p, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body_str();
    for name in [
        "weft_requests_total",
        "weft_request_duration_seconds_bucket",
        "weft_requests_in_flight",
        "weft_tcp_connections",
        "weft_proxy_errors_total",
    ] {
        assert!(text.contains(name), "missing {name}:\n{text}");
    }
    assert_eq!(
        metric_value(text, "weft_requests_total", &["service=\"shop\"", "code=\"200\""]),
        1.0
    );
    assert_eq!(metric_value(text, "weft_request_duration_seconds_count", &["class=\"2xx\""]), 1.0);
    assert_eq!(metric_value(text, "weft_requests_in_flight", &[]), 0.0);
    let config = admin_get(&p, "/config").await;
    let json: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(json["service"], "shop");
    assert_eq!(json["upstreams"][0]["addr"], up.addr.to_string());
    assert_eq!(admin_get(&p, "/nope").await.status, 404);
}
