//! The kinds of the api, and the registry that lets the server and CLI handle any of them by
//! name: aliases, scope, normalisation (decode, default, validate) and JSON schema.

pub mod autoscaler;
pub mod deployment;
pub mod endpoints;
pub mod instance;
pub mod mesh;
pub mod node;
pub mod nodepool;
pub mod service;
pub mod template;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::meta::{API_VERSION, DEFAULT_NAMESPACE, ObjectMeta};
use crate::validate::Validator;

use autoscaler::{AutoscalerSpec, AutoscalerStatus};
use deployment::{DeploymentSpec, DeploymentStatus};
use endpoints::EndpointsSpec;
use instance::{InstanceSpec, InstanceStatus};
use mesh::{AuthorizationPolicySpec, MeshConfigSpec};
use node::{NodeSpec, NodeStatus};
use nodepool::{NodePoolSpec, NodePoolStatus};
use service::ServiceSpec;

/// A typed api object. Implemented by every kind; generic clients and controllers work
/// through it.
pub trait Resource:
    Serialize + DeserializeOwned + JsonSchema + Clone + std::fmt::Debug + Send + Sync + 'static
{
    const KIND: &'static str;
    fn info() -> &'static KindInfo;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Fills defaults serde cannot express (they depend on other fields).
    fn apply_defaults(&mut self);
    /// Checks the spec, recording every invalid field.
    fn validate_spec(&self, v: &mut Validator);
}

/// An empty status, for kinds whose state lives entirely in their spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoStatus {}

macro_rules! kind {
    (
        $(#[$doc:meta])*
        $name:ident { spec: $spec:ty $(= $spec_default:ident)?, status: $status:ty },
        info: $info:ident,
        defaults: |$d:ident| $defaults:expr,
        validate: |$s:ident, $v:ident| $validate:expr $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            /// Always `weft/v1`.
            pub api_version: String,
            #[doc = concat!("Always `", stringify!($name), "`.")]
            pub kind: String,
            pub metadata: ObjectMeta,
            $(#[serde($spec_default)])?
            pub spec: $spec,
            /// Written by the system through the status subresource; ignored on other writes.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        impl $name {
            /// A new object with no status.
            pub fn new(metadata: ObjectMeta, spec: $spec) -> $name {
                $name {
                    api_version: API_VERSION.to_string(),
                    kind: stringify!($name).to_string(),
                    metadata,
                    spec,
                    status: None,
                }
            }
        }

        impl Resource for $name {
            const KIND: &'static str = stringify!($name);
            fn info() -> &'static KindInfo {
                &$info
            }
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn apply_defaults(&mut self) {
                let $d = self;
                $defaults
            }
            fn validate_spec(&self, $v: &mut Validator) {
                let $s = self;
                $validate
            }
        }
    };
}

kind! {
    /// Keeps `replicas` instances of a template running; rolls out template changes.
    Deployment { spec: DeploymentSpec, status: DeploymentStatus },
    info: DEPLOYMENT,
    defaults: |d| d.spec.apply_defaults(),
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// A stable name for a set of instances, and the traffic policy for calls to it.
    Service { spec: ServiceSpec, status: NoStatus },
    info: SERVICE,
    defaults: |_d| {},
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// Scales a deployment from its metrics.
    Autoscaler { spec: AutoscalerSpec, status: AutoscalerStatus },
    info: AUTOSCALER,
    defaults: |d| d.spec.apply_defaults(),
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// A machine running an agent. Cluster-scoped.
    Node { spec: NodeSpec = default, status: NodeStatus },
    info: NODE,
    defaults: |_d| {},
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// Nodes a provider adds and removes as instances need room. Cluster-scoped.
    NodePool { spec: NodePoolSpec, status: NodePoolStatus },
    info: NODE_POOL,
    defaults: |d| d.spec.apply_defaults(),
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// One running copy of a deployment's template.
    Instance { spec: InstanceSpec, status: InstanceStatus },
    info: INSTANCE,
    defaults: |d| d.spec.apply_defaults(),
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// The ready addresses behind a service.
    Endpoints { spec: EndpointsSpec = default, status: NoStatus },
    info: ENDPOINTS,
    defaults: |_d| {},
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// Who may call a service: allow or deny rules on the caller's identity, namespace, method
    /// and path, enforced by the service's inbound sidecars.
    AuthorizationPolicy { spec: AuthorizationPolicySpec, status: NoStatus },
    info: AUTHORIZATION_POLICY,
    defaults: |d| {
        let ns = d.metadata.namespace_or_default().to_string();
        d.spec.apply_defaults(&ns)
    },
    validate: |s, v| s.spec.validate(v),
}

