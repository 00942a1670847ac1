//! Vertical recommendations: decaying histograms, percentiles, margin, OOM bumps.

mod common;

use std::time::Duration;

use common::*;
use weft_autoscale::{
    Bounds, DecayingHistogram, VerticalConfig, VerticalRecommendation, VerticalRecommender,
    outside_bounds,
};

const DAY: u64 = 24 * 3600;

fn within(actual: f64, expected: f64, rel: f64) -> bool {
    (actual - expected).abs() <= rel * expected
}

/// `got` is the end of the bucket holding `v`: not below it, and at most a bucket (here never
/// more than 11%) above.
fn bucket_of(got: f64, v: f64) -> bool {
    got >= v * (1.0 - 1e-9) && got <= v * 1.11
}

#[test]
fn percentiles_within_a_bucket() {
    let mut h = DecayingHistogram::cpu(secs(DAY));
    assert!(h.is_empty());
    assert_eq!(h.percentile(0.9), None);
    // 1..=100 (hundredths of a core to one core), same time.
    for i in 1..=100 {
        h.add(f64::from(i) / 100.0, 1.0, secs(0));
    }
    for (p, v) in [(0.5, 0.5), (0.9, 0.9), (0.95, 0.95), (1.0, 1.0)] {
        let got = h.percentile(p).unwrap();
        assert!(bucket_of(got, v) && got <= v * 1.07, "p{p}: {got}");
    }
    // Past the top bucket: reported as the top bucket's start, not infinity.
    let mut h = DecayingHistogram::new(1.0, 2.0, 10.0, secs(DAY));
    h.add(1e9, 1.0, secs(0));
    assert!(h.percentile(1.0).unwrap() < 100.0);
}

#[test]
fn samples_lose_half_their_weight_per_half_life() {
    let mut h = DecayingHistogram::memory(secs(3600));
    h.add(1e8, 1.0, secs(0));
    assert!(within(h.weight(secs(0)), 1.0, 1e-9));
    assert!(within(h.weight(secs(3600)), 0.5, 1e-9));
    // Old low values, one newer high value with equal raw weight: after 3 half-lives the new one
    // weighs 8x, so the median is high.
    let mut h = DecayingHistogram::memory(secs(3600));
    h.add(1e8, 1.0, secs(0));
    h.add(4e9, 1.0, secs(3 * 3600));
    assert!(bucket_of(h.percentile(0.5).unwrap(), 4e9));
    assert!(within(h.weight(secs(3 * 3600)), 1.0 + 1.0 / 8.0, 1e-9));
}

#[test]
fn long_histories_renormalize_instead_of_overflowing() {
    let mut h = DecayingHistogram::cpu(secs(60));
    // 1000 half-lives: 2^1000 would overflow an f64.
    for i in 0..=1000u64 {
        h.add(if i < 990 { 0.1 } else { 2.0 }, 1.0, secs(i * 60));
    }
    let p = h.percentile(0.5).unwrap();
    assert!(p.is_finite() && bucket_of(p, 2.0), "{p}");
    assert!(h.weight(secs(1000 * 60)).is_finite());
}

#[test]
fn recommendation_is_p50_p90_p95_plus_margin() {
    let mut r = VerticalRecommender::default();
    assert!(r.recommend(secs(0)).is_none());
    for i in 1..=100u64 {
        r.record_cpu(secs(100), i as f64 / 100.0); // 0.01..1 cores
        r.record_memory(secs(100), i as f64 * 1e7); // 10 MB..1 GB
    }
    let rec = r.recommend(secs(100)).unwrap();
    let c = rec.cpu_cores;
    assert!(bucket_of(c.lower, 0.5 * 1.15), "{c:?}");
    assert!(bucket_of(c.target, 0.9 * 1.15), "{c:?}");
    assert!(bucket_of(c.upper, 0.95 * 1.15), "{c:?}");
    assert!(c.lower <= c.target && c.target <= c.upper);
    let m = rec.memory_bytes;
    assert!(bucket_of(m.lower, 5e8 * 1.15), "{m:?}");
    assert!(bucket_of(m.target, 9e8 * 1.15), "{m:?}");
    assert!(bucket_of(m.upper, 9.5e8 * 1.15), "{m:?}");
    assert!(!rec.oom_bumped);
}

#[test]
fn recommendations_have_floors() {
    let cfg = VerticalConfig { min_cpu_cores: 0.1, ..VerticalConfig::default() };
    let mut r = VerticalRecommender::new(cfg);
    r.record_cpu(secs(0), 0.0);
    r.record_memory(secs(0), 1000.0);
    let rec = r.recommend(secs(0)).unwrap();
    assert_eq!(rec.cpu_cores.lower, 0.1);
    assert_eq!(rec.cpu_cores.upper, 0.1);
    assert_eq!(rec.memory_bytes.lower, 16.0 * 1024.0 * 1024.0);
}

