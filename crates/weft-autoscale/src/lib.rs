//! weft's elastic scaling, as pure decision logic: no I/O, and the clock is never read here.
//! Every time-dependent call takes `now` ([`Time`], time since an epoch the caller picks), so
//! tests and the simulator drive simulated time and the controller passes its own readings.
//!
//! Where to start: [`Policy::from_spec`] resolves an `Autoscaler` spec (defaults, utilisation
//! targets, validation); the controller records scraped samples in [`Windows`], turns them into
//! an [`Observation`] each tick, and calls [`decide`] with the autoscaler's [`ScalerState`] to
//! get a [`Decision`] (replicas, mode and [`Reason`]). [`VerticalRecommender`] suggests cpu and
//! memory requests from usage history. [`sim`] replays request-rate traces through `decide`
//! (`weft sim`) and compares weft's policy with the Kubernetes HPA's defaults. [`nodepool`]
//! decides how many nodes a node pool needs (the Cluster Autoscaler).

#![forbid(unsafe_code)]

mod decide;
pub mod nodepool;
mod observe;
mod policy;
pub mod sim;
mod vertical;

pub use decide::{Basis, Decision, Direction, Limit, Mode, Reason, ScalerState, decide};
pub use observe::{Observation, Reading, Windows};
pub use policy::{Burst, MetricTarget, Policy, PolicyError, RatePolicy, Requests, Rules};
pub use vertical::{
    Bounds, DecayingHistogram, VerticalConfig, VerticalRecommendation, VerticalRecommender,
    outside_bounds,
};
pub use weft_api::kinds::autoscaler::{MetricType, PolicyType, SelectPolicy};

/// A point in time: the time since an epoch of the caller's choosing (say, when the controller
/// started). Only differences matter.
pub type Time = std::time::Duration;