kind! {
    /// A namespace's mesh settings (mTLS mode, authorization default); only `default` exists.
    MeshConfig { spec: MeshConfigSpec = default, status: NoStatus },
    info: MESH_CONFIG,
    defaults: |_d| {},
    validate: |s, v| s.spec.validate(&s.metadata.name, v),
}

/// How the api names and handles one kind.
pub struct KindInfo {
    /// `Deployment`.
    pub kind: &'static str,
    /// `deployments`: the path segment and the store key segment.
    pub plural: &'static str,
    /// `deployment`.
    pub singular: &'static str,
    /// Short forms the CLI accepts: `deploy`.
    pub short: &'static [&'static str],
    /// Namespaced kinds live under `/namespaces/{ns}/`; cluster-scoped ones (Node) do not.
    pub namespaced: bool,
    /// Written by the system rather than by users (shown as such in discovery).
    pub system: bool,
    normalize: fn(Value) -> Result<Value, ApiError>,
    schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    subschema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

impl std::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind)
    }
}

impl PartialEq for KindInfo {
    fn eq(&self, other: &KindInfo) -> bool {
        self.kind == other.kind
    }
}

impl KindInfo {
    /// Decodes, defaults and validates an object of this kind, returning its canonical JSON
    /// (defaults written out, quantities and durations in canonical form). Namespaced objects
    /// without a namespace get `default`.
    pub fn normalize(&self, value: Value) -> Result<Value, ApiError> {
        (self.normalize)(value)
    }

    /// The JSON schema of this kind's objects.
    pub fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        (self.schema)(generator)
    }

    /// A reference to this kind's schema, its definitions left in the generator (for composing
    /// documents such as OpenAPI).
    pub fn subschema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        (self.subschema)(generator)
    }

    /// All names a user may type for this kind (case-insensitive): kind, singular, plural, short.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [self.kind, self.singular, self.plural].into_iter().chain(self.short.iter().copied())
    }
}

macro_rules! info {
    ($static:ident, $ty:ty, $plural:literal, $singular:literal, [$($short:literal),*], namespaced: $ns:literal, system: $sys:literal) => {
        pub static $static: KindInfo = KindInfo {
            kind: <$ty as Resource>::KIND,
            plural: $plural,
            singular: $singular,
            short: &[$($short),*],
            namespaced: $ns,
            system: $sys,
            normalize: normalize_as::<$ty>,
            schema: schema_of::<$ty>,
            subschema: |g| g.subschema_for::<$ty>(),
        };
    };
}

info!(DEPLOYMENT, Deployment, "deployments", "deployment", ["deploy"], namespaced: true, system: false);
info!(SERVICE, Service, "services", "service", ["svc"], namespaced: true, system: false);
info!(AUTOSCALER, Autoscaler, "autoscalers", "autoscaler", ["as", "hpa"], namespaced: true, system: false);
info!(NODE, Node, "nodes", "node", ["no"], namespaced: false, system: true);
info!(NODE_POOL, NodePool, "nodepools", "nodepool", ["np", "pool"], namespaced: false, system: false);
info!(INSTANCE, Instance, "instances", "instance", ["inst"], namespaced: true, system: true);
info!(ENDPOINTS, Endpoints, "endpoints", "endpoint", ["ep"], namespaced: true, system: true);
info!(AUTHORIZATION_POLICY, AuthorizationPolicy, "authorizationpolicies", "authorizationpolicy", ["authz", "ap"], namespaced: true, system: false);
info!(MESH_CONFIG, MeshConfig, "meshconfigs", "meshconfig", ["mesh", "mc"], namespaced: true, system: false);

