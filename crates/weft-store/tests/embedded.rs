//! The conformance suite against `Embedded`, plus what only the embedded backend promises:
//! persistence across reopen, crash durability, file locking, lag recovery and shutdown.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use weft_store::embedded::{Embedded, Options};
use weft_store::{Event, Precondition, Revision, Store, StoreError, conformance};

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

fn open(path: &Path) -> Embedded {
    Embedded::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

// ---- the conformance suite, one test per case on a fresh store ----

macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        const COVERED: &[&str] = &[$(stringify!($case)),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let dir = tempfile::tempdir().expect("tempdir");
                let store: Arc<dyn Store> = Arc::new(open(&db_path(&dir)));
                if let Err(err) = conformance::$case(store, "/conformance/".into()).await {
                    panic!("conformance case {} failed: {err}", stringify!($case));
                }
            }
        )*
    };
}

weft_store::for_each_conformance_case!(conformance_tests);

#[test]
fn every_conformance_case_runs_here() {
    let all: Vec<&str> = conformance::cases().iter().map(|(name, _)| *name).collect();
    assert_eq!(all, COVERED, "add new conformance cases to conformance_tests! above");
}

/// The whole suite, twice, on one store: cases must hold on a store that is not fresh
/// (already written to and compacted), as they will on a shared etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all_twice_on_one_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(open(&db_path(&dir)));
    for round in ["/one/", "/two/"] {
        if let Err(err) = conformance::run_all(store.clone(), round).await {
            panic!("conformance under {round} failed:\n{err}");
        }
    }
}

// ---- embedded-specific ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_close_keeps_data_revision_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path);
    let a = put(&store, "/r/a", "a").await;
    let b = put(&store, "/r/b", "b").await;
    store.delete("/r/b", Precondition::None).await.expect("delete");
    let c = put(&store, "/r/c", "c").await;
    store.compact(a.mod_revision).await.expect("compact");
    let rev = store.current_revision().await.expect("revision");
    store.close().await.expect("close");
    assert!(matches!(store.get("/r/a").await, Err(StoreError::Closed)));
    assert!(matches!(
        store.put("/r/x", val("x"), Precondition::None).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.watch("/r/", rev).await, Err(StoreError::Closed)));
    store.close().await.expect("closing twice is fine");

    let store = open(&path);
    assert_eq!(store.current_revision().await.unwrap(), rev);
    assert_eq!(store.compacted_revision().await.unwrap(), a.mod_revision);
    assert_eq!(store.get("/r/a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("/r/b").await.unwrap(), None);
    let (items, list_rev) = store.list("/r/").await.unwrap();
    assert_eq!((items, list_rev), (vec![a.clone(), c.clone()], rev));
    // History after the compaction point survived too.
    let mut watch = store.watch("/r/", a.mod_revision).await.expect("watch");
    let revs: Vec<Revision> =
        [next_event(&mut watch).await, next_event(&mut watch).await, next_event(&mut watch).await]
            .iter()
            .map(Event::revision)
            .collect();
    assert_eq!(revs, vec![b.mod_revision, b.mod_revision + 1, c.mod_revision]);
    assert!(matches!(store.watch("/r/", 0).await, Err(StoreError::Compacted { .. })));
    let d = put(&store, "/r/d", "d").await;
    assert_eq!(d.mod_revision, rev + 1, "revisions continue after reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_releases_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path);
    let clone = store.clone();
    let kv = put(&clone, "/d/k", "v").await;
    drop(store);
    assert!(Embedded::open(&path).is_err(), "a live clone keeps the store open");
    drop(clone);
    let store = open(&path);
    assert_eq!(store.get("/d/k").await.unwrap(), Some(kv));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_file_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let _store = open(&path);
    match Embedded::open(&path) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("locked"), "unclear error: {msg}"),
        other => panic!("second open: expected a Backend error, got {other:?}"),
    }
}

