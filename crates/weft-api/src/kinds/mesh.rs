//! Zero-trust settings of the mesh (issue 6): who may call a service (`AuthorizationPolicy`)
//! and how a namespace's sidecars treat plaintext and unmatched calls (`MeshConfig`).
//!
//! Both are enforced by the inbound sidecar of the called instance; the api only checks them.
//! The matching semantics (deny wins, a target with an allow policy is default-deny, ...) live
//! in the proxy, next to the code that applies them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Validator, dns_label};

/// The only name a MeshConfig may have: one per namespace.
pub const MESH_CONFIG_NAME: &str = "default";

/// The namespace whose MeshConfig applies to every namespace without its own.
pub const MESH_WIDE_NAMESPACE: &str = "weft-system";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The service whose inbound calls this policy governs (same namespace).
    pub target: PolicyTarget,
    /// What a matching call gets.
    pub action: AuthzAction,
    /// The call matches the policy when it matches any rule.
    pub rules: Vec<AuthzRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTarget {
    /// A Service name in the policy's namespace.
    pub service: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthzAction {
    Allow,
    Deny,
}

impl AuthzAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzAction::Allow => "allow",
            AuthzAction::Deny => "deny",
        }
    }
}

/// One rule: every condition given must hold (an empty list means any).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzRule {
    /// Callers, any of which matches. A condition on the caller needs its identity, so a
    /// plaintext caller (permissive mode) never matches a rule with `from`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AuthzSource>,
    /// HTTP methods, upper case (`GET`). Never matches an opaque TCP connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path prefixes by segment, each starting with `/`: `/api` covers `/api` and `/api/...`,
    /// not `/apikeys`. Never matches an opaque TCP connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// A caller: its full SPIFFE ID, a service (in `namespace`, by default the policy's), or every
/// service of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzSource {
    /// `spiffe://<trust-domain>/ns/<namespace>/svc/<service>`; alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The parts of `spiffe://<trust-domain>/ns/<namespace>/svc/<service>`, or why it is not one.
pub fn parse_spiffe(uri: &str) -> Result<(&str, &str, &str), String> {
    const FORM: &str = "spiffe://<trust-domain>/ns/<namespace>/svc/<service>";
    let bad = || format!("{uri:?} is not a workload identity ({FORM})");
    let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
    let (td, path) = rest.split_once('/').ok_or_else(bad)?;
    let mut parts = path.split('/');
    let (Some("ns"), Some(ns), Some("svc"), Some(svc), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let td_ok = !td.is_empty()
        && td.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !td_ok || dns_label(ns).is_err() || dns_label(svc).is_err() {
        return Err(bad());
    }
    Ok((td, ns, svc))
}

impl AuthorizationPolicySpec {
    /// A source naming only a service means that service in the policy's own namespace.
    pub(crate) fn apply_defaults(&mut self, namespace: &str) {
        for rule in &mut self.rules {
            for s in &mut rule.from {
                if s.service.is_some() && s.namespace.is_none() && s.spiffe.is_none() {
                    s.namespace = Some(namespace.to_string());
                }
            }
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        if let Err(e) = dns_label(&self.target.service) {
            v.error("spec.target.service", format!("{:?} {e}", self.target.service));
        }
        if self.rules.is_empty() {
            v.error(
                "spec.rules",
                "must have at least one rule (a rule with no conditions, {}, matches every call)",
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            for (j, s) in rule.from.iter().enumerate() {
                let at = format!("{at}.from[{j}]");
                match (&s.spiffe, &s.namespace, &s.service) {
                    (None, None, None) => {
                        v.error(at, "names no caller: give spiffe, namespace or service");
                    }
                    (Some(id), ns, svc) => {
                        if ns.is_some() || svc.is_some() {
                            v.error(
                                format!("{at}.spiffe"),
                                "goes alone: the SPIFFE ID already names namespace and service",
                            );
                        } else if let Err(e) = parse_spiffe(id) {
                            v.error(format!("{at}.spiffe"), e);
                        }
                    }
                    (None, ns, svc) => {
                        for (field, value) in [("namespace", ns), ("service", svc)] {
                            if let Some(x) = value
                                && let Err(e) = dns_label(x)
                            {
                                v.error(format!("{at}.{field}"), format!("{x:?} {e}"));
                            }
                        }
                    }
                }
            }
            for (j, m) in rule.methods.iter().enumerate() {
                let token =
                    !m.is_empty() && m.len() <= 20 && m.bytes().all(|b| b.is_ascii_uppercase());
                if !token {
                    let hint = if m.bytes().any(|b| b.is_ascii_lowercase()) {
                        format!(" (methods are upper case: {:?})", m.to_ascii_uppercase())
                    } else {
                        String::new()
                    };
                    v.error(
                        format!("{at}.methods[{j}]"),
                        format!("{m:?} is not an HTTP method such as GET or POST{hint}"),
                    );
                }
            }
            for (j, p) in rule.paths.iter().enumerate() {
                if !p.starts_with('/') {
                    v.error(
                        format!("{at}.paths[{j}]"),
                        format!("{p:?} must start with '/' (a path prefix such as /api/)"),
                    );
                }
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshConfigSpec {
    /// How inbound ports treat plaintext: `strict` refuses it, `permissive` serves it (for
    /// migration). Applied live by sidecars started with mTLS (`--mtls` other than `off`).
    #[serde(default)]
    pub mtls: MeshMtls,
    #[serde(default)]
    pub authorization: MeshAuthorization,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeshMtls {
    #[default]
    Strict,
    Permissive,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshAuthorization {
    /// What a call to a service without allow policies gets: `allow` (open) or `deny`.
    #[serde(default)]
    pub default: AuthzDefault,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthzDefault {
    #[default]
    Allow,
    Deny,
}

impl MeshConfigSpec {
    pub(crate) fn validate(&self, name: &str, v: &mut Validator) {
        if name != MESH_CONFIG_NAME {
            v.error(
                "metadata.name",
                format!(
                    "{name:?}: a namespace has one MeshConfig, named {MESH_CONFIG_NAME:?} \
                     (the one in namespace {MESH_WIDE_NAMESPACE} applies to every namespace \
                     without its own)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        assert_eq!(
            parse_spiffe("spiffe://weft.local/ns/shop/svc/web"),
            Ok(("weft.local", "shop", "web"))
        );
        for bad in [
            "spiffe://weft.local/ns/shop",
            "http://weft.local/ns/shop/svc/web",
            "spiffe:///ns/shop/svc/web",
            "spiffe://weft.local/ns/Shop/svc/web",
            "spiffe://weft.local/ns/shop/svc/web/x",
        ] {
            assert!(parse_spiffe(bad).is_err(), "{bad}");
        }
    }
}