/// Every kind, in the order users meet them.
pub static KINDS: [&KindInfo; 9] = [
    &DEPLOYMENT,
    &SERVICE,
    &AUTOSCALER,
    &INSTANCE,
    &ENDPOINTS,
    &NODE,
    &NODE_POOL,
    &AUTHORIZATION_POLICY,
    &MESH_CONFIG,
];

/// Finds a kind by any of its names, case-insensitively (`Deployment`, `deployments`, `deploy`).
pub fn lookup(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().copied().find(|k| k.names().any(|n| n.eq_ignore_ascii_case(name)))
}

/// Finds a kind by its plural, as it appears in api paths and store keys.
pub fn by_plural(plural: &str) -> Option<&'static KindInfo> {
    KINDS.iter().copied().find(|k| k.plural == plural)
}

/// A one-line hint listing the kinds, for "unknown kind" errors.
pub fn known_kinds() -> String {
    KINDS
        .iter()
        .map(|k| format!("{} ({})", k.singular, k.short.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn normalize_as<T: Resource>(value: Value) -> Result<Value, ApiError> {
    let mut obj: T = from_value(value)?;
    let info = T::info();
    let meta = obj.metadata_mut();
    if info.namespaced && meta.namespace.is_none() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
    obj.apply_defaults();
    let mut v = Validator::new();
    obj.metadata().validate(&mut v, info.namespaced, !info.namespaced);
    obj.validate_spec(&mut v);
    v.finish()?;
    serde_json::to_value(&obj)
        .map_err(|e| ApiError::internal(format!("re-encoding {}: {e}", T::KIND)))
}

/// Decodes a typed object from JSON, turning serde's complaint into an error that names the
/// field path (`spec.template.ports[0].port`).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let path = if path == "." { String::new() } else { path };
        // serde reports a missing field at its parent; point at the field itself.
        let field = match missing_field(&message) {
            Some(f) if path.is_empty() => f.to_string(),
            Some(f) => format!("{path}.{f}"),
            None => path,
        };
        let message = match missing_field(&message) {
            Some(_) => "is required".to_string(),
            None => message,
        };
        ApiError::invalid(field, message)
    })
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

fn schema_of<T: Resource>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.root_schema_for::<T>();
    // The derive cannot know these two strings are fixed per kind; discovery should.
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), serde_json::json!({ "const": API_VERSION }));
        props.insert("kind".into(), serde_json::json!({ "const": T::KIND }));
    }
    schema
}

/// Checks `apiVersion` and `kind` of a raw object and finds its kind.
pub fn kind_of(value: &Value) -> Result<&'static KindInfo, ApiError> {
    let Some(obj) = value.as_object() else {
        return Err(ApiError::invalid(
            "",
            "expected an object with apiVersion, kind, metadata and spec",
        ));
    };
    match obj.get("apiVersion") {
        None => {
            return Err(ApiError::invalid(
                "apiVersion",
                format!("is required (use {API_VERSION})"),
            ));
        }
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "apiVersion",
                format!("{other} is not supported (use {API_VERSION})"),
            ));
        }
    }
    let kind = match obj.get("kind") {
        None => return Err(ApiError::invalid("kind", "is required")),
        Some(Value::String(k)) => k,
        Some(other) => {
            return Err(ApiError::invalid("kind", format!("{other} is not a kind name")));
        }
    };
    KINDS.iter().copied().find(|k| k.kind == kind).ok_or_else(|| {
        let hint =
            lookup(kind).map(|k| format!(" (did you mean {}?)", k.kind)).unwrap_or_else(|| {
                format!(
                    " (known kinds: {})",
                    KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
                )
            });
        ApiError {
            code: ErrorCode::Invalid,
            ..ApiError::invalid("kind", format!("unknown kind {kind:?}{hint}"))
        }
    })
}

/// Decodes, defaults and validates any object, finding its kind from the object itself.
pub fn normalize(value: Value) -> Result<(&'static KindInfo, Value), ApiError> {
    let info = kind_of(&value)?;
    Ok((info, info.normalize(value)?))
}

/// A short human label for an object in error messages: `Deployment catalog`.
pub fn describe_raw(value: &Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
    Some(match name {
        Some(n) => format!("{kind} {n}"),
        None => kind.to_string(),
    })
}