#[test]
fn out_of_memory_kill_bumps_memory() {
    let mut r = VerticalRecommender::default();
    for i in 0..100u64 {
        r.record_cpu(secs(i), 0.2);
        r.record_memory(secs(i), 2e8);
    }
    let before = r.recommend(secs(100)).unwrap().memory_bytes.target;
    assert!(bucket_of(before, 2e8 * 1.15), "{before}");
    // Killed at its 256 MB limit, having peaked at 250 MB: at least 1.2 × 256 MB.
    r.record_oom(secs(100), 2.5e8, 2.56e8);
    let rec = r.recommend(secs(101)).unwrap();
    assert!(rec.oom_bumped);
    assert_eq!(rec.memory_bytes.target, 2.56e8 * 1.2);
    assert!(rec.memory_bytes.upper >= rec.memory_bytes.target);
    // Peak above the limit (e.g. limit raised since): the peak wins.
    let mut r2 = r.clone();
    r2.record_oom(secs(102), 5e8, 2.56e8);
    assert_eq!(r2.recommend(secs(103)).unwrap().memory_bytes.target, 5e8 * 1.2);
    // The bump holds for oom_hold (24 h), then the histogram speaks again.
    assert!(r.recommend(secs(100 + DAY - 1)).unwrap().oom_bumped);
    let after = r.recommend(secs(100 + DAY)).unwrap();
    assert!(!after.oom_bumped);
    assert!(within(after.memory_bytes.target, before, 1e-9));
}

#[test]
fn half_life_is_configurable() {
    let cfg = VerticalConfig { half_life: Duration::from_secs(60), ..VerticalConfig::default() };
    let mut r = VerticalRecommender::new(cfg);
    for i in 0..600u64 {
        // 10 minutes at 0.1 cores, then 2 minutes at 1 core.
        r.record_cpu(secs(i), 0.1);
        r.record_memory(secs(i), 1e8);
    }
    for i in 600..720u64 {
        r.record_cpu(secs(i), 1.0);
        r.record_memory(secs(i), 1e8);
    }
    // With a 1-minute half-life the last 2 minutes carry most of the weight.
    let fast = r.recommend(secs(720)).unwrap().cpu_cores.target;
    assert!(bucket_of(fast, 1.15), "{fast}");
    // With the default day-long half-life they are a sixth of the samples: p90 is still 1 core,
    // but the median stays low.
    let mut slow = VerticalRecommender::default();
    for i in 0..720u64 {
        slow.record_cpu(secs(i), if i < 600 { 0.1 } else { 1.0 });
        slow.record_memory(secs(i), 1e8);
    }
    let s = slow.recommend(secs(720)).unwrap().cpu_cores;
    assert!(bucket_of(s.lower, 0.115), "{s:?}");
    assert!(bucket_of(s.target, 1.15), "{s:?}");
}

#[test]
fn requests_are_replaced_only_when_unset_or_outside_the_bounds() {
    let b = |lower, target, upper| Bounds { lower, target, upper };
    let rec = VerticalRecommendation {
        cpu_cores: b(0.1, 0.2, 0.4),
        memory_bytes: b(100.0, 200.0, 300.0),
        oom_bumped: false,
    };
    assert!(!outside_bounds(Some(0.1), Some(300.0), &rec), "bounds are inclusive");
    assert!(!outside_bounds(Some(0.3), Some(150.0), &rec));
    assert!(outside_bounds(Some(0.05), Some(150.0), &rec), "starved cpu");
    assert!(outside_bounds(Some(0.3), Some(301.0), &rec), "wasted memory");
    assert!(outside_bounds(None, Some(150.0), &rec), "no cpu request");
    assert!(outside_bounds(Some(0.3), None, &rec), "no memory request");
}

#[test]
fn samples_count_the_scarcer_resource_and_decay() {
    let mut r = VerticalRecommender::new(VerticalConfig {
        half_life: Duration::from_secs(100),
        ..VerticalConfig::default()
    });
    assert_eq!(r.samples(secs(0)), 0.0);
    for i in 0..10 {
        r.record_cpu(secs(i), 0.1);
    }
    r.record_memory(secs(9), 1e8);
    assert!(within(r.samples(secs(9)), 1.0, 1e-9), "{}", r.samples(secs(9)));
    for i in 10..40 {
        r.record_memory(secs(i), 1e8);
    }
    // cpu is the scarcer: ten samples, decayed over 30 s of a 100 s half-life.
    let cpu = r.samples(secs(39));
    assert!(cpu > 7.0 && cpu < 9.0, "{cpu}");
}
