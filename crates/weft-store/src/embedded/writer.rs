//! The single writer thread and its group commit.
//!
//! Durability costs one fsync per redb commit, and an fsync costs about the same whether it
//! covers one write or a hundred. So every write goes to one dedicated OS thread that takes the
//! first queued request, drains whatever else queued up meanwhile (up to `max_batch`), applies
//! them in order inside one redb write transaction — each request still gets its own revision
//! and its own all-or-nothing precondition check — and commits once. Under load the batch grows
//! by itself; a lone client pays exactly one commit and never waits for company.
//!
//! Closed-loop clients (each waits for its ack before writing again) would otherwise settle
//! into alternating batches: the callers answered by one commit re-submit microseconds after
//! the next batch was already taken, so half of them wait a whole extra fsync. When fewer
//! requests are queued than the previous batch held, the writer therefore lingers a small,
//! bounded fraction of the last commit's duration for them (`Options::linger`).
//!
//! It is a plain `std::thread`, not a tokio task: a commit blocks for the fsync and must not
//! stall a runtime worker. A single writer also makes revision assignment trivial: the
//! next revision is a counter owned by this thread, persisted in `meta` in the same commit.
//!
//! Replies go out only after the commit returned, then the batch's events are broadcast to
//! live watchers: nobody ever observes a write that could still be lost. If the commit fails,
//! every request of the batch fails and nothing is published; redb then refuses further writes
//! until the file is reopened (after a failed fsync the page cache cannot be trusted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, Table};
use tokio::sync::{broadcast, oneshot};

use super::backend;
use super::codec::{self, KV, META, META_COMPACTED, META_REVISION};
use crate::{Event, EventKind, KeyValue, Op, Precondition, Revision, StoreError, TxnResult};

/// What a caller asks the writer to do.
pub(super) enum Work {
    Txn(Vec<Op>),
    Compact(Revision),
}

pub(super) enum Response {
    Txn(TxnResult),
    Compacted,
}

pub(super) struct Request {
    pub(super) work: Work,
    pub(super) reply: oneshot::Sender<Result<Response, StoreError>>,
}

/// The events of one committed batch, in revision order, as broadcast to live watchers.
#[derive(Debug)]
pub(super) struct Published {
    pub(super) events: Vec<Event>,
    /// The revision of the batch's last write: every revision up to it is covered.
    pub(super) last_revision: Revision,
}

pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) events: broadcast::Sender<Arc<Published>>,
    pub(super) revision: Revision,
    pub(super) compacted: Revision,
    pub(super) max_batch: usize,
    pub(super) linger: bool,
    pub(super) counters: Arc<Counters>,
}

/// Group-commit figures, for metrics and benchmarks.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) commit_nanos: AtomicU64,
}

/// Lingering for more requests costs at most this fraction of the last commit's duration...
const LINGER_DIVISOR: u32 = 8;
/// ...and never more than this.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// The outcome of one transaction inside a batch.
enum Applied {
    Written {
        results: Vec<Option<KeyValue>>,
        events: Vec<Event>,
    },
    /// Every op was a no-op (deleting absent keys): nothing written, no revision used.
    NoOp {
        results: Vec<Option<KeyValue>>,
    },
    /// A precondition failed: nothing of this transaction was written.
    Rejected(StoreError),
}

impl Writer {
    /// Serves requests until every sender is gone (the store was closed or dropped), finishing
    /// whatever was queued before.
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        // Size of the previous batch and how long its commit took (zero: nothing committed).
        let (mut last_size, mut last_commit) = (0, Duration::ZERO);
        while let Ok(first) = self.requests.recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let target = last_size.min(self.max_batch);
            if self.linger && batch.len() < target {
                // The callers answered by the last commit are probably re-submitting right
                // now; give them a small fraction of a commit to join this batch instead of
                // leaving them for the next fsync.
                let linger = (last_commit / LINGER_DIVISOR).min(MAX_LINGER);
                let deadline = Instant::now() + linger;
                while batch.len() < target {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.requests.recv_timeout(left) {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
            }
            last_size = batch.len();
            last_commit = self.process(&mut batch);
        }
        tracing::debug!(revision = self.revision, "store writer stopped");
    }

