//! A backend-independent conformance suite for [`Store`].
//!
//! The rest of weft relies on the contract, not on a backend, so the same checks must pass for
//! every backend (embedded and etcd). Each case drives a store only through the trait
//! and returns `Err(description)` instead of panicking, so a runner can report every failing
//! case by name.
//!
//! Assumptions, so that an existing (non-empty) store can be used:
//! - each case only touches keys under the prefix it is given, and cases run one at a time
//!   (several cases check exact revision arithmetic, which other writers would disturb);
//! - history is not assumed to start at revision 0: "from the start" means from the
//!   compaction point.
//!
//! Needs a tokio runtime with timers enabled (cases spawn tasks and use timeouts); run it on a
//! multi-threaded one so that the concurrency cases really are concurrent.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::{
    Event, EventKind, KeyValue, Op, Precondition, Revision, Store, StoreError, WatchStream,
};

/// One conformance case: `(store, key prefix) -> outcome`.
pub type Case = fn(Arc<dyn Store>, String) -> BoxFuture<'static, Result<(), String>>;

/// How long a case waits for an expected event before failing.
const WAIT: Duration = Duration::from_secs(20);

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name, in the order [`run_all`] runs them.
        pub fn cases() -> Vec<(&'static str, Case)> {
            vec![$((stringify!($name), (|store, prefix| Box::pin($name(store, prefix))) as Case)),*]
        }
    };
}

/// Calls macro `$m` with the name of every conformance case, in order: one list for the
/// suite here and for the backends' test files, which turn each case into a `#[test]` of its
/// own (`weft_store::for_each_conformance_case!(my_macro);`).
#[macro_export]
macro_rules! for_each_conformance_case {
    ($m:ident) => {
        $m!(
            revision_monotonic,
            key_bookkeeping,
            compare_and_swap,
            absent_and_exists,
            delete_semantics,
            txn_atomicity,
            txn_key_once,
            list_snapshot,
            watch_from_start,
            watch_from_middle,
            watch_live,
            watch_dedupe_history_to_live,
            watch_compacted,
            compact_semantics,
            concurrent_writers,
        );
    };
}

for_each_conformance_case!(cases);

/// Runs every case one after another against `store`, each under `{prefix}{case}/`, and
/// reports all failures together.
pub async fn run_all(store: Arc<dyn Store>, prefix: &str) -> Result<(), String> {
    let mut failures = Vec::new();
    for (name, case) in cases() {
        if let Err(err) = case(store.clone(), format!("{prefix}{name}/")).await {
            failures.push(format!("{name}: {err}"));
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err(format!("{}: {:?} != {:?}", format!($($msg)+), left, right));
                }
            }
        }
    };
}

trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Context<T> for Result<T, StoreError> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|err| format!("{what}: unexpected error: {err}"))
    }
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put_op(key: &str, value: &str, precondition: Precondition) -> Op {
    Op::Put { key: key.to_string(), value: val(value), precondition }
}

fn delete_op(key: &str, precondition: Precondition) -> Op {
    Op::Delete { key: key.to_string(), precondition }
}

async fn put(store: &dyn Store, key: &str, value: &str) -> Result<KeyValue, String> {
    store.put(key, val(value), Precondition::None).await.ctx(&format!("put {key}"))
}

async fn current(store: &dyn Store) -> Result<Revision, String> {
    store.current_revision().await.ctx("current_revision")
}

/// Checks that `result` is a precondition failure on `key` reporting `actual`.
fn expect_precondition<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    key: &str,
    actual: Option<Revision>,
    what: &str,
) -> Result<(), String> {
    match result {
        Err(StoreError::PreconditionFailed { key: k, actual: a, .. }) => {
            ensure_eq!(k, key, "{what}: failing key");
            ensure_eq!(a, actual, "{what}: reported actual revision");
            Ok(())
        }
        other => Err(format!("{what}: expected PreconditionFailed, got {other:?}")),
    }
}

