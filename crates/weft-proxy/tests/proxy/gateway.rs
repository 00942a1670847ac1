//! The ingress gateway from a static file: routing by Host and path prefix (the most specific
//! route wins), 404 without a route, 503 without endpoints, the service's traffic policy on the
//! way, metrics with `direction="gateway"`; and `run_until` (drain on a future, bind errors).

use std::net::SocketAddr;
use std::time::Duration;

use weft_proxy::{BindError, ProxyArgs};

use crate::support::*;

/// A Service (YAML flow mapping) with `ingress` (YAML flow mapping text).
fn ingress_service(name: &str, namespace: &str, ports: &str, ingress: &str) -> String {
    format!(
        "  - {{ apiVersion: weft/v1, kind: Service, metadata: {{ name: {name}, namespace: {namespace} }}, \
         spec: {{ selector: {{ deployment: {name} }}, ports: {ports}, ingress: {ingress}, \
         traffic: {{ loadBalancer: round-robin }} }} }}\n"
    )
}

const HTTP: &str = "[ { name: http, port: 80 } ]";

async fn gateway(objects: &str, engine: Engine) -> TestSidecar {
    let yaml = format!("objects:\n{objects}");
    TestSidecar::with_args(&yaml, engine, |a| a.gateway = Some("127.0.0.1:0".into())).await
}

async fn get(gw: &TestSidecar, raw: &str) -> Message {
    Conn::connect(gw.addr("gateway")).await.request(raw).await.unwrap()
}

