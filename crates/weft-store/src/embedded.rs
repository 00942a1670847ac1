//! The embedded backend: the whole store in one redb file inside the data dir.
//!
//! A single-node control plane should not need a separate database, but it must keep etcd's
//! guarantees: an acknowledged write survives a crash, revisions never repeat, and a watch
//! resumes exactly where it left off. redb gives crash-safe copy-on-write transactions and
//! snapshot reads; this module adds the revision model on top:
//!
//! - Writes go through one writer thread with group commit (module `writer`): one fsync per
//!   batch instead of per write, while each write keeps its own revision and preconditions.
//! - Reads (`get`, `list`, revisions) open a redb read transaction directly on the caller's
//!   side: they are snapshots and never wait for the writer.
//! - Every event is also appended to a history log keyed by revision, so watches can replay
//!   from any revision after the compaction point, then follow a live broadcast (module
//!   `watch`: subscribe first, read history second, drop the overlap).
//!
//! Lifecycle: [`Embedded::open`] is synchronous (it may run redb's recovery after a crash; call
//! it from `spawn_blocking` if that matters). Clones share one store. [`Embedded::close`] (or
//! dropping the last clone) lets the writer finish what is queued, stops it and releases the
//! file; later calls fail with [`StoreError::Closed`] and open watches end.

mod codec;
mod watch;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, DatabaseError, Durability, ReadableTable};
use tokio::sync::{broadcast, oneshot};

use crate::{KeyValue, Op, Revision, Store, StoreError, TxnResult, WatchStream};
use codec::{FORMAT_VERSION, KV, META, META_COMPACTED, META_FORMAT, META_REVISION};
use writer::{Counters, Published, Request, Response, Work, Writer};

/// Tuning knobs for [`Embedded::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Committed batches buffered for live watchers before a slow watcher lags (it then
    /// catches up from the history log, so this bounds memory, not correctness). Minimum 1.
    pub broadcast_capacity: usize,
    /// Most requests committed together in one group commit. Minimum 1.
    pub max_batch: usize,
    /// When fewer requests are queued than the previous batch held, wait a little (at most
    /// 1/8 of the previous commit's duration, capped at 1 ms) for the callers it just answered
    /// to come back, so that closed-loop clients share one fsync instead of alternating
    /// between a small and a large batch. Never waits for a lone client.
    pub linger: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { broadcast_capacity: 1024, max_batch: 256, linger: true }
    }
}

/// Group-commit counters since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// redb commits (each one fsync).
    pub commits: u64,
    /// Requests (transactions and compactions) answered by those commits, including the ones
    /// that failed a precondition; `requests / commits` is the mean batch size.
    pub requests: u64,
    /// Total time spent inside redb's commit (mostly fsync).
    pub commit_time: Duration,
}

/// The redb-backed [`Store`]. Cheap to clone; all clones share the same file and writer.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once closed. Only held for the instant it takes to clone an `Arc` or enqueue.
    state: RwLock<Option<Open>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

struct Open {
    db: Arc<Database>,
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<Arc<Published>>,
}

impl fmt::Debug for Embedded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.inner.path)
            .field("open", &self.read_state().is_some())
            .finish()
    }
}

/// Maps any redb error to `StoreError::Backend`, saying what was being done.
pub(crate) fn backend<E: fmt::Display>(context: &'static str) -> impl Fn(E) -> StoreError {
    move |err| StoreError::Backend(format!("{context}: {err}"))
}

impl Embedded {
    /// Opens the store at `path`, creating the file if needed, with default [`Options`].
    ///
    /// Fails if the file is open elsewhere (redb holds an exclusive lock on it, also against
    /// a second open in the same process) or is not a weft store.
    pub fn open(path: impl AsRef<Path>) -> Result<Embedded, StoreError> {
        Embedded::open_with(path, Options::default())
    }