async fn next_event(watch: &mut WatchStream, what: &str) -> Result<Event, String> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Err(_) => Err(format!("{what}: no event within {WAIT:?}")),
        Ok(None) => Err(format!("{what}: watch ended unexpectedly")),
        Ok(Some(Err(err))) => Err(format!("{what}: watch failed: {err}")),
        Ok(Some(Ok(event))) => Ok(event),
    }
}

/// Writes a marker key and checks it is the very next event of each watch: proves nothing
/// else (duplicate, stray or unpublished event) is queued before it, without sleeping.
async fn expect_marker_next(
    store: &dyn Store,
    watches: &mut [&mut WatchStream],
    key: &str,
    what: &str,
) -> Result<(), String> {
    let marker = put(store, key, "marker").await?;
    for (i, watch) in watches.iter_mut().enumerate() {
        let event = next_event(watch, what).await?;
        ensure_eq!(event.kv, marker, "{what}: watch {i}: expected the marker write as next event");
    }
    Ok(())
}

fn describe(events: &[Event]) -> Vec<(Revision, &str)> {
    events.iter().map(|e| (e.revision(), e.kv.key.as_str())).collect()
}

/// Every transaction that writes gets the next revision; no-ops and failures do not bump it.
pub async fn revision_monotonic(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let r0 = current(store).await?;
    let a = put(store, &format!("{p}a"), "1").await?;
    ensure!(a.mod_revision > r0, "first write revision {} not above {r0}", a.mod_revision);
    ensure_eq!(current(store).await?, a.mod_revision, "current revision after a write");
    let b = put(store, &format!("{p}b"), "1").await?;
    ensure_eq!(b.mod_revision, a.mod_revision + 1, "second write revision");
    let c = put(store, &format!("{p}a"), "2").await?;
    ensure_eq!(c.mod_revision, b.mod_revision + 1, "third write revision");

    let gone =
        store.delete(&format!("{p}absent"), Precondition::None).await.ctx("delete absent")?;
    ensure_eq!(gone, None, "deleting an absent key returns None");
    ensure_eq!(current(store).await?, c.mod_revision, "a no-op delete must not bump");
    let noop = store
        .txn(vec![
            delete_op(&format!("{p}x"), Precondition::None),
            delete_op(&format!("{p}y"), Precondition::None),
        ])
        .await
        .ctx("no-op txn")?;
    ensure_eq!(noop.revision, c.mod_revision, "no-op txn reports the current revision");
    ensure_eq!(noop.results, vec![None, None], "no-op txn results");
    let empty = store.txn(Vec::new()).await.ctx("empty txn")?;
    ensure_eq!(empty.revision, c.mod_revision, "empty txn reports the current revision");
    ensure!(empty.results.is_empty(), "empty txn has no results");

    let failed = store.put(&format!("{p}a"), val("3"), Precondition::Absent).await;
    expect_precondition(failed, &format!("{p}a"), Some(c.mod_revision), "put Absent on existing")?;
    ensure_eq!(current(store).await?, c.mod_revision, "a failed txn must not bump");
    let d = put(store, &format!("{p}b"), "2").await?;
    ensure_eq!(d.mod_revision, c.mod_revision + 1, "revision after no-ops and failures");
    Ok(())
}

/// create_revision / mod_revision / version as etcd keeps them.
pub async fn key_bookkeeping(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let k = format!("{p}k");
    ensure_eq!(store.get(&k).await.ctx("get absent")?, None, "absent key");
    let v1 = put(store, &k, "one").await?;
    ensure_eq!(v1.key, k, "key");
    ensure_eq!(v1.value, val("one"), "value");
    ensure_eq!(v1.create_revision, v1.mod_revision, "create == mod on creation");
    ensure_eq!(v1.version, 1, "version after creation");
    ensure_eq!(store.get(&k).await.ctx("get")?, Some(v1.clone()), "get after create");

    let v2 = put(store, &k, "two").await?;
    ensure_eq!(v2.create_revision, v1.create_revision, "create_revision kept on update");
    ensure!(v2.mod_revision > v1.mod_revision, "mod_revision grows on update");
    ensure_eq!(v2.version, 2, "version after update");
    let v3 = put(store, &k, "three").await?;
    ensure_eq!(v3.version, 3, "version after second update");
    ensure_eq!(store.get(&k).await.ctx("get")?, Some(v3.clone()), "get after updates");

    let other = put(store, &format!("{p}other"), "x").await?;
    ensure_eq!(store.get(&k).await.ctx("get")?, Some(v3), "other keys leave this one alone");
    ensure_eq!(other.version, 1, "independent version per key");
    Ok(())
}

