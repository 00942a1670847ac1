//! Authorization of inbound calls (`AuthorizationPolicy`, issue 6): which caller may call the
//! instance's service, decided by the inbound sidecar from the identity the mTLS handshake
//! proved.
//!
//! Semantics, in order:
//! 1. a matching `deny` policy denies (deny wins, whatever allows);
//! 2. a target with any `allow` policy is default-deny: a call matching none of them is denied
//!    ("no policy allows it");
//! 3. a target without allow policies is open, unless the namespace's MeshConfig (or the
//!    mesh-wide one) sets `authorization.default: deny`.
//!
//! A policy matches when any of its rules does; a rule when every condition it has holds. A
//! condition on the caller (`from`) needs an identity: a plaintext caller (permissive mode, or
//! mTLS off) matches only rules without `from`. Opaque TCP connections are decided once at
//! accept with no method or path: a rule with `methods` or `paths` never matches them.
//!
//! A rule's path is a prefix by segments: `/api` covers `/api` and `/api/...`, not `/apikeys`.
//! Paths are compared after normalisation ([`normalize_path`]): the query dropped, `%`-escapes
//! of unreserved characters decoded, `//` merged and `.`/`..` segments resolved, so `/admin`
//! cannot be reached as `//admin`, `/./admin`, `/x/../admin` or `/%61dmin`. A path that cannot
//! be normalised safely (an escaped `/` or `\`, a bad escape, `..` above the root) is refused
//! when the target has any path condition, since the app might read it as one of the paths
//! the rules mean.
//!
//! [`Table`] is the pure matcher (unit-tested, benchmarked through [`BenchTable`]); [`Authz`]
//! adds the metric handles and the 403 text.

use std::borrow::Cow;

use prometheus_client::metrics::counter::Counter;
use weft_api::AuthorizationPolicy;
use weft_api::kinds::mesh::{AuthzAction, AuthzSource};
use weft_ca::SpiffeId;

use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// One service; `trust_domain` only when given as a SPIFFE ID.
    Service {
        trust_domain: Option<String>,
        namespace: String,
        service: String,
    },
    Namespace(String),
}

impl Source {
    fn new(s: &AuthzSource, policy_ns: &str) -> Option<Source> {
        if let Some(id) = &s.spiffe {
            let (td, ns, svc) = weft_api::kinds::mesh::parse_spiffe(id).ok()?;
            return Some(Source::Service {
                trust_domain: Some(td.to_string()),
                namespace: ns.to_string(),
                service: svc.to_string(),
            });
        }
        let ns = s.namespace.clone().unwrap_or_else(|| policy_ns.to_string());
        Some(match &s.service {
            Some(svc) => {
                Source::Service { trust_domain: None, namespace: ns, service: svc.clone() }
            }
            None => Source::Namespace(ns),
        })
    }

    #[inline]
    fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Source::Service { trust_domain, namespace, service } => {
                id.service == *service
                    && id.namespace == *namespace
                    && trust_domain.as_ref().is_none_or(|td| *td == id.trust_domain)
            }
            Source::Namespace(ns) => id.namespace == *ns,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    from: Vec<Source>,
    methods: Vec<String>,
    paths: Vec<String>,
}

impl Rule {
    #[inline]
    fn matches(&self, peer: Option<&SpiffeId>, call: &Call<'_>) -> bool {
        if !self.from.is_empty() {
            let Some(id) = peer else { return false };
            if !self.from.iter().any(|s| s.matches(id)) {
                return false;
            }
        }
        if !self.methods.is_empty() {
            let Some(m) = call.method else { return false };
            if !self.methods.iter().any(|x| x == m) {
                return false;
            }
        }
        if !self.paths.is_empty() {
            let Some(p) = call.path else { return false };
            if !self.paths.iter().any(|x| path_matches(x, p)) {
                return false;
            }
        }
        true
    }
}

/// A rule's path covers itself and what continues it after a `/`: `/api` covers `/api` and
/// `/api/items` but not `/apikeys` (as the gateway's `pathPrefix` does). A plain string prefix
/// would let an allow on `/api` also allow `/apikeys`.
fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    /// `namespace/name`.
    name: String,
    rules: Vec<Rule>,
}

