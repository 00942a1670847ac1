//! The provider interface: how a node pool gets and gives back machines. weft ships `local`
//! (agent processes on the api server's machine, in the `weft` binary); a cloud provider
//! implements the same trait over its instance api (docs/nodepools.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_api::kinds::template::ResourceList;

/// A node the pool wants: the controller has already written its Node object (with
/// `spec.pool` and the template's labels, not ready); the provider makes a machine whose agent
/// registers under exactly this name and reports this capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNode {
    pub pool: String,
    pub name: String,
    pub capacity: ResourceList,
    pub allocatable: ResourceList,
    pub labels: BTreeMap<String, String>,
}

/// A provider's failure. `retryable` failures (a quota, a timeout) are tried again on the next
/// round; the others are reported in the pool's status until its spec changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    pub retryable: bool,
}

impl ProviderError {
    pub fn retryable(message: impl Into<String>) -> ProviderError {
        ProviderError { message: message.into(), retryable: true }
    }

    pub fn fatal(message: impl Into<String>) -> ProviderError {
        ProviderError { message: message.into(), retryable: false }
    }
}

/// Makes and removes the machines of node pools. Called only by the controllers' leader, one
/// call at a time per pool; every call may be repeated after a crash, so each must be
/// idempotent (creating a node that exists, or deleting one that is gone, succeeds).
#[async_trait::async_trait]
pub trait NodeProvider: Send + Sync + 'static {
    /// The name pools use in `spec.provider`.
    fn name(&self) -> &'static str;

    /// Starts a machine for `node`. Returning means the machine is on its way; the node counts
    /// as provisioning until its agent reports ready (a node not ready within the
    /// provisioning timeout is deleted and replaced).
    async fn create(&self, node: &NewNode) -> Result<(), ProviderError>;

    /// Stops and releases the machine of a node. Called after the node was drained; the
    /// controller deletes the Node object afterwards.
    async fn delete(&self, pool: &str, node: &str) -> Result<(), ProviderError>;

    /// The nodes of `pool` that have a machine, by name. The controller compares it with the
    /// Node objects: Nodes without a machine are deleted, machines without a Node are deleted.
    async fn list(&self, pool: &str) -> Result<Vec<String>, ProviderError>;
}

/// Providers by name.
pub type Providers = std::collections::HashMap<&'static str, Arc<dyn NodeProvider>>;