/// Compare-and-swap on mod_revision for puts and deletes.
pub async fn compare_and_swap(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let k = format!("{p}cas");
    let missing = store.put(&k, val("x"), Precondition::ModRevision(1)).await;
    expect_precondition(missing, &k, None, "CAS on an absent key")?;
    ensure_eq!(store.get(&k).await.ctx("get")?, None, "failed CAS wrote nothing");

    let v1 = put(store, &k, "1").await?;
    let v2 = store
        .put(&k, val("2"), Precondition::ModRevision(v1.mod_revision))
        .await
        .ctx("CAS with the current mod_revision")?;
    ensure_eq!(v2.version, 2, "version after CAS");
    let stale = store.put(&k, val("3"), Precondition::ModRevision(v1.mod_revision)).await;
    expect_precondition(stale, &k, Some(v2.mod_revision), "CAS with a stale mod_revision")?;
    ensure_eq!(store.get(&k).await.ctx("get")?, Some(v2.clone()), "stale CAS wrote nothing");

    let stale_delete = store.delete(&k, Precondition::ModRevision(v1.mod_revision)).await;
    expect_precondition(stale_delete, &k, Some(v2.mod_revision), "delete with stale revision")?;
    ensure_eq!(store.get(&k).await.ctx("get")?, Some(v2.clone()), "stale delete kept the key");
    let deleted = store
        .delete(&k, Precondition::ModRevision(v2.mod_revision))
        .await
        .ctx("delete with current revision")?;
    ensure_eq!(deleted, Some(v2), "CAS delete returns the deleted state");
    ensure_eq!(store.get(&k).await.ctx("get")?, None, "CAS delete removed the key");
    Ok(())
}

/// Create-only and update-only writes.
pub async fn absent_and_exists(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let k = format!("{p}k");
    let update = store.put(&k, val("x"), Precondition::Exists).await;
    expect_precondition(update, &k, None, "put Exists on an absent key")?;
    let delete = store.delete(&k, Precondition::Exists).await;
    expect_precondition(delete, &k, None, "delete Exists on an absent key")?;

    let created = store.put(&k, val("1"), Precondition::Absent).await.ctx("put Absent")?;
    ensure_eq!(created.version, 1, "created version");
    let again = store.put(&k, val("2"), Precondition::Absent).await;
    expect_precondition(again, &k, Some(created.mod_revision), "put Absent on existing key")?;
    let updated = store.put(&k, val("2"), Precondition::Exists).await.ctx("put Exists")?;
    ensure_eq!(updated.version, 2, "updated version");
    let absent_delete = store.delete(&k, Precondition::Absent).await;
    expect_precondition(
        absent_delete,
        &k,
        Some(updated.mod_revision),
        "delete Absent on existing",
    )?;
    let deleted = store.delete(&k, Precondition::Exists).await.ctx("delete Exists")?;
    ensure_eq!(deleted, Some(updated), "delete Exists returns the last state");
    Ok(())
}

