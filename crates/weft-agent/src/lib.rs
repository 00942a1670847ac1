//! weft's node agent (the kubelet and container runtime of weft): it registers its machine as
//! a `Node`, runs the `Instance`s bound to it as local processes, each behind its own sidecar
//! proxy, and reports their status, usage and logs. DESIGN.md, "Platform on one machine", is
//! the contract.
//!
//! Start with [`Agent::run`] and [`AgentOptions`] (or [`AgentArgs`] for `weft agent`). Then:
//!
//! - `agent`: the main loop — registration, the instance watch, one supervisor per
//!   instance, usage and log rotation.
//! - `supervise`: the life of one instance (start order, probes, restarts with backoff,
//!   graceful stop), the heart of the crate.
//! - `sidecar`: the sidecar's command line (one function); `env`: the app's environment.
//! - `spawn`: process groups, signals, exit watching; `probe`: HTTP/TCP/exec checks and
//!   thresholds; [`backoff`]: the crash-loop arithmetic.
//! - `ports`: port and loopback-address allocation; `cgroups`: limits, accounting, OOM;
//!   `logs`: log files and rotation; `state`: what survives an agent restart (adoption);
//!   `node`: the Node object, heartbeats and the sidecars' token; `metrics` and `admin`:
//!   `/metrics` and `/logs`.
//!
//! Processes are never piped through the agent and never killed when the agent dies: a
//! restarted agent adopts them (or, with [`AgentOptions::stop_on_exit`], the agent stops them
//! all before it exits).

#![forbid(unsafe_code)]

mod admin;
mod agent;
mod args;
pub mod backoff;
mod cgroups;
mod env;
mod error;
mod logs;
mod metrics;
mod node;
mod options;
mod ports;
mod probe;
mod procfs;
mod sidecar;
mod spawn;
mod state;
mod status;
mod supervise;

pub use agent::Agent;
pub use args::{AgentArgs, HELP, parse_resources};
pub use backoff::BackoffPolicy;
pub use cgroups::CgroupMode;
pub use error::AgentError;
pub use options::{AgentOptions, SidecarMode, SidecarObs, defaults};
