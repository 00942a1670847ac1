//! Shapes that travel over the api besides objects themselves: lists, watch events, long-poll
//! batches, apply results, tokens.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A list response: `{"kind": "DeploymentList", "metadata": {"resourceVersion": "N"}, "items": [...]}`.
/// `resourceVersion` is the store revision the list was read at: watch from it to see every
/// later change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList {
    pub api_version: String,
    pub kind: String,
    pub metadata: ListMeta,
    pub items: Vec<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    pub resource_version: String,
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// No object changed; `object.metadata.resourceVersion` is a revision the watcher has
    /// seen everything up to, so it can resume from there without re-listing.
    Bookmark,
    /// The watch cannot continue (its revision was compacted: re-list). `object` is an error body.
    Error,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        })
    }
}

/// One line of a watch stream (newline-delimited JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub object: Value,
}

impl WatchEvent {
    /// The revision this event brings the watcher to.
    pub fn revision(&self) -> Option<u64> {
        self.object.get("metadata")?.get("resourceVersion")?.as_str()?.parse().ok()
    }
}

/// A long-poll answer: the events after the requested revision (possibly none, at timeout),
/// and the revision to ask from next time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    pub resource_version: String,
    pub events: Vec<WatchEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for ApplyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub action: ApplyAction,
    pub resource_version: String,
}

/// The answer to `POST /api/v1/apply`: one result per object, in the order sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    pub results: Vec<ApplyResult>,
}

/// What a token may do (DESIGN.md "API").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Read everything (objects, watches, metrics), write nothing.
    Viewer,
    /// A node agent: read everything, write Nodes and Instance status.
    Agent,
    /// A sidecar: read Services, Endpoints, Instances and policies.
    Proxy,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Viewer, Role::Agent, Role::Proxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Proxy => "proxy",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (use admin, viewer, agent or proxy)"))
    }
}

/// `POST /api/v1/tokens` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenRequest {
    pub role: Role,
    /// Lifetime such as `24h`; no expiry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<crate::duration::Duration>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Binds a `proxy` token to one node: the workload certificates it may ask for are those
    /// of instances on that node. Agents must bind the proxy tokens they mint to their node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Binds a node-bound `proxy` token further, to one Instance (`namespace/name`) on that
    /// node: its only workload certificate is that instance's, and deleting the instance
    /// revokes it. What an agent gives each sidecar; agents must give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// A token as listed: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The node a `proxy` token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The Instance (`namespace/name`) a `proxy` token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The answer to token creation: the only time the secret is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenInfo,
}

/// `GET /api/v1/kinds`: discovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindList {
    pub kinds: Vec<KindDescription>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindDescription {
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    /// Written by the system (agents, controllers) rather than by users.
    pub system: bool,
    /// JSON Schema (2020-12) of the kind's objects.
    pub schema: Value,
}