/// Deletes return the last state, publish it with the delete's revision, and a re-created key
/// starts a new incarnation.
pub async fn delete_semantics(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let k = format!("{p}k");
    let start = current(store).await?;
    let mut watch = store.watch(&p, start).await.ctx("watch")?;
    let v1 = put(store, &k, "1").await?;
    let v2 = put(store, &k, "2").await?;
    let rev_before = current(store).await?;
    let deleted = store.delete(&k, Precondition::None).await.ctx("delete")?;
    ensure_eq!(deleted, Some(v2.clone()), "delete returns the state before deletion");
    let del_rev = current(store).await?;
    ensure_eq!(del_rev, rev_before + 1, "a delete is a write");
    ensure_eq!(store.get(&k).await.ctx("get")?, None, "deleted key is gone");
    ensure_eq!(
        store.delete(&k, Precondition::None).await.ctx("delete again")?,
        None,
        "second delete"
    );
    ensure_eq!(current(store).await?, del_rev, "deleting a deleted key is a no-op");

    let v3 = put(store, &k, "3").await?;
    ensure_eq!(v3.version, 1, "re-created key starts at version 1");
    ensure_eq!(v3.create_revision, v3.mod_revision, "re-created key has a new create_revision");
    ensure!(v3.create_revision > v1.create_revision, "new incarnation is newer");

    let e1 = next_event(&mut watch, "create event").await?;
    ensure_eq!((e1.kind, e1.kv), (EventKind::Put, v1), "create event");
    let e2 = next_event(&mut watch, "update event").await?;
    ensure_eq!((e2.kind, e2.kv), (EventKind::Put, v2.clone()), "update event");
    let e3 = next_event(&mut watch, "delete event").await?;
    ensure_eq!(e3.kind, EventKind::Delete, "delete event kind");
    ensure_eq!(e3.kv.key, k, "delete event key");
    ensure_eq!(e3.kv.value, v2.value, "delete event carries the last value");
    ensure_eq!(e3.kv.create_revision, v2.create_revision, "delete event create_revision");
    ensure_eq!(e3.kv.mod_revision, del_rev, "delete event mod_revision is the delete's");
    ensure_eq!(e3.revision(), del_rev, "delete event revision");
    let e4 = next_event(&mut watch, "re-create event").await?;
    ensure_eq!((e4.kind, e4.kv), (EventKind::Put, v3), "re-create event");
    expect_marker_next(store, &mut [&mut watch], &format!("{p}marker"), "after delete events").await
}

/// A multi-op transaction is one revision, all or nothing, and its events are consecutive.
pub async fn txn_atomicity(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let existing = put(store, &c, "c0").await?;
    let mut watch = store.watch(&p, existing.mod_revision).await.ctx("watch")?;
    let before = current(store).await?;

    // The last op fails: the first two must not be written.
    let failed = store
        .txn(vec![
            put_op(&a, "a1", Precondition::Absent),
            delete_op(&c, Precondition::None),
            put_op(&b, "b1", Precondition::ModRevision(existing.mod_revision + 1000)),
        ])
        .await;
    expect_precondition(failed, &b, None, "txn with a failing last op")?;
    ensure_eq!(store.get(&a).await.ctx("get a")?, None, "failed txn did not write a");
    ensure_eq!(store.get(&c).await.ctx("get c")?, Some(existing.clone()), "failed txn kept c");
    ensure_eq!(current(store).await?, before, "failed txn did not bump the revision");

    let ok = store
        .txn(vec![
            put_op(&a, "a1", Precondition::Absent),
            delete_op(&c, Precondition::ModRevision(existing.mod_revision)),
            put_op(&b, "b1", Precondition::None),
        ])
        .await
        .ctx("txn")?;
    ensure_eq!(ok.revision, before + 1, "a transaction is one revision");
    ensure_eq!(ok.results.len(), 3, "one result per op");
    let ra = ok.results[0].clone().ok_or("put a has no result")?;
    ensure_eq!(ok.results[1], Some(existing.clone()), "delete result is the previous state");
    let rb = ok.results[2].clone().ok_or("put b has no result")?;
    ensure_eq!((ra.mod_revision, rb.mod_revision), (ok.revision, ok.revision), "shared revision");
    ensure_eq!(store.get(&a).await.ctx("get a")?, Some(ra.clone()), "a written");
    ensure_eq!(store.get(&b).await.ctx("get b")?, Some(rb.clone()), "b written");
    ensure_eq!(store.get(&c).await.ctx("get c")?, None, "c deleted");

    // Only the successful transaction shows up, as three consecutive events in op order.
    let events = [
        next_event(&mut watch, "txn event 1").await?,
        next_event(&mut watch, "txn event 2").await?,
        next_event(&mut watch, "txn event 3").await?,
    ];
    ensure_eq!(
        events.iter().map(|e| (e.kind, e.kv.key.clone(), e.revision())).collect::<Vec<_>>(),
        vec![
            (EventKind::Put, a.clone(), ok.revision),
            (EventKind::Delete, c.clone(), ok.revision),
            (EventKind::Put, b.clone(), ok.revision),
        ],
        "txn events"
    );
    ensure_eq!(events[0].kv, ra, "event a");
    ensure_eq!(events[2].kv, rb, "event b");
    expect_marker_next(store, &mut [&mut watch], &format!("{p}marker"), "after txn events").await
}

