//! Outbound resilience: outlier ejection, retries, timeouts, circuit breaking.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

const PORTS: &str = "[ { name: http, port: 80 } ]";

async fn sidecar(traffic: &str, addrs: &[std::net::SocketAddr], engine: Engine) -> TestSidecar {
    let objects = service_yaml("catalog", "default", PORTS, traffic)
        + &endpoints_yaml("catalog", "default", "http", addrs);
    TestSidecar::start(&outbound_config(&objects), engine).await
}

#[tokio::test]
async fn failing_endpoint_is_ejected_and_clients_see_no_errors() {
    for engine in ENGINES {
        let a = RawUpstream::hello("a").await;
        let b = RawUpstream::hello("b").await;
        let bad = RawUpstream::start(|_| {
            Action::Respond(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_vec(),
            )
        })
        .await;
        let p = sidecar(
            "{ loadBalancer: round-robin, retries: { attempts: 2, on: [connect-failure, 503] },
               circuitBreaker: { consecutiveErrors: 3, ejectionTime: 30s, maxEjectionPercent: 50 } }",
            &[a.addr, b.addr, bad.addr],
            engine,
        )
        .await;
        let mut c = Conn::connect(p.addr("outbound")).await;
        let mut failed = 0;
        for i in 0..45 {
            let r = c.request("GET /item HTTP/1.1\r\nHost: catalog\r\n\r\n").await.unwrap();
            match engine {
                // The fast path buffers the request and retries the 503 on another endpoint.
                Engine::Fast => assert_eq!(r.status, 200, "request {i}: {}", r.body_str()),
                // hyper's path streams the body and only retries requests never sent: the
                // failures before the ejection reach the client, none after it.
                Engine::Hyper => failed += usize::from(r.status == 503),
            }
        }
        assert_eq!(bad.request_count(), 3, "{engine:?}: ejected after 3 consecutive errors");
        assert_eq!(p.metric("weft_endpoint_ejections_total", &["service=\"catalog\""]), 1.0);
        if engine == Engine::Fast {
            assert_eq!(p.metric("weft_retries_total", &["service=\"catalog\""]), 3.0);
        } else {
            assert_eq!(failed, 3);
        }
    }
}

#[tokio::test]
async fn an_ejected_endpoint_returns_on_probation() {
    let good = RawUpstream::hello("good").await;
    let bad = RawUpstream::start(|_| {
        Action::Respond(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec())
    })
    .await;
    let p = sidecar(
        "{ loadBalancer: round-robin, retries: { attempts: 1, on: [5xx] },
           circuitBreaker: { consecutiveErrors: 2, ejectionTime: 300ms, maxEjectionPercent: 50 } }",
        &[good.addr, bad.addr],
        Engine::Fast,
    )
    .await;
    let mut c = Conn::connect(p.addr("outbound")).await;
    let ejections = || p.metric("weft_endpoint_ejections_total", &["service=\"catalog\""]);
    let end = Instant::now() + DEADLINE;
    // Traffic until the bad endpoint is ejected, comes back after its ejection time, fails once
    // more and is ejected again at once (probation), every client request answered 200.
    while bad.request_count() < 3 {
        let r = c.request("GET / HTTP/1.1\r\nHost: catalog\r\n\r\n").await.unwrap();
        assert_eq!((r.status, r.body_str()), (200, "good"));
        if bad.request_count() == 2 {
            assert_eq!(ejections(), 1.0, "two consecutive errors eject");
            tokio::time::sleep(Duration::from_millis(5)).await; // polling the ejection's end
        }
        assert!(Instant::now() < end, "the endpoint never came back");
    }
    assert_eq!(ejections(), 2.0, "one error on probation ejects again");
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint() {
    for engine in ENGINES {
        let good = RawUpstream::hello("good").await;
        let closed = closed_port().await;
        // Defaults: retries on connect-failure and 503, two attempts, within the budget.
        let p = sidecar("{ loadBalancer: round-robin }", &[closed, good.addr], engine).await;
        for method in ["GET", "POST"] {
            for _ in 0..6 {
                let mut c = Conn::connect(p.addr("outbound")).await;
                let r = c
                    .request(&format!(
                        "{method} /x HTTP/1.1\r\nHost: catalog\r\nContent-Length: 2\r\n\r\nhi"
                    ))
                    .await
                    .unwrap();
                assert_eq!(r.status, 200, "{engine:?} {method}: {}", r.body_str());
            }
        }
        assert!(p.metric("weft_retries_total", &["service=\"catalog\""]) >= 1.0, "{engine:?}");
    }
}