impl Compiled {
    /// The index of the first matching rule.
    #[inline]
    fn matching(&self, peer: Option<&SpiffeId>, call: &Call<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(peer, call))
    }
}

/// What is being called: an HTTP request, or (both `None`) a TCP connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Call<'a> {
    pub(crate) method: Option<&'a str>,
    /// Path, with or without the query (the query is not compared).
    pub(crate) path: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub(crate) fn http(method: &'a str, target: &'a str) -> Call<'a> {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        Call { method: Some(method), path: Some(path) }
    }
}

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum By {
    /// Rule `rule` of allow policy `policy`.
    Allow { policy: usize, rule: usize },
    /// Rule `rule` of deny policy `policy`.
    Deny { policy: usize, rule: usize },
    /// Nothing matched: denied because the target has allow policies or the default is deny.
    Default,
    /// Nothing matched and the target is open.
    Open,
}

impl By {
    pub(crate) fn allowed(self) -> bool {
        matches!(self, By::Allow { .. } | By::Open)
    }
}

/// The policies of one target (the services behind one inbound port), compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    deny: Vec<Compiled>,
    allow: Vec<Compiled>,
    default_deny: bool,
}

impl Table {
    /// The policies in `policies` whose target is one of `services` (in `namespace`).
    pub(crate) fn new<'p>(
        namespace: &str,
        services: &[&str],
        policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
        default_deny: bool,
    ) -> Table {
        let mut t = Table { default_deny, ..Table::default() };
        for p in policies {
            let ns = p.metadata.namespace_or_default();
            if ns != namespace || !services.contains(&p.spec.target.service.as_str()) {
                continue;
            }
            let rules = p
                .spec
                .rules
                .iter()
                .map(|r| Rule {
                    from: r.from.iter().filter_map(|s| Source::new(s, ns)).collect(),
                    methods: r.methods.clone(),
                    paths: r.paths.clone(),
                })
                .collect();
            let c = Compiled { name: format!("{ns}/{}", p.metadata.name), rules };
            match p.spec.action {
                AuthzAction::Allow => t.allow.push(c),
                AuthzAction::Deny => t.deny.push(c),
            }
        }
        // Stable order whatever the watch delivered: the first deny (by name) is reported.
        t.deny.sort_by(|a, b| a.name.cmp(&b.name));
        t.allow.sort_by(|a, b| a.name.cmp(&b.name));
        t
    }

    /// Whether any rule has a path condition.
    fn uses_paths(&self) -> bool {
        self.deny.iter().chain(&self.allow).any(|p| p.rules.iter().any(|r| !r.paths.is_empty()))
    }

    /// Whether every call is allowed without looking (no policies, allow default).
    pub(crate) fn is_open(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && !self.default_deny
    }

    /// Decides one call from a caller with identity `peer` (`None`: plaintext).
    #[inline]
    pub(crate) fn decide(&self, peer: Option<&SpiffeId>, call: &Call<'_>) -> By {
        for (i, p) in self.deny.iter().enumerate() {
            if let Some(rule) = p.matching(peer, call) {
                return By::Deny { policy: i, rule };
            }
        }
        for (i, p) in self.allow.iter().enumerate() {
            if let Some(rule) = p.matching(peer, call) {
                return By::Allow { policy: i, rule };
            }
        }
        if self.allow.is_empty() && !self.default_deny { By::Open } else { By::Default }
    }

    fn policy_name(&self, by: By) -> Option<&str> {
        match by {
            By::Allow { policy, .. } => self.allow.get(policy).map(|p| p.name.as_str()),
            By::Deny { policy, .. } => self.deny.get(policy).map(|p| p.name.as_str()),
            By::Default | By::Open => None,
        }
    }
}

/// A target's table with its metric handles (`weft_authz_decisions_total`).
#[derive(Debug)]
pub(crate) struct Authz {
    service: String,
    table: Table,
    allow: Vec<Counter>,
    deny: Vec<Counter>,
    default_deny: Counter,
}

