//! The node controller: notices agents that stopped heartbeating, marks their nodes NotReady
//! (the deployment controller then replaces their instances), and after a longer timeout
//! deletes the instances still bound to nodes that are NotReady or gone, since no agent is
//! there to finish them.
//!
//! [`health`] decides (pure); [`controller`] reads the caches, makes the writes and sets the
//! timers.

pub(crate) mod controller;
pub mod health;

pub use health::{Eviction, HeartbeatCheck, check_heartbeat, evictions};