#[test]
fn opening_a_file_that_is_not_a_store_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    match Embedded::open(&path) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("garbage"), "{msg}"),
        other => panic!("expected a Backend error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_txn_writes_nothing_even_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path);
    let existing = put(&store, "/f/existing", "1").await;
    let err = store
        .txn(vec![
            weft_store::Op::Put {
                key: "/f/new".into(),
                value: val("x"),
                precondition: Precondition::None,
            },
            weft_store::Op::Delete { key: "/f/existing".into(), precondition: Precondition::None },
            weft_store::Op::Put {
                key: "/f/missing".into(),
                value: val("y"),
                precondition: Precondition::Exists,
            },
        ])
        .await
        .expect_err("a put Exists on an absent key must fail");
    assert!(matches!(err, StoreError::PreconditionFailed { .. }), "{err}");
    store.close().await.unwrap();

    let store = open(&path);
    assert_eq!(store.current_revision().await.unwrap(), existing.mod_revision);
    assert_eq!(store.get("/f/new").await.unwrap(), None);
    assert_eq!(store.get("/f/existing").await.unwrap(), Some(existing.clone()));
    // Not in the history either: after the first write comes the marker.
    let mut watch = store.watch("/f/", 0).await.unwrap();
    assert_eq!(next_event(&mut watch).await.kv, existing);
    let marker = put(&store, "/f/marker", "m").await;
    assert_eq!(marker.mod_revision, existing.mod_revision + 1);
    assert_eq!(next_event(&mut watch).await.kv, marker);
}

/// Requests batched into one commit succeed or fail independently; failures consume no
/// revision, so the successes are exactly the next revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_isolates_failing_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&db_path(&dir));
    let contended = put(&store, "/g/contended", "0").await;
    let start = contended.mod_revision;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let pre = Precondition::ModRevision(start);
                store.put("/g/contended", val(&i.to_string()), pre).await
            } else {
                store.put(&format!("/g/free/{i}"), val("v"), Precondition::Absent).await
            }
        }));
    }
    let (mut won, mut lost, mut revs) = (0, 0, BTreeSet::new());
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(kv) => {
                won += usize::from(i % 2 == 0);
                assert!(revs.insert(kv.mod_revision), "revision {} reused", kv.mod_revision);
            }
            Err(StoreError::PreconditionFailed { .. }) if i % 2 == 0 => lost += 1,
            Err(err) => panic!("request {i}: {err}"),
        }
    }
    assert_eq!((won, lost), (1, 99), "exactly one CAS wins");
    let want: BTreeSet<Revision> = (start + 1..=start + 101).collect();
    assert_eq!(revs, want, "successes take consecutive revisions, failures none");
    assert_eq!(store.current_revision().await.unwrap(), start + 101);
}

/// A watcher that falls behind the (tiny) broadcast buffer catches up from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_lag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options { broadcast_capacity: 1, ..Options::default() };
    let store = Embedded::open_with(db_path(&dir), options).expect("open");
    let mut watch = store.watch("/l/", 0).await.unwrap();
    let first = put(&store, "/l/first", "0").await;
    assert_eq!(next_event(&mut watch).await.kv, first, "live before lagging");
    let mut want = Vec::new();
    for i in 0..300 {
        want.push(put(&store, &format!("/l/{}", i % 10), &i.to_string()).await.mod_revision);
    }
    let mut got = Vec::new();
    for _ in 0..want.len() {
        got.push(next_event(&mut watch).await.revision());
    }
    assert_eq!(got, want);
    let marker = put(&store, "/l/marker", "m").await;
    assert_eq!(next_event(&mut watch).await.kv, marker, "nothing duplicated after catching up");
}

