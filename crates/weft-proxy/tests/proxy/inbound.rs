//! Inbound admission: the instance's own services' rate limits and concurrency cap.

use std::sync::Arc;

use crate::support::*;

fn config(app: std::net::SocketAddr, traffic: &str) -> String {
    format!(
        "labels: {{ deployment: catalog }}\n\
         inbound: [ {{ port: http, listen: 127.0.0.1:0, app: {app} }} ]\n\
         objects:\n{}",
        service_yaml(
            "catalog",
            "default",
            "[ { name: http, port: 80, targetPort: http } ]",
            traffic
        )
    )
}

async fn get(p: &TestSidecar, path: &str) -> Message {
    Conn::connect(p.addr("inbound:http"))
        .await
        .request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .unwrap()
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    for engine in ENGINES {
        let app = RawUpstream::hello("app").await;
        // Slow refills (one token per 2 s), so the test does not race them.
        let p = TestSidecar::start(
            &config(
                app.addr,
                "{ rateLimit: { requestsPerSecond: 0.5, burst: 3 },
                   routes: [ { pathPrefix: /search, rateLimit: { requestsPerSecond: 0.5, burst: 1 } } ] }",
            ),
            engine,
        )
        .await;
        assert_eq!(get(&p, "/search?q=1").await.status, 200, "{engine:?}");
        let r = get(&p, "/search?q=2").await;
        assert_eq!(r.status, 429, "{engine:?}: the route's own limit");
        assert_eq!(r.header("retry-after"), Some("2"), "{engine:?}");
        assert!(r.body_str().contains("route \"/search\""), "{}", r.body_str());
        // The service's tokens: 3, one taken by the first search.
        assert_eq!(get(&p, "/").await.status, 200);
        assert_eq!(get(&p, "/").await.status, 200);
        let r = get(&p, "/").await;
        assert_eq!(r.status, 429, "{engine:?}: the service's limit");
        assert!(r.header("retry-after").is_some());
        assert_eq!(app.request_count(), 3, "refused requests never reach the app");
        assert_eq!(p.metric("weft_rate_limited_total", &["route=\"/search\""]), 1.0);
        assert_eq!(p.metric("weft_rate_limited_total", &["route=\"*\""]), 1.0);
        assert_eq!(
            p.metric(
                "weft_requests_total",
                &["direction=\"inbound\"", "upstream=\"local\"", "code=\"429\""]
            ),
            2.0
        );
    }
}

#[tokio::test]
async fn max_concurrent_requests_answers_503_past_the_cap() {
    for engine in ENGINES {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let app = RawUpstream::start(move |req| {
            if req.target == "/hold" {
                Action::RespondAfter(g.clone(), ok("held", ""))
            } else {
                Action::Respond(ok("app", ""))
            }
        })
        .await;
        let p = TestSidecar::start(&config(app.addr, "{ maxConcurrentRequests: 1 }"), engine).await;
        let addr = p.addr("inbound:http");
        let held = tokio::spawn(async move {
            Conn::connect(addr)
                .await
                .request("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap()
        });
        wait_until("the held request at the app", || app.request_count() == 1).await;
        let r = get(&p, "/").await;
        assert_eq!(r.status, 503, "{engine:?}");
        assert!(r.body_str().contains("maxConcurrentRequests"), "{}", r.body_str());
        assert_eq!(p.metric("weft_circuit_rejected_total", &["limit=\"concurrency\""]), 1.0);
        gate.notify_one();
        assert_eq!(within("held", held).await.unwrap().status, 200);
        assert_eq!(get(&p, "/").await.status, 200, "{engine:?}: the slot was released");
        assert_eq!(p.metric("weft_requests_in_flight", &["direction=\"inbound\""]), 0.0);
    }
}

#[tokio::test]
async fn inbound_without_a_selecting_service_just_forwards() {
    let app = RawUpstream::hello("app").await;
    let yaml = format!(
        "labels: {{ deployment: other }}\ninbound: [ {{ port: http, listen: 127.0.0.1:0, app: {} }} ]\nobjects:\n{}",
        app.addr,
        service_yaml(
            "catalog",
            "default",
            "[ { name: http, port: 80 } ]",
            "{ rateLimit: { requestsPerSecond: 0.1, burst: 1 } }"
        )
    );
    let p = TestSidecar::start(&yaml, Engine::Fast).await;
    for _ in 0..3 {
        assert_eq!(get(&p, "/").await.status, 200);
    }
    assert_eq!(app.last_request().header("x-forwarded-for"), Some("127.0.0.1"));
}
