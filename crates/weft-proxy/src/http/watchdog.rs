//! Per-connection time limits without a timer per request.
//!
//! A connection is in one of three phases: waiting for a request head (`Head`: the header read
//! timeout applies, from the first byte of the head or from accept), serving requests (`Busy`),
//! or idle between requests (`Idle`: the keep-alive timeout applies). The I/O wrapper and the
//! request path update the phase with plain atomic stores; one timer per connection wakes up at
//! the next deadline and checks it. The HTTP/1 fast path also puts its response deadline here
//! (the timer is moved earlier only when a deadline comes before it), and learns from flags
//! set by the watchdog that its request timed out or that the connection should close.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const HEAD: u64 = 0;
const IDLE: u64 = 1;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call (a process-wide monotonic clock).
pub(crate) fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `at` on the `now_ms` clock.
pub(crate) fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}

pub(crate) fn deadline_instant(ms: u64) -> tokio::time::Instant {
    let now = now_ms();
    tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now))
}

/// What the watchdog found when its timer fired.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Nothing to do before this time (`now_ms` clock).
    Wait(u64),
    /// The client has been sending a request head for too long.
    HeadTimeout,
    /// The connection has been idle for too long.
    IdleTimeout,
    /// The request in flight has passed its response deadline.
    ResponseTimeout,
}

#[derive(Debug)]
pub(crate) struct Activity {
    /// phase in the low bit, milliseconds (see `now_ms`) since it began in the rest.
    phase: AtomicU64,
    in_flight: AtomicU32,
    /// Response deadline of the (HTTP/1 fast path) request in flight, in `now_ms` time; 0: none.
    deadline: AtomicU64,
    /// Set by the watchdog when `deadline` passed.
    timed_out: AtomicBool,
    /// Set when the connection should close as soon as it is idle (drain).
    closing: AtomicBool,
    /// HTTP/2 reads control frames while idle; its reads do not start a request head.
    multiplexed: bool,
    head_ms: u64,
    idle_ms: u64,
}

impl Activity {
    /// A new connection: waiting for its first request head since now.
    pub(crate) fn new(head_timeout: Duration, idle_timeout: Duration) -> Activity {
        Activity {
            phase: AtomicU64::new(now_ms() << 1 | HEAD),
            in_flight: AtomicU32::new(0),
            deadline: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            multiplexed: false,
            head_ms: (head_timeout.as_millis() as u64).max(1),
            idle_ms: (idle_timeout.as_millis() as u64).max(1),
        }
    }

    /// Marks the connection as HTTP/2: idle from now, and no request-head timing.
    pub(crate) fn set_multiplexed(&mut self) {
        self.multiplexed = true;
        self.phase.store(now_ms() << 1 | IDLE, Ordering::Relaxed);
    }

    /// The client sent bytes.
    #[inline]
    pub(crate) fn on_read(&self) {
        if !self.multiplexed
            && self.phase.load(Ordering::Relaxed) & 1 == IDLE
            && self.in_flight.load(Ordering::Relaxed) == 0
        {
            self.phase.store(now_ms() << 1 | HEAD, Ordering::Relaxed);
        }
    }

    /// A request head was parsed and the request is being served.
    #[inline]
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished (its response is complete or abandoned).
    #[inline]
    pub(crate) fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.phase.store(now_ms() << 1 | IDLE, Ordering::Relaxed);
        }
    }

    /// Sets (or clears, with 0) the response deadline of the request in flight.
    #[inline]
    pub(crate) fn set_deadline(&self, ms: u64) {
        self.deadline.store(ms, Ordering::Relaxed);
        self.timed_out.store(false, Ordering::Relaxed);
    }

    /// The earliest time the current phase could need attention (`u64::MAX`: none); the
    /// watchdog moves its timer earlier when this comes before it.
    #[inline]
    pub(crate) fn hint(&self) -> u64 {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            match self.deadline.load(Ordering::Relaxed) {
                0 => u64::MAX,
                d => d,
            }
        } else {
            let p = self.phase.load(Ordering::Relaxed);
            (p >> 1) + if p & 1 == HEAD { self.head_ms } else { self.idle_ms }
        }
    }

    /// Whether the request in flight has timed out.
    #[inline]
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Asks the connection to close once idle.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The time of the first check after the connection was accepted (`now_ms` clock).
    pub(crate) fn first_deadline(&self) -> u64 {
        let since = self.phase.load(Ordering::Relaxed) >> 1;
        let limit = if self.multiplexed { self.idle_ms } else { self.head_ms };
        since + limit
    }

    /// Decides what to do now that the timer fired.
    pub(crate) fn check(&self) -> Check {
        let now = now_ms();
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            let deadline = self.deadline.load(Ordering::Relaxed);
            if deadline != 0 && now >= deadline {
                self.deadline.store(0, Ordering::Relaxed);
                self.timed_out.store(true, Ordering::Relaxed);
                return Check::ResponseTimeout;
            }
            let mut next = now + self.head_ms.min(self.idle_ms);
            if deadline != 0 {
                next = next.min(deadline);
            }
            return Check::Wait(next);
        }
        let p = self.phase.load(Ordering::Relaxed);
        let since = p >> 1;
        let (limit, timeout) = if p & 1 == HEAD {
            (self.head_ms, Check::HeadTimeout)
        } else {
            (self.idle_ms, Check::IdleTimeout)
        };
        if now.saturating_sub(since) >= limit { timeout } else { Check::Wait(since + limit) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases() {
        let a = Activity::new(Duration::from_millis(1), Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(a.check(), Check::HeadTimeout);
        a.request_started();
        assert!(matches!(a.check(), Check::Wait(_)));
        a.request_finished();
        assert!(matches!(a.check(), Check::Wait(_)), "idle, not yet timed out");
        a.on_read();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(a.check(), Check::HeadTimeout);

        a.request_started();
        a.set_deadline(now_ms());
        assert_eq!(a.check(), Check::ResponseTimeout);
        assert!(a.timed_out());
        assert!(matches!(a.check(), Check::Wait(_)), "fires once");

        let b = Activity::new(Duration::from_secs(10), Duration::from_millis(1));
        b.request_started();
        b.request_finished();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(b.check(), Check::IdleTimeout);
    }
}
