//! Dynamic mode against a fake control plane: a small hyper server answering the paths the
//! client uses (the Instance, lists, watch streams), which can also send what a real api server
//! never would — an object that fails `weft_api::kinds::normalize`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use weft_proxy::{Config, ProxyArgs};

use crate::support::*;

#[derive(Default)]
struct ApiState {
    revision: u64,
    /// Current objects by kind plural, then name.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// Every event sent, with its revision: (plural, type, object).
    log: Vec<(&'static str, &'static str, Value, u64)>,
}

/// The fake api server.
struct FakeApi {
    url: String,
    state: Arc<Mutex<ApiState>>,
    changed: Arc<Notify>,
}

impl FakeApi {
    async fn start(instance: Value) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ApiState::default()));
        let changed = Arc::new(Notify::new());
        let (s, n) = (state.clone(), changed.clone());
        let instance = Arc::new(instance);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, n, instance) = (s.clone(), n.clone(), instance.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (s, n, instance) = (s.clone(), n.clone(), instance.clone());
                        async move { Ok::<_, Infallible>(answer(&s, &n, &instance, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeApi { url: format!("http://{addr}"), state, changed }
    }

    /// Writes an object (as the api would, with a new revision) and sends the event.
    fn put(&self, plural: &'static str, mut object: Value) {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        let rev = st.revision;
        object["metadata"]["resourceVersion"] = json!(rev.to_string());
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let existed = st.objects.entry(plural).or_default().insert(name, object.clone()).is_some();
        st.log.push((plural, if existed { "MODIFIED" } else { "ADDED" }, object, rev));
        drop(st);
        self.changed.notify_waiters();
    }

    /// Sends a MODIFIED event the api server would never send (not stored in lists).
    fn send_raw(&self, plural: &'static str, mut object: Value) {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        let rev = st.revision;
        object["metadata"]["resourceVersion"] = json!(rev.to_string());
        st.log.push((plural, "MODIFIED", object, rev));
        drop(st);
        self.changed.notify_waiters();
    }

    fn revision(&self) -> u64 {
        self.state.lock().unwrap().revision
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: u16, v: &Value) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

fn answer(
    state: &Arc<Mutex<ApiState>>,
    changed: &Arc<Notify>,
    instance: &Value,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let param = |k: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
    };
    if path == "/api/v1/namespaces/default/instances/me" {
        return json_response(200, instance);
    }
    let plural: &'static str = match path {
        "/api/v1/services" => "services",
        "/api/v1/endpoints" => "endpoints",
        // Followed too since issue 6; this fake api has none of them.
        "/api/v1/namespaces/default/authorizationpolicies" => "authorizationpolicies",
        "/api/v1/meshconfigs" => "meshconfigs",
        _ => {
            return json_response(
                404,
                &json!({"code": "NotFound", "message": format!("no {path}")}),
            );
        }
    };
    if param("watch") != Some("true") {
        let st = state.lock().unwrap();
        let items: Vec<Value> =
            st.objects.get(plural).map(|m| m.values().cloned().collect()).unwrap_or_default();
        let kind = match plural {
            "services" => "ServiceList",
            "endpoints" => "EndpointsList",
            "meshconfigs" => "MeshConfigList",
            _ => "AuthorizationPolicyList",
        };
        return json_response(
            200,
            &json!({"apiVersion": "weft/v1", "kind": kind, "metadata": {"resourceVersion": st.revision.to_string()}, "items": items}),
        );
    }
    let after: u64 = param("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let (state, changed) = (state.clone(), changed.clone());
    let lines = futures::stream::unfold(after, move |after| {
        let (state, changed) = (state.clone(), changed.clone());
        async move {
            loop {
                let notified = changed.notified();
                let batch: Vec<(String, u64)> = {
                    let st = state.lock().unwrap();
                    st.log
                        .iter()
                        .filter(|(p, _, _, rev)| *p == plural && *rev > after)
                        .map(|(_, ty, obj, rev)| {
                            (json!({"type": ty, "object": obj}).to_string() + "\n", *rev)
                        })
                        .collect()
                };
                if let Some(last) = batch.last().map(|(_, r)| *r) {
                    let text: String = batch.into_iter().map(|(l, _)| l).collect();
                    return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text))), last));
                }
                notified.await;
            }
        }
    });
    let mut r = hyper::Response::new(BodyExt::boxed(StreamBody::new(lines)));
    r.headers_mut().insert("content-type", "application/x-ndjson".parse().unwrap());
    r
}

