//! The mesh's failure mark: a callee's inbound sidecar answers for an app that failed before
//! responding with `x-weft-failure`, and the caller's sidecar retries it elsewhere as a
//! connect failure (any method) or a reset (idempotent methods), never showing the header.

use std::net::SocketAddr;

use crate::support::*;

/// An instance's sidecar: one inbound listener in front of `app`.
async fn callee(app: SocketAddr, engine: Engine) -> TestSidecar {
    let yaml = format!(
        "labels: {{ deployment: catalog }}\n\
         inbound: [ {{ port: http, listen: 127.0.0.1:0, app: {app} }} ]\n\
         objects:\n{}",
        service_yaml("catalog", "default", "[ { name: http, port: 80, targetPort: http } ]", "{}")
    );
    TestSidecar::start(&yaml, engine).await
}

/// A calling sidecar whose catalog endpoints are `endpoints`, with the default retry policy
/// (round-robin, so both endpoints are used; no ejection, so the bad one stays in rotation).
async fn caller(endpoints: &[SocketAddr], engine: Engine) -> TestSidecar {
    let objects = service_yaml(
        "catalog",
        "default",
        "[ { name: http, port: 80 } ]",
        "{ loadBalancer: round-robin, circuitBreaker: { consecutiveErrors: 0 } }",
    ) + &endpoints_yaml("catalog", "default", "http", endpoints);
    TestSidecar::start(&outbound_config(&objects), engine).await
}

async fn send(p: &TestSidecar, method: &str) -> Message {
    let mut c = Conn::connect(p.addr("outbound")).await;
    within(
        "a request through the caller",
        c.request(&format!("{method} /x HTTP/1.1\r\nHost: catalog\r\nContent-Length: 2\r\n\r\nhi")),
    )
    .await
    .unwrap()
}

/// The callee's inbound answers a refused app connect with 503 and the mark.
#[tokio::test]
async fn inbound_marks_its_apps_failures() {
    for engine in ENGINES {
        let refused = callee(closed_port().await, engine).await;
        let mut c = Conn::connect(refused.addr("inbound:http")).await;
        let r = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!((r.status, r.header("x-weft-failure")), (503, Some("connect")), "{engine:?}");

        let app = RawUpstream::start(|_| Action::RespondClose(Vec::new())).await;
        let reset = callee(app.addr, engine).await;
        let mut c = Conn::connect(reset.addr("inbound:http")).await;
        let r = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!((r.status, r.header("x-weft-failure")), (502, Some("reset")), "{engine:?}");
    }
}

/// (a) An instance whose app refuses connections (restarting): GET and POST both succeed on
/// the other instance, since nothing reached the app.
#[tokio::test]
async fn a_refused_app_is_retried_elsewhere_for_any_method() {
    for engine in ENGINES {
        let good_app = RawUpstream::hello("good").await;
        let bad = callee(closed_port().await, engine).await;
        let good = callee(good_app.addr, engine).await;
        let p = caller(&[bad.addr("inbound:http"), good.addr("inbound:http")], Engine::Fast).await;
        for method in ["GET", "POST"] {
            for i in 0..6 {
                let r = send(&p, method).await;
                assert_eq!(
                    (r.status, r.body_str()),
                    (200, "good"),
                    "callee {engine:?} {method} #{i}"
                );
                assert_eq!(r.header("x-weft-failure"), None);
            }
        }
        let marked = bad.metric("weft_requests_total", &["code=\"503\""]);
        assert!(marked >= 2.0, "callee {engine:?}: the bad instance answered {marked} times");
        let retries = p.metric("weft_retries_total", &["service=\"catalog\""]);
        assert_eq!(retries, marked, "callee {engine:?}: every marked answer was retried");
    }
}

