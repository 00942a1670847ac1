use std::time::{Duration, Instant};

/// A request's overall deadline (the Service's `timeout`), against which each try's timeout
/// and each retry's backoff are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Option<Instant>,
}

/// The overall timeout has passed: answer 504 instead of trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request deadline exceeded")]
pub struct DeadlineExceeded;

impl Deadline {
    /// `timeout` from `start`; `None` or zero means no overall limit (Envoy's convention for 0).
    pub fn new(start: Instant, timeout: Option<Duration>) -> Self {
        let at = timeout.filter(|t| !t.is_zero()).map(|t| start.checked_add(t));
        // An overflowing deadline is as good as none.
        Self { at: at.flatten() }
    }

    pub const UNBOUNDED: Deadline = Deadline { at: None };

    /// Time left (`None` = unbounded; zero = expired).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.at.map(|at| at.saturating_duration_since(now))
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| now >= at)
    }

    /// Timeout for a try starting at `now`: the per-try timeout, shortened to what is left of
    /// the overall one. `Ok(None)`: no limit at all.
    pub fn try_timeout(
        &self,
        now: Instant,
        per_try: Option<Duration>,
    ) -> Result<Option<Duration>, DeadlineExceeded> {
        let per_try = per_try.filter(|t| !t.is_zero());
        match self.remaining(now) {
            Some(left) if left.is_zero() => Err(DeadlineExceeded),
            Some(left) => Ok(Some(per_try.map_or(left, |t| t.min(left)))),
            None => Ok(per_try),
        }
    }

    /// Whether a retry sent after sleeping `backoff` would still have time to run.
    pub fn allows_retry_after(&self, now: Instant, backoff: Duration) -> bool {
        self.remaining(now).is_none_or(|left| left > backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn per_try_is_capped_by_what_remains() {
        let t0 = Instant::now();
        let d = Deadline::new(t0, Some(2000 * MS));
        assert_eq!(d.try_timeout(t0, Some(500 * MS)), Ok(Some(500 * MS)));
        assert_eq!(d.try_timeout(t0 + 1800 * MS, Some(500 * MS)), Ok(Some(200 * MS)));
        assert_eq!(d.try_timeout(t0 + 1800 * MS, None), Ok(Some(200 * MS)));
        assert_eq!(d.try_timeout(t0 + 2000 * MS, Some(500 * MS)), Err(DeadlineExceeded));
        assert!(d.is_expired(t0 + 2000 * MS) && !d.is_expired(t0 + 1999 * MS));
        assert!(d.allows_retry_after(t0 + 1000 * MS, 100 * MS));
        assert!(!d.allows_retry_after(t0 + 1950 * MS, 100 * MS));
    }

    #[test]
    fn unbounded() {
        let t0 = Instant::now();
        for d in
            [Deadline::new(t0, None), Deadline::new(t0, Some(Duration::ZERO)), Deadline::UNBOUNDED]
        {
            assert_eq!(d.remaining(t0), None);
            assert_eq!(d.try_timeout(t0, Some(MS)), Ok(Some(MS)));
            assert_eq!(d.try_timeout(t0, None), Ok(None));
            assert!(!d.is_expired(t0 + Duration::from_secs(1 << 30)));
            assert!(d.allows_retry_after(t0, Duration::MAX));
        }
        assert_eq!(Deadline::new(t0, Some(Duration::MAX)), Deadline::UNBOUNDED);
    }
}
