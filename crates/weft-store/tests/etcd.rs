//! The conformance suite against a real etcd (one `etcd` process per test, on free loopback
//! ports and a temp data dir, killed at the end), plus what only the etcd backend has to get
//! right: an etcd that is down, etcd restarting under a watch, compaction by someone else,
//! key prefixes, cancelling watches, etcd's limits.
//!
//! Needs the `etcd` binary (Debian: `apt-get install etcd-server`; CI installs it). Without it
//! every test fails saying so, unless `WEFT_SKIP_ETCD=1`, which skips them.
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use weft_store::etcd::{Etcd, LocalEtcd, Options};
use weft_store::{Event, EventKind, Op, Precondition, Store, StoreError, conformance};

/// A running etcd and the temp dir holding its data.
struct Fixture {
    etcd: LocalEtcd,
    _dir: tempfile::TempDir,
}

/// Starts etcd for `test`, or `None` when it is not installed and `WEFT_SKIP_ETCD=1`.
fn etcd(test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = LocalEtcd::for_test(dir.path(), test)?;
    Some(Fixture { etcd, _dir: dir })
}

async fn connect(etcd: &LocalEtcd, prefix: &str) -> Etcd {
    Etcd::connect(&[etcd.endpoint()], prefix)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", etcd.endpoint()))
}

async fn connect_with(etcd: &LocalEtcd, options: Options) -> Etcd {
    Etcd::connect_with(&[etcd.endpoint()], options)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", etcd.endpoint()))
}

// ---- the conformance suite, one test per case, each on its own etcd ----

macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        const COVERED: &[&str] = &[$(stringify!($case)),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fx) = etcd(stringify!($case)) else { return };
                // Under a key prefix, as a shared etcd would be used.
                let store: Arc<dyn Store> = Arc::new(connect(&fx.etcd, "/weft-conformance").await);
                if let Err(err) = conformance::$case(store, "/conformance/".into()).await {
                    panic!("conformance case {} failed on etcd: {err}", stringify!($case));
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

/// The whole suite on one etcd, twice, under two key prefixes and then with none: the cases
/// hold on an etcd that is not fresh (written to and compacted by the earlier rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all_on_one_shared_etcd() {
    let Some(fx) = etcd("conformance_run_all_on_one_shared_etcd") else { return };
    for (namespace, round) in [("/cluster-a", "/one/"), ("/cluster-b", "/one/"), ("", "/two/")] {
        let store: Arc<dyn Store> = Arc::new(connect(&fx.etcd, namespace).await);
        if let Err(err) = conformance::run_all(store, round).await {
            panic!("conformance under {namespace:?}{round} failed on etcd:\n{err}");
        }
    }
}

// ---- etcd-specific ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_an_etcd_that_is_down_fails_clearly() {
    // A port nobody listens on; no etcd binary needed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let options = Options { connect_timeout: Duration::from_secs(2), ..Options::default() };
    let started = Instant::now();
    match Etcd::connect_with(std::slice::from_ref(&endpoint), options).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(
                msg.starts_with(&format!("etcd at {endpoint} is unreachable: ")),
                "unclear error: {msg}"
            );
            assert!(msg.ends_with("is etcd running?"), "unclear error: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
            eprintln!("error: {msg}");
        }
        other => panic!("expected an Unavailable error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    for bad in [vec![], vec!["127.0.0.1".to_string()], vec!["https://127.0.0.1:2379".to_string()]] {
        match Etcd::connect(&bad, "").await {
            Err(StoreError::Backend(msg)) => assert!(msg.contains("etcd endpoint"), "{msg}"),
            other => panic!("{bad:?}: expected a Backend error, got {other:?}"),
        }
    }
}

