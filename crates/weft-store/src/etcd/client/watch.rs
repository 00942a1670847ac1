//! Watches on etcd.
//!
//! One weft watch is one etcd watch (one gRPC stream) on the prefix range, started at
//! `start_revision = after` with `prev_kv`, and events at revisions <= the cursor dropped. The
//! cursor starts at `after` and becomes the revision of the last event delivered; etcd sends
//! all events of one revision in one response, so the cursor never splits a transaction.
//!
//! If the stream breaks (etcd restarted, connection lost), the watch opens a new one from the
//! cursor, retrying with backoff for `Options::watch_resume`: the caller sees every event
//! once, in order, as if nothing happened. If the history after the cursor was compacted
//! meanwhile, the stream ends with `Compacted`; if etcd stays away, with a `Backend` error that
//! says so. Dropping the stream drops the gRPC stream, which cancels the watch on etcd.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{EventType, WatchOptions, WatchResponse};

use super::{CallError, Inner, etcd_revision, revision};
use crate::{Event, EventKind, KeyValue, Revision, StoreError, WatchStream};

pub(super) async fn watch(
    inner: Arc<Inner>,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    // etcd would accept the watch and cancel it a moment later; the contract wants the error
    // now. Reading at `after` fails exactly when `after` is below the compaction point.
    if !inner.readable(after).await? {
        let compacted = inner.compacted_revision().await?;
        return Err(StoreError::Compacted { requested: after, compacted });
    }
    let (start, end) = inner.range(prefix);
    let mut follow = Follow {
        inner,
        prefix: prefix.to_string(),
        start,
        end,
        cursor: after,
        stream: None,
        pending: VecDeque::new(),
        done: false,
    };
    follow.stream = Some(follow.open().await?);
    Ok(Box::pin(futures::stream::unfold(follow, |mut follow| async move {
        let item = follow.next().await?;
        Some((item, follow))
    })))
}

struct Follow {
    inner: Arc<Inner>,
    prefix: String,
    start: Vec<u8>,
    end: Vec<u8>,
    /// Events at or before this revision were delivered (or are not wanted).
    cursor: Revision,
    /// `None` after the stream broke, until it is opened again.
    stream: Option<etcd_client::WatchStream>,
    /// Events received and not yet handed out.
    pending: VecDeque<Event>,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.resume().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(err) => {
                        self.done = true;
                        return Some(Err(err));
                    }
                }
                continue;
            };
            let broke = match stream.message().await {
                Ok(Some(resp)) => match self.take(&resp) {
                    Ok(()) => continue,
                    Err(err) => {
                        self.done = true;
                        return Some(Err(err));
                    }
                },
                Ok(None) => "etcd ended the stream".to_string(),
                Err(err) => CallError::Etcd(err).message(),
            };
            tracing::warn!(
                endpoints = %self.inner.endpoints,
                prefix = %self.prefix,
                after = self.cursor,
                reason = %super::one_line(&broke),
                "etcd watch broke; resuming"
            );
            self.stream = None;
        }
    }

    /// Queues the events of one response, or says why the watch is over.
    fn take(&mut self, resp: &WatchResponse) -> Result<(), StoreError> {
        if resp.canceled() {
            let compacted = revision(resp.compact_revision());
            if compacted > 0 {
                return Err(StoreError::Compacted { requested: self.cursor, compacted });
            }
            return Err(StoreError::Backend(format!(
                "etcd at {} canceled the watch on {:?}: {}",
                self.inner.endpoints,
                self.prefix,
                resp.cancel_reason()
            )));
        }
        let mut last = self.cursor;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let rev = revision(kv.mod_revision());
            if rev <= self.cursor {
                continue;
            }
            let event = match ev.event_type() {
                EventType::Put => Event { kind: EventKind::Put, kv: self.inner.kv(kv)? },
                EventType::Delete => {
                    // etcd reads the previous value at rev - 1; it is missing only if that
                    // revision was compacted under a watcher that had fallen behind.
                    let Some(prev) = ev.prev_kv() else {
                        return Err(StoreError::Compacted {
                            requested: self.cursor,
                            compacted: rev.saturating_sub(1),
                        });
                    };
                    Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: self.inner.weft_key(kv.key())?,
                            value: Bytes::copy_from_slice(prev.value()),
                            create_revision: revision(prev.create_revision()),
                            mod_revision: rev,
                            version: u64::try_from(prev.version()).unwrap_or(0),
                        },
                    }
                }
            };
            last = last.max(rev);
            self.pending.push_back(event);
        }
        self.cursor = last;
        Ok(())
    }

    /// Opens an etcd watch from the cursor and waits for etcd to confirm it.
    async fn open(&self) -> Result<etcd_client::WatchStream, StoreError> {
        let inner = &*self.inner;
        let what = format!("watching {}", self.prefix);
        let options = WatchOptions::new()
            .with_range(self.end.clone())
            // Revision 0 would mean "from now"; 1 is etcd's first (empty) revision.
            .with_start_revision(etcd_revision(self.cursor.max(1)))
            .with_prev_key();
        let mut client = inner.watch.clone();
        let mut stream = inner
            .call(client.watch(self.start.clone(), Some(options)))
            .await
            .map_err(|e| inner.fail(&what, e))?;
        let first = match inner.call(stream.message()).await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                return Err(StoreError::Backend(format!(
                    "etcd at {} closed the watch on {:?} at once",
                    inner.endpoints, self.prefix
                )));
            }
            Err(e) => return Err(inner.fail(&what, e)),
        };
        if first.canceled() {
            let compacted = revision(first.compact_revision());
            if compacted > 0 {
                return Err(StoreError::Compacted { requested: self.cursor, compacted });
            }
            return Err(StoreError::Backend(format!(
                "etcd at {} refused the watch on {:?}: {}",
                inner.endpoints,
                self.prefix,
                first.cancel_reason()
            )));
        }
        if !first.created() {
            return Err(StoreError::Backend(format!(
                "etcd at {} answered a new watch with something else than its creation",
                inner.endpoints
            )));
        }
        Ok(stream)
    }

    /// Opens the watch again after it broke, retrying with backoff until `watch_resume`
    /// has passed. Compaction of the history it needs is final.
    async fn resume(&self) -> Result<etcd_client::WatchStream, StoreError> {
        let window = self.inner.options.watch_resume;
        let deadline = Instant::now() + window;
        let mut delay = Duration::from_millis(50);
        loop {
            let err = match self.open().await {
                Ok(stream) => {
                    tracing::info!(
                        endpoints = %self.inner.endpoints,
                        prefix = %self.prefix,
                        after = self.cursor,
                        "etcd watch resumed"
                    );
                    return Ok(stream);
                }
                Err(err @ StoreError::Compacted { .. }) => return Err(err),
                Err(err) => err,
            };
            if Instant::now() + delay >= deadline {
                let why = match err {
                    StoreError::Backend(why) | StoreError::Unavailable(why) => why,
                    other => other.to_string(),
                };
                return Err(StoreError::Unavailable(format!(
                    "the watch on {:?} broke and could not resume after revision {} within \
                     {window:?}: {why}",
                    self.prefix, self.cursor
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