#[tokio::test]
async fn per_try_and_overall_timeouts_answer_504() {
    for engine in ENGINES {
        let hang = RawUpstream::start(|_| Action::Hang).await;
        // Per-try 200 ms under a 5 s overall deadline; timeouts are not retried by default.
        let p = sidecar("{ timeout: 5s, perTryTimeout: 200ms }", &[hang.addr], engine).await;
        let t = Instant::now();
        let r = p.get_host("catalog", "/").await;
        let took = t.elapsed();
        assert_eq!(r.status, 504, "{engine:?}");
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(3),
            "{engine:?}: {took:?}"
        );

        // The overall deadline, and a route's override of it.
        let p = sidecar(
            "{ timeout: 400ms, routes: [ { pathPrefix: /quick, timeout: 100ms } ] }",
            &[hang.addr],
            engine,
        )
        .await;
        let t = Instant::now();
        assert_eq!(p.get_host("catalog", "/").await.status, 504, "{engine:?}");
        let overall = t.elapsed();
        let t = Instant::now();
        assert_eq!(p.get_host("catalog", "/quick/x").await.status, 504, "{engine:?}");
        let quick = t.elapsed();
        assert!(overall >= Duration::from_millis(350), "{engine:?}: {overall:?}");
        assert!(quick < overall, "{engine:?}: route timeout {quick:?} vs service {overall:?}");
        assert!(p.metric("weft_proxy_errors_total", &["kind=\"upstream_timeout\""]) >= 2.0);
    }
}

#[tokio::test]
async fn a_timed_out_try_is_retried_elsewhere_when_the_policy_says_so() {
    let hang = RawUpstream::start(|_| Action::Hang).await;
    let good = RawUpstream::hello("good").await;
    let p = sidecar(
        "{ loadBalancer: round-robin, timeout: 5s, perTryTimeout: 150ms, retries: { attempts: 1, on: [reset] },
           circuitBreaker: { consecutiveErrors: 0 } }",
        &[hang.addr, good.addr],
        Engine::Fast,
    )
    .await;
    let mut c = Conn::connect(p.addr("outbound")).await;
    for _ in 0..4 {
        let r = c.request("GET / HTTP/1.1\r\nHost: catalog\r\n\r\n").await.unwrap();
        assert_eq!((r.status, r.body_str()), (200, "good"));
    }
    assert!(hang.request_count() >= 1);
}

#[tokio::test]
async fn circuit_breaker_limits_requests_and_connections() {
    for engine in ENGINES {
        for (traffic, field, label) in [
            ("{ circuitBreaker: { maxRequests: 1 } }", "maxRequests", "requests"),
            ("{ circuitBreaker: { maxConnections: 1 } }", "maxConnections", "connections"),
        ] {
            let gate = Arc::new(tokio::sync::Notify::new());
            let g = gate.clone();
            let up = RawUpstream::start(move |req| {
                if req.target == "/hold" {
                    Action::RespondAfter(g.clone(), ok("held", ""))
                } else {
                    Action::Respond(ok("quick", ""))
                }
            })
            .await;
            let p = sidecar(traffic, &[up.addr], engine).await;
            let addr = p.addr("outbound");
            let held = tokio::spawn(async move {
                Conn::connect(addr)
                    .await
                    .request("GET /hold HTTP/1.1\r\nHost: catalog\r\n\r\n")
                    .await
                    .unwrap()
            });
            wait_until("the first request at the upstream", || up.request_count() == 1).await;
            // The one slot (request, or connection) is taken: 503 at once.
            let r = p.get_host("catalog", "/other").await;
            assert_eq!(r.status, 503, "{engine:?} {field}");
            assert!(r.body_str().contains(field), "{}", r.body_str());
            let limit = format!("limit=\"{label}\"");
            let rejected =
                p.metric("weft_circuit_rejected_total", &["service=\"catalog\"", &limit]);
            assert_eq!(rejected, 1.0, "{engine:?} {field}");
            // The gauge is read from the limits when scraped.
            let scrape = Conn::connect(p.addr("admin"))
                .await
                .request("GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
                .await
                .unwrap();
            let open = metric_sum(scrape.body_str(), "weft_circuit_open", &["service=\"catalog\""]);
            assert_eq!(open, 1.0, "{engine:?} {field}");
            gate.notify_one();
            assert_eq!(within("held request", held).await.unwrap().status, 200);
            // Released (the connection back in the pool): served again.
            assert_eq!(p.get_host("catalog", "/other").await.status, 200, "{engine:?} {field}");
        }
    }
}