/// A transaction writes each key at most once (etcd's rule): naming a key twice is refused
/// before anything is checked or written, whatever the ops and preconditions.
pub async fn txn_key_once(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let (k, other) = (format!("{p}k"), format!("{p}other"));
    let existing = put(store, &k, "0").await?;
    let before = current(store).await?;
    let twice: [Vec<Op>; 4] = [
        vec![put_op(&k, "1", Precondition::None), put_op(&k, "2", Precondition::None)],
        vec![delete_op(&k, Precondition::Exists), put_op(&k, "1", Precondition::Absent)],
        vec![
            put_op(&other, "x", Precondition::Absent),
            put_op(&k, "1", Precondition::ModRevision(existing.mod_revision)),
            delete_op(&k, Precondition::None),
        ],
        vec![delete_op(&k, Precondition::None), delete_op(&k, Precondition::None)],
    ];
    for (i, ops) in twice.into_iter().enumerate() {
        match store.txn(ops).await {
            Err(StoreError::DuplicateKey { key }) => ensure_eq!(key, k, "txn {i}: duplicate key"),
            other => {
                return Err(format!(
                    "txn {i} names {k} twice: expected DuplicateKey, got {other:?}"
                ));
            }
        }
    }
    // Duplicates are found before preconditions: a failing precondition on another key does
    // not hide them.
    let mixed = store
        .txn(vec![
            put_op(&other, "x", Precondition::Exists),
            put_op(&k, "1", Precondition::None),
            delete_op(&k, Precondition::None),
        ])
        .await;
    ensure!(
        matches!(mixed, Err(StoreError::DuplicateKey { .. })),
        "duplicate keys with a failing precondition: expected DuplicateKey, got {mixed:?}"
    );
    ensure_eq!(current(store).await?, before, "refused transactions do not bump the revision");
    ensure_eq!(
        store.get(&k).await.ctx("get")?,
        Some(existing),
        "refused transactions wrote nothing"
    );
    ensure_eq!(
        store.get(&other).await.ctx("get other")?,
        None,
        "refused transactions wrote nothing"
    );

    // Keys that merely share a prefix are distinct keys.
    let r = store
        .txn(vec![
            put_op(&k, "1", Precondition::Exists),
            put_op(&format!("{k}/child"), "c", Precondition::Absent),
            delete_op(&format!("{k}x"), Precondition::None),
        ])
        .await
        .ctx("txn on prefix-sharing keys")?;
    ensure_eq!(r.revision, before + 1, "one revision");
    ensure_eq!(r.results.len(), 3, "one result per op");
    ensure_eq!(r.results[2], None, "deleting an absent key");
    Ok(())
}