/// Keys live under the store's prefix: two prefixes on one etcd never see each other, and the
/// keys in etcd are the prefix followed by the weft key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_clusters_apart() {
    let Some(fx) = etcd("prefixes_keep_clusters_apart") else { return };
    let a = connect(&fx.etcd, "/a").await;
    let b = connect(&fx.etcd, "/b").await;
    let bare = connect(&fx.etcd, "").await;
    let now = a.current_revision().await.unwrap();
    let mut watch_b = b.watch("/registry/", now).await.unwrap();
    let ka = put(&a, "/registry/x", "from a").await;
    let kb = put(&b, "/registry/x", "from b").await;
    assert_eq!(a.get("/registry/x").await.unwrap(), Some(ka.clone()));
    assert_eq!(b.get("/registry/x").await.unwrap().map(|kv| kv.value), Some(val("from b")));
    let (listed, _) = a.list("/registry/").await.unwrap();
    assert_eq!(listed, vec![ka.clone()], "a lists only its own keys");
    assert_eq!(next_event(&mut watch_b).await.kv, kb, "b's watch sees only b's write");
    // The same keys seen without a prefix: etcd holds "/a/registry/x" and "/b/registry/x".
    let (all, _) = bare.list("").await.unwrap();
    let keys: Vec<&str> = all.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec!["/a/registry/x", "/b/registry/x"]);
    assert_eq!(
        bare.get("/a/registry/x").await.unwrap().map(|kv| kv.mod_revision),
        Some(ka.mod_revision)
    );
    // Revisions are etcd's, global: b's write came after a's.
    assert_eq!(kb.mod_revision, ka.mod_revision + 1);
    let marker = put(&b, "/registry/marker", "m").await;
    assert_eq!(next_event(&mut watch_b).await.kv, marker, "nothing from a in between");
}

/// etcd killed under a watch and started again on the same data: the watch resumes where it
/// was, every event once; writes while etcd is down fail clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_restarts() {
    let Some(mut fx) = etcd("watch_resumes_after_etcd_restarts") else { return };
    let options = Options {
        prefix: "/r".into(),
        request_timeout: Duration::from_secs(3),
        ..Options::default()
    };
    let store = connect_with(&fx.etcd, options).await;
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/w/", start).await.unwrap();
    let before = put(&store, "/w/before", "1").await;
    assert_eq!(next_event(&mut watch).await.kv, before);
    // Written before the kill, not yet read by the watcher.
    let unread = put(&store, "/w/unread", "2").await;

    fx.etcd.kill();
    match store.put("/w/during", val("x"), Precondition::None).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("is unreachable") && msg.contains("is etcd running?"), "{msg}");
            eprintln!("write while etcd is down: {msg}");
        }
        other => panic!("a write with etcd down must fail clearly, got {other:?}"),
    }
    fx.etcd.restart().expect("restart etcd");

    assert_eq!(next_event(&mut watch).await.kv, unread, "the unread event survives");
    let after = put(&store, "/w/after", "3").await;
    assert_eq!(next_event(&mut watch).await.kv, after, "live events after the restart");
    let deleted = store.delete("/w/before", Precondition::Exists).await.unwrap().unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(
        (event.kv.value, event.kv.create_revision),
        (deleted.value, deleted.create_revision)
    );
    // A watch opened after the restart from before it replays the same history.
    let mut replay = store.watch("/w/", start).await.unwrap();
    let revs: Vec<u64> = [
        next_event(&mut replay).await,
        next_event(&mut replay).await,
        next_event(&mut replay).await,
        next_event(&mut replay).await,
    ]
    .iter()
    .map(Event::revision)
    .collect();
    assert_eq!(
        revs,
        vec![before.mod_revision, unread.mod_revision, after.mod_revision, event.kv.mod_revision]
    );
}

/// etcd killed for good: the watch tries to resume for `watch_resume`, then ends with one
/// clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_clearly_when_etcd_stays_down() {
    let Some(mut fx) = etcd("watch_ends_clearly_when_etcd_stays_down") else { return };
    let options = Options {
        watch_resume: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let store = connect_with(&fx.etcd, options).await;
    let mut watch = store.watch("/w/", store.current_revision().await.unwrap()).await.unwrap();
    let kv = put(&store, "/w/k", "v").await;
    assert_eq!(next_event(&mut watch).await.kv, kv);
    fx.etcd.kill();
    let killed = Instant::now();
    match next(&mut watch).await {
        Some(Err(StoreError::Unavailable(msg))) => {
            assert!(msg.contains("could not resume") && msg.contains("is unreachable"), "{msg}");
            assert!(msg.contains(&format!("after revision {}", kv.mod_revision)), "{msg}");
            eprintln!("watch error: {msg}");
        }
        other => panic!("expected an Unavailable error, got {other:?}"),
    }
    let waited = killed.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(next(&mut watch).await.is_none(), "the stream ends after the error");
}