/// The label of decisions no policy made.
const DEFAULT_LABEL: &str = "(default)";

impl Authz {
    /// `None` when the target is open: calls are neither checked nor counted.
    pub(crate) fn new(metrics: &Metrics, service: &str, table: Table) -> Option<Authz> {
        if table.is_open() {
            return None;
        }
        Some(Authz {
            service: service.to_string(),
            allow: table
                .allow
                .iter()
                .map(|p| metrics.authz_decision(service, &p.name, true))
                .collect(),
            deny: table
                .deny
                .iter()
                .map(|p| metrics.authz_decision(service, &p.name, false))
                .collect(),
            default_deny: metrics.authz_decision(service, DEFAULT_LABEL, false),
            table,
        })
    }

    /// The policies in force, for the admin `/config` view.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let names = |v: &[Compiled]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        serde_json::json!({
            "allow": names(&self.table.allow),
            "deny": names(&self.table.deny),
            "defaultDeny": self.table.default_deny || !self.table.allow.is_empty(),
        })
    }

    /// Decides an HTTP request (`target` as sent: origin or absolute form) and counts; a
    /// denial comes with the 403 body.
    pub(crate) fn check_http(
        &self,
        peer: Option<&SpiffeId>,
        method: &str,
        target: &str,
    ) -> Result<(), String> {
        match normalize_path(target) {
            Ok(path) => self.check(peer, &Call { method: Some(method), path: Some(&path) }),
            Err(why) if self.table.uses_paths() => {
                self.default_deny.inc();
                Err(format!(
                    "forbidden: the path of {method} {target:?} cannot be checked against \
                     service {:?}'s path rules: {why}\n",
                    self.service
                ))
            }
            // No rule looks at paths: the path cannot change the decision.
            Err(_) => self.check(peer, &Call { method: Some(method), path: None }),
        }
    }

    /// Decides and counts; a denial comes with the 403 body.
    pub(crate) fn check(&self, peer: Option<&SpiffeId>, call: &Call<'_>) -> Result<(), String> {
        let by = self.table.decide(peer, call);
        match by {
            By::Allow { policy, .. } => {
                if let Some(c) = self.allow.get(policy) {
                    c.inc();
                }
                Ok(())
            }
            By::Open => Ok(()),
            By::Deny { policy, rule } => {
                if let Some(c) = self.deny.get(policy) {
                    c.inc();
                }
                let name = self.table.policy_name(by).unwrap_or("?");
                Err(format!(
                    "forbidden: denied by AuthorizationPolicy {name} (rule {rule}): {} may not {} \
                     service {:?}\n",
                    caller(peer),
                    what(call),
                    self.service
                ))
            }
            By::Default => {
                self.default_deny.inc();
                let why = if self.table.allow.is_empty() {
                    "the MeshConfig sets authorization.default: deny"
                } else {
                    "a service with allow policies refuses every other call"
                };
                Err(format!(
                    "forbidden: no policy allows it: {} may not {} service {:?} ({why})\n",
                    caller(peer),
                    what(call),
                    self.service
                ))
            }
        }
    }
}

fn caller(peer: Option<&SpiffeId>) -> String {
    match peer {
        Some(id) => id.to_string(),
        None => "a caller without a mesh identity (plaintext)".to_string(),
    }
}

fn what(call: &Call<'_>) -> String {
    match (call.method, call.path) {
        (Some(m), Some(p)) => format!("{m} {p} on"),
        _ => "connect to".to_string(),
    }
}

