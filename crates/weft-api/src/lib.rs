//! weft's resource model: the kinds users and the system write, and everything needed to read
//! them strictly. No I/O.
//!
//! Start with [`kinds`]: the typed objects ([`kinds::Deployment`], [`kinds::Service`], …) and
//! the registry ([`kinds::lookup`], [`kinds::KindInfo::normalize`]) that decodes, defaults and
//! validates any of them. [`codec::parse_documents`] reads multi-document YAML or JSON;
//! [`quantity::Quantity`] and [`duration::Duration`] parse `250m`/`64Mi` and `30s`/`5m`
//! exactly; every failure is an [`error::ApiError`] naming the field at fault.

pub mod codec;
pub mod duration;
pub mod error;
pub mod kinds;
pub mod meta;
pub mod quantity;
pub mod selector;
pub mod validate;
pub mod wire;

pub use error::{ApiError, ErrorCode};
pub use kinds::{
    AuthorizationPolicy, Autoscaler, Deployment, Endpoints, Instance, KindInfo, MeshConfig, Node,
    NodePool, Resource, Service,
};
pub use meta::{API_VERSION, DEFAULT_NAMESPACE, ObjectMeta};