/// `list` is prefix-exact, sorted, and one snapshot together with its revision.
pub async fn list_snapshot(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let lp = format!("{p}list/");
    for k in ["b", "a", "c/d"] {
        put(&*store, &format!("{lp}{k}"), k).await?;
    }
    put(&*store, &format!("{p}lista"), "outside").await?;
    put(&*store, &format!("{p}lis"), "outside").await?;
    let (items, rev) = store.list(&lp).await.ctx("list")?;
    let keys: Vec<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
    ensure_eq!(
        keys,
        vec![format!("{lp}a"), format!("{lp}b"), format!("{lp}c/d")],
        "listed keys (sorted, prefix only)"
    );
    ensure_eq!(rev, current(&*store).await?, "list revision is the current revision");
    for kv in &items {
        ensure_eq!(store.get(&kv.key).await.ctx("get")?, Some(kv.clone()), "list agrees with get");
    }
    let (none, _) = store.list(&format!("{p}nothing/")).await.ctx("empty list")?;
    ensure!(none.is_empty(), "list of an unused prefix is empty");

    // Two keys always written together must always be listed together.
    let pp = format!("{p}pair/");
    let (x, y) = (format!("{pp}x"), format!("{pp}y"));
    let writer = {
        let store = store.clone();
        let (x, y) = (x.clone(), y.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let v = i.to_string();
                store
                    .txn(vec![
                        put_op(&x, &v, Precondition::None),
                        put_op(&y, &v, Precondition::None),
                    ])
                    .await
                    .ctx("pair txn")?;
            }
            Ok::<_, String>(())
        })
    };
    let mut lists = 0;
    loop {
        let finished = writer.is_finished();
        let (items, rev) = store.list(&pp).await.ctx("list pairs")?;
        lists += 1;
        match items.as_slice() {
            [] => {}
            [kx, ky] => {
                ensure_eq!(kx.value, ky.value, "list {lists}: torn snapshot");
                ensure_eq!(kx.mod_revision, ky.mod_revision, "list {lists}: torn snapshot");
                ensure!(kx.mod_revision <= rev, "list revision {rev} older than its content");
            }
            other => return Err(format!("list {lists}: unexpected items {other:?}")),
        }
        if finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.map_err(|e| format!("pair writer panicked: {e}"))??;
    Ok(())
}

/// A watch from the oldest available revision replays the whole history of its prefix, in
/// order, and nothing from other prefixes.
pub async fn watch_from_start(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let wp = format!("{p}w/");
    let mut expected = Vec::new();
    for i in 0..20 {
        let key = format!("{wp}{}", i % 6);
        expected.push(Event { kind: EventKind::Put, kv: put(store, &key, &i.to_string()).await? });
        put(store, &format!("{p}other/{i}"), "x").await?;
        if i % 5 == 4 {
            let old = store.delete(&key, Precondition::None).await.ctx("delete")?.ok_or("gone")?;
            let rev = current(store).await?;
            expected
                .push(Event { kind: EventKind::Delete, kv: KeyValue { mod_revision: rev, ..old } });
        }
    }
    let from = store.compacted_revision().await.ctx("compacted_revision")?;
    let mut watch = store.watch(&wp, from).await.ctx("watch from the start")?;
    let mut got = Vec::new();
    for i in 0..expected.len() {
        got.push(next_event(&mut watch, &format!("history event {i}")).await?);
    }
    ensure_eq!(describe(&got), describe(&expected), "replayed history");
    ensure_eq!(got, expected, "replayed events");
    expect_marker_next(store, &mut [&mut watch], &format!("{wp}marker"), "after history").await
}

/// A watch after revision r yields exactly the events after r.
pub async fn watch_from_middle(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(put(store, &format!("{p}k{}", i % 3), &i.to_string()).await?);
    }
    let after = written[4].mod_revision;
    let mut watch = store.watch(&p, after).await.ctx("watch from the middle")?;
    for (i, kv) in written[5..].iter().enumerate() {
        let event = next_event(&mut watch, &format!("event {i}")).await?;
        ensure_eq!((event.kind, &event.kv), (EventKind::Put, kv), "event after {after}");
    }
    // From the last revision: only what comes next.
    let mut tail = store.watch(&p, written[9].mod_revision).await.ctx("watch from the end")?;
    expect_marker_next(store, &mut [&mut tail, &mut watch], &format!("{p}marker"), "marker").await
}

