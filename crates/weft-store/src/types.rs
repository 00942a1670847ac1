use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

/// A store revision. Revision 0 means "before any write"; the first write gets revision 1.
pub type Revision = u64;

/// A key with its current value and version bookkeeping (etcd's `mvccpb.KeyValue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key (the key's current incarnation).
    pub create_revision: Revision,
    /// Revision of the last write to the key. This is an object's `resourceVersion`.
    pub mod_revision: Revision,
    /// Number of writes to the key since it was created (1 after creation).
    pub version: u64,
}

/// What must hold for a write to a key to proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Last writer wins.
    #[default]
    None,
    /// The key must not exist (create only).
    Absent,
    /// The key must exist (update or delete only).
    Exists,
    /// The key must exist with exactly this `mod_revision` (compare-and-swap).
    ModRevision(Revision),
}

/// One write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Bytes,
        precondition: Precondition,
    },
    /// Deleting an absent key with `Precondition::None` is a no-op, not an error.
    Delete {
        key: String,
        precondition: Precondition,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The outcome of a committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// The revision of this transaction's writes. If every op was a no-op (deleting an absent
    /// key), nothing was written and this is the store's current revision.
    pub revision: Revision,
    /// One entry per op, in order: for a put, the key's new state; for a delete, the state the
    /// key had before it was deleted (`None` if it was already absent).
    pub results: Vec<Option<KeyValue>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the key's new state (`create_revision == mod_revision` means it was created).
    /// For a delete, the key's last value, with `mod_revision` set to the deletion's revision.
    pub kv: KeyValue,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A watch stream: events in revision order, events of one transaction consecutive and
/// sharing a revision. The stream ends with an error only if the watcher fell so far behind
/// that the history it needs was compacted (`StoreError::Compacted`) or the store failed.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition failed; nothing in the transaction was written.
    #[error("precondition failed on {key}: expected {expected:?}, found revision {actual:?}")]
    PreconditionFailed { key: String, expected: Precondition, actual: Option<Revision> },
    /// The requested revision is older than the history kept.
    #[error(
        "revision {requested} is compacted (history starts after revision {compacted}); re-list and watch again"
    )]
    Compacted { requested: Revision, compacted: Revision },
    /// A transaction names the same key more than once (etcd refuses that too: "duplicate key
    /// given in txn request"); nothing was written.
    #[error(
        "{key} appears more than once in one transaction; a transaction may write each key only once"
    )]
    DuplicateKey { key: String },
    /// A compaction was asked beyond the current revision.
    #[error("cannot compact to revision {requested}: current revision is {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("the store is closed")]
    Closed,
    /// The backend could not be reached or could not serve in time (etcd down, no quorum).
    /// The request may be retried; the api answers 503 rather than 500.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refuses a transaction this large (etcd's `--max-txn-ops` or
    /// `--max-request-bytes`); nothing was written. Smaller transactions would succeed.
    #[error("transaction too large for the store: {0}")]
    TooLarge(String),
    #[error("store backend failure: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Fails with `DuplicateKey` if a key appears twice in `ops` (every backend checks this first).
pub(crate) fn check_distinct_keys(ops: &[Op]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::DuplicateKey { key: op.key().to_string() });
        }
    }
    Ok(())
}

/// The revisioned key-value store (DESIGN.md "Store").
///
/// Every committed write gets one new, strictly increasing revision; a transaction is one write.
/// A call returns only after its write is durable.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current state.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, sorted by key, from one consistent snapshot, with the
    /// revision of that snapshot.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;

    /// All-or-nothing: if any precondition fails, nothing is written and the first failure
    /// is returned. Each key may appear at most once (as in etcd); otherwise the transaction
    /// fails with `DuplicateKey` before anything is checked or written.
    async fn txn(&self, ops: Vec<Op>) -> Result<TxnResult>;

    /// The latest committed revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// History up to and including this revision is gone; watches must start after it.
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Events for keys starting with `prefix` with revision > `after`, then live ones, for as
    /// long as the stream is held. `after` below the compaction point fails with `Compacted`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Discards history up to and including `revision` (watch `after` must then be >= it).
    /// Compacting to an already compacted revision is a no-op.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Put one key. Returns its new state.
    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<KeyValue> {
        let mut r = self.txn(vec![Op::Put { key: key.to_string(), value, precondition }]).await?;
        r.results
            .pop()
            .flatten()
            .ok_or_else(|| StoreError::Backend("put returned no result".into()))
    }

    /// Delete one key. Returns the state it had (`None` if it was absent).
    async fn delete(&self, key: &str, precondition: Precondition) -> Result<Option<KeyValue>> {
        let mut r = self.txn(vec![Op::Delete { key: key.to_string(), precondition }]).await?;
        Ok(r.results.pop().flatten())
    }
}