/// (b) An app that takes the request and closes without answering: a GET is retried on the
/// other instance, a POST is not (the app may have acted on it) and gets the 502; the client
/// never sees the mark.
#[tokio::test]
async fn an_app_failing_mid_request_is_retried_for_idempotent_methods_only() {
    for engine in ENGINES {
        let good_app = RawUpstream::hello("good").await;
        let dying = RawUpstream::start(|_| Action::RespondClose(Vec::new())).await;
        let bad = callee(dying.addr, engine).await;
        let good = callee(good_app.addr, engine).await;
        let p = caller(&[bad.addr("inbound:http"), good.addr("inbound:http")], Engine::Fast).await;
        for i in 0..6 {
            let r = send(&p, "GET").await;
            assert_eq!((r.status, r.body_str()), (200, "good"), "callee {engine:?} GET #{i}");
            assert_eq!(r.header("x-weft-failure"), None);
        }
        let gets = dying.request_count();
        assert!(gets >= 1, "callee {engine:?}: the dying app saw no GET");
        let mut failed = 0;
        for i in 0..6 {
            let r = send(&p, "POST").await;
            assert!(
                r.status == 200 || r.status == 502,
                "callee {engine:?} POST #{i}: {}",
                r.status
            );
            assert_eq!(r.header("x-weft-failure"), None, "callee {engine:?} POST #{i}");
            failed += usize::from(r.status == 502);
        }
        assert!(failed >= 1, "callee {engine:?}: round-robin never sent a POST to the dying app");
        assert_eq!(
            dying.request_count() - gets,
            failed,
            "callee {engine:?}: every POST the app saw failed, none was resent"
        );
        let retries = p.metric("weft_retries_total", &["service=\"catalog\""]);
        assert_eq!(retries, gets as f64, "callee {engine:?}: only the GETs were retried");
    }
}

/// The hyper path on the caller cannot resend a request whose body streamed out, but it still
/// strips the mark before answering its client.
#[tokio::test]
async fn the_hyper_path_strips_the_mark() {
    let bad = callee(closed_port().await, Engine::Fast).await;
    let p = caller(&[bad.addr("inbound:http")], Engine::Hyper).await;
    let r = send(&p, "GET").await;
    assert_eq!((r.status, r.header("x-weft-failure")), (503, None));
}

/// (c) An app's own header is not a mark: its callee sidecar strips it, so the caller does not
/// resend a POST on the app's word.
#[tokio::test]
async fn an_apps_own_header_is_not_trusted() {
    for engine in ENGINES {
        let liar = RawUpstream::start(|_| {
            Action::Respond(
                b"HTTP/1.1 503 Busy\r\nx-weft-failure: connect\r\nContent-Length: 4\r\n\r\nbusy"
                    .to_vec(),
            )
        })
        .await;
        let bad = callee(liar.addr, engine).await;
        let p = caller(&[bad.addr("inbound:http")], Engine::Fast).await;
        let r = send(&p, "POST").await;
        assert_eq!((r.status, r.body_str(), r.header("x-weft-failure")), (503, "busy", None));
        assert_eq!(liar.request_count(), 1, "{engine:?}: the POST was not resent");
    }
}

/// (c) Plain mode knows nothing of the mark: its own 502 has none, an upstream's passes.
#[tokio::test]
async fn plain_mode_is_unchanged() {
    for engine in ENGINES {
        let p = TestProxy::start(&[closed_port().await], engine, |_| {}).await;
        let mut c = Conn::connect(p.addr).await;
        let r = c.request(&get("/")).await.unwrap();
        assert_eq!((r.status, r.header("x-weft-failure")), (502, None), "{engine:?}");

        let up = RawUpstream::start(|_| {
            Action::Respond(
                b"HTTP/1.1 503 Busy\r\nx-weft-failure: connect\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        })
        .await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut c = Conn::connect(p.addr).await;
        let r = c.request(&get("/")).await.unwrap();
        assert_eq!((r.status, r.header("x-weft-failure")), (503, Some("connect")), "{engine:?}");
    }
}

/// (c) Outbound straight to apps (no sidecar behind the endpoint): failures are the caller's
/// own, as before: a refused connect is a 502 after retries, a reset GET is retried (`reset`
/// is in the default policy), a reset POST is not, and no response is marked.
#[tokio::test]
async fn outbound_to_plain_apps_is_unchanged() {
    let dying = RawUpstream::start(|_| Action::RespondClose(Vec::new())).await;
    let good = RawUpstream::hello("good").await;
    let p = caller(&[dying.addr, good.addr], Engine::Fast).await;
    for _ in 0..4 {
        let r = send(&p, "GET").await;
        assert_eq!((r.status, r.body_str()), (200, "good"));
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = send(&p, "POST").await;
        assert_eq!(r.header("x-weft-failure"), None);
        statuses.push(r.status);
    }
    assert!(statuses.contains(&502) && statuses.contains(&200), "{statuses:?}");

    let p = caller(&[closed_port().await], Engine::Fast).await;
    let r = send(&p, "GET").await;
    assert_eq!((r.status, r.header("x-weft-failure")), (502, None));
}
