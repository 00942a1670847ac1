//! Object metadata shared by every kind, and the conventions for the system-written fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{self, Validator};

/// The api group and version of every kind.
pub const API_VERSION: &str = "weft/v1";

/// The namespace objects land in when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Identity and bookkeeping of an object. `name` and `namespace` are the user's; the rest is
/// written by the server and may be sent back unchanged (what `get -o yaml` prints applies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Unique within its kind and namespace; a DNS-1123 label (node names may contain dots).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
    /// Defaults to `default`. Absent on cluster-scoped kinds (Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 63))]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for tools and people; not used for selection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The store revision of the object's last write. Send it back to make a write conditional
    /// (409 Conflict if someone wrote in between); omit it for last-writer-wins.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "resource_version::deserialize"
    )]
    #[schemars(with = "Option<ResourceVersionSchema>")]
    pub resource_version: Option<String>,
    /// Set by the server at creation; never changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// RFC 3339, set by the server at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Incremented by the server each time `spec` changes; controllers report the generation
    /// they have acted on as `status.observedGeneration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl ObjectMeta {
    pub fn named(name: impl Into<String>) -> ObjectMeta {
        ObjectMeta { name: name.into(), ..ObjectMeta::default() }
    }

    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The revision as a number, if set and numeric.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version.as_deref().and_then(|v| v.parse().ok())
    }

    pub(crate) fn validate(&self, v: &mut Validator, namespaced: bool, subdomain_names: bool) {
        let check = if subdomain_names { validate::dns_subdomain } else { validate::dns_label };
        if self.name.is_empty() {
            v.error("metadata.name", "is required");
        } else if let Err(e) = check(&self.name) {
            v.error("metadata.name", e);
        }
        match (&self.namespace, namespaced) {
            (Some(ns), true) => {
                if let Err(e) = validate::dns_label(ns) {
                    v.error("metadata.namespace", e);
                }
            }
            (Some(_), false) => {
                v.error("metadata.namespace", "must be empty: this kind is cluster-scoped")
            }
            (None, _) => {}
        }
        if let Some(rv) = &self.resource_version
            && !rv.is_empty()
            && rv.parse::<u64>().is_err()
        {
            v.error("metadata.resourceVersion", format!("{rv:?} is not a revision number"));
        }
        validate::labels(v, "metadata.labels", &self.labels);
        for key in self.annotations.keys() {
            if key.is_empty() || key.len() > 253 {
                v.error(
                    "metadata.annotations",
                    format!("annotation key {key:?} must be 1-253 characters"),
                );
            }
        }
    }
}

/// Schema stand-in: a revision is sent as a string (Kubernetes style) or a number.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ResourceVersionSchema {
    Text(String),
    Number(u64),
}

mod resource_version {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(u64),
    }

    /// Accepts `"42"` and `42`: people paste numbers, Kubernetes tools send strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match Option::<Either>::deserialize(d)? {
            None => None,
            Some(Either::Text(s)) => Some(s),
            Some(Either::Number(n)) => Some(n.to_string()),
        })
    }
}

/// A status condition, Kubernetes style: the latest observation of one aspect of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// e.g. `Available`, `Progressing`, `Scheduled`, `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}
