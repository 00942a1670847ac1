//! Knobs: how slow, how flaky and how cpu-hungry an instance is.
//!
//! They start from the environment (`DEMO_LATENCY=50ms`, `DEMO_JITTER`, `DEMO_ERROR_RATE=0.1`,
//! `DEMO_CPU=5ms`, `DEMO_FAIL_HEALTH=true`) and can be changed while the instance runs with
//! `POST /knobs` (a JSON object with any of the fields), read with `GET /knobs` and reset to the
//! starting values with `DELETE /knobs`. Turning them up on one replica is how the demo shows
//! balancing, retries, outlier ejection and autoscaling at work.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

/// Delays above this are surely a typo (`50s` for `50ms`) and would only hang the demo.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Busy-work above this per request would pin a core for a long time per request.
const MAX_CPU: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Knobs {
    /// Added to every request (not to `/healthz` or `/knobs`).
    pub latency: Duration,
    /// A random extra delay between 0 and this, so latencies look like real ones.
    pub jitter: Duration,
    /// Fraction of requests (0 to 1) answered with 503 instead of being served.
    pub error_rate: f64,
    /// Cpu-bound work per request: this long of hashing on a worker thread.
    pub cpu: Duration,
    /// Makes `/healthz` answer 503, to exercise readiness and liveness probes.
    pub fail_health: bool,
}

/// `POST /knobs`: only the fields given change. Unknown fields are an error, so a typo such as
/// `errorrate` is not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Patch {
    latency: Option<String>,
    jitter: Option<String>,
    error_rate: Option<f64>,
    cpu: Option<String>,
    fail_health: Option<bool>,
}

impl Knobs {
    /// Checks ranges, so neither the environment nor `POST /knobs` can set nonsense.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.error_rate.is_finite() && (0.0..=1.0).contains(&self.error_rate)) {
            return Err(format!("errorRate: {} is not between 0 and 1", self.error_rate));
        }
        for (name, d, max) in [
            ("latency", self.latency, MAX_DELAY),
            ("jitter", self.jitter, MAX_DELAY),
            ("cpu", self.cpu, MAX_CPU),
        ] {
            if d > max {
                return Err(format!("{name}: {} is more than {}", fmt(d), fmt(max)));
            }
        }
        Ok(())
    }

    /// These knobs with a JSON patch applied (the body of `POST /knobs`).
    pub fn patched(&self, body: &[u8]) -> Result<Knobs, String> {
        let patch: Patch = serde_json::from_slice(body).map_err(|e| format!("bad knobs: {e}"))?;
        let mut k = self.clone();
        if let Some(s) = patch.latency {
            k.latency = parse_duration("latency", &s)?;
        }
        if let Some(s) = patch.jitter {
            k.jitter = parse_duration("jitter", &s)?;
        }
        if let Some(r) = patch.error_rate {
            k.error_rate = r;
        }
        if let Some(s) = patch.cpu {
            k.cpu = parse_duration("cpu", &s)?;
        }
        if let Some(b) = patch.fail_health {
            k.fail_health = b;
        }
        k.validate()?;
        Ok(k)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "latency": fmt(self.latency),
            "jitter": fmt(self.jitter),
            "errorRate": self.error_rate,
            "cpu": fmt(self.cpu),
            "failHealth": self.fail_health,
        })
    }

    /// The delay for one request: `latency` plus a uniform share of `jitter`.
    pub fn delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        self.latency + rand::thread_rng().gen_range(Duration::ZERO..=self.jitter)
    }

    /// Whether this request should fail, with probability `error_rate`.
    pub fn roll_error(&self) -> bool {
        self.error_rate > 0.0 && rand::thread_rng().gen_bool(self.error_rate)
    }
}

/// The knobs of a running instance, shared by all its connections.
#[derive(Debug)]
pub struct KnobState {
    initial: Knobs,
    current: Mutex<Knobs>,
}

impl KnobState {
    pub fn new(initial: Knobs) -> KnobState {
        KnobState { current: Mutex::new(initial.clone()), initial }
    }

    pub fn get(&self) -> Knobs {
        // A poisoned lock only means a panic elsewhere while holding it; the value is still a
        // whole `Knobs` (it is replaced in one assignment), so keep serving it.
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set(&self, knobs: Knobs) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = knobs;
    }

    pub fn reset(&self) -> Knobs {
        self.set(self.initial.clone());
        self.initial.clone()
    }
}

/// Spends `d` of wall time hashing: real cpu work the optimizer cannot remove, as a cpu-bound
/// handler would do. On a busy machine the thread may be descheduled, so it can burn less cpu
/// than `d`, never more.
pub fn burn_cpu(d: Duration) -> u64 {
    let end = Instant::now() + d;
    // FNV-1a over a counter; checking the clock every 1024 rounds keeps the check cheap.
    let (mut hash, mut i) = (0xcbf2_9ce4_8422_2325_u64, 0_u64);
    while Instant::now() < end {
        for _ in 0..1024 {
            hash = (hash ^ i).wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
    }
    std::hint::black_box(hash)
}

/// `50ms`, `1s 500ms`, `0s`.
pub fn fmt(d: Duration) -> String {
    if d.is_zero() { "0s".to_string() } else { humantime::format_duration(d).to_string() }
}

/// A duration as users write it: `50ms`, `2s`, `1s 500ms`; a bare `0` means none.
pub fn parse_duration(name: &str, s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{name}: {s:?} is not a duration like \"50ms\" or \"2s\" ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_changes_only_given_fields() {
        let k = Knobs { latency: Duration::from_millis(5), ..Knobs::default() };
        let p = k.patched(br#"{"errorRate": 0.25, "cpu": "3ms"}"#).unwrap();
        assert_eq!(p.latency, Duration::from_millis(5));
        assert_eq!(p.error_rate, 0.25);
        assert_eq!(p.cpu, Duration::from_millis(3));
        assert_eq!(p.to_json()["cpu"], "3ms");
    }

    #[test]
    fn bad_patches_say_what_is_wrong() {
        let k = Knobs::default();
        for (body, needle) in [
            (&b"{not json"[..], "bad knobs"),
            (br#"{"errorRate": 1.5}"#, "errorRate"),
            (br#"{"latency": "fast"}"#, "latency"),
            (br#"{"latency": 50}"#, "bad knobs"),
            (br#"{"cpu": "1h"}"#, "cpu"),
            (br#"{"errorrate": 0.1}"#, "unknown field"),
            (b"[]", "bad knobs"),
        ] {
            let e = k.patched(body).unwrap_err();
            assert!(e.contains(needle), "{body:?}: {e}");
        }
    }

    #[test]
    fn delay_stays_within_latency_plus_jitter() {
        let k = Knobs {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            ..Knobs::default()
        };
        for _ in 0..100 {
            let d = k.delay();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15), "{d:?}");
        }
    }

    #[test]
    fn burn_cpu_takes_the_time_asked() {
        let t = Instant::now();
        burn_cpu(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
