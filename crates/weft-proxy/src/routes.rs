//! The configuration snapshot: everything a request needs to be routed, built from Services,
//! Endpoints and the instance's identity, immutable once built.
//!
//! The sidecar keeps the current snapshot in an `ArcSwap`; the control plane (or the file) builds
//! a new one and swaps it in. Requests in flight keep the clusters they started with. What should
//! survive a swap is carried over from the previous snapshot: per-endpoint statistics (latency,
//! in-flight, ejection; through `LoadBalancer::update`), endpoint metric handles, and the policy
//! state of every Service whose traffic section did not change (breaker counts, retry budget,
//! rate-limit buckets).
//!
//! A gateway's snapshot has clusters only for Services with `spec.ingress` (direction
//! `gateway`) and the ingress table over them; no inbound routes or upstream ports.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_api::kinds::template::{ContainerPort, PortRef, Protocol};
use weft_api::{AuthorizationPolicy, Endpoints, Service};
use weft_traffic::{EndpointHealth, LoadBalancer};

use crate::cluster::{Cluster, Ep};
use crate::config::Direction;
use crate::metrics::Metrics;
use crate::policy::authz::{Authz, Table};
use crate::policy::{self, Policy};
use crate::sidecar::SidecarConfig;
use crate::sidecar::gateway::{IngressRoute, IngressTable};
use crate::sidecar::inbound::Admission;

/// One port of a service and the cluster behind it.
#[derive(Debug)]
pub(crate) struct PortRoute {
    pub(crate) port: u16,
    pub(crate) name: Option<String>,
    pub(crate) cluster: Arc<Cluster>,
}

/// A service as outbound requests see it.
#[derive(Debug)]
pub(crate) struct ServiceRoutes {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) ports: Vec<PortRoute>,
}

/// An inbound listener's route: the app, and the admission policy of the services it serves.
#[derive(Debug)]
pub(crate) struct InboundRoute {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) admissions: Vec<Arc<Admission>>,
    /// Who may call the services behind the port; `None`: anyone (no policies).
    pub(crate) authz: Option<Arc<Authz>>,
}

/// What a snapshot is built from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Desired {
    /// The store revision this state was read at (the highest object revision seen).
    pub(crate) revision: u64,
    /// Whether the state is complete (dynamic mode: both watches listed).
    pub(crate) synced: bool,
    pub(crate) namespace: String,
    pub(crate) labels: BTreeMap<String, String>,
    /// The instance's template ports, when known (dynamic mode), to match numeric targetPorts.
    pub(crate) template_ports: Vec<ContainerPort>,
    pub(crate) services: Vec<Service>,
    pub(crate) endpoints: Vec<Endpoints>,
    /// The AuthorizationPolicies of the own namespace.
    pub(crate) authz: Vec<AuthorizationPolicy>,
    /// The MeshConfig's `authorization.default: deny` (own namespace, else mesh-wide).
    pub(crate) authz_default_deny: bool,
}

type Key = (String, String);

/// Everything a request needs, at one revision.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) revision: u64,
    pub(crate) synced: bool,
    pub(crate) namespace: String,
    /// By `name.namespace`, and by `name` for the own namespace.
    services: HashMap<String, Arc<ServiceRoutes>>,
    /// Service names per namespace, sorted (for "known: ..." in errors).
    known: BTreeMap<String, Vec<String>>,
    /// By inbound listener (the order of `SidecarConfig::inbound`).
    pub(crate) inbound: Vec<InboundRoute>,
    /// By upstream-port listener; `None` while its service is unknown.
    pub(crate) upstream_ports: Vec<Option<Arc<Cluster>>>,
    /// Gateway: the Services' ingress routes (empty for a sidecar).
    pub(crate) ingress: IngressTable,
    gateway: bool,
    policies: HashMap<Key, Arc<Policy>>,
    admissions: HashMap<Key, Arc<Admission>>,
    /// Outbound clusters by (namespace, name, port).
    clusters: HashMap<(String, String, u16), Arc<Cluster>>,
}

impl Snapshot {
    /// The service a (suffix-stripped) host names.
    #[inline]
    pub(crate) fn service(&self, name: &str) -> Option<&Arc<ServiceRoutes>> {
        self.services.get(name)
    }