/// Live events reach every matching watcher; a watch after a future revision waits for it.
pub async fn watch_live(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let now = current(store).await?;
    let mut all = store.watch(&p, now).await.ctx("watch all")?;
    let mut narrow = store.watch(&format!("{p}a/"), now).await.ctx("watch narrow")?;
    let mut future = store.watch(&p, now + 2).await.ctx("watch from a future revision")?;
    let a1 = put(store, &format!("{p}a/1"), "1").await?;
    let b1 = put(store, &format!("{p}b/1"), "1").await?;
    let a2 = put(store, &format!("{p}a/2"), "2").await?;
    ensure_eq!(a2.mod_revision, now + 3, "revisions (nobody else must write meanwhile)");
    for kv in [&a1, &b1, &a2] {
        ensure_eq!(&next_event(&mut all, "live event").await?.kv, kv, "live event");
    }
    for kv in [&a1, &a2] {
        ensure_eq!(&next_event(&mut narrow, "narrow event").await?.kv, kv, "prefix filtering");
    }
    ensure_eq!(
        &next_event(&mut future, "future watch").await?.kv,
        &a2,
        "future watch skips <= after"
    );
    let watches = &mut [&mut all, &mut narrow, &mut future];
    expect_marker_next(store, watches, &format!("{p}a/marker"), "marker").await
}

/// Watches opened while writes are in flight (so history and live events overlap) see every
/// write exactly once, in order, with no gap.
pub async fn watch_dedupe_history_to_live(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    const WRITES: usize = 400;
    let start = current(&*store).await?;
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = {
        let store = store.clone();
        let p = p.clone();
        tokio::spawn(async move {
            for i in 0..WRITES {
                let kv = put(&*store, &format!("{p}k{}", i % 7), &i.to_string()).await?;
                let _ = acks_tx.send(kv.mod_revision);
            }
            Ok::<_, String>(())
        })
    };
    let mut acks = Vec::new();
    let mut watches = vec![(start, store.watch(&p, start).await.ctx("watch")?)];
    while let Some(rev) = acks_rx.recv().await {
        acks.push(rev);
        if acks.len() % 25 == 0 {
            // After a revision in the recent past: part history, part live.
            let after = acks[acks.len() - 10];
            watches.push((after, store.watch(&p, after).await.ctx("watch during writes")?));
        }
    }
    writer.await.map_err(|e| format!("writer panicked: {e}"))??;
    ensure_eq!(acks.len(), WRITES, "acknowledged writes");
    for (after, watch) in &mut watches {
        let want: Vec<Revision> = acks.iter().copied().filter(|r| r > after).collect();
        let mut got = Vec::with_capacity(want.len());
        for _ in 0..want.len() {
            got.push(next_event(watch, &format!("watch after {after}")).await?.revision());
        }
        ensure_eq!(got, want, "revisions seen by the watch after {after}");
    }
    // The next event of every watch must be a fresh write: no duplicate left over.
    let marker = put(&*store, &format!("{p}marker"), "m").await?;
    for (after, watch) in &mut watches {
        let event = next_event(watch, &format!("marker for watch after {after}")).await?;
        ensure_eq!(event.kv, marker, "watch after {after}: next event after the overlap");
    }
    Ok(())
}

/// Watching from a compacted revision fails; from the compaction point it works.
pub async fn watch_compacted(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(put(store, &format!("{p}k{i}"), "v").await?.mod_revision);
    }
    store.compact(revs[2]).await.ctx("compact")?;
    ensure_eq!(
        store.compacted_revision().await.ctx("compacted_revision")?,
        revs[2],
        "compaction point"
    );
    match store.watch(&p, revs[1]).await {
        Err(StoreError::Compacted { requested, compacted }) => {
            ensure_eq!((requested, compacted), (revs[1], revs[2]), "Compacted error fields");
        }
        Err(err) => return Err(format!("watch below the compaction point: wrong error {err}")),
        Ok(_) => return Err("watch below the compaction point succeeded".into()),
    }
    let mut watch = store.watch(&p, revs[2]).await.ctx("watch at the compaction point")?;
    for rev in &revs[3..] {
        ensure_eq!(
            next_event(&mut watch, "post-compaction event").await?.revision(),
            *rev,
            "event"
        );
    }
    expect_marker_next(store, &mut [&mut watch], &format!("{p}marker"), "after compaction").await
}

