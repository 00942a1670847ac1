//! Gateway routing: which Service a request from outside the mesh goes to, by its Host and
//! path, from the Services' `spec.ingress`.
//!
//! - Host: compared without its port, trailing dot and case (`Shop.Example:8080` is
//!   `shop.example`); an ingress without `host` takes any host.
//! - Path: `pathPrefix` matches on segment boundaries: `/api` (or `/api/`) matches `/api`,
//!   `/api/`, `/api/items` and `/api?x`, not `/apis`; `/` matches everything. The comparison is
//!   on the path as sent (case-sensitive, no percent-decoding), the query excluded.
//! - The most specific route wins: any route for the request's host beats every route without
//!   host, then the longest prefix. Two Services claiming the same host and prefix: the first by
//!   namespace, then name (`/config` lists routes in the order they are tried).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::sidecar::outbound::split_authority;

/// One Service's ingress: where matching requests go.
#[derive(Debug)]
pub(crate) struct IngressRoute {
    /// Normalised ([`normalize_host`]); `None` matches any host.
    pub(crate) host: Option<String>,
    /// `pathPrefix` as the Service wrote it (for `/config`).
    pub(crate) path_prefix: String,
    /// `pathPrefix` without trailing slashes: `""` for `/`. Its length is the specificity.
    prefix: String,
    pub(crate) service: String,
    pub(crate) namespace: String,
    pub(crate) port: u16,
    pub(crate) cluster: Arc<Cluster>,
}

impl IngressRoute {
    pub(crate) fn new(
        host: Option<&str>,
        path_prefix: &str,
        service: &str,
        namespace: &str,
        port: u16,
        cluster: Arc<Cluster>,
    ) -> IngressRoute {
        IngressRoute {
            host: host.map(normalize_host),
            path_prefix: path_prefix.to_string(),
            prefix: path_prefix.trim_end_matches('/').to_string(),
            service: service.to_string(),
            namespace: namespace.to_string(),
            port,
            cluster,
        }
    }

    #[inline]
    fn matches(&self, path: &str) -> bool {
        self.prefix.is_empty()
            || (path.starts_with(self.prefix.as_str())
                && matches!(path.as_bytes().get(self.prefix.len()), None | Some(b'/')))
    }
}

/// `host[:port]` as routes compare it: no port, no trailing dot, lower case.
pub(crate) fn normalize_host(authority: &str) -> String {
    host_key(authority).into_owned()
}

/// [`normalize_host`] without an allocation for the usual, already lower-case Host.
fn host_key(authority: &str) -> Cow<'_, str> {
    let host = split_authority(authority).map_or(authority, |(h, _)| h);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Every ingress route, indexed for lookup; immutable once built (it lives in the snapshot).
#[derive(Debug, Default)]
pub(crate) struct IngressTable {
    /// Routes with a host, by host; each list most specific first.
    by_host: HashMap<String, Vec<IngressRoute>>,
    /// Routes without host, most specific first.
    any_host: Vec<IngressRoute>,
}

impl IngressTable {
    pub(crate) fn new(routes: Vec<IngressRoute>) -> IngressTable {
        let mut table = IngressTable::default();
        for r in routes {
            match r.host.clone() {
                Some(h) => table.by_host.entry(h).or_default().push(r),
                None => table.any_host.push(r),
            }
        }
        let order = |a: &IngressRoute, b: &IngressRoute| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)))
        };
        for list in table.by_host.values_mut() {
            list.sort_by(order);
        }
        table.any_host.sort_by(order);
        table
    }

    /// The route for a request with this `Host` (or absolute-form authority) and target (path
    /// and query).
    pub(crate) fn route(&self, authority: &str, target: &str) -> Option<&IngressRoute> {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        if !self.by_host.is_empty() {
            let host = host_key(authority);
            if let Some(r) =
                self.by_host.get(host.as_ref()).and_then(|l| l.iter().find(|r| r.matches(path)))
            {
                return Some(r);
            }
        }
        self.any_host.iter().find(|r| r.matches(path))
    }

    /// The routes in the order they are tried (hosts sorted, then the host-less ones), for
    /// `/config`.
    pub(crate) fn describe(&self) -> Value {
        let mut hosts: Vec<&String> = self.by_host.keys().collect();
        hosts.sort();
        hosts
            .into_iter()
            .flat_map(|h| &self.by_host[h])
            .chain(&self.any_host)
            .map(|r| {
                json!({
                    "host": r.host,
                    "pathPrefix": r.path_prefix,
                    "service": r.service,
                    "namespace": r.namespace,
                    "port": r.port,
                    "endpoints": r.cluster.lb.endpoints().len(),
                })
            })
            .collect()
    }
}