    /// Like [`Embedded::open`], with explicit [`Options`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Embedded, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|err| match err {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
                "cannot open store {}: the file is locked, another weft process (or another \
                 handle in this one) has it open",
                path.display()
            )),
            err => StoreError::Backend(format!("cannot open store {}: {err}", path.display())),
        })?;
        Embedded::start(db, path, options)
    }

    /// Starts the store on an opened database (tests use other storage backends).
    fn start(db: Database, path: PathBuf, options: Options) -> Result<Embedded, StoreError> {
        let (revision, compacted) = init(&db, &path)?;
        let db = Arc::new(db);
        let (requests, receiver) = mpsc::channel();
        let (events, _) = broadcast::channel(options.broadcast_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            db: db.clone(),
            requests: receiver,
            events: events.clone(),
            revision,
            compacted,
            max_batch: options.max_batch.max(1),
            linger: options.linger,
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("weft-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|err| StoreError::Backend(format!("cannot start store writer: {err}")))?;
        tracing::debug!(path = %path.display(), revision, compacted, "store opened");
        Ok(Embedded {
            inner: Arc::new(Inner {
                path,
                state: RwLock::new(Some(Open { db, requests, events })),
                writer: Mutex::new(Some(handle)),
                counters,
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Group-commit counters (cumulative since open).
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            commits: c.commits.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            commit_time: Duration::from_nanos(c.commit_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Closes the store for every clone: requests already queued are committed and answered,
    /// later calls fail with [`StoreError::Closed`], open watches end, and once this returns the
    /// file is released (a read still in flight at that instant keeps it until it finishes).
    /// Closing twice is fine.
    pub async fn close(&self) -> Result<(), StoreError> {
        let handle = self.inner.shut();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|err| StoreError::Backend(format!("joining store writer: {err}")))?
                .map_err(|_| StoreError::Backend("store writer thread panicked".into()))?;
        }
        Ok(())
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, Option<Open>> {
        self.inner.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.read_state().as_ref().map(|open| open.db.clone()).ok_or(StoreError::Closed)
    }

    async fn submit(&self, work: Work) -> Result<Response, StoreError> {
        let (reply, response) = oneshot::channel();
        self.read_state()
            .as_ref()
            .ok_or(StoreError::Closed)?
            .requests
            .send(Request { work, reply })
            .map_err(|_| StoreError::Closed)?;
        // The writer drops the reply only if it died before answering.
        response.await.map_err(|_| StoreError::Closed)?
    }
}

impl Inner {
    /// Drops the handles that keep the writer and the file alive; returns the writer to join.
    fn shut(&self) -> Option<JoinHandle<()>> {
        let open = self.state.write().unwrap_or_else(PoisonError::into_inner).take();
        // Dropping the request sender lets the writer drain its queue and exit.
        drop(open);
        self.writer.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last clone is gone, so nobody waits on the writer; joining costs at most the
        // batch in progress and guarantees the file is released when the drop returns.
        if let Some(handle) = self.shut()
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// Creates the tables on first use and reads the persisted revision and compaction point.
fn init(db: &Database, path: &Path) -> Result<(Revision, Revision), StoreError> {
    let mut txn = db.begin_write().map_err(backend("begin write transaction"))?;
    txn.set_durability(Durability::Immediate);
    let (revision, compacted) = {
        txn.open_table(KV).map_err(backend("create kv table"))?;
        let mut meta = txn.open_table(META).map_err(backend("create meta table"))?;
        let format = meta.get(META_FORMAT).map_err(backend("read meta"))?.map(|v| v.value());
        match format {
            Some(FORMAT_VERSION) => {}
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION).map_err(backend("write meta"))?;
            }
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "store {} has format version {other}, this weft understands {FORMAT_VERSION}",
                    path.display()
                )));
            }
        }
        let read = |name| -> Result<Revision, StoreError> {
            Ok(meta.get(name).map_err(backend("read meta"))?.map_or(0, |v| v.value()))
        };
        (read(META_REVISION)?, read(META_COMPACTED)?)
    };
    txn.commit().map_err(backend("commit initial tables"))?;
    Ok((revision, compacted))
}

fn read_meta(db: &Database, name: &str) -> Result<Revision, StoreError> {
    let txn = db.begin_read().map_err(backend("begin read transaction"))?;
    let meta = txn.open_table(META).map_err(backend("open meta table"))?;
    Ok(meta.get(name).map_err(backend("read meta"))?.map_or(0, |v| v.value()))
}

fn list_snapshot(db: &Database, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let txn = db.begin_read().map_err(backend("begin read transaction"))?;
    let meta = txn.open_table(META).map_err(backend("open meta table"))?;
    let revision = meta.get(META_REVISION).map_err(backend("read meta"))?.map_or(0, |v| v.value());
    let kv = txn.open_table(KV).map_err(backend("open kv table"))?;
    let mut items = Vec::new();
    for entry in kv.range(prefix..).map_err(backend("scan keys"))? {
        let (key, raw) = entry.map_err(backend("scan keys"))?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        items.push(codec::decode_kv(key, raw.value())?);
    }
    Ok((items, revision))
}

#[async_trait::async_trait]
impl Store for Embedded {
    /// Reads directly: a redb point read takes microseconds, not worth a thread hop.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(backend("begin read transaction"))?;
        let table = txn.open_table(KV).map_err(backend("open kv table"))?;
        match table.get(key).map_err(backend("read key"))? {
            Some(raw) => codec::decode_kv(key, raw.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Runs on the blocking pool: a list may cover many keys and must not stall a runtime
    /// worker for that long.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let db = self.db()?;
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || list_snapshot(&db, &prefix))
            .await
            .map_err(|err| StoreError::Backend(format!("list task failed: {err}")))?
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<TxnResult, StoreError> {
        crate::check_distinct_keys(&ops)?;
        if ops.is_empty() {
            let revision = self.current_revision().await?;
            return Ok(TxnResult { revision, results: Vec::new() });
        }
        match self.submit(Work::Txn(ops)).await? {
            Response::Txn(result) => Ok(result),
            Response::Compacted => Err(StoreError::Backend("writer answered out of turn".into())),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let db = self.db()?;
        read_meta(&db, META_REVISION)
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        let db = self.db()?;
        read_meta(&db, META_COMPACTED)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before anything is read: see the `watch` module.
        let (db, live) = {
            let state = self.read_state();
            let open = state.as_ref().ok_or(StoreError::Closed)?;
            (open.db.clone(), open.events.subscribe())
        };
        let compacted = read_meta(&db, META_COMPACTED)?;
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        Ok(watch::Watcher::new(Arc::downgrade(&db), live, prefix, after).into_stream())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.submit(Work::Compact(revision)).await? {
            Response::Compacted => Ok(()),
            Response::Txn(_) => Err(StoreError::Backend("writer answered out of turn".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;
    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;
    use crate::Precondition;

    /// In-memory storage whose fsync can be made to fail.
    #[derive(Debug)]
    struct FlakyDisk {
        inner: InMemoryBackend,
        fail_sync: Arc<AtomicBool>,
    }

    impl StorageBackend for FlakyDisk {
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            self.inner.read(offset, len)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> io::Result<()> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            self.inner.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.inner.write(offset, data)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_the_whole_batch_and_publishes_nothing() {
        let fail_sync = Arc::new(AtomicBool::new(false));
        let disk = FlakyDisk { inner: InMemoryBackend::new(), fail_sync: fail_sync.clone() };
        let db = redb::Builder::new().create_with_backend(disk).expect("in-memory db");
        let store = Embedded::start(db, "<flaky>".into(), Options::default()).expect("start");
        let mut live = store.read_state().as_ref().expect("open").events.subscribe();
        let first = store.put("/a", Bytes::from_static(b"1"), Precondition::None).await.unwrap();
        // Replies go out before publication: wait for the first batch to be published.
        let published = live.recv().await.expect("first put published");
        assert_eq!(published.last_revision, first.mod_revision);

        fail_sync.store(true, Ordering::SeqCst);
        let puts = (0..8).map(|i| {
            let key = format!("/b/{i}");
            let store = store.clone();
            async move { store.put(&key, Bytes::from_static(b"x"), Precondition::None).await }
        });
        let results = futures::future::join_all(puts).await;
        for (i, result) in results.iter().enumerate() {
            match result {
                // The batch that hit the fsync error fails at commit; redb then refuses any
                // further write transaction ("previous I/O error") until reopened.
                Err(StoreError::Backend(msg)) => {
                    assert!(msg.contains("commit") || msg.contains("I/O"), "{msg}");
                    assert!(i > 0 || msg.contains("commit"), "first failure is the commit: {msg}");
                }
                other => panic!("a write whose commit failed must fail, got {other:?}"),
            }
        }
        assert!(matches!(live.try_recv(), Err(TryRecvError::Empty)), "nothing may be published");
        assert_eq!(store.stats().commits, 1, "only the first put committed");

        // After an fsync failure nothing more is written until the store is reopened (the
        // page cache may have lost the data: retrying the fsync would lie), reads still work
        // and show none of the failed batch.
        fail_sync.store(false, Ordering::SeqCst);
        let after = store.put("/c", Bytes::from_static(b"2"), Precondition::None).await;
        assert!(matches!(after, Err(StoreError::Backend(_))), "{after:?}");
        assert_eq!(store.get("/b/0").await.unwrap(), None);
        assert_eq!(store.current_revision().await.unwrap(), first.mod_revision);
    }

    /// Forces the overlap: the subscription sees writes that the history read also returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_and_live_overlap_is_delivered_once() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Embedded::open(dir.path().join("db")).expect("open");
        let (db, live) = {
            let state = store.read_state();
            let open = state.as_ref().expect("open");
            (Arc::downgrade(&open.db), open.events.subscribe())
        };
        let mut want = Vec::new();
        for i in 0..5 {
            let key = format!("/o/{i}");
            want.push(store.put(&key, Bytes::from_static(b"v"), Precondition::None).await.unwrap());
        }
        // Subscribed before the writes, built after: every write is both in the log and queued
        // in the receiver.
        let mut watch = watch::Watcher::new(db, live, "/o/", 0).into_stream();
        for kv in &want {
            assert_eq!(&watch.next().await.expect("event").expect("ok").kv, kv);
        }
        let marker = store.put("/o/m", Bytes::from_static(b"m"), Precondition::None).await.unwrap();
        assert_eq!(watch.next().await.expect("event").expect("ok").kv, marker, "no duplicates");
    }
}
