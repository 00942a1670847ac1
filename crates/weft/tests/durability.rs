//! Durability: a write the server acknowledged survives SIGKILL, and revisions keep increasing
//! across restarts.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

const WRITERS: usize = 8;
const ACKS_PER_CYCLE: usize = 300;

/// Runs 8 writers until at least `ACKS_PER_CYCLE` writes are acknowledged, then SIGKILLs the
/// server while they are still writing. Returns every acknowledged (name, resourceVersion).
fn write_then_kill(s: &mut Server, cycle: usize) -> Vec<(String, u64)> {
    let rt = runtime();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = s.client().with_timeout(Duration::from_secs(10));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            let count = count.clone();
            let stop = stop.clone();
            rt.spawn(async move {
                let mut failures = 0;
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // New objects and updates of earlier ones (from earlier cycles too).
                    let name = format!("obj-{w}-{}", i % 40);
                    let obj = service_labeled(
                        &name,
                        json!({ "cycle": cycle.to_string(), "n": i.to_string() }),
                    );
                    match client.put_value(&obj, false).await {
                        Ok(v) => {
                            acked.lock().unwrap().push((name, rv(&v)));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            // The server is gone (or going): stop after a few tries.
                            failures += 1;
                            if failures > 3 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        })
        .collect();
    wait_for("acknowledged writes", Duration::from_secs(60), || {
        (count.load(Ordering::SeqCst) >= ACKS_PER_CYCLE).then_some(())
    });
    // SIGKILL with writes in flight.
    s.kill();
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKS_PER_CYCLE);
    acked
}

#[test]
fn acknowledged_writes_survive_sigkill_three_times() {
    let mut s = Server::start();
    // name -> highest acknowledged revision, over all cycles.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for cycle in 0..3 {
        let this = write_then_kill(&mut s, cycle);
        let max_this = this.iter().map(|a| a.1).max().unwrap();
        eprintln!("cycle {cycle}: {} acknowledged writes, up to revision {max_this}", this.len());
        for (name, r) in this {
            let e = acked.entry(name).or_insert(0);
            *e = (*e).max(r);
        }
        s.restart();
        let r = s.get("/api/v1/namespaces/default/services");
        assert_eq!(r.status, 200);
        let list = r.json();
        let listed: BTreeMap<String, u64> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (name_of(o).to_string(), rv(o)))
            .collect();
        let list_rev: u64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert!(
            list_rev >= max_this,
            "cycle {cycle}: store revision {list_rev} < acknowledged {max_this}"
        );
        let mut lost = Vec::new();
        for (name, r) in &acked {
            match listed.get(name) {
                Some(have) if have >= r => {}
                other => lost.push(format!("{name}: acknowledged at {r}, now {other:?}")),
            }
        }
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} acknowledged writes lost: {lost:?}",
            lost.len()
        );
        // Point reads agree with the list.
        for name in acked.keys().take(10) {
            assert_eq!(rv(&s.object(&svc_path(name)).unwrap()), listed[name]);
        }
        // A new write gets a revision above everything acknowledged before the crash.
        let max_acked = *acked.values().max().unwrap();
        let fresh =
            s.put_json(&svc_path(&format!("after-{cycle}")), &service(&format!("after-{cycle}")));
        assert_eq!(fresh.status, 201, "{}", fresh.text());
        assert!(
            rv(&fresh.json()) > max_acked,
            "cycle {cycle}: new revision {} <= acknowledged {max_acked}",
            rv(&fresh.json())
        );
        acked.insert(format!("after-{cycle}"), rv(&fresh.json()));
        // (Resuming a watch across the restart is watch.rs's business; see
        // a_watch_opened_right_after_a_restart_delivers_what_is_there.)
    }
}