/// The 404 body: what was asked for, so the user can compare it with the routes.
pub(crate) fn no_route(authority: Option<&str>, target: &str) -> String {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match authority.filter(|a| !a.is_empty()) {
        Some(host) => format!("no ingress route for host {host:?} and path {path:?}\n"),
        None => format!("no ingress route for a request without Host, path {path:?}\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use weft_api::kinds::template::Protocol;
    use weft_traffic::{Algorithm, LoadBalancer};

    use super::*;
    use crate::config::Direction;
    use crate::metrics::Metrics;
    use crate::policy::Policy;

    fn route(host: Option<&str>, prefix: &str, service: &str) -> IngressRoute {
        let m = Arc::new(Metrics::new());
        let lb = LoadBalancer::new(Algorithm::RoundRobin, Vec::new(), Instant::now());
        let policy = Policy::fixed(&m, Direction::Gateway, service, Duration::from_secs(1));
        let cluster =
            Cluster::new(&m, Direction::Gateway, service, Protocol::Http, lb, policy.into());
        IngressRoute::new(host, prefix, service, "default", 80, Arc::new(cluster))
    }

    fn pick<'a>(t: &'a IngressTable, host: &str, target: &str) -> Option<&'a str> {
        t.route(host, target).map(|r| r.service.as_str())
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let t = IngressTable::new(vec![route(None, "/api", "api"), route(None, "/", "root")]);
        for (target, want) in [
            ("/api", "api"),
            ("/api/", "api"),
            ("/api/items?x=1", "api"),
            ("/api?x=/y", "api"),
            ("/apis", "root"),
            ("/ap", "root"),
            ("/", "root"),
            ("*", "root"),
        ] {
            assert_eq!(pick(&t, "any", target), Some(want), "{target}");
        }
        let t = IngressTable::new(vec![route(None, "/api/", "api")]);
        assert_eq!(pick(&t, "h", "/api"), Some("api"), "a trailing slash is not required");
        assert_eq!(pick(&t, "h", "/api/x"), Some("api"));
        assert_eq!(pick(&t, "h", "/"), None);
        assert_eq!(pick(&t, "h", "/API/x"), None, "paths are case-sensitive");
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = IngressTable::new(vec![
            route(None, "/", "any-root"),
            route(None, "/shop/cart", "any-cart"),
            route(Some("shop.example"), "/", "shop-root"),
            route(Some("Shop.Example:8080"), "/shop", "shop-shop"),
            route(Some("admin.example."), "/admin", "admin"),
        ]);
        // A host match beats any host-less route, however long its prefix.
        assert_eq!(pick(&t, "shop.example", "/shop/cart/1"), Some("shop-shop"));
        assert_eq!(pick(&t, "SHOP.example:443", "/other"), Some("shop-root"));
        assert_eq!(pick(&t, "shop.example.", "/"), Some("shop-root"));
        // Without a route for the host, the longest host-less prefix.
        assert_eq!(pick(&t, "other.example", "/shop/cart/1"), Some("any-cart"));
        assert_eq!(pick(&t, "", "/x"), Some("any-root"));
        // A host whose routes do not match the path falls back to the host-less ones.
        assert_eq!(pick(&t, "admin.example", "/shop/cart"), Some("any-cart"));
        assert_eq!(pick(&t, "admin.example:80", "/admin/x"), Some("admin"));
        assert_eq!(pick(&t, "[::1]:8080", "/"), Some("any-root"));
    }

    #[test]
    fn ties_go_to_the_first_service_by_namespace_and_name() {
        let t = IngressTable::new(vec![route(None, "/x/", "b"), route(None, "/x", "a")]);
        assert_eq!(pick(&t, "h", "/x/1"), Some("a"));
        let listed = t.describe();
        assert_eq!(listed[0]["service"], "a");
        assert_eq!(listed[1]["pathPrefix"], "/x/");
        assert!(IngressTable::new(Vec::new()).route("h", "/").is_none());
    }

    #[test]
    fn no_route_names_host_and_path() {
        assert_eq!(
            no_route(Some("shop.example:8080"), "/nope?q=1"),
            "no ingress route for host \"shop.example:8080\" and path \"/nope\"\n"
        );
        assert_eq!(
            no_route(None, "/x"),
            "no ingress route for a request without Host, path \"/x\"\n"
        );
    }
}