    /// Applies, commits and answers one batch; returns how long the commit took.
    fn process(&mut self, batch: &mut Vec<Request>) -> Duration {
        let (base_revision, base_compacted) = (self.revision, self.compacted);
        let mut replies = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        match self.apply(batch, &mut replies, &mut events) {
            Ok(commit_time) => {
                for (request, reply) in batch.drain(..).zip(replies) {
                    // The caller may have given up waiting; the write stands regardless.
                    let _ = request.reply.send(reply);
                }
                if !events.is_empty() {
                    let published = Published { events, last_revision: self.revision };
                    // No receiver is not an error: nobody is watching.
                    let _ = self.events.send(Arc::new(published));
                }
                commit_time
            }
            Err(err) => {
                tracing::error!(error = %err, requests = batch.len(), "store commit failed");
                self.revision = base_revision;
                self.compacted = base_compacted;
                let msg = match err {
                    StoreError::Backend(msg) => msg,
                    other => other.to_string(),
                };
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(StoreError::Backend(msg.clone())));
                }
                Duration::ZERO
            }
        }
    }

    /// Applies the whole batch in one write transaction and commits it, returning the commit
    /// time (zero if nothing needed committing). An `Err` means the batch as a whole failed
    /// (nothing committed); per-request failures are in `replies`.
    fn apply(
        &mut self,
        batch: &mut [Request],
        replies: &mut Vec<Result<Response, StoreError>>,
        events: &mut Vec<Event>,
    ) -> Result<Duration, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend("begin write transaction"))?;
        txn.set_durability(Durability::Immediate);
        let mut dirty = false;
        {
            let mut kv = txn.open_table(KV).map_err(backend("open kv table"))?;
            // The history segment being appended to; a batch may cross into the next one.
            let mut log: Option<(u64, LogTable)> = None;
            for request in batch.iter_mut() {
                match &mut request.work {
                    Work::Txn(ops) => {
                        let ops = std::mem::take(ops);
                        let revision = self.revision + 1;
                        let segment = codec::segment_of(revision);
                        let table = match &mut log {
                            Some((s, table)) if *s == segment => table,
                            slot => {
                                *slot = None;
                                let name = codec::log_table_name(segment);
                                let table = txn
                                    .open_table(codec::log_table(&name))
                                    .map_err(backend("open history segment"))?;
                                &mut slot.insert((segment, table)).1
                            }
                        };
                        match apply_txn(&mut kv, table, ops, revision)? {
                            Applied::Written { results, events: written } => {
                                self.revision = revision;
                                dirty = true;
                                events.extend(written);
                                replies.push(Ok(Response::Txn(TxnResult { revision, results })));
                            }
                            Applied::NoOp { results } => {
                                let revision = self.revision;
                                replies.push(Ok(Response::Txn(TxnResult { revision, results })));
                            }
                            Applied::Rejected(err) => replies.push(Err(err)),
                        }
                    }
                    Work::Compact(revision) => {
                        let revision = *revision;
                        if revision > self.revision {
                            replies.push(Err(StoreError::FutureRevision {
                                requested: revision,
                                current: self.revision,
                            }));
                        } else if revision <= self.compacted {
                            replies.push(Ok(Response::Compacted));
                        } else {
                            // The compaction point is what watchers check, so history is
                            // unreachable from this commit on; the deletes just reclaim space.
                            log = None;
                            compact_history(&txn, revision)?;
                            self.compacted = revision;
                            dirty = true;
                            replies.push(Ok(Response::Compacted));
                        }
                    }
                }
            }
            if dirty {
                let mut meta = txn.open_table(META).map_err(backend("open meta table"))?;
                meta.insert(META_REVISION, self.revision).map_err(backend("write revision"))?;
                meta.insert(META_COMPACTED, self.compacted)
                    .map_err(backend("write compaction point"))?;
            }
        }
        if dirty {
            let started = Instant::now();
            txn.commit().map_err(backend("commit"))?;
            let took = started.elapsed();
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            self.counters.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            self.counters.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(took)
        } else {
            txn.abort().map_err(backend("abort read-only batch"))?;
            Ok(Duration::ZERO)
        }
    }
}

/// One open history segment table.
type LogTable<'txn> = Table<'txn, (u64, u32), &'static [u8]>;

