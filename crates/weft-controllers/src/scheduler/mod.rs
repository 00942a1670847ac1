//! The scheduler: binds Pending instances to nodes.
//!
//! [`placement`] is the algorithm (pure, benchmarked); [`controller`] feeds it from watches and
//! writes the bindings.

pub(crate) mod controller;
pub mod placement;
pub mod workload;

pub use placement::{Amount, Cluster, NodeInfo, Policy, Unschedulable};
