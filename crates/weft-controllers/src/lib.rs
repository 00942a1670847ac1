//! weft's control loops: the scheduler, and the deployment, endpoints, node and autoscaler
//! controllers
//! (DESIGN.md "Platform on one machine").
//!
//! Start with [`Controllers`]: `Controllers::new(client, Options::default()).run(shutdown)`
//! runs every loop against an api server (the client needs an admin token); [`Controllers::metrics`]
//! gives the Prometheus metrics to serve.
//!
//! Each controller is a pure decision plus a thin driver, so the decisions are unit-tested and
//! benchmarked on their own:
//! - [`scheduler::placement`]: filter, score and pick a node (spread or bin-pack), and the
//!   "0/3 nodes can run it: …" explanation. [`scheduler::workload`] feeds the benchmarks.
//! - [`deployment::plan`]: rolling updates, scaling, replacing failed and lost instances,
//!   garbage collection; [`deployment::status`] the status and conditions;
//!   [`deployment::hash`] template hashes and instance names.
//! - [`endpoints`]: which instances serve a service, on which ports.
//! - [`node::health`]: heartbeat grace and evictions.
//! - [`scrape`]: the metrics pipeline (sidecar and agent `/metrics` every second → per-instance
//!   rates in [`scrape::LiveMetrics`], read via [`Controllers::live_metrics`]);
//!   [`autoscaler`]: decides from them with `weft_autoscale` and writes `spec.replicas`.
//! - [`nodepool`]: node pools grow and shrink through a [`nodepool::NodeProvider`]
//!   ([`Controllers::with_node_provider`]), deciding with `weft_autoscale::nodepool`.
//!
//! [`runtime`] runs them: watch-fed caches ([`runtime::Cache`]), work queues
//! ([`runtime::Queue`]), workers and resync.
#![forbid(unsafe_code)]

pub mod autoscaler;
pub mod deployment;
pub mod endpoints;
pub mod error;
pub mod metrics;
pub mod node;
pub mod nodepool;
pub mod runtime;
pub mod scheduler;
pub mod scrape;
pub mod time;

pub use error::Error;
pub use metrics::Metrics;
pub use runtime::{Controllers, Options};
pub use scheduler::Policy;