    /// The 503 body for a name that is no service.
    pub(crate) fn unknown_service(&self, name: &str) -> String {
        let (svc, ns) = name.split_once('.').unwrap_or((name, &self.namespace));
        if !self.synced {
            return format!(
                "no service {svc:?} in namespace {ns:?} yet: the proxy has no configuration \
                 from the control plane\n"
            );
        }
        let known = self.known.get(ns).map(Vec::as_slice).unwrap_or_default();
        let mut list: Vec<&str> = known.iter().take(20).map(String::as_str).collect();
        if known.len() > list.len() {
            list.push("...");
        }
        let list = if list.is_empty() { "none".to_string() } else { list.join(", ") };
        format!("no service {svc:?} in namespace {ns:?} (known: {list})\n")
    }

    /// Every outbound and inbound cluster (metrics refresh, `/config`).
    pub(crate) fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values().chain(self.inbound.iter().map(|i| &i.cluster))
    }

    /// What `/config` shows.
    pub(crate) fn describe(&self, now: Instant) -> Value {
        let mut services: Vec<&Arc<ServiceRoutes>> = Vec::new();
        for s in self.services.values() {
            if !services.iter().any(|x| Arc::ptr_eq(x, s)) {
                services.push(s);
            }
        }
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let services: Vec<Value> = services
            .iter()
            .map(|s| {
                let ports: Vec<Value> = s
                    .ports
                    .iter()
                    .map(|p| {
                        let mut v = describe_cluster(&p.cluster, now);
                        v["port"] = json!(p.port);
                        if let Some(n) = &p.name {
                            v["name"] = json!(n);
                        }
                        v
                    })
                    .collect();
                json!({ "name": s.name, "namespace": s.namespace, "ports": ports })
            })
            .collect();
        let inbound: Vec<Value> = self
            .inbound
            .iter()
            .map(|i| {
                let mut v = describe_cluster(&i.cluster, now);
                v["services"] = json!(i.admissions.iter().map(|a| &a.service).collect::<Vec<_>>());
                // What the inbound port enforces, for `/config` readers debugging a 403.
                v["authorization"] = match &i.authz {
                    Some(a) => a.describe(),
                    None => json!("open"),
                };
                v
            })
            .collect();
        let upstreams: Vec<Value> = self
            .upstream_ports
            .iter()
            .map(|c| c.as_ref().map_or(Value::Null, |c| json!(c.service)))
            .collect();
        if self.gateway {
            return json!({
                "revision": self.revision,
                "synced": self.synced,
                "ingress": self.ingress.describe(),
                "services": services,
            });
        }
        json!({
            "revision": self.revision,
            "synced": self.synced,
            "namespace": self.namespace,
            "services": services,
            "inbound": inbound,
            "upstreamPorts": upstreams,
        })
    }
}

fn describe_cluster(c: &Cluster, now: Instant) -> Value {
    let endpoints: Vec<Value> = c
        .lb
        .endpoints()
        .iter()
        .map(|e| {
            let health = match c.policy.outlier.health(&e.stats, now) {
                EndpointHealth::Healthy => json!("healthy"),
                EndpointHealth::Ejected { until } => {
                    json!({ "ejectedForMs": until.saturating_duration_since(now).as_millis() as u64 })
                }
                EndpointHealth::Probation { multiplier } => json!({ "probation": multiplier }),
            };
            json!({
                "address": e.id.0.name,
                "health": health,
                "inFlight": e.stats.in_flight(),
                "latencyMs": e.stats.latency_estimate(now).map(|d| d.as_secs_f64() * 1000.0),
            })
        })
        .collect();
    json!({
        "service": c.service,
        "protocol": c.protocol.as_str(),
        "loadBalancer": policy::algorithm_name(c.lb.algorithm()),
        "timeout": format!("{:?}", c.policy.timeout),
        "endpoints": endpoints,
    })
}

/// Everything `build` needs besides the desired state.
pub(crate) struct BuildEnv<'a> {
    pub(crate) sidecar: &'a SidecarConfig,
    /// Inbound request timeout (`--timeout`).
    pub(crate) inbound_timeout: Duration,
    pub(crate) metrics: &'a Arc<Metrics>,
}

