//! Node pools (the Cluster Autoscaler): nodes a [`provider::NodeProvider`] adds when instances
//! wait for room and removes when they stay underused. The decision is
//! [`weft_autoscale::nodepool::decide`]; [`controller`] does the I/O on the leader.

pub mod controller;
pub mod provider;

pub use controller::{POOL_LABEL, SCALE_DOWN_ANNOTATION};
pub use provider::{NewNode, NodeProvider, ProviderError, Providers};
