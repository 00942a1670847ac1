//! The deployment controller: keeps each deployment's instances at its template and replica
//! count, rolls out template changes, replaces failed and lost instances, and collects the
//! instances of deleted deployments.
//!
//! [`plan::reconcile`] decides (pure); [`controller`] reads the caches and makes the writes.

pub(crate) mod controller;
pub mod hash;
pub mod plan;
pub mod status;

pub use hash::template_hash;
pub use plan::{Action, NodeState, Observed, Plan, Why, reconcile};
