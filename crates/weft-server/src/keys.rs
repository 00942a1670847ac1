//! Where objects live in the store: `/registry/{plural}/{namespace}/{name}` for namespaced
//! kinds, `/registry/{plural}/{name}` for cluster-scoped ones. Tokens live outside `/registry/`
//! so that the object watch cache never carries them.

use weft_api::KindInfo;
use weft_api::kinds;

pub const REGISTRY: &str = "/registry/";
pub const TOKENS: &str = "/weft/tokens/";

pub fn object(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    match (kind.namespaced, namespace) {
        (true, Some(ns)) => format!("{REGISTRY}{}/{ns}/{name}", kind.plural),
        _ => format!("{REGISTRY}{}/{name}", kind.plural),
    }
}

/// The prefix holding a kind's objects, in one namespace or all.
pub fn prefix(kind: &KindInfo, namespace: Option<&str>) -> String {
    match (kind.namespaced, namespace) {
        (true, Some(ns)) => format!("{REGISTRY}{}/{ns}/", kind.plural),
        _ => format!("{REGISTRY}{}/", kind.plural),
    }
}

pub fn token(id: &str) -> String {
    format!("{TOKENS}{id}")
}

/// Splits an object key back into kind, namespace and name.
pub fn parse(key: &str) -> Option<(&'static KindInfo, Option<&str>, &str)> {
    let rest = key.strip_prefix(REGISTRY)?;
    let (plural, rest) = rest.split_once('/')?;
    let kind = kinds::by_plural(plural)?;
    if kind.namespaced {
        let (ns, name) = rest.split_once('/')?;
        Some((kind, Some(ns), name))
    } else {
        Some((kind, None, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = object(&kinds::DEPLOYMENT, Some("default"), "web");
        assert_eq!(k, "/registry/deployments/default/web");
        let (kind, ns, name) = parse(&k).unwrap();
        assert_eq!((kind.kind, ns, name), ("Deployment", Some("default"), "web"));
        let n = object(&kinds::NODE, None, "node-1.local");
        assert_eq!(n, "/registry/nodes/node-1.local");
        assert_eq!(parse(&n).unwrap().2, "node-1.local");
        assert!(parse("/registry/unknown/x").is_none());
        assert!(parse("/weft/tokens/abc").is_none());
        // a namespace prefix must not match a longer namespace
        assert!(
            !prefix(&kinds::DEPLOYMENT, Some("a"))
                .starts_with(&prefix(&kinds::DEPLOYMENT, Some("ab")))
        );
    }
}