/// Compaction done by someone else sharing the etcd (another weft server, etcd's own
/// auto-compaction): the compaction point is read from etcd, and a watch from before it
/// fails with `Compacted`, the embedded store's error for too-old revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_by_someone_else_makes_old_revisions_too_old() {
    let Some(fx) = etcd("compaction_by_someone_else_makes_old_revisions_too_old") else { return };
    let store = connect(&fx.etcd, "/c").await;
    let other = connect(&fx.etcd, "/other-cluster").await;
    assert_eq!(store.compacted_revision().await.unwrap(), 0, "fresh etcd");
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(put(&store, &format!("/k/{i}"), "v").await.mod_revision);
    }
    other.compact(revs[6]).await.expect("compaction by the other store");
    assert_eq!(store.compacted_revision().await.unwrap(), revs[6], "seen by this store too");
    for too_old in [0, revs[2], revs[6] - 1] {
        match store.watch("/k/", too_old).await {
            Err(StoreError::Compacted { requested, compacted }) => {
                assert_eq!((requested, compacted), (too_old, revs[6]));
            }
            Ok(_) => panic!("watch after {too_old} must fail: compacted at {}", revs[6]),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let mut watch = store.watch("/k/", revs[6]).await.expect("watch at the compaction point");
    for rev in &revs[7..] {
        assert_eq!(next_event(&mut watch).await.revision(), *rev);
    }
    // Later compactions move the point; compacting below it is a no-op.
    store.compact(revs[8]).await.unwrap();
    store.compact(revs[7]).await.unwrap();
    assert_eq!(other.compacted_revision().await.unwrap(), revs[8]);
    assert_eq!(store.compacted_revision().await.unwrap(), revs[8]);
    // A live watcher is not disturbed by compaction behind it.
    let last = put(&store, "/k/last", "v").await;
    assert_eq!(next_event(&mut watch).await.kv, last);
    match store.compact(last.mod_revision + 5).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (last.mod_revision + 5, last.mod_revision));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

/// A watch that broke with etcd and resumes into history compacted meanwhile: etcd cancels the
/// resumed watch with its compaction point, and the stream ends with `Compacted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resuming_into_compacted_history_ends_with_compacted() {
    let test = "a_watch_resuming_into_compacted_history_ends_with_compacted";
    let Some(mut fx) = etcd(test) else { return };
    let store = connect(&fx.etcd, "/rc").await;
    let mut watch = store.watch("/w/", store.current_revision().await.unwrap()).await.unwrap();
    let seen = put(&store, "/w/seen", "1").await;
    assert_eq!(next_event(&mut watch).await.kv, seen);
    // The watch is not polled from here on, so it only finds out it broke afterwards.
    fx.etcd.kill();
    fx.etcd.restart().expect("restart etcd");
    put(&store, "/w/missed", "2").await;
    let last = put(&store, "/elsewhere", "3").await;
    store.compact(last.mod_revision).await.unwrap();
    match next(&mut watch).await {
        Some(Err(StoreError::Compacted { requested, compacted })) => {
            assert_eq!((requested, compacted), (seen.mod_revision, last.mod_revision));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(next(&mut watch).await.is_none(), "the stream ends after Compacted");
}

/// Dropping a watch stream cancels the watch on etcd (its watcher count goes back down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_watch_cancels_it_on_etcd() {
    let Some(fx) = etcd("dropping_a_watch_cancels_it_on_etcd") else { return };
    const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
    let store = connect(&fx.etcd, "/d").await;
    let base = fx.etcd.metric(WATCHERS).expect("etcd reports its watcher count");
    let now = store.current_revision().await.unwrap();
    let mut watches = Vec::new();
    for _ in 0..5 {
        watches.push(store.watch("/w/", now).await.unwrap());
    }
    let kv = put(&store, "/w/k", "v").await;
    for watch in &mut watches {
        assert_eq!(next_event(watch).await.kv, kv);
    }
    assert_eq!(fx.etcd.metric(WATCHERS), Some(base + 5.0), "five watchers on etcd");
    drop(watches);
    let deadline = Instant::now() + WAIT;
    while fx.etcd.metric(WATCHERS) != Some(base) {
        assert!(
            Instant::now() < deadline,
            "watchers still on etcd: {:?}",
            fx.etcd.metric(WATCHERS)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// etcd's own limits come back as clear errors, and a precondition failure among many ops
/// names the right key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_limits_fail_clearly() {
    let Some(fx) = etcd("etcd_limits_fail_clearly") else { return };
    let store = connect(&fx.etcd, "/l").await;
    let ops = |n: usize| -> Vec<Op> {
        (0..n)
            .map(|i| Op::Put {
                key: format!("/many/{i:03}"),
                value: val("v"),
                precondition: Precondition::None,
            })
            .collect()
    };
    let r = store.txn(ops(128)).await.expect("128 ops: etcd's default limit");
    assert_eq!(r.results.len(), 128);
    match store.txn(ops(129)).await {
        Err(StoreError::TooLarge(msg)) => assert!(msg.contains("--max-txn-ops"), "{msg}"),
        other => panic!("expected a TooLarge error, got {other:?}"),
    }
    let mut conditional = ops(100);
    if let Op::Put { precondition, .. } = &mut conditional[57] {
        *precondition = Precondition::ModRevision(r.revision + 100);
    }
    if let Op::Put { precondition, .. } = &mut conditional[90] {
        *precondition = Precondition::Absent;
    }
    match store.txn(conditional).await {
        Err(StoreError::PreconditionFailed { key, actual, .. }) => {
            assert_eq!((key.as_str(), actual), ("/many/057", Some(r.revision)));
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    let big = Bytes::from(vec![b'x'; 2 << 20]);
    match store.put("/big", big, Precondition::None).await {
        Err(StoreError::TooLarge(msg)) => assert!(msg.contains("--max-request-bytes"), "{msg}"),
        other => panic!("expected a TooLarge error, got {other:?}"),
    }
    // Lists bigger than one page come back whole and sorted, from one snapshot.
    let (listed, rev) = store.list("/many/").await.unwrap();
    assert_eq!(listed.len(), 128);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));
    for start in (128..1228).step_by(100) {
        store.txn(ops(start + 100).split_off(start)).await.unwrap();
    }
    let (listed, rev2) = store.list("/many/").await.unwrap();
    assert_eq!(listed.len(), 1228, "three pages");
    assert!(rev2 > rev && listed.windows(2).all(|w| w[0].key < w[1].key));
    assert!(listed.iter().all(|kv| kv.mod_revision <= rev2));
}

/// Two candidates: one leads; when it resigns the other takes over at once; when the leader's
/// etcd connection is cut (here: etcd stopped), it says it lost leadership within the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_one_at_a_time() {
    let Some(mut fx) = etcd("leader_election_one_at_a_time") else { return };
    let a = connect(&fx.etcd, "/le").await;
    let b = connect(&fx.etcd, "/le").await;
    let ttl = Duration::from_secs(3);
    let lead_a = a.lead("controllers", "a", ttl).await.unwrap();
    assert!(lead_a.holds());
    // b campaigns and waits while a leads.
    let b2 = b.clone();
    let mut campaign = tokio::spawn(async move { b2.lead("controllers", "b", ttl).await });
    assert!(
        tokio::time::timeout(Duration::from_secs(4), &mut campaign).await.is_err(),
        "b must not lead while a does (a keeps its lease alive past the TTL)"
    );
    let started = std::time::Instant::now();
    lead_a.resign().await;
    let mut lead_b = tokio::time::timeout(Duration::from_secs(5), campaign)
        .await
        .expect("b leads once a resigned")
        .unwrap()
        .unwrap();
    eprintln!("leadership moved {:?} after a resigned", started.elapsed());
    // etcd gone: b stops counting itself the leader within two thirds of the TTL (+ slack).
    fx.etcd.kill();
    let t = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), lead_b.lost()).await.expect("lost");
    assert!(!lead_b.holds());
    assert!(t.elapsed() < ttl, "lost after {:?}, before the lease could expire", t.elapsed());
}
