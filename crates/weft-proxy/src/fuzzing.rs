//! Entry points for fuzzing the request parser and the router (used by `fuzz/` and by the
//! deterministic mutation test). Not a stable api.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Direction};
use crate::dispatch::{self, ListenerCtx, ListenerKind};
use crate::http::fast;
use crate::proxy::Proxy;
use crate::sidecar::{SidecarConfig, Source, file};

/// A sidecar with a few services (no sockets), to route parsed requests against, and a gateway
/// over the same services.
pub struct Target {
    proxy: Arc<Proxy>,
    outbound: ListenerCtx,
    inbound: ListenerCtx,
    gateway: Arc<Proxy>,
    gateway_ctx: ListenerCtx,
    out: Vec<u8>,
}

const CONFIG: &str = r#"
labels: { deployment: catalog }
inbound: [ { port: http, listen: 127.0.0.1:0, app: 127.0.0.1:9 } ]
objects:
  - apiVersion: weft/v1
    kind: Service
    metadata: { name: catalog }
    spec:
      selector: { deployment: catalog }
      ports: [ { name: http, port: 80 } ]
      ingress: { host: catalog, pathPrefix: /items/ }
      traffic:
        rateLimit: { requestsPerSecond: 1000000 }
        routes: [ { pathPrefix: /slow, timeout: 1s, rateLimit: { requestsPerSecond: 1000000 } } ]
  - apiVersion: weft/v1
    kind: Service
    metadata: { name: cart, namespace: shop }
    spec:
      selector: { deployment: cart }
      ports: [ { name: http, port: 80 }, { name: grpc, port: 9090, protocol: grpc } ]
      ingress: { pathPrefix: /a, port: grpc }
      traffic: { loadBalancer: ring-hash, hashHeader: x-user }
  - apiVersion: weft/v1
    kind: Endpoints
    metadata: { name: catalog }
    spec: { addresses: [ { instance: c1, ip: 127.0.0.1, ports: { http: 9 } } ] }
  - apiVersion: weft/v1
    kind: Endpoints
    metadata: { name: cart, namespace: shop }
    spec: { addresses: [ { instance: k1, ip: 127.0.0.1, ports: { http: 9, grpc: 9 } } ] }
"#;

impl Default for Target {
    fn default() -> Self {
        Self::new()
    }
}

impl Target {
    pub fn new() -> Target {
        let f = file::parse(CONFIG, "fuzz.yaml").expect("the fuzz configuration is valid");
        let sidecar = SidecarConfig {
            source: Source::Static {
                file: "fuzz.yaml".into(),
                namespace: f.namespace,
                labels: f.labels,
                objects: f.objects,
            },
            inbound: f.inbound,
            outbound: None,
            upstream_ports: Vec::new(),
            gateway: None,
        };
        let gateway = SidecarConfig {
            inbound: Vec::new(),
            gateway: Some(([127, 0, 0, 1], 0).into()),
            ..sidecar.clone()
        };
        let proxy = Proxy::new(Config::sidecar(sidecar));
        let gateway = Proxy::new(Config::sidecar(gateway));
        let m = &proxy.metrics;
        Target {
            outbound: ListenerCtx::new(m, ListenerKind::Outbound, Direction::Outbound, "unknown"),
            inbound: ListenerCtx::new(m, ListenerKind::Inbound(0), Direction::Inbound, "catalog"),
            gateway_ctx: ListenerCtx::new(
                &gateway.metrics,
                ListenerKind::Gateway,
                Direction::Gateway,
                "unknown",
            ),
            proxy,
            gateway,
            out: Vec::with_capacity(4096),
        }
    }

    /// Parses `input` as a request head (and as a response head and chunked body), and routes
    /// a request the fast path takes on the outbound, the inbound and the gateway listener.
    /// Returns the status the outbound listener would answer itself, or 0 when the request was
    /// routed to a cluster (or not taken by the fast path). Must never panic; the gateway
    /// refuses only with 404.
    pub fn run(&mut self, input: &[u8]) -> u16 {
        self.out.clear();
        let _ = fast::response_for_fuzz(input, &mut self.out);
        self.out.clear();
        let Some(view) = fast::parse_for_fuzz(input, &mut self.out) else { return 0 };
        let now = Instant::now();
        let _ = dispatch::route(&self.proxy, &self.inbound, &view, now);
        if let Err(r) = dispatch::route(&self.gateway, &self.gateway_ctx, &view, now) {
            assert_eq!(r.status.as_u16(), 404, "a configured gateway refuses only with 404");
        }
        match dispatch::route(&self.proxy, &self.outbound, &view, now) {
            Ok(routed) => {
                let _ = routed.cluster.pick(now, routed.hash_key.as_deref(), &[]);
                0
            }
            Err(r) => r.status.as_u16(),
        }
    }
}