/// Lag while many writers are active and the watcher is slow: still every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_under_concurrent_writes_misses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options { broadcast_capacity: 2, max_batch: 8, ..Options::default() };
    let store = Embedded::open_with(db_path(&dir), options).expect("open");
    let mut watch = store.watch("/s/", 0).await.unwrap();
    let writers: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..100 {
                    revs.push(put(&store, &format!("/s/{t}/{i}"), "v").await.mod_revision);
                }
                revs
            })
        })
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 1600 {
        seen.push(next_event(&mut watch).await.revision());
        tokio::task::yield_now().await;
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    acked.sort_unstable();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "events out of order or duplicated");
    assert_eq!(seen, acked);
}

/// If the history a lagging watcher needs is compacted meanwhile, it gets `Compacted`, then
/// the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagged_watch_into_compacted_history_reports_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options { broadcast_capacity: 1, ..Options::default() };
    let store = Embedded::open_with(db_path(&dir), options).expect("open");
    let mut watch = store.watch("/c/", 0).await.unwrap();
    let first = put(&store, "/c/first", "0").await;
    assert_eq!(next_event(&mut watch).await.kv, first);
    for i in 0..10 {
        put(&store, &format!("/c/{i}"), "v").await;
    }
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();
    match next(&mut watch).await {
        Some(Err(StoreError::Compacted { requested, compacted })) => {
            assert_eq!((requested, compacted), (first.mod_revision, now));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(next(&mut watch).await.is_none(), "stream ends after Compacted");
}

/// Closing ends open watches (live or not yet started) and does not wait for them to be
/// dropped to release the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_watches_and_releases_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path);
    let mut live = store.watch("/w/", 0).await.unwrap();
    let mut idle = store.watch("/w/", 0).await.unwrap();
    let kv = put(&store, "/w/k", "v").await;
    assert_eq!(next_event(&mut live).await.kv, kv);
    store.close().await.unwrap();
    assert!(next(&mut live).await.is_none(), "live watch ends on close");
    assert!(next(&mut idle).await.is_none(), "unstarted watch ends on close");
    let reopened = open(&path);
    assert_eq!(reopened.get("/w/k").await.unwrap(), Some(kv));
}

/// Writes racing with close either complete durably or fail with `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_close_are_durable_or_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.put(&format!("/x/{i}"), val("v"), Precondition::None).await
            })
        })
        .collect();
    store.close().await.unwrap();
    let mut acked = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(kv) => acked.push(kv),
            Err(StoreError::Closed) => {}
            Err(err) => panic!("unexpected error racing close: {err}"),
        }
    }
    drop(store);
    let store = open(&path);
    for kv in acked {
        assert_eq!(store.get(&kv.key).await.unwrap(), Some(kv));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_options_are_clamped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Embedded::open_with(
        db_path(&dir),
        Options { broadcast_capacity: 0, max_batch: 0, linger: false },
    )
    .expect("open");
    let mut watch = store.watch("", 0).await.unwrap();
    let kv = put(&store, "/z", "v").await;
    assert_eq!(next_event(&mut watch).await.kv, kv);
}

// ---- crash durability: a child process writes until SIGKILLed ----

const CHILD_DB: &str = "WEFT_STORE_CRASH_CHILD_DB";

