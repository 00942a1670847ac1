//! The service graph from one round of sidecar scrapes, pure: which service calls which, with
//! requests/s, success rate and p99 per call edge, and the same per service for what it served.
//!
//! Edges come from the callers' sidecars: an outbound series `service="catalog"` on an instance
//! of deployment `frontend` is the edge frontend → catalog. A service whose instances served
//! requests that no sidecar in the mesh sent (the gateway, or clients outside) gets an edge
//! from the `ingress` node carrying its inbound figures.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::math::{self, Counters, Scrape};

/// The pseudo-node for traffic from outside the mesh.
pub const INGRESS: &str = "ingress";

/// One instance's part of a round.
#[derive(Clone, Debug, Default)]
pub struct InstanceRound {
    pub namespace: String,
    pub deployment: String,
    pub ready: bool,
    /// The change since the previous scrape of its sidecar and the seconds between the two;
    /// `None` when there is no pair of scrapes (first sight, or the sidecar did not answer).
    pub delta: Option<(Scrape, f64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// `namespace/name`, or `ingress`.
    pub id: String,
    pub namespace: String,
    pub name: String,
    /// `service` or `ingress`.
    pub kind: &'static str,
    pub instances: u32,
    pub ready: u32,
    /// What the service's instances served (inbound), summed over them.
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// Sums per key of increases and of rates (instances' windows may differ a little, so rates
/// are summed per instance rather than computed from one window).
#[derive(Default)]
struct Acc {
    sum: Counters,
    rps: f64,
}

impl Acc {
    fn add(&mut self, c: &Counters, seconds: f64) {
        math::add(&mut self.sum, c);
        if seconds > 0.0 {
            self.rps += c.requests / seconds;
        }
    }

    fn figures(&self) -> (f64, Option<f64>, Option<f64>, f64) {
        let f = math::figures(&self.sum, 1.0);
        (self.rps, f.success_rate, f.p99.map(|s| s * 1000.0), f.in_flight)
    }
}

/// `service` label of an outbound series: `name`, or `name.ns` outside the caller's namespace.
fn callee_id(label: &str, caller_ns: &str) -> String {
    match label.split_once('.') {
        Some((name, ns)) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => format!("{caller_ns}/{label}"),
    }
}

/// The graph of one round. `services` are the Services that exist, `(namespace, name)`, so
/// that idle ones show too.
pub fn build(services: &[(String, String)], instances: &[InstanceRound]) -> Graph {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let node = |id: &str| -> Node {
        let (ns, name) = id.split_once('/').unwrap_or(("", id));
        Node {
            id: id.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            kind: if id == INGRESS { "ingress" } else { "service" },
            instances: 0,
            ready: 0,
            rps: 0.0,
            success_rate: None,
            p99_ms: None,
            in_flight: 0.0,
        }
    };
    for (ns, name) in services {
        let id = format!("{ns}/{name}");
        nodes.insert(id.clone(), node(&id));
    }
    let mut inbound: BTreeMap<String, Acc> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for inst in instances {
        // The caller is the service its own sidecar serves as (the inbound series' label),
        // else its deployment (services select deployments by name in the usual case).
        let own = inst
            .delta
            .as_ref()
            .and_then(|(s, _)| s.keys().find(|(dir, _)| dir == "inbound").map(|(_, svc)| svc))
            .map_or_else(
                || format!("{}/{}", inst.namespace, inst.deployment),
                |svc| callee_id(svc, &inst.namespace),
            );
        let n = nodes.entry(own.clone()).or_insert_with(|| node(&own));
        n.instances += 1;
        n.ready += u32::from(inst.ready);
        let Some((scrape, seconds)) = &inst.delta else { continue };
        for ((dir, svc), c) in scrape {
            match dir.as_str() {
                "inbound" => inbound.entry(own.clone()).or_default().add(c, *seconds),
                "outbound" => {
                    let to = callee_id(svc, &inst.namespace);
                    edges.entry((own.clone(), to)).or_default().add(c, *seconds);
                }
                _ => {}
            }
        }
    }
    // A quiet series to a name that is no Service (sidecars keep series such as
    // `service="unknown"` for requests they could not route) is no edge; a live one is shown,
    // failures and all.
    let known: BTreeSet<String> = services.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
    let mut out_edges: Vec<Edge> = edges
        .into_iter()
        .filter(|((_, to), acc)| known.contains(to) || acc.sum.requests > 0.0)
        .map(|((from, to), acc)| {
            let (rps, success_rate, p99_ms, in_flight) = acc.figures();
            Edge { from, to, rps, success_rate, p99_ms, in_flight }
        })
        .collect();
    let called: BTreeSet<&str> =
        out_edges.iter().filter(|e| e.rps > 0.0).map(|e| e.to.as_str()).collect();
    let mut ingress_edges = Vec::new();
    for (id, acc) in &inbound {
        let (rps, success_rate, p99_ms, in_flight) = acc.figures();
        if let Some(n) = nodes.get_mut(id) {
            (n.rps, n.success_rate, n.p99_ms, n.in_flight) = (rps, success_rate, p99_ms, in_flight);
        }
        if rps > 0.0 && !called.contains(id.as_str()) {
            ingress_edges.push(Edge {
                from: INGRESS.to_string(),
                to: id.clone(),
                rps,
                success_rate,
                p99_ms,
                in_flight,
            });
        }
    }
    for e in &out_edges {
        if !nodes.contains_key(&e.to) {
            nodes.insert(e.to.clone(), node(&e.to));
        }
    }
    if !ingress_edges.is_empty() {
        nodes.insert(INGRESS.to_string(), node(INGRESS));
        out_edges.extend(ingress_edges);
    }
    Graph { nodes: nodes.into_values().collect(), edges: out_edges }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: f64, errors: f64, le_10ms: f64) -> Counters {
        Counters {
            requests,
            errors,
            buckets: vec![(0.01, le_10ms), (1.0, requests), (f64::INFINITY, requests)],
            in_flight: 0.0,
        }
    }

    fn inst(dep: &str, series: &[(&str, &str, Counters)]) -> InstanceRound {
        let scrape: Scrape =
            series.iter().map(|(d, s, c)| ((d.to_string(), s.to_string()), c.clone())).collect();
        InstanceRound {
            namespace: "default".into(),
            deployment: dep.into(),
            ready: true,
            delta: Some((scrape, 2.0)),
        }
    }

    #[test]
    fn edges_from_callers_and_ingress_for_the_rest() {
        let services: Vec<(String, String)> = ["frontend", "catalog", "pricing", "cart"]
            .iter()
            .map(|s| ("default".to_string(), s.to_string()))
            .collect();
        let instances = vec![
            inst(
                "frontend",
                &[
                    ("inbound", "frontend", c(20.0, 0.0, 20.0)),
                    ("outbound", "catalog", c(20.0, 1.0, 20.0)),
                ],
            ),
            inst(
                "frontend",
                &[
                    ("inbound", "frontend", c(20.0, 0.0, 20.0)),
                    ("outbound", "catalog", c(20.0, 1.0, 20.0)),
                ],
            ),
            inst("catalog", &[("inbound", "catalog", c(40.0, 2.0, 40.0))]),
            inst("pricing", &[("outbound", "unknown", c(0.0, 0.0, 0.0))]),
            InstanceRound {
                namespace: "default".into(),
                deployment: "cart".into(),
                ready: false,
                delta: None,
            },
        ];
        let g = build(&services, &instances);
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            ["default/cart", "default/catalog", "default/frontend", "default/pricing", "ingress"]
        );
        let fc = g.edges.iter().find(|e| e.from == "default/frontend").unwrap();
        assert_eq!(fc.to, "default/catalog");
        assert_eq!(fc.rps, 20.0); // 40 requests over 2 s from two instances
        assert_eq!(fc.success_rate, Some(0.95));
        assert!(fc.p99_ms.unwrap() <= 10.0);
        // frontend is called by nobody in the mesh: its inbound traffic came from outside.
        let ing = g.edges.iter().find(|e| e.from == INGRESS).unwrap();
        assert_eq!((ing.to.as_str(), ing.rps), ("default/frontend", 20.0));
        assert_eq!(g.edges.len(), 2);
        let frontend = g.nodes.iter().find(|n| n.name == "frontend").unwrap();
        assert_eq!((frontend.instances, frontend.ready, frontend.rps), (2, 2, 20.0));
        let cart = g.nodes.iter().find(|n| n.name == "cart").unwrap();
        assert_eq!((cart.instances, cart.ready, cart.rps, cart.p99_ms), (1, 0, 0.0, None));
    }

    #[test]
    fn callees_in_other_namespaces() {
        assert_eq!(callee_id("catalog", "shop"), "shop/catalog");
        assert_eq!(callee_id("catalog.prod", "shop"), "prod/catalog");
        let g = build(&[], &[inst("web", &[("outbound", "api.prod", c(2.0, 0.0, 2.0))])]);
        assert!(g.nodes.iter().any(|n| n.id == "prod/api"));
        assert!(g.nodes.iter().any(|n| n.id == "default/web"));
        assert_eq!(g.edges[0].to, "prod/api");
    }
}
