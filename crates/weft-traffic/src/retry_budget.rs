//! Retry budget (Finagle's `RetryBudget`, linkerd's `retryBudget`): retries may add at most
//! `ratio` of the original requests, plus a floor of `min_per_sec` so services with little
//! traffic can still retry. Unlike a fixed retry count, a budget cannot multiply load during an
//! outage: when everything fails, retries stay at ≈20 % instead of tripling traffic.
//!
//! Over a sliding window (10 s by default, in 10 slots): each original request deposits `ratio`
//! of a token, each retry withdraws a whole one, and the window also holds a constant reserve of
//! `min_per_sec × window` tokens. Deposits and withdrawals expire together with their slot, so
//! the reserve refills by itself.
//!
//! Lock-free: the slots are atomics; the task that first sees a new slot clears the expired
//! ones. Updates racing with that rotation, and two retries racing for the last token, can
//! each be off by one — a budget is a statistical bound, not an exact counter.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::ConfigError;
use crate::nanos_since;

/// Fixed-point scale: one retry token.
const TOKEN: i64 = 1000;
const SLOTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per original request (the Service's `budgetPercent` / 100).
    pub ratio: f64,
    /// Retries always allowed per second, averaged over the window.
    pub min_per_sec: u32,
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self { ratio: 0.2, min_per_sec: 10, window: Duration::from_secs(10) }
    }
}

#[derive(Debug)]
pub struct RetryBudget {
    epoch: Instant,
    slot_nanos: u64,
    deposit: i64,
    reserve: i64,
    /// Absolute index of the newest slot (nanoseconds since epoch / slot length).
    head: AtomicU64,
    slots: [AtomicI64; SLOTS],
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Result<Self, ConfigError> {
        if !(config.ratio.is_finite() && (0.0..=1000.0).contains(&config.ratio)) {
            return Err(ConfigError::OutOfRange {
                what: "retry budget ratio",
                value: config.ratio,
                min: 0.0,
                max: 1000.0,
            });
        }
        let window = config.window.as_nanos() as u64;
        if window < SLOTS as u64 {
            let value = config.window.as_secs_f64();
            return Err(ConfigError::NotPositive { what: "retry budget window (seconds)", value });
        }
        Ok(Self {
            epoch: now,
            slot_nanos: window / SLOTS as u64,
            deposit: (config.ratio * TOKEN as f64).round() as i64,
            reserve: (f64::from(config.min_per_sec) * config.window.as_secs_f64() * TOKEN as f64)
                as i64,
            head: AtomicU64::new(0),
            slots: Default::default(),
        })
    }

    /// Records an original request (not its retries).
    #[inline]
    pub fn deposit(&self, now: Instant) {
        self.slot(now).fetch_add(self.deposit, Relaxed);
    }

    /// Spends one retry if the budget has it.
    #[inline]
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let slot = self.slot(now);
        if self.balance() < TOKEN {
            return false;
        }
        slot.fetch_sub(TOKEN, Relaxed);
        true
    }

    /// Retries available now (for metrics and tests).
    pub fn available(&self, now: Instant) -> u64 {
        self.slot(now);
        (self.balance() / TOKEN).max(0) as u64
    }

    fn balance(&self) -> i64 {
        self.reserve + self.slots.iter().map(|s| s.load(Relaxed)).sum::<i64>()
    }

    /// The slot for `now`, after expiring the slots that left the window.
    #[inline]
    fn slot(&self, now: Instant) -> &AtomicI64 {
        let current = nanos_since(self.epoch, now) / self.slot_nanos;
        let mut head = self.head.load(Relaxed);
        while current > head {
            match self.head.compare_exchange_weak(head, current, Relaxed, Relaxed) {
                Ok(_) => {
                    let first_stale = (head + 1).max((current + 1).saturating_sub(SLOTS as u64));
                    for s in first_stale..=current {
                        self.slots[(s % SLOTS as u64) as usize].store(0, Relaxed);
                    }
                    head = current;
                }
                Err(seen) => head = seen,
            }
        }
        // A task whose `now` is older than the head (it read the clock just before another
        // task rotated) writes to the newest slot rather than to one already recycled.
        &self.slots[(head % SLOTS as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_percent_plus_floor_then_refuses() {
        let t0 = Instant::now();
        let b = RetryBudget::new(RetryBudgetConfig::default(), t0).unwrap();
        // 1000 requests/s for 30 s, every one failing and asking for a retry.
        let mut allowed_per_sec = Vec::new();
        for sec in 0..30u64 {
            let mut allowed = 0;
            for i in 0..1000u64 {
                let now = t0 + Duration::from_millis(sec * 1000 + i);
                b.deposit(now);
                allowed += u32::from(b.try_withdraw(now));
            }
            allowed_per_sec.push(allowed);
        }
        // Steady state: 20 % of 1000 + 10 floor = 210/s.
        let steady: u32 = allowed_per_sec[10..].iter().sum();
        assert!((20 * 200..=20 * 220).contains(&steady), "{allowed_per_sec:?}");
        // The first second can use the whole floor reserve (100) on top of its deposits.
        assert!(allowed_per_sec[0] <= 300, "{allowed_per_sec:?}");
    }

    #[test]
    fn floor_alone_without_traffic_and_refill() {
        let t0 = Instant::now();
        let b = RetryBudget::new(RetryBudgetConfig::default(), t0).unwrap();
        assert_eq!(b.available(t0), 100);
        let granted = (0..150).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 100, "10/s over a 10 s window");
        assert!(!b.try_withdraw(t0 + Duration::from_secs(5)));
        // Withdrawals expire with their slot.
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 100);
    }

    #[test]
    fn deposits_expire_after_the_window() {
        let t0 = Instant::now();
        let cfg = RetryBudgetConfig { min_per_sec: 0, ..Default::default() };
        let b = RetryBudget::new(cfg, t0).unwrap();
        for _ in 0..100 {
            b.deposit(t0);
        }
        assert_eq!(b.available(t0 + Duration::from_secs(9)), 20);
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 0);
        // Time going backwards (a stale `now`) neither panics nor resurrects old slots.
        b.deposit(t0);
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 0);
        assert!(RetryBudget::new(RetryBudgetConfig { ratio: f64::NAN, ..cfg }, t0).is_err());
        assert!(RetryBudget::new(RetryBudgetConfig { window: Duration::ZERO, ..cfg }, t0).is_err());
    }
}
