//! Outbound resolution: which service a request names.
//!
//! The name comes from an absolute-form target (`GET http://catalog/items`, as clients honouring
//! `HTTP_PROXY` send) or else from `Host`. `catalog` is a Service in the instance's own
//! namespace; `catalog.prod` one in namespace `prod`; suffixes `.svc`, `.svc.cluster` and
//! `.svc.cluster.local` are accepted and ignored, as is a trailing dot. The port picks the
//! Service port with that `port`; without one, port 80 — or the service's only port, if it has
//! just one.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::routes::{ServiceRoutes, Snapshot};

/// Why a name did not resolve (the 503 body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unresolved {
    NoService(String),
    NoPort(String),
}

/// Splits `host[:port]`; `None` for a bad port. IPv6 literals keep their brackets.
pub(crate) fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    // Userinfo is not part of the name.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            if port.is_empty() {
                return Some((host, None));
            }
            port.parse::<u16>().ok().map(|p| (host, Some(p)))
        }
        _ => Some((authority, None)),
    }
}

/// The host with the accepted suffixes removed: `catalog` or `catalog.prod`.
pub(crate) fn service_name(host: &str) -> &str {
    let host = host.strip_suffix('.').unwrap_or(host);
    for suffix in [".svc.cluster.local", ".svc.cluster", ".svc"] {
        if let Some(h) = host.strip_suffix(suffix) {
            return h;
        }
    }
    host
}

/// Resolves `authority` to the cluster of one service port.
pub(crate) fn resolve<'a>(
    snap: &'a Snapshot,
    authority: &str,
) -> Result<&'a Arc<Cluster>, Unresolved> {
    let Some((host, port)) = split_authority(authority) else {
        return Err(Unresolved::NoService(format!(
            "{authority:?} is not a host[:port] this proxy can route\n"
        )));
    };
    let lower;
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = host.to_ascii_lowercase();
        lower.as_str()
    } else {
        host
    };
    let name = service_name(host);
    let Some(svc) = snap.service(name) else {
        return Err(Unresolved::NoService(snap.unknown_service(name)));
    };
    pick_port(svc, port).ok_or_else(|| {
        let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
        Unresolved::NoPort(format!(
            "service {:?} in namespace {:?} has no port {} (ports: {})\n",
            svc.name,
            svc.namespace,
            port.unwrap_or(80),
            ports.join(", ")
        ))
    })
}

fn pick_port(svc: &ServiceRoutes, port: Option<u16>) -> Option<&Arc<Cluster>> {
    let want = port.unwrap_or(80);
    if let Some(p) = svc.ports.iter().find(|p| p.port == want) {
        return Some(&p.cluster);
    }
    match (port, svc.ports.as_slice()) {
        (None, [only]) => Some(&only.cluster),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_and_names() {
        assert_eq!(split_authority("catalog"), Some(("catalog", None)));
        assert_eq!(split_authority("catalog:8080"), Some(("catalog", Some(8080))));
        assert_eq!(split_authority("catalog:"), Some(("catalog", None)));
        assert_eq!(split_authority("u:p@catalog:81"), Some(("catalog", Some(81))));
        assert_eq!(split_authority("[::1]:80"), Some(("[::1]", Some(80))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_authority("catalog:99999"), None);
        assert_eq!(split_authority("catalog:x"), None);
        assert_eq!(service_name("catalog.prod.svc.cluster.local"), "catalog.prod");
        assert_eq!(service_name("catalog.prod.svc"), "catalog.prod");
        assert_eq!(service_name("catalog."), "catalog");
        assert_eq!(service_name("catalog"), "catalog");
    }
}