fn metric_name(name: &str, namespace: &str, own: &str) -> String {
    if namespace == own { name.to_string() } else { format!("{name}.{namespace}") }
}

/// Builds the snapshot for `d`, carrying state over from `prev`.
pub(crate) fn build(
    d: &Desired,
    env: &BuildEnv<'_>,
    prev: Option<&Snapshot>,
    now: Instant,
) -> Snapshot {
    let metrics = env.metrics;
    let own = d.namespace.as_str();
    let gateway = env.sidecar.is_gateway();
    let direction = if gateway { Direction::Gateway } else { Direction::Outbound };
    let mut ingress = Vec::new();
    let endpoints: HashMap<(&str, &str), &Endpoints> = d
        .endpoints
        .iter()
        .map(|e| ((e.metadata.namespace_or_default(), e.metadata.name.as_str()), e))
        .collect();
    let mut snap = Snapshot {
        revision: d.revision,
        synced: d.synced,
        namespace: own.to_string(),
        services: HashMap::new(),
        known: BTreeMap::new(),
        inbound: Vec::new(),
        upstream_ports: Vec::new(),
        ingress: IngressTable::default(),
        gateway,
        policies: HashMap::new(),
        admissions: HashMap::new(),
        clusters: HashMap::new(),
    };
    for svc in &d.services {
        // A gateway in a large cluster should not hold a balancer per service it never routes to.
        if gateway && svc.spec.ingress.is_none() {
            continue;
        }
        let ns = svc.metadata.namespace_or_default();
        let name = svc.metadata.name.as_str();
        let key = (ns.to_string(), name.to_string());
        let label = metric_name(name, ns, own);
        let traffic = &svc.spec.traffic;
        let policy = match prev.and_then(|p| p.policies.get(&key)) {
            Some(p) if p.traffic.as_ref() == Some(traffic) => p.clone(),
            _ => Arc::new(Policy::outbound(metrics, direction, &label, traffic, now)),
        };
        let algorithm = policy::algorithm(traffic.load_balancer);
        let eps = endpoints.get(&(ns, name)).copied();
        let mut ports = Vec::new();
        for p in &svc.spec.ports {
            let ckey = (key.0.clone(), key.1.clone(), p.port);
            let old = prev.and_then(|s| s.clusters.get(&ckey));
            let port_key = p.name.clone().unwrap_or_else(|| p.port.to_string());
            let addrs: Vec<SocketAddr> = eps
                .map(|e| {
                    e.spec
                        .addresses
                        .iter()
                        .filter(|a| a.ready)
                        .filter_map(|a| {
                            let ip: IpAddr = a.ip.parse().ok()?;
                            Some(SocketAddr::new(ip, *a.ports.get(&port_key)?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ids: Vec<Ep> = addrs
                .iter()
                .map(|addr| {
                    old.and_then(|c| c.lb.endpoints().iter().find(|e| e.id.0.addr == *addr))
                        .filter(|e| e.id.0.metrics_service_is(&label))
                        .map(|e| e.id.clone())
                        .unwrap_or_else(|| {
                            Ep::new(metrics, direction, &label, *addr, addr.to_string())
                        })
                })
                .collect();
            let lb = match old {
                Some(c) if c.lb.algorithm() == algorithm => c.lb.update(ids, now),
                _ => LoadBalancer::new(algorithm, ids, now),
            };
            let cluster = Arc::new(
                Cluster::new(metrics, direction, &label, p.protocol, lb, policy.clone())
                    .for_service(ns, name),
            );
            snap.clusters.insert(ckey, cluster.clone());
            ports.push(PortRoute { port: p.port, name: p.name.clone(), cluster });
        }
        if let Some(ing) = svc.spec.ingress.as_ref().filter(|_| gateway) {
            // Validation guarantees the port exists; a Service without it is skipped, not
            // routed to the wrong port.
            let port = match &ing.port {
                None => ports.first(),
                Some(PortRef::Number(n)) => ports.iter().find(|p| p.port == *n),
                Some(PortRef::Name(n)) => ports.iter().find(|p| p.name.as_ref() == Some(n)),
            };
            if let Some(p) = port {
                ingress.push(IngressRoute::new(
                    ing.host.as_deref(),
                    &ing.path_prefix,
                    name,
                    ns,
                    p.port,
                    p.cluster.clone(),
                ));
            }
        }
        let routes =
            Arc::new(ServiceRoutes { name: name.to_string(), namespace: ns.to_string(), ports });
        snap.services.insert(format!("{name}.{ns}"), routes.clone());
        if ns == own {
            snap.services.insert(name.to_string(), routes);
        }
        snap.known.entry(ns.to_string()).or_default().push(name.to_string());
        snap.policies.insert(key, policy);
    }
    for names in snap.known.values_mut() {
        names.sort();
    }
    snap.ingress = IngressTable::new(ingress);

    // Inbound: the app behind each listener, and the admission policy of the own services
    // that select this instance and target the listener's port.
    for (i, spec) in env.sidecar.inbound.iter().enumerate() {
        let template_port = d.template_ports.iter().find(|p| p.name == spec.port).map(|p| p.port);
        let mut admissions = Vec::new();
        let mut targets: Vec<&str> = Vec::new();
        for svc in d.services.iter().filter(|s| s.metadata.namespace_or_default() == own) {
            let selects = svc.spec.selector.iter().all(|(k, v)| d.labels.get(k) == Some(v));
            let serves_port = svc.spec.ports.iter().any(|p| match p.target() {
                PortRef::Name(n) => n == spec.port,
                PortRef::Number(n) => template_port == Some(n),
            });
            if !(selects && serves_port) {
                continue;
            }
            targets.push(&svc.metadata.name);
            let key = (own.to_string(), svc.metadata.name.clone());
            let admission = match prev.and_then(|p| p.admissions.get(&key)) {
                Some(a) if a.traffic == svc.spec.traffic => a.clone(),
                _ => Arc::new(Admission::new(metrics, &svc.metadata.name, &svc.spec.traffic, now)),
            };
            snap.admissions.insert(key, admission.clone());
            if !admission.is_noop() {
                admissions.push(admission);
            }
        }
        let label = d
            .services
            .iter()
            .find(|s| snap.admissions.contains_key(&(own.to_string(), s.metadata.name.clone())))
            .map(|s| s.metadata.name.clone())
            .or_else(|| d.labels.get("deployment").cloned())
            .unwrap_or_else(|| spec.port.clone());
        let cluster = match prev.and_then(|p| p.inbound.get(i)) {
            Some(r) if r.cluster.service == label => r.cluster.clone(),
            _ => {
                let ep =
                    Ep::new(metrics, Direction::Inbound, &label, spec.app, spec.app.to_string());
                let lb = LoadBalancer::new(weft_traffic::Algorithm::RoundRobin, [ep], now);
                let policy =
                    Policy::fixed(metrics, Direction::Inbound, &label, env.inbound_timeout);
                Arc::new(Cluster::new(
                    metrics,
                    Direction::Inbound,
                    &label,
                    spec.protocol,
                    lb,
                    Arc::new(policy),
                ))
            }
        };
        let table = Table::new(own, &targets, &d.authz, d.authz_default_deny);
        let authz = Authz::new(metrics, &label, table).map(Arc::new);
        snap.inbound.push(InboundRoute { cluster, admissions, authz });
    }

    for spec in &env.sidecar.upstream_ports {
        let ns = spec.namespace.as_deref().unwrap_or(own);
        let cluster = snap.services.get(&format!("{}.{ns}", spec.service)).and_then(|s| {
            let port = match &spec.port {
                None => s.ports.first(),
                Some(PortRef::Number(n)) => s.ports.iter().find(|p| p.port == *n),
                Some(PortRef::Name(n)) => s.ports.iter().find(|p| p.name.as_ref() == Some(n)),
            };
            port.map(|p| p.cluster.clone())
        });
        snap.upstream_ports.push(cluster);
    }
    snap
}

impl crate::cluster::EndpointInfo {
    /// Whether this endpoint's handles carry `service` (a cluster renamed keeps none).
    fn metrics_service_is(&self, service: &str) -> bool {
        self.metrics.service() == service
    }
}

/// The protocol an upstream-port listener speaks at accept time (TCP relays bytes; anything
/// else, and an unknown service, is served as HTTP).
pub(crate) fn upstream_protocol(snap: &Snapshot, index: usize) -> Protocol {
    snap.upstream_ports.get(index).and_then(Option::as_ref).map_or(Protocol::Http, |c| c.protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::{InboundSpec, Source};

    fn service(name: &str, traffic: &str) -> Service {
        let v: serde_json::Value = serde_yaml_ng::from_str(&format!(
            "{{ apiVersion: weft/v1, kind: Service, metadata: {{ name: {name} }}, \
             spec: {{ selector: {{ deployment: {name} }}, ports: [ {{ name: http, port: 80 }} ], traffic: {traffic} }} }}"
        ))
        .unwrap();
        crate::control::validate(&weft_api::kinds::SERVICE, v).unwrap()
    }

    fn endpoints(name: &str, ports: &[u16]) -> Endpoints {
        let addrs: Vec<String> = ports
            .iter()
            .map(|p| format!("{{ instance: i{p}, ip: 127.0.0.1, ports: {{ http: {p} }} }}"))
            .collect();
        let v: serde_json::Value = serde_yaml_ng::from_str(&format!(
            "{{ apiVersion: weft/v1, kind: Endpoints, metadata: {{ name: {name} }}, spec: {{ addresses: [ {} ] }} }}",
            addrs.join(", ")
        ))
        .unwrap();
        crate::control::validate(&weft_api::kinds::ENDPOINTS, v).unwrap()
    }

    fn sidecar() -> SidecarConfig {
        SidecarConfig {
            source: Source::Static {
                file: "t".into(),
                namespace: "default".into(),
                labels: BTreeMap::new(),
                objects: Vec::new(),
            },
            inbound: vec![InboundSpec {
                port: "http".into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                app: "127.0.0.1:9".parse().unwrap(),
                protocol: Protocol::Http,
            }],
            outbound: None,
            upstream_ports: Vec::new(),
            gateway: None,
        }
    }

    #[test]
    fn swaps_keep_endpoint_and_policy_state() {
        let metrics = Arc::new(Metrics::new());
        let side = sidecar();
        let env =
            BuildEnv { sidecar: &side, inbound_timeout: Duration::from_secs(1), metrics: &metrics };
        let now = Instant::now();
        let mut d = Desired {
            namespace: "default".into(),
            synced: true,
            services: vec![service("catalog", "{ loadBalancer: least-request }")],
            endpoints: vec![endpoints("catalog", &[1001, 1002])],
            ..Desired::default()
        };
        let s1 = build(&d, &env, None, now);
        let c1 = s1.service("catalog").unwrap().ports[0].cluster.clone();
        let kept = &c1.lb.endpoints()[1];
        kept.stats.begin();
        assert_eq!(c1.lb.endpoints().len(), 2);

        // Endpoint 1001 goes, 1003 comes; 1002 keeps its statistics and metric handles.
        d.endpoints = vec![endpoints("catalog", &[1002, 1003])];
        let s2 = build(&d, &env, Some(&s1), now);
        let c2 = s2.service("catalog.default").unwrap().ports[0].cluster.clone();
        let same = c2.lb.endpoints().iter().find(|e| e.id.0.addr.port() == 1002).unwrap();
        assert!(Arc::ptr_eq(&same.stats, &kept.stats));
        assert!(Arc::ptr_eq(&same.id.0, &kept.id.0));
        assert_eq!(same.stats.in_flight(), 1);
        assert!(Arc::ptr_eq(&c1.policy, &c2.policy), "unchanged traffic: the same policy state");
        assert!(Arc::ptr_eq(&s1.inbound[0].cluster, &s2.inbound[0].cluster));

        // A changed policy is a new one; requests holding the old cluster keep it.
        d.services = vec![service("catalog", "{ loadBalancer: least-request, timeout: 3s }")];
        let s3 = build(&d, &env, Some(&s2), now);
        let c3 = s3.service("catalog").unwrap().ports[0].cluster.clone();
        assert!(!Arc::ptr_eq(&c2.policy, &c3.policy));
        assert_eq!(c3.policy.timeout, Duration::from_secs(3));
        assert_eq!(c2.policy.timeout, Duration::from_secs(15));
        assert!(s3.service("cart").is_none());
        assert_eq!(
            s3.unknown_service("cart"),
            "no service \"cart\" in namespace \"default\" (known: catalog)\n"
        );
    }
}
