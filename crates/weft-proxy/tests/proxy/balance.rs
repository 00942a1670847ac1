//! Load balancing per service, as the Service's `traffic.loadBalancer` says.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

const PORTS: &str = "[ { name: http, port: 80 } ]";

async fn sidecar(lb: &str, ups: &[&RawUpstream]) -> TestSidecar {
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let objects = service_yaml("catalog", "default", PORTS, lb)
        + &endpoints_yaml("catalog", "default", "http", &addrs);
    TestSidecar::start(&outbound_config(&objects), Engine::Fast).await
}

/// Which upstream answered each of `n` sequential requests.
async fn spread(p: &TestSidecar, n: usize, header: Option<&str>) -> HashMap<String, usize> {
    let mut c = Conn::connect(p.addr("outbound")).await;
    let mut seen = HashMap::new();
    for _ in 0..n {
        let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
        let r =
            c.request(&format!("GET / HTTP/1.1\r\nHost: catalog\r\n{extra}\r\n")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body_str());
        *seen.entry(r.body_str().to_string()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn round_robin_spreads_exactly() {
    let ups = named_upstreams(&["a", "b", "c"]).await;
    let p = sidecar("{ loadBalancer: round-robin }", &ups.iter().collect::<Vec<_>>()).await;
    let seen = spread(&p, 30, None).await;
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), [10, 10, 10], "{seen:?}");
}

#[tokio::test]
async fn p2c_ewma_prefers_the_fast_endpoint() {
    let fast = RawUpstream::hello("fast").await;
    // Slower than the 30 ms the balancer assumes for an endpoint it has no sample of yet, so
    // whichever it tries first, it learns that the other is faster.
    let slow =
        RawUpstream::start(|_| Action::Delay(Duration::from_millis(60), ok("slow", ""))).await;
    // The default balancer.
    let p = sidecar("{}", &[&fast, &slow]).await;
    let seen = spread(&p, 40, None).await;
    let f = seen.get("fast").copied().unwrap_or(0);
    assert!(f >= 36, "the fast endpoint should take nearly all requests: {seen:?}");
}

#[tokio::test]
async fn least_request_prefers_the_less_loaded_endpoint() {
    let fast = RawUpstream::hello("fast").await;
    let slow =
        RawUpstream::start(|_| Action::Delay(Duration::from_millis(60), ok("slow", ""))).await;
    let p = sidecar("{ loadBalancer: least-request }", &[&fast, &slow]).await;
    // Concurrent callers: the slow endpoint keeps requests in flight, so picks go elsewhere.
    let addr = p.addr("outbound");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Conn::connect(addr).await;
                let mut mine = Vec::new();
                for _ in 0..15 {
                    let r = c.request("GET / HTTP/1.1\r\nHost: catalog\r\n\r\n").await.unwrap();
                    mine.push(r.body_str().to_string());
                }
                mine
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for b in within("callers", t).await.unwrap() {
            *counts.entry(b).or_insert(0) += 1;
        }
    }
    let f = counts.get("fast").copied().unwrap_or(0);
    assert!(f >= 42, "60 requests, the less loaded endpoint should take most: {counts:?}");
}

#[tokio::test]
async fn ring_hash_is_sticky_per_header() {
    let ups = named_upstreams(&["a", "b", "c"]).await;
    let p =
        sidecar("{ loadBalancer: ring-hash, hashHeader: x-user }", &ups.iter().collect::<Vec<_>>())
            .await;
    let mut used = std::collections::HashSet::new();
    for user in 0..24 {
        let seen = spread(&p, 4, Some(&format!("X-User: user-{user}"))).await;
        assert_eq!(seen.len(), 1, "user-{user} moved between endpoints: {seen:?}");
        used.extend(seen.into_keys());
    }
    assert!(used.len() >= 2, "24 users all on one endpoint: {used:?}");
}
