//! Restart backoff: the pure arithmetic of crash loops (no clocks; callers pass durations).
//!
//! The first restart after a healthy run is immediate; each further crash in a row doubles the
//! wait from `base` up to `max`; a run that lasted at least `reset` starts the count afresh.

use std::time::Duration;

/// How restarts back off (DESIGN.md: 10 s doubling to 5 min, reset after 10 min healthy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Wait before the second restart in a row.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
    /// A run at least this long counts as healthy and resets the count.
    pub reset: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset: Duration::from_secs(600),
        }
    }
}

/// Consecutive failures of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashLoop {
    /// Failures since the last healthy run.
    pub streak: u32,
}

impl CrashLoop {
    /// Records a failed run that lasted `ran` (zero when it never started) and returns how
    /// long to wait before the next start.
    pub fn failed(&mut self, policy: &BackoffPolicy, ran: Duration) -> Duration {
        if ran >= policy.reset {
            self.streak = 0;
        }
        let wait = delay(policy, self.streak);
        self.streak = self.streak.saturating_add(1);
        wait
    }
}

/// The wait before restart number `streak + 1` of a crash loop: 0, base, 2·base, … ≤ max.
pub fn delay(policy: &BackoffPolicy, streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(streak - 1).unwrap_or(u32::MAX);
    policy.base.checked_mul(factor).unwrap_or(policy.max).min(policy.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_healthy_run() {
        let p = BackoffPolicy::default();
        let mut c = CrashLoop::default();
        let waits: Vec<u64> =
            (0..8).map(|_| c.failed(&p, Duration::from_secs(1)).as_secs()).collect();
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
        // Ten minutes healthy: the next crash restarts at once.
        assert_eq!(c.failed(&p, Duration::from_secs(600)), Duration::ZERO);
        assert_eq!(c.failed(&p, Duration::ZERO), Duration::from_secs(10));
    }

    #[test]
    fn huge_streaks_do_not_overflow() {
        let p = BackoffPolicy::default();
        assert_eq!(delay(&p, 40), p.max);
        assert_eq!(delay(&p, u32::MAX), p.max);
    }
}