fn service(extra_spec: Value) -> Value {
    let mut s = json!({
        "apiVersion": "weft/v1", "kind": "Service",
        "metadata": {"name": "catalog", "namespace": "default"},
        "spec": {"selector": {"deployment": "catalog"}, "ports": [{"name": "http", "port": 80}],
                 "traffic": {"loadBalancer": "round-robin"}}
    });
    if let (Some(spec), Some(extra)) = (s["spec"].as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    s
}

fn endpoints(addr: SocketAddr) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Endpoints",
        "metadata": {"name": "catalog", "namespace": "default"},
        "spec": {"addresses": [{"instance": "c-0", "ip": addr.ip().to_string(), "ports": {"http": addr.port()}}]}
    })
}

#[tokio::test]
async fn invalid_updates_are_rejected_and_counted_and_the_last_good_config_stays() {
    let a = RawUpstream::hello("A").await;
    let b = RawUpstream::hello("B").await;
    let instance = json!({
        "apiVersion": "weft/v1", "kind": "Instance",
        "metadata": {"name": "me", "namespace": "default", "labels": {"deployment": "web"}},
        "spec": {"deployment": "web", "template": {"command": ["web"], "ports": [{"name": "http", "port": 8080}]}}
    });
    let api = FakeApi::start(instance).await;
    api.put("services", service(json!({})));
    api.put("endpoints", endpoints(a.addr));

    let args = ProxyArgs {
        server: Some(api.url.clone()),
        token: Some("weft_test".into()),
        instance: Some("me".into()),
        outbound: Some("127.0.0.1:0".into()),
        admin: Some("127.0.0.1:0".into()),
        ..ProxyArgs::default()
    };
    let mut config = Config::from_args(&args).unwrap();
    within("the Instance", weft_proxy::control::read_instance(&mut config)).await.unwrap();
    let p = TestSidecar::serve(config, tempfile::tempdir().unwrap()).await;
    // Before the first configuration: not ready, and outbound says why.
    assert!(!p.proxy.is_ready());
    let r = p.get_host("catalog", "/").await;
    assert_eq!(r.status, 503);
    assert!(r.body_str().contains("no configuration from the control plane"), "{}", r.body_str());

    tokio::spawn(weft_proxy::control::run(p.proxy.clone()));
    wait_until("ready", || p.proxy.is_ready()).await;
    assert_eq!(p.get_host("catalog", "/").await.body_str(), "A");
    assert_eq!(p.proxy.config_revision(), 2);

    // A Service with an unknown field: rejected by the same validation the api server runs.
    api.send_raw("services", service(json!({"trafic": {"timeout": "1s"}})));
    wait_until("the rejection counted", || {
        p.metric("weft_config_updates_total", &["result=\"rejected\""]) == 1.0
    })
    .await;
    // An Endpoints object with an address that is no IP: rejected too.
    let mut bad = endpoints(b.addr);
    bad["spec"]["addresses"][0]["ip"] = json!("not-an-ip");
    api.send_raw("endpoints", bad);
    wait_until("the second rejection", || {
        p.metric("weft_config_updates_total", &["result=\"rejected\""]) == 2.0
    })
    .await;
    let mut c = Conn::connect(p.addr("outbound")).await;
    for _ in 0..3 {
        let r = c.request("GET / HTTP/1.1\r\nHost: catalog\r\n\r\n").await.unwrap();
        assert_eq!((r.status, r.body_str()), (200, "A"), "the last good configuration");
    }

    // A valid change after the rejections still applies; the open connection carries on.
    api.put("endpoints", endpoints(b.addr));
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let r = c.request("GET / HTTP/1.1\r\nHost: catalog\r\n\r\n").await.unwrap();
        assert_eq!(r.status, 200);
        if r.body_str() == "B" {
            break;
        }
        assert!(std::time::Instant::now() < end, "traffic never moved to B");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(p.proxy.config_revision(), api.revision());
    assert!(p.metric("weft_config_updates_total", &["result=\"applied\""]) >= 2.0);
    let text = p.proxy.metrics().encode();
    assert!(
        text.lines().any(|l| l == format!("weft_config_revision {}", api.revision())),
        "{text}"
    );
}

