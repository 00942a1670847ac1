//! RPC governance algorithms for weft's sidecar proxy: load balancing, rate limiting, circuit
//! breaking, outlier ejection, retries, backoff and deadlines.
//!
//! Pure code: no I/O, no sockets, and the clock is never read here. Every time-dependent call
//! takes `now: Instant` from the caller, so tests drive simulated time and the proxy passes its
//! own clock reading. State that many request tasks update at once (in-flight counts, latency
//! estimates, token buckets, admission limits, retry budgets) is lock-free atomics, so every
//! type here is `Send + Sync` and is meant to be shared behind an `Arc`.
//!
//! Where to start: [`LoadBalancer`] (pick an endpoint; [`EndpointStats`] carries what the
//! balancers and [`OutlierDetector`] learn about it), then [`TokenBucket`], [`CircuitBreaker`],
//! [`retry_allowed`] with [`RetryBudget`] and [`Backoff`], and [`Deadline`].

mod backoff;
pub mod balance;
mod breaker;
mod deadline;
mod endpoint;
mod error;
mod hash;
mod outlier;
mod rate_limit;
mod retry;
mod retry_budget;
mod rng;

pub use backoff::Backoff;
pub use balance::{Algorithm, EwmaConfig, LoadBalancer, PickContext, RingHashConfig};
pub use breaker::{CircuitBreaker, Limit, Permit};
pub use deadline::{Deadline, DeadlineExceeded};
pub use endpoint::{Endpoint, EndpointStats, InFlight};
pub use error::ConfigError;
pub use outlier::{Ejection, EndpointHealth, OutlierConfig, OutlierDetector, Verdict};
pub use rate_limit::{Denied, TokenBucket, try_acquire_all};
pub use retry::{FailureKind, RetryOn, RetryPolicy, is_idempotent, retry_allowed};
pub use retry_budget::{RetryBudget, RetryBudgetConfig};
pub use rng::WyRand;

use std::time::Instant;

/// Nanoseconds from `epoch` to `now`, 0 if `now` is earlier. Atomics store time as these offsets
/// because `Instant` has no atomic form; u64 nanoseconds last 584 years.
#[inline]
pub(crate) fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    let d = now.saturating_duration_since(epoch);
    d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
}
