//! Watch streams: history from the log, then live events, without gaps or duplicates.
//!
//! A watcher subscribes to the live broadcast *before* it reads any history. The writer
//! publishes a batch only after committing it, so every write is either already visible to
//! the history read (committed before the read transaction began) or still ahead in the
//! broadcast (published after the subscription) — possibly both. Nothing can fall between the
//! two; the overlap is removed by remembering `high`, the revision up to which everything has
//! been queued, and dropping live events at or below it.
//!
//! The broadcast is bounded so a slow watcher cannot hold the writer's memory hostage. A
//! receiver that lagged has lost broadcast messages, not history: it goes back to the log from
//! `high` and catches up the same way, unless the history it needs was compacted meanwhile, in
//! which case the stream yields `Compacted` and ends (the client re-lists).
//!
//! History is read in bounded chunks on the blocking pool, each chunk ending on a transaction
//! boundary, so a watch from far behind neither blocks a runtime worker nor loads the whole
//! log into memory. The stream holds only a weak reference to the database: an open watch does
//! not keep a closed store's file locked, and ends (`None`) once the store is closed.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use redb::Database;
use tokio::sync::broadcast::{self, error::RecvError};

use super::backend;
use super::codec::{self, META, META_COMPACTED, META_REVISION};
use super::writer::Published;
use crate::{Event, Revision, StoreError, WatchStream};

/// Log entries scanned per history chunk (rounded up to a transaction boundary).
const CHUNK: usize = 1024;

pub(super) struct Watcher {
    db: Weak<Database>,
    live: broadcast::Receiver<Arc<Published>>,
    prefix: Arc<str>,
    /// Every event with a revision <= `high` has been queued (or did not match the prefix).
    high: Revision,
    pending: VecDeque<Event>,
    catching_up: bool,
    finished: bool,
}

impl Watcher {
    /// `live` must have been subscribed before anything of the history is read.
    pub(super) fn new(
        db: Weak<Database>,
        live: broadcast::Receiver<Arc<Published>>,
        prefix: &str,
        after: Revision,
    ) -> Self {
        Watcher {
            db,
            live,
            prefix: prefix.into(),
            high: after,
            pending: VecDeque::new(),
            catching_up: true,
            finished: false,
        }
    }

    pub(super) fn into_stream(self) -> WatchStream {
        futures::stream::unfold(self, Watcher::next).boxed()
    }

    async fn next(mut self) -> Option<(Result<Event, StoreError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.finished {
                return None;
            }
            if self.catching_up {
                // The store is gone: end quietly, like a closed broadcast.
                let db = self.db.upgrade()?;
                let (prefix, after) = (self.prefix.clone(), self.high);
                let chunk =
                    tokio::task::spawn_blocking(move || read_history(&db, &prefix, after, CHUNK))
                        .await
                        .unwrap_or_else(|err| {
                            Err(StoreError::Backend(format!(
                                "watch history read task failed: {err}"
                            )))
                        });
                match chunk {
                    Ok(chunk) => {
                        self.pending.extend(chunk.events);
                        self.high = chunk.high;
                        self.catching_up = !chunk.exhausted;
                    }
                    Err(err) => {
                        self.finished = true;
                        return Some((Err(err), self));
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    if batch.last_revision > self.high {
                        let (high, prefix) = (self.high, &self.prefix);
                        self.pending.extend(
                            batch
                                .events
                                .iter()
                                .filter(|e| e.revision() > high && e.kv.key.starts_with(&**prefix))
                                .cloned(),
                        );
                        self.high = batch.last_revision;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        after = self.high,
                        "watcher lagged; re-reading history"
                    );
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

pub(super) struct Chunk {
    pub(super) events: Vec<Event>,
    /// Every revision up to here was read (or, when exhausted, exists nowhere yet).
    pub(super) high: Revision,
    /// The log held nothing more after `high` in this snapshot.
    pub(super) exhausted: bool,
}

/// Reads events for `prefix` after revision `after` from one snapshot: at least `limit` log
/// entries unless the log ends first, never stopping inside a transaction.
pub(super) fn read_history(
    db: &Database,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<Chunk, StoreError> {
    let txn = db.begin_read().map_err(backend("begin read transaction"))?;
    let meta = txn.open_table(META).map_err(backend("open meta table"))?;
    let get = |name| -> Result<Revision, StoreError> {
        Ok(meta.get(name).map_err(backend("read meta"))?.map_or(0, |v| v.value()))
    };
    let (current, compacted) = (get(META_REVISION)?, get(META_COMPACTED)?);
    if after < compacted {
        return Err(StoreError::Compacted { requested: after, compacted });
    }
    let mut events = Vec::new();
    let mut high = after;
    let mut scanned = 0usize;
    for segment in codec::segment_of(after.saturating_add(1))..=codec::segment_of(current) {
        let name = codec::log_table_name(segment);
        let log = match txn.open_table(codec::log_table(&name)) {
            Ok(log) => log,
            // A segment no write has reached yet.
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(backend("open history segment")(e)),
        };
        let entries =
            log.range((after.saturating_add(1), 0u32)..).map_err(backend("scan history"))?;
        for entry in entries {
            let (key, raw) = entry.map_err(backend("scan history"))?;
            let (revision, _) = key.value();
            if scanned >= limit && revision != high {
                return Ok(Chunk { events, high, exhausted: false });
            }
            scanned += 1;
            high = revision;
            if let Some(event) = codec::decode_event(revision, raw.value(), prefix)? {
                events.push(event);
            }
        }
    }
    Ok(Chunk { events, high: high.max(current), exhausted: true })
}