/// Compaction bounds, idempotence, and that it leaves data and revision alone.
pub async fn compact_semantics(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    let store = &*store;
    let k = format!("{p}k");
    put(store, &k, "1").await?;
    let kv = put(store, &k, "2").await?;
    let rev = current(store).await?;
    match store.compact(rev + 1).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            ensure_eq!((requested, current), (rev + 1, rev), "FutureRevision fields");
        }
        other => return Err(format!("compact beyond the current revision: got {other:?}")),
    }
    store.compact(rev).await.ctx("compact to the current revision")?;
    ensure_eq!(
        store.compacted_revision().await.ctx("compacted_revision")?,
        rev,
        "compaction point"
    );
    ensure_eq!(current(store).await?, rev, "compaction does not bump the revision");
    store.compact(rev).await.ctx("compact again")?;
    store.compact(rev - 1).await.ctx("compact to an older revision")?;
    ensure_eq!(
        store.compacted_revision().await.ctx("compacted_revision")?,
        rev,
        "no-op compactions"
    );
    ensure_eq!(store.get(&k).await.ctx("get")?, Some(kv.clone()), "data survives compaction");
    let (items, list_rev) = store.list(&p).await.ctx("list")?;
    ensure_eq!((items, list_rev), (vec![kv], rev), "list after compaction");
    let next = put(store, &k, "3").await?;
    ensure_eq!((next.mod_revision, next.version), (rev + 1, 3), "writes continue after compaction");
    Ok(())
}

/// Many concurrent writers: each write acknowledged once with its own revision, revisions
/// strictly increasing in each writer's acknowledgement order, and a watch sees each once.
pub async fn concurrent_writers(store: Arc<dyn Store>, p: String) -> Result<(), String> {
    const TASKS: usize = 32;
    const WRITES: usize = 200;
    let start = current(&*store).await?;
    let mut watch = store.watch(&p, start).await.ctx("watch")?;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::with_capacity(WRITES);
            for i in 0..WRITES {
                let kv = put(&*store, &format!("{p}t{t}/{i}"), &format!("{t}-{i}")).await?;
                revs.push(kv.mod_revision);
            }
            Ok::<_, String>(revs)
        }));
    }
    let mut all = BTreeSet::new();
    for (t, task) in tasks.into_iter().enumerate() {
        let revs = task.await.map_err(|e| format!("writer {t} panicked: {e}"))??;
        ensure!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "writer {t}: revisions not strictly increasing: {revs:?}"
        );
        for r in revs {
            ensure!(r > start, "writer {t}: revision {r} not after the start {start}");
            ensure!(all.insert(r), "revision {r} acknowledged twice");
        }
    }
    ensure_eq!(all.len(), TASKS * WRITES, "acknowledged writes");
    let now = current(&*store).await?;
    ensure!(now >= *all.last().unwrap_or(&0), "current revision {now} behind an acknowledgement");

    let mut seen_keys = HashSet::new();
    let mut last = start;
    for i in 0..TASKS * WRITES {
        let event = next_event(&mut watch, &format!("event {i}")).await?;
        ensure!(event.revision() > last, "event revision {} not after {last}", event.revision());
        last = event.revision();
        ensure!(all.contains(&last), "event at unacknowledged revision {last}");
        ensure!(seen_keys.insert(event.kv.key.clone()), "key {} seen twice", event.kv.key);
    }
    let (items, _) = store.list(&p).await.ctx("list")?;
    ensure_eq!(items.len(), TASKS * WRITES, "keys stored");
    Ok(())
}