/// Asks `conn` (kept open across configuration changes) until `want` (status, body) answers.
async fn until_answer(conn: &mut Conn, host: &str, path: &str, want: (u16, &str)) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let r =
            conn.request(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")).await.unwrap();
        if (r.status, r.body_str()) == want {
            return;
        }
        assert!(std::time::Instant::now() < end, "{host}{path} never answered {want:?}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_gateway_follows_ingress_changes_and_keeps_the_last_good_one() {
    let a = RawUpstream::hello("A").await;
    // A gateway reads no Instance.
    let api = FakeApi::start(json!({})).await;
    let args = ProxyArgs {
        server: Some(api.url.clone()),
        token: Some("weft_test".into()),
        gateway: Some("127.0.0.1:0".into()),
        admin: Some("127.0.0.1:0".into()),
        ..ProxyArgs::default()
    };
    let mut config = Config::from_args(&args).unwrap();
    within("no Instance to read", weft_proxy::control::read_instance(&mut config)).await.unwrap();
    let p = TestSidecar::serve(config, tempfile::tempdir().unwrap()).await;
    let mut c = Conn::connect(p.addr("gateway")).await;
    // Before the first configuration: 503 saying why, not a 404 that blames the request.
    let r = c.request("GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n").await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body_str().contains("no configuration from the control plane"), "{}", r.body_str());

    api.put("services", service(json!({"ingress": {"host": "shop.example"}})));
    api.put("endpoints", endpoints(a.addr));
    tokio::spawn(weft_proxy::control::run(p.proxy.clone()));
    wait_until("ready", || p.proxy.is_ready()).await;
    until_answer(&mut c, "shop.example", "/any", (200, "A")).await;
    let r = c.request("GET / HTTP/1.1\r\nHost: other.example\r\n\r\n").await.unwrap();
    assert_eq!(r.status, 404);

    // An ingress the api server would refuse: rejected, counted, the last good route stays.
    api.send_raw("services", service(json!({"ingress": {"pathPrefix": "no-slash"}})));
    wait_until("the rejection counted", || {
        p.metric("weft_config_updates_total", &["result=\"rejected\""]) == 1.0
    })
    .await;
    for _ in 0..3 {
        let r = c.request("GET /x HTTP/1.1\r\nHost: shop.example\r\n\r\n").await.unwrap();
        assert_eq!((r.status, r.body_str()), (200, "A"));
    }

    // A valid change applies on the open connection: any host, under /api only.
    api.put("services", service(json!({"ingress": {"pathPrefix": "/api"}})));
    until_answer(&mut c, "other.example", "/api/items", (200, "A")).await;
    let r = c.request("GET /shop HTTP/1.1\r\nHost: shop.example\r\n\r\n").await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.body_str(), "no ingress route for host \"shop.example\" and path \"/shop\"\n");
    // Ingress removed: the service is no longer reachable from outside.
    api.put("services", service(json!({})));
    until_answer(
        &mut c,
        "other.example",
        "/api/items",
        (404, "no ingress route for host \"other.example\" and path \"/api/items\"\n"),
    )
    .await;
    assert_eq!(p.proxy.config_revision(), api.revision());
    assert!(
        p.metric("weft_requests_total", &["direction=\"gateway\"", "service=\"catalog\""]) >= 5.0
    );
}