/// The path of a request target, normalised for matching (see the module docs). Origin form
/// (`/a/b?q`) and absolute form (`http://host/a/b?q`) give the same path; `*` and other
/// targets without a leading `/` are returned as they are (no path rule matches them).
pub fn normalize_path(target: &str) -> Result<Cow<'_, str>, &'static str> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = match path.find("://") {
        Some(i) if !path.starts_with('/') => {
            let rest = &path[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        _ => path,
    };
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let simple = !path.contains('%')
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..");
    if simple {
        return Ok(Cow::Borrowed(path));
    }
    // Decode escapes of unreserved characters; keep the others as they are, except those that
    // would change the segments.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(h), Some(l)) =
                (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
            else {
                return Err("a malformed %-escape");
            };
            let c = (h * 16 + l) as u8;
            match c {
                b'/' | b'\\' => return Err("an escaped '/' or '\\'"),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    decoded.push(c as char)
                }
                _ => decoded.push_str(&path[i..i + 3]),
            }
            i += 3;
        } else {
            let ch = path[i..].chars().next().expect("in bounds");
            decoded.push(ch);
            i += ch.len_utf8();
        }
    }
    // Merge slashes and resolve dot segments (RFC 3986, 5.2.4).
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "" | "." => trailing = n == last,
            ".." => {
                if out.pop().is_none() {
                    return Err("'..' above the root");
                }
                trailing = n == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing || out.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// The matcher on its own, for the bench (`benches/authz.rs`): `n` allow policies (one caller
/// each, with method and path conditions) plus one deny policy, all for one target.
#[doc(hidden)]
pub struct BenchTable {
    table: Table,
}

impl BenchTable {
    pub fn new(n: usize) -> BenchTable {
        let policies: Vec<AuthorizationPolicy> = (0..n)
            .map(|i| {
                let rule = format!(
                    "{{ from: [ {{ service: caller{i} }} ], methods: [GET], paths: [/api/] }}"
                );
                policy(&format!("p{i:03}"), "allow", &rule)
            })
            .chain(std::iter::once(policy("zdeny", "deny", "{ paths: [/admin/] }")))
            .collect();
        BenchTable { table: Table::new("shop", &["catalog"], &policies, false) }
    }

    /// Decides a GET of `path` by `spiffe://weft.local/ns/shop/svc/caller<i>`.
    pub fn decide(&self, caller: &weft_ca::SpiffeId, path: &str) -> bool {
        self.table.decide(Some(caller), &Call::http("GET", path)).allowed()
    }
}

fn policy(name: &str, action: &str, rule: &str) -> AuthorizationPolicy {
    let yaml = format!(
        "apiVersion: weft/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name}, namespace: shop }}\nspec: {{ target: {{ service: catalog }}, action: {action}, rules: [ {rule} ] }}\n"
    );
    let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).expect("policy yaml");
    crate::control::validate(&weft_api::kinds::AUTHORIZATION_POLICY, v).expect("valid policy")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, svc: &str) -> SpiffeId {
        SpiffeId::new("weft.local", ns, svc)
    }

    fn table(ps: &[AuthorizationPolicy], default_deny: bool) -> Table {
        Table::new("shop", &["catalog"], ps, default_deny)
    }

    const GET: Call<'static> = Call { method: Some("GET"), path: Some("/items") };

    #[test]
    fn no_policies_is_open_unless_default_deny() {
        let t = table(&[], false);
        assert!(t.is_open());
        assert_eq!(t.decide(None, &GET), By::Open);
        let t = table(&[], true);
        assert!(!t.is_open());
        assert_eq!(t.decide(Some(&id("shop", "web")), &GET), By::Default);
    }

    #[test]
    fn an_allow_policy_makes_the_target_default_deny() {
        let t = table(&[policy("web", "allow", "{ from: [ { service: web } ] }")], false);
        assert_eq!(t.decide(Some(&id("shop", "web")), &GET), By::Allow { policy: 0, rule: 0 });
        assert_eq!(t.decide(Some(&id("shop", "cart")), &GET), By::Default);
        // Same service name in another namespace is another caller.
        assert_eq!(t.decide(Some(&id("other", "web")), &GET), By::Default);
        // Policies for another target or namespace do not count.
        let p = policy("x", "allow", "{ from: [ { service: web } ] }");
        assert!(Table::new("shop", &["cart"], [&p], false).is_open());
        assert!(Table::new("prod", &["catalog"], [&p], false).is_open());
    }

    #[test]
    fn deny_wins() {
        let t = table(
            &[
                policy("all", "allow", "{}"),
                policy("no-cart", "deny", "{ from: [ { service: cart } ] }"),
            ],
            false,
        );
        assert_eq!(t.decide(Some(&id("shop", "cart")), &GET), By::Deny { policy: 0, rule: 0 });
        assert_eq!(t.policy_name(By::Deny { policy: 0, rule: 0 }), Some("shop/no-cart"));
        assert!(t.decide(Some(&id("shop", "web")), &GET).allowed());
        // A deny alone does not close the target.
        let t = table(&[policy("no-cart", "deny", "{ from: [ { service: cart } ] }")], false);
        assert_eq!(t.decide(Some(&id("shop", "web")), &GET), By::Open);
    }

    #[test]
    fn a_caller_without_identity_matches_only_rules_without_from() {
        let t = table(
            &[
                policy("ns", "allow", "{ from: [ { namespace: shop } ] }"),
                policy("health", "allow", "{ methods: [GET], paths: [/healthz] }"),
            ],
            false,
        );
        assert_eq!(t.decide(None, &GET), By::Default);
        let health = Call::http("GET", "/healthz?full=1");
        assert_eq!(t.decide(None, &health), By::Allow { policy: 0, rule: 0 });
        assert!(t.decide(Some(&id("shop", "anyone")), &GET).allowed());
    }

    #[test]
    fn methods_paths_and_tcp() {
        let t = table(
            &[policy(
                "reads",
                "allow",
                "{ from: [ { spiffe: \"spiffe://weft.local/ns/shop/svc/web\" } ], methods: [GET, HEAD], paths: [/api/, /static/] }",
            )],
            false,
        );
        let web = id("shop", "web");
        assert!(t.decide(Some(&web), &Call::http("GET", "/api/items")).allowed());
        assert!(t.decide(Some(&web), &Call::http("HEAD", "/static/x.css")).allowed());
        assert!(!t.decide(Some(&web), &Call::http("POST", "/api/items")).allowed());
        assert!(!t.decide(Some(&web), &Call::http("GET", "/apix")).allowed());
        assert!(!t.decide(Some(&web), &Call::http("GET", "/admin?/api/")).allowed());
        // Another trust domain is another caller when the policy names a SPIFFE ID.
        let foreign = SpiffeId::new("other.domain", "shop", "web");
        assert!(!t.decide(Some(&foreign), &Call::http("GET", "/api/items")).allowed());
        // TCP has no method or path: the rule cannot match it.
        assert!(!t.decide(Some(&web), &Call::default()).allowed());
        let t = table(&[policy("web", "allow", "{ from: [ { service: web } ] }")], false);
        assert!(t.decide(Some(&web), &Call::default()).allowed());
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        for (prefix, path, want) in [
            ("/api", "/api", true),
            ("/api", "/api/items", true),
            ("/api", "/apikeys", false),
            ("/api", "/ap", false),
            ("/api/", "/api/items", true),
            ("/api/", "/api/", true),
            ("/api/", "/api", false),
            ("/", "/anything/at/all", true),
            ("/admin", "/administrator", false),
            ("/admin", "/admin/users", true),
        ] {
            assert_eq!(path_matches(prefix, path), want, "{prefix} vs {path}");
        }
        // An allow on /api no longer lets /apikeys through; a deny on /admin spares
        // /administrator but still covers /admin itself.
        let t = table(
            &[
                policy("api", "allow", "{ paths: [/api] }"),
                policy("admin", "allow", "{ paths: [/administrator] }"),
                policy("no-admin", "deny", "{ paths: [/admin] }"),
            ],
            false,
        );
        let web = id("shop", "web");
        assert!(t.decide(Some(&web), &Call::http("GET", "/api")).allowed());
        assert!(t.decide(Some(&web), &Call::http("GET", "/api/items?x=1")).allowed());
        assert!(!t.decide(Some(&web), &Call::http("GET", "/apikeys")).allowed());
        assert!(t.decide(Some(&web), &Call::http("GET", "/administrator")).allowed());
        assert!(!t.decide(Some(&web), &Call::http("GET", "/admin")).allowed());
    }

    #[test]
    fn messages_name_the_policy_and_count() {
        let m = Metrics::new();
        let t = table(
            &[
                policy("web", "allow", "{ from: [ { service: web } ] }"),
                policy("no-admin", "deny", "{ paths: [/admin] }"),
            ],
            false,
        );
        let a = Authz::new(&m, "catalog", t).unwrap();
        let e = a.check(Some(&id("shop", "web")), &Call::http("GET", "/admin/x")).unwrap_err();
        assert!(e.contains("AuthorizationPolicy shop/no-admin (rule 0)"), "{e}");
        let e = a.check(Some(&id("shop", "cart")), &GET).unwrap_err();
        assert!(e.contains("no policy allows it") && e.contains("svc/cart"), "{e}");
        assert!(a.check(Some(&id("shop", "web")), &GET).is_ok());
        let text = m.encode();
        for line in [
            "weft_authz_decisions_total{service=\"catalog\",policy=\"shop/web\",result=\"allow\"} 1",
            "weft_authz_decisions_total{service=\"catalog\",policy=\"shop/no-admin\",result=\"deny\"} 1",
            "weft_authz_decisions_total{service=\"catalog\",policy=\"(default)\",result=\"deny\"} 1",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(Authz::new(&m, "catalog", table(&[], false)).is_none());
    }

    #[test]
    fn bench_table_decides() {
        let t = BenchTable::new(50);
        assert!(t.decide(&id("shop", "caller49"), "/api/items"));
        assert!(!t.decide(&id("shop", "caller49"), "/admin/x"));
        assert!(!t.decide(&id("shop", "stranger"), "/api/items"));
    }

    #[test]
    fn paths_are_normalised_before_matching() {
        let n = |t: &str| normalize_path(t).map(|p| p.into_owned());
        for (target, want) in [
            ("/api/items?x=1", "/api/items"),
            ("/admin", "/admin"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/../admin/", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/a%2Db", "/a-b"),
            ("/a%20b", "/a%20b"),
            ("/a/b/..", "/a/"),
            ("/.", "/"),
            ("http://catalog.shop/admin/x?y", "/admin/x"),
            ("http://catalog.shop", "/"),
            ("*", "*"),
            ("/caf\u{e9}//x", "/caf\u{e9}/x"),
        ] {
            assert_eq!(n(target).as_deref(), Ok(want), "{target}");
        }
        for bad in ["/a%2Fb", "/a%5cb", "/%zz", "/%4", "/..", "/a/../../b"] {
            assert!(n(bad).is_err(), "{bad} must not normalise");
        }
        // Borrowed when there is nothing to do: the common case allocates nothing.
        assert!(matches!(normalize_path("/api/items?x"), Ok(Cow::Borrowed("/api/items"))));
    }

    /// Regression: a path-based deny could be walked around by writing the path another way.
    #[test]
    fn a_path_deny_cannot_be_bypassed_by_spelling_the_path_differently() {
        let m = Metrics::new();
        let t = table(
            &[
                policy("web", "allow", "{ from: [ { service: web } ] }"),
                policy("no-admin", "deny", "{ paths: [/admin] }"),
            ],
            false,
        );
        let a = Authz::new(&m, "catalog", t).unwrap();
        let web = id("shop", "web");
        for target in ["//admin", "/./admin/x", "/api/../admin", "/%61dmin", "http://c/admin"] {
            let e = a.check_http(Some(&web), "GET", target).unwrap_err();
            assert!(e.contains("no-admin"), "{target}: {e}");
        }
        let e = a.check_http(Some(&web), "GET", "/adm%69n%2Fx").unwrap_err();
        assert!(e.contains("cannot be checked") && e.contains("escaped"), "{e}");
        assert!(a.check_http(Some(&web), "GET", "/api/items").is_ok());
        // Without path conditions, an odd path cannot change the decision, so it passes.
        let open = table(&[policy("web", "allow", "{ from: [ { service: web } ] }")], false);
        let a = Authz::new(&m, "pricing", open).unwrap();
        assert!(a.check_http(Some(&web), "GET", "/a%2Fb").is_ok());
    }
}
