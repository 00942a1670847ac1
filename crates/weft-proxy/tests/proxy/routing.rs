//! Outbound routing: absolute-form targets and Host names to services; unknown names; fixed
//! upstream ports.

use crate::support::*;

async fn two_services(engine: Engine) -> (TestSidecar, RawUpstream, RawUpstream) {
    let catalog = RawUpstream::hello("catalog").await;
    let cart = RawUpstream::hello("cart").await;
    let objects = service_yaml("catalog", "default", "[ { name: http, port: 80 } ]", "{}")
        + &endpoints_yaml("catalog", "default", "http", &[catalog.addr])
        + &service_yaml("cart", "shop", "[ { name: web, port: 8080 } ]", "{}")
        + &endpoints_yaml("cart", "shop", "web", &[cart.addr]);
    let yaml = format!(
        "outbound: {{ listen: 127.0.0.1:0 }}\nupstreams: [ {{ service: cart, namespace: shop, listen: 127.0.0.1:0 }} ]\nobjects:\n{objects}"
    );
    (TestSidecar::start(&yaml, engine).await, catalog, cart)
}

#[tokio::test]
async fn absolute_form_and_host_routing() {
    for engine in ENGINES {
        let (p, catalog, cart) = two_services(engine).await;
        let mut c = Conn::connect(p.addr("outbound")).await;
        for (request, want, host) in [
            (
                "GET http://catalog/items?x=1 HTTP/1.1\r\nHost: catalog\r\n\r\n",
                "catalog",
                "catalog",
            ),
            (
                "GET http://catalog.default.svc.cluster.local/items?x=1 HTTP/1.1\r\n\r\n",
                "catalog",
                "catalog.default.svc.cluster.local",
            ),
            (
                "GET /items?x=1 HTTP/1.1\r\nHost: Catalog.Default\r\n\r\n",
                "catalog",
                "Catalog.Default",
            ),
            ("GET /items?x=1 HTTP/1.1\r\nHost: catalog:80\r\n\r\n", "catalog", "catalog:80"),
            (
                "GET http://cart.shop:8080/items?x=1 HTTP/1.1\r\nHost: cart.shop:8080\r\n\r\n",
                "cart",
                "cart.shop:8080",
            ),
            // The service's only port serves a URL without one.
            ("GET /items?x=1 HTTP/1.1\r\nHost: cart.shop.svc\r\n\r\n", "cart", "cart.shop.svc"),
        ] {
            let r = c.request(request).await.unwrap();
            assert_eq!((r.status, r.body_str()), (200, want), "{engine:?}: {request:?}");
            let up = if want == "catalog" { &catalog } else { &cart };
            let seen = up.last_request();
            assert_eq!(seen.target, "/items?x=1", "{engine:?}: origin-form upstream");
            assert_eq!(seen.all("host"), [host], "{engine:?}: {request:?}");
        }
        // A chunked upload takes hyper's path whatever the engine, and is routed the same way.
        let r = c
            .request("POST http://cart.shop:8080/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((r.status, r.body_str()), (200, "cart"), "{engine:?}");
        assert_eq!(cart.last_request().body, b"abc");
        // The fixed upstream port: every request goes to its service, whatever it names.
        let r = Conn::connect(p.addr("upstream:cart.shop"))
            .await
            .request(&get("/fixed"))
            .await
            .unwrap();
        assert_eq!((r.status, r.body_str()), (200, "cart"), "{engine:?}");
    }
}

#[tokio::test]
async fn unknown_services_and_ports_answer_503_naming_them() {
    for engine in ENGINES {
        let (p, _catalog, _cart) = two_services(engine).await;
        let r = p.get_host("catalogue", "/").await;
        assert_eq!(r.status, 503, "{engine:?}");
        assert_eq!(
            r.body_str(),
            "no service \"catalogue\" in namespace \"default\" (known: catalog)\n"
        );
        let r = p.get_host("cart", "/").await;
        assert_eq!(r.body_str(), "no service \"cart\" in namespace \"default\" (known: catalog)\n");
        let r = p.get_host("nope.shop", "/").await;
        assert_eq!(r.body_str(), "no service \"nope\" in namespace \"shop\" (known: cart)\n");
        let r = p.get_host("catalog:8080", "/").await;
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body_str(),
            "service \"catalog\" in namespace \"default\" has no port 8080 (ports: 80)\n"
        );
        let r = p.get_host("catalog:99999", "/").await;
        assert_eq!(r.status, 503, "{engine:?}: {}", r.body_str());
        assert_eq!(
            p.metric("weft_proxy_errors_total", &["service=\"unknown\"", "kind=\"no_route\""]),
            5.0
        );
        // Still serving.
        assert_eq!(p.get_host("catalog", "/").await.status, 200);
        // Services this instance never called have no series.
        let text = p.proxy.metrics().encode();
        assert!(text.contains("service=\"catalog\""), "{text}");
        assert!(!text.contains("service=\"cart.shop\""), "{text}");
    }
}

#[tokio::test]
async fn a_service_without_ready_endpoints_answers_503() {
    let objects = service_yaml("catalog", "default", "[ { name: http, port: 80 } ]", "{}")
        + "  - { apiVersion: weft/v1, kind: Endpoints, metadata: { name: catalog }, spec: { addresses: [ { instance: c-0, ip: 127.0.0.1, ports: { http: 1 }, ready: false } ] } }\n";
    for engine in ENGINES {
        let p = TestSidecar::start(&outbound_config(&objects), engine).await;
        let r = p.get_host("catalog", "/").await;
        assert_eq!(r.status, 503, "{engine:?}");
        assert_eq!(r.body_str(), "service \"catalog\" has no ready endpoints\n");
    }
}