fn at(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[tokio::test]
async fn routes_by_host_and_path_prefix_and_the_most_specific_route_wins() {
    for engine in ENGINES {
        let up = named_upstreams(&["shop", "shop-api", "docs", "metrics", "internal"]).await;
        let (shop, api, docs, metrics, internal) = (&up[0], &up[1], &up[2], &up[3], &up[4]);
        let objects = ingress_service("shop", "default", HTTP, "{ host: shop.example }")
            + &endpoints_yaml("shop", "default", "http", &[shop.addr])
            + &ingress_service(
                "shop-api",
                "default",
                HTTP,
                "{ host: 'shop.example:8080', pathPrefix: /api/ }",
            )
            + &endpoints_yaml("shop-api", "default", "http", &[api.addr])
            // Another namespace, any host.
            + &ingress_service("docs", "web", HTTP, "{ pathPrefix: /docs }")
            + &endpoints_yaml("docs", "web", "http", &[docs.addr])
            // The ingress port picks the second of two ports.
            + &ingress_service(
                "ops",
                "default",
                "[ { name: http, port: 80 }, { name: metrics, port: 9100 } ]",
                "{ host: ops.example, port: metrics }",
            )
            + "  - { apiVersion: weft/v1, kind: Endpoints, metadata: { name: ops }, spec: { addresses: [ "
            + &format!(
                "{{ instance: ops-0, ip: 127.0.0.1, ports: {{ http: {}, metrics: {} }} }} ] }} }}\n",
                internal.addr.port(),
                metrics.addr.port()
            )
            // No ingress: not reachable from outside.
            + &service_yaml("internal", "default", HTTP, "{}")
            + &endpoints_yaml("internal", "default", "http", &[internal.addr]);
        let gw = gateway(&objects, engine).await;
        let mut c = Conn::connect(gw.addr("gateway")).await;
        for (request, want) in [
            (at("shop.example", "/"), "shop"),
            (at("shop.example", "/cart/1"), "shop"),
            (at("shop.example", "/api"), "shop-api"),
            (at("SHOP.example:8080", "/api/items?x=1"), "shop-api"),
            // Prefixes end at a segment boundary.
            (at("shop.example", "/apis"), "shop"),
            // A host match beats a route for any host, even with a longer prefix.
            (at("shop.example", "/docs/intro"), "shop"),
            (at("other.example", "/docs/intro"), "docs"),
            (at("127.0.0.1:8080", "/docs"), "docs"),
            (at("ops.example", "/metrics"), "metrics"),
            // Absolute-form: its authority is the host.
            ("GET http://other.example/docs?q HTTP/1.1\r\nHost: ignored\r\n\r\n".into(), "docs"),
        ] {
            let r = c.request(&request).await.unwrap();
            assert_eq!((r.status, r.body_str()), (200, want), "{engine:?}: {request:?}");
        }
        // Path, query and Host go through unchanged (the app sees what the client asked for).
        let seen = api.last_request();
        assert_eq!(seen.target, "/api/items?x=1", "{engine:?}");
        assert_eq!(seen.all("host"), ["SHOP.example:8080"], "{engine:?}");
        assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"], "{engine:?}");
        assert!(seen.header("x-request-id").is_some(), "{engine:?}");

        // No route: 404 naming host and path, counted; the connection stays usable.
        for (host, path) in
            [("other.example", "/x?y=1"), ("internal", "/"), ("shop.example.org", "/")]
        {
            let r = c.request(&at(host, path)).await.unwrap();
            assert_eq!(r.status, 404, "{engine:?}: {host}{path}");
            let path = path.split('?').next().unwrap();
            assert_eq!(
                r.body_str(),
                format!("no ingress route for host {host:?} and path {path:?}\n"),
                "{engine:?}"
            );
        }
        assert_eq!(internal.request_count(), 0, "a service without ingress is not exposed");
        // A chunked upload takes hyper's path whatever the engine, and is routed the same way.
        let r = c
            .request("POST /api/up HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((r.status, r.body_str()), (200, "shop-api"), "{engine:?}");
        assert_eq!(api.last_request().body, b"abc");

        let labels = ["direction=\"gateway\"", "code=\"200\""];
        assert_eq!(
            gw.metric("weft_requests_total", &[&labels[..], &["service=\"shop-api\""]].concat()),
            3.0
        );
        assert_eq!(
            gw.metric("weft_requests_total", &[&labels[..], &["service=\"docs.web\""]].concat()),
            3.0
        );
        assert_eq!(
            gw.metric(
                "weft_proxy_errors_total",
                &["direction=\"gateway\"", "service=\"unknown\"", "kind=\"no_route\""]
            ),
            3.0
        );
        assert_eq!(gw.metric("weft_requests_total", &["direction=\"outbound\""]), 0.0);
        assert_eq!(gw.metric("weft_requests_total", &["direction=\"inbound\""]), 0.0);
    }
}

#[tokio::test]
async fn no_ready_endpoints_is_503_naming_the_service() {
    let objects = ingress_service("shop", "default", HTTP, "{ pathPrefix: / }")
        + "  - { apiVersion: weft/v1, kind: Endpoints, metadata: { name: shop }, spec: { addresses: [ { instance: s-0, ip: 127.0.0.1, ports: { http: 1 }, ready: false } ] } }\n"
        + &ingress_service("cart", "shop", HTTP, "{ pathPrefix: /cart }");
    for engine in ENGINES {
        let gw = gateway(&objects, engine).await;
        let r = get(&gw, &at("x", "/")).await;
        assert_eq!(r.status, 503, "{engine:?}");
        assert_eq!(r.body_str(), "service \"shop\" has no ready endpoints\n");
        // No Endpoints object at all.
        let r = get(&gw, &at("x", "/cart/1")).await;
        assert_eq!(
            (r.status, r.body_str()),
            (503, "service \"cart.shop\" has no ready endpoints\n")
        );
        assert_eq!(
            gw.metric(
                "weft_proxy_errors_total",
                &["direction=\"gateway\"", "kind=\"no_endpoint\""]
            ),
            2.0
        );
    }
}

#[tokio::test]
async fn the_services_traffic_policy_applies_balancing_and_retries() {
    let (a, b) = (RawUpstream::hello("a").await, RawUpstream::hello("b").await);
    let dead = closed_port().await;
    let objects = "  - { apiVersion: weft/v1, kind: Service, metadata: { name: shop }, spec: { selector: { deployment: shop }, ports: [ { name: http, port: 80 } ], ingress: { pathPrefix: / }, traffic: { loadBalancer: round-robin, retries: { attempts: 2, on: [connect-failure], budgetPercent: 100 }, circuitBreaker: { consecutiveErrors: 1000 } } } }\n".to_string()
        + &endpoints_yaml("shop", "default", "http", &[a.addr, b.addr, dead]);
    for engine in ENGINES {
        let gw = gateway(&objects, engine).await;
        let mut c = Conn::connect(gw.addr("gateway")).await;
        for i in 0..30 {
            let r = c.request(&at("shop.example", "/")).await.unwrap();
            assert_eq!(r.status, 200, "{engine:?}: request {i}: {}", r.body_str());
        }
        assert!(a.request_count() >= 10 && b.request_count() >= 10, "balanced over a and b");
        assert!(
            gw.metric("weft_retries_total", &["direction=\"gateway\"", "service=\"shop\""]) >= 5.0
        );
    }
}

#[tokio::test]
async fn run_until_serves_then_drains_when_the_future_resolves() {
    let up = RawUpstream::hello("shop").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    let objects = ingress_service("shop", "default", HTTP, "{ pathPrefix: / }")
        + &endpoints_yaml("shop", "default", "http", &[up.addr]);
    std::fs::write(&path, format!("objects:\n{objects}")).unwrap();
    let addr: SocketAddr = closed_port().await;
    let args = ProxyArgs {
        gateway: Some(addr.to_string()),
        config: Some(path.to_str().unwrap().into()),
        drain_grace: "5s".into(),
        ..ProxyArgs::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(weft_proxy::run_until(args.clone(), async {
        let _ = rx.await;
    }));
    let mut c = within("the gateway to listen", async {
        loop {
            if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                return Conn::new(s);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let r = c.request(&at("shop.example", "/")).await.unwrap();
    assert_eq!((r.status, r.body_str()), (200, "shop"));

    // The same address again: one clear line, and a typed error for embedders.
    let e = weft_proxy::run_until(args, std::future::pending()).await.unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "cannot listen for the gateway on {addr}: address already in use; pick another with --gateway"
        )
    );
    assert!(e.downcast_ref::<BindError>().is_some());

    tx.send(()).unwrap();
    within("run_until to return after the drain", run).await.unwrap().unwrap();
    // The idle keep-alive connection was closed and the listener is gone.
    assert!(c.read_to_close().await.is_empty());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
