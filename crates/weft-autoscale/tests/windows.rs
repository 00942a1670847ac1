//! The per-instance sample windows and the observations made from them.

mod common;

use common::*;
use weft_autoscale::{MetricType, Windows};

const RPS: MetricType = MetricType::Rps;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn per_instance_averages_over_the_stable_and_burst_windows() {
    let mut w = Windows::new(secs(60), secs(6));
    for t in 0..120 {
        let v = if t < 100 { 10.0 } else { 40.0 };
        w.record("a", RPS, secs(t), v);
    }
    let now = secs(119);
    // Stable: samples at 60..=119: 40 at 10, 20 at 40.
    assert!(close(w.average("a", RPS, secs(60), now).unwrap(), (40.0 * 10.0 + 20.0 * 40.0) / 60.0));
    assert!(close(w.average("a", RPS, secs(6), now).unwrap(), 40.0));
    assert_eq!(w.average("a", MetricType::Cpu, secs(60), now), None);
    assert_eq!(w.average("b", RPS, secs(60), now), None);
}

#[test]
fn observe_totals_over_ready_instances() {
    let mut w = Windows::new(secs(60), secs(6));
    for t in 0..60 {
        w.record("a", RPS, secs(t), 10.0);
        w.record("b", RPS, secs(t), 30.0);
        w.record("c", RPS, secs(t), 99.0); // not ready: left out
    }
    let obs = w.observe(secs(59), 3, [("a", true), ("b", true), ("c", false)], false);
    let r = obs.reading(RPS).unwrap();
    assert_eq!((r.reporting, r.missing, obs.unready), (2, 0, 1));
    assert!(close(r.stable, 40.0) && close(r.burst, 40.0), "{r:?}");
    assert!(obs.reading(MetricType::Concurrency).is_none());
    assert_eq!(obs.current_replicas, 3);
    assert!(!obs.poked);
}

#[test]
fn totals_are_not_skewed_by_new_instances() {
    // One instance carries 100 rps for a minute; then a second joins and each carries 50.
    let mut w = Windows::new(secs(60), secs(6));
    for t in 0..60 {
        w.record("old", RPS, secs(t), 100.0);
    }
    for t in 60..66 {
        w.record("old", RPS, secs(t), 50.0);
        w.record("new", RPS, secs(t), 50.0);
    }
    let obs = w.observe(secs(65), 2, [("old", true), ("new", true)], false);
    let r = obs.reading(RPS).unwrap();
    // The load was 100 throughout; summing per-instance averages would say 145.
    assert!(close(r.stable, 100.0) && close(r.burst, 100.0), "{r:?}");
    assert!(close(
        w.average("old", RPS, secs(60), secs(65)).unwrap()
            + w.average("new", RPS, secs(60), secs(65)).unwrap(),
        (54.0 * 100.0 + 6.0 * 50.0) / 60.0 + 50.0
    ));
}

#[test]
fn departed_instances_count_for_the_time_they_served() {
    // Two instances at 50 each; one is scaled away at t=30 and the other takes 100.
    let mut w = Windows::new(secs(60), secs(6));
    for t in 0..60 {
        if t < 30 {
            w.record("a", RPS, secs(t), 50.0);
            w.record("b", RPS, secs(t), 50.0);
        } else {
            w.record("a", RPS, secs(t), 100.0);
        }
    }
    let obs = w.observe(secs(59), 1, [("a", true)], false);
    let r = obs.reading(RPS).unwrap();
    assert_eq!(r.reporting, 1);
    // A sample stands for less than 3 s, so "b"'s last (t=29) still counts at t=30 and 31.
    assert!(close(r.stable, (58.0 * 100.0 + 2.0 * 150.0) / 60.0), "{r:?}");
    assert!(close(r.burst, 100.0));
}

#[test]
fn silent_ready_instances_are_missing() {
    let mut w = Windows::new(secs(60), secs(6));
    for t in 0..30 {
        w.record("a", RPS, secs(t), 10.0);
        if t < 20 {
            w.record("b", RPS, secs(t), 10.0);
        }
    }
    let obs = w.observe(secs(29), 3, [("a", true), ("b", true), ("never", true)], false);
    let r = obs.reading(RPS).unwrap();
    assert_eq!((r.reporting, r.missing), (1, 2));
    // Nobody reporting at all: no reading.
    let obs = w.observe(secs(100), 2, [("a", true), ("b", true)], true);
    assert!(obs.reading(RPS).is_none());
    assert!(obs.poked);
}

#[test]
fn scrape_jitter_does_not_drop_steps() {
    // Samples 1 s apart but landing at varying offsets: every step still sees one.
    let mut w = Windows::new(secs(10), secs(3));
    for t in 0..20u64 {
        let jitter = [0, 900, 100, 950, 0][t as usize % 5];
        w.record("a", RPS, secs(t) + std::time::Duration::from_millis(jitter), 7.0);
    }
    let obs = w.observe(secs(19) + std::time::Duration::from_millis(500), 1, [("a", true)], false);
    let r = obs.reading(RPS).unwrap();
    assert!(close(r.stable, 7.0) && close(r.burst, 7.0), "{r:?}");
}

#[test]
fn prune_drops_stale_samples_and_instances() {
    let mut w = Windows::new(secs(60), secs(6));
    w.record("gone", RPS, secs(0), 1.0);
    w.record("here", RPS, secs(0), 1.0);
    w.record("here", RPS, secs(100), 2.0);
    w.prune(secs(100));
    assert_eq!(w.instances().collect::<Vec<_>>(), vec!["here"]);
    assert_eq!(w.average("here", RPS, secs(1000), secs(100)), Some(2.0));
}

#[test]
fn bad_and_out_of_order_samples() {
    let mut w = Windows::new(secs(60), secs(6));
    w.record("a", RPS, secs(5), 5.0);
    w.record("a", RPS, secs(3), 3.0); // late, inserted in order
    w.record("a", RPS, secs(4), f64::NAN);
    w.record("a", RPS, secs(4), -1.0);
    w.record("a", RPS, secs(4), f64::INFINITY);
    assert_eq!(w.average("a", RPS, secs(60), secs(5)), Some(4.0));
    assert_eq!(w.average("a", RPS, secs(60), secs(4)), Some(3.0));
}