/// Drops history up to and including `revision`: whole segment tables where they are entirely
/// compacted (cheap: their pages are freed without rewriting anything), and the leading entries
/// of the segment the compaction point falls in.
fn compact_history(txn: &redb::WriteTransaction, revision: Revision) -> Result<(), StoreError> {
    let partial = codec::segment_of(revision);
    let segment_end = (partial + 1) * codec::SEGMENT - 1;
    let mut whole: Vec<String> = Vec::new();
    use redb::TableHandle;
    for handle in txn.list_tables().map_err(backend("list tables"))? {
        let name = handle.name().to_string();
        if let Some(segment) = codec::parse_log_table_name(&name)
            && (segment < partial || (segment == partial && revision == segment_end))
        {
            whole.push(name);
        }
    }
    for name in &whole {
        txn.delete_table(codec::log_table(name))
            .map_err(backend("drop compacted history segment"))?;
    }
    if revision < segment_end {
        let name = codec::log_table_name(partial);
        let mut table =
            txn.open_table(codec::log_table(&name)).map_err(backend("open history segment"))?;
        table
            .retain_in(..=(revision, u32::MAX), |_, _| false)
            .map_err(backend("delete compacted history"))?;
    }
    Ok(())
}

/// Applies one transaction at `revision` (its keys are distinct, `Embedded::txn` checks): first
/// plans every op against the current state (so a failing precondition leaves the tables
/// untouched), then writes the final state of each touched key and one log entry per event.
fn apply_txn(
    kv: &mut Table<&str, &[u8]>,
    log: &mut Table<(u64, u32), &[u8]>,
    ops: Vec<Op>,
    revision: Revision,
) -> Result<Applied, StoreError> {
    // State of keys already touched by this transaction (None = deleted).
    let mut touched: HashMap<String, Option<KeyValue>> = HashMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut events = Vec::new();
    for op in ops {
        let current = match touched.get(op.key()) {
            Some(state) => state.clone(),
            None => read(kv, op.key())?,
        };
        let precondition = match &op {
            Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
        };
        if let Err(err) = check(op.key(), precondition, current.as_ref()) {
            return Ok(Applied::Rejected(err));
        }
        match op {
            Op::Put { key, value, .. } => {
                let new = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: current.as_ref().map_or(revision, |c| c.create_revision),
                    mod_revision: revision,
                    version: current.as_ref().map_or(1, |c| c.version + 1),
                };
                touched.insert(key, Some(new.clone()));
                events.push(Event { kind: EventKind::Put, kv: new.clone() });
                results.push(Some(new));
            }
            Op::Delete { key, .. } => match current {
                Some(old) => {
                    touched.insert(key, None);
                    let last = KeyValue { mod_revision: revision, ..old.clone() };
                    events.push(Event { kind: EventKind::Delete, kv: last });
                    results.push(Some(old));
                }
                None => results.push(None),
            },
        }
    }
    if events.is_empty() {
        return Ok(Applied::NoOp { results });
    }
    for (key, state) in &touched {
        match state {
            Some(new) => {
                kv.insert(key.as_str(), codec::encode_kv(new).as_slice())
                    .map_err(backend("write key"))?;
            }
            None => {
                kv.remove(key.as_str()).map_err(backend("delete key"))?;
            }
        }
    }
    for (index, event) in events.iter().enumerate() {
        let index = u32::try_from(index)
            .map_err(|_| StoreError::Backend("too many events in one transaction".into()))?;
        log.insert((revision, index), codec::encode_event(event)?.as_slice())
            .map_err(backend("append to history log"))?;
    }
    Ok(Applied::Written { results, events })
}

fn read(kv: &Table<&str, &[u8]>, key: &str) -> Result<Option<KeyValue>, StoreError> {
    match kv.get(key).map_err(backend("read key"))? {
        Some(raw) => codec::decode_kv(key, raw.value()).map(Some),
        None => Ok(None),
    }
}

fn check(
    key: &str,
    precondition: Precondition,
    current: Option<&KeyValue>,
) -> Result<(), StoreError> {
    let actual = current.map(|c| c.mod_revision);
    let ok = match precondition {
        Precondition::None => true,
        Precondition::Absent => actual.is_none(),
        Precondition::Exists => actual.is_some(),
        Precondition::ModRevision(expected) => actual == Some(expected),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::PreconditionFailed { key: key.to_string(), expected: precondition, actual })
    }
}