/// Not a test on its own: when `WEFT_STORE_CRASH_CHILD_DB` is set (by
/// `acknowledged_writes_survive_sigkill`) it writes forever, printing `ACK key revision` after
/// each acknowledged write.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_DB) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child runtime");
    runtime.block_on(async move {
        let store = open(Path::new(&path));
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0u64.. {
                        let key = format!("/crash/{t}/{i}");
                        let kv = put(&store, &key, &key).await;
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {key} {}", kv.mod_revision).expect("stdout");
                        out.flush().expect("stdout");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    const BEFORE_KILL: usize = 2000;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Some history first, so the child must continue the revision sequence.
    let base = runtime.block_on(async {
        let store = open(&path);
        for i in 0..5 {
            put(&store, &format!("/before/{i}"), "v").await;
        }
        let rev = store.current_revision().await.unwrap();
        store.close().await.unwrap();
        rev
    });

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: it was never fully acknowledged.
                Ok(_) if line.ends_with(b"\n") => {
                    if lines_tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let parse = |line: &str| -> Option<(String, Revision)> {
        let mut parts = line.strip_prefix("ACK ")?.split_whitespace();
        Some((parts.next()?.to_string(), parts.next()?.parse().ok()?))
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acks = Vec::new();
    while acks.len() < BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => acks.extend(parse(&line)),
            Err(err) => {
                let _ = child.kill();
                panic!("child produced {} acks before failing ({err})", acks.len());
            }
        }
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait child");
    assert!(!status.success(), "child must have been killed, exited with {status}");
    // Whatever the child printed before dying was acknowledged too.
    acks.extend(lines.iter().filter_map(|line| parse(&line)));
    reader.join().expect("reader thread");

    runtime.block_on(async {
        let store = open(&path);
        let mut max = base;
        let mut revisions = BTreeSet::new();
        for (key, rev) in &acks {
            let kv = store.get(key).await.unwrap().unwrap_or_else(|| panic!("acked {key} lost"));
            assert_eq!((kv.mod_revision, kv.version), (*rev, 1), "{key}");
            assert_eq!(kv.value, Bytes::from(key.clone()), "{key}");
            assert!(*rev > base, "child revision {rev} not after the earlier {base}");
            assert!(revisions.insert(*rev), "revision {rev} acknowledged twice");
            max = max.max(*rev);
        }
        let current = store.current_revision().await.unwrap();
        assert!(current >= max, "current revision {current} behind acknowledged {max}");
        let next = put(&store, "/after/crash", "v").await;
        assert_eq!(next.mod_revision, current + 1);
        assert!(next.mod_revision > max);
        let (before, _) = store.list("/before/").await.unwrap();
        assert_eq!(before.len(), 5);
        eprintln!("{} acknowledged writes survived SIGKILL; revisions up to {max}", acks.len());
    });
}

/// History is kept in segment tables of 4096 revisions; compaction drops whole segments and
/// trims the one the compaction point falls in. Watches must see exactly the retained history
/// across segment boundaries, before and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_across_segments_and_compaction() {
    const N: u64 = 9_000;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = Arc::new(open(&path));
    let writers: Vec<_> = (0..64u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..N).step_by(64) {
                    store
                        .put(&format!("/seg/k{}", i % 100), val(&i.to_string()), Precondition::None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(store.current_revision().await.unwrap(), N);

    async fn revisions_after(store: &Embedded, after: Revision, upto: Revision) -> Vec<Revision> {
        let mut watch = store.watch("/seg/", after).await.unwrap();
        let mut seen = Vec::new();
        while seen.last().copied().unwrap_or(after) < upto {
            seen.push(next_event(&mut watch).await.revision());
        }
        seen
    }
    let all = revisions_after(&store, 0, N).await;
    assert_eq!(all, (1..=N).collect::<Vec<_>>(), "full history in order across segments");

    for point in [4095, 5000, 8500] {
        store.compact(point).await.unwrap();
        assert_eq!(store.compacted_revision().await.unwrap(), point);
        match store.watch("/seg/", point - 1).await {
            Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, point),
            Ok(_) => panic!("watch below the compaction point {point} must fail"),
            Err(e) => panic!("unexpected error {e}"),
        }
        let rest = revisions_after(&store, point, N).await;
        assert_eq!(rest, (point + 1..=N).collect::<Vec<_>>(), "history after {point}");
    }
    store.close().await.unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(store.compacted_revision().await.unwrap(), 8500);
    assert_eq!(revisions_after(&store, 8500, N).await, (8501..=N).collect::<Vec<_>>());
    // New writes continue in the current segment and stay watchable.
    let kv = put(&store, "/seg/new", "x").await;
    assert_eq!(kv.mod_revision, N + 1);
    assert_eq!(revisions_after(&store, N, N + 1).await, vec![N + 1]);
}
