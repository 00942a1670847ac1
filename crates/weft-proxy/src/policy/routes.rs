//! Matching a request to a Service's `traffic.routes`: the longest `pathPrefix` whose `methods`
//! (all, when empty) include the request's method. Prefixes are compared with the path alone
//! (the query is not part of it), byte for byte.

/// What a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteMatch {
    pub(crate) prefix: String,
    pub(crate) methods: Vec<String>,
}

impl RouteMatch {
    pub(crate) fn new(prefix: &str, methods: &[String]) -> RouteMatch {
        RouteMatch { prefix: prefix.to_string(), methods: methods.to_vec() }
    }

    #[inline]
    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        path.starts_with(self.prefix.as_str())
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// The path of an origin-form target, without its query.
#[inline]
pub(crate) fn path_only(target: &str) -> &str {
    target.split_once('?').map_or(target, |(p, _)| p)
}

/// The route with the longest matching prefix (on a tie, one that names methods wins: it is
/// the more specific).
pub(crate) fn longest<'a, R>(
    routes: &'a [R],
    matcher: impl Fn(&R) -> &RouteMatch,
    method: &str,
    target: &str,
) -> Option<&'a R> {
    let path = path_only(target);
    let mut best: Option<(&R, usize, bool)> = None;
    for r in routes {
        let m = matcher(r);
        if !m.matches(method, path) {
            continue;
        }
        let key = (m.prefix.len(), !m.methods.is_empty());
        if best.is_none_or(|(_, len, named)| key > (len, named)) {
            best = Some((r, key.0, key.1));
        }
    }
    best.map(|(r, _, _)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_with_methods() {
        let routes = [
            RouteMatch::new("/", &[]),
            RouteMatch::new("/api", &[]),
            RouteMatch::new("/api", &["POST".into()]),
            RouteMatch::new("/api/orders", &["GET".into(), "HEAD".into()]),
        ];
        let pick =
            |m, p| longest(&routes, |r| r, m, p).map(|r| (r.prefix.as_str(), r.methods.len()));
        assert_eq!(pick("GET", "/api/orders/1?x=/y"), Some(("/api/orders", 2)));
        assert_eq!(pick("POST", "/api/orders/1"), Some(("/api", 1)));
        assert_eq!(pick("GET", "/api/x"), Some(("/api", 0)));
        assert_eq!(pick("GET", "/apix"), Some(("/api", 0)), "a prefix is a byte prefix");
        assert_eq!(pick("GET", "/other"), Some(("/", 0)));
        assert_eq!(pick("GET", "?/api"), None, "the query is not the path");
        assert_eq!(longest(&routes[1..], |r| r, "GET", "/x"), None);
    }
}
