//! The watch cache: one store watch, shared by every watcher and long-poller.
//!
//! Events land in a ring, already rendered as NDJSON lines with their revision spliced in, and
//! with their labels parsed once. A watcher is just a cursor (a sequence number into the ring)
//! plus a filter; it wakes on a `tokio::sync::watch` channel carrying the published revision.
//! So ten thousand watchers cost one store watch, one rendering per event, and per watcher only
//! a filter check and a socket write.
//!
//! Events are published a whole revision at a time: a transaction's events must never be split
//! across a watcher's reads, or a resume from that revision would skip the rest of it.
//!
//! The ring keeps the last `capacity` events. A watch or poll from a revision older than what
//! the ring holds gets 410 Gone, as Kubernetes' watch cache does; at start the ring is filled
//! from the store's own history so that clients survive a server restart without re-listing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;
use weft_api::selector::Selector;
use weft_api::wire::EventType;
use weft_api::{ApiError, ErrorCode, KindInfo};
use weft_store::{EventKind, Revision, Store, StoreError};

use crate::{keys, stored};

/// One change, ready to send.
#[derive(Debug)]
pub struct CachedEvent {
    pub seq: u64,
    pub revision: Revision,
    pub kind: &'static KindInfo,
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub event: EventType,
    /// `{"type":…,"object":…}\n`
    pub line: Bytes,
    /// The object alone (for long-poll batches, which are a JSON document, not lines).
    pub object: Bytes,
}

/// Which events a watcher wants.
#[derive(Clone, Debug)]
pub struct Filter {
    pub kind: &'static KindInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub selector: Selector,
}

impl Filter {
    pub fn matches(&self, e: &CachedEvent) -> bool {
        e.kind == self.kind
            && self.namespace.as_ref().is_none_or(|ns| e.namespace.as_ref() == Some(ns))
            && self.name.as_ref().is_none_or(|n| &e.name == n)
            && self.selector.matches(&e.labels)
    }
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// Sequence number the next event will get.
    next_seq: u64,
    /// Events with `seq < published` are visible to readers.
    published: u64,
    /// Every event with a revision above this is in the ring.
    oldest_revision: Revision,
    /// The last fully published revision.
    revision: Revision,
}

/// What a reader got: events from its cursor on, where to continue, and the revision it has
/// now seen everything up to.
pub struct Batch {
    pub events: Vec<Arc<CachedEvent>>,
    pub next_seq: u64,
    pub revision: Revision,
}

pub struct WatchCache {
    ring: RwLock<Ring>,
    capacity: usize,
    published: watch::Sender<Revision>,
}

impl WatchCache {
    /// Starts the cache: fills it from the store's retained history (at most `capacity`
    /// revisions back) and follows the store from there.
    pub async fn start(store: Arc<dyn Store>, capacity: usize) -> Result<Arc<WatchCache>, StoreError> {
        let current = store.current_revision().await?;
        let compacted = store.compacted_revision().await?;
        let from = current.saturating_sub(capacity as u64).max(compacted);
        let (tx, _) = watch::channel(from);
        let cache = Arc::new(WatchCache {
            ring: RwLock::new(Ring {
                events: VecDeque::with_capacity(capacity.min(1 << 16)),
                next_seq: 0,
                published: 0,
                oldest_revision: from,
                revision: from,
            }),
            capacity: capacity.max(1),
            published: tx,
        });
        let stream = store.watch(keys::REGISTRY, from).await?;
        tokio::spawn(Arc::clone(&cache).follow(store, stream));
        Ok(cache)
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, stream: weft_store::WatchStream) {
        const CHUNK: usize = 1024;
        let mut stream = Some(stream);
        loop {
            if let Some(s) = stream.take() {
                let mut chunks = s.ready_chunks(CHUNK);
                while let Some(chunk) = chunks.next().await {
                    let full = chunk.len() == CHUNK;
                    let mut failed = None;
                    let mut events = Vec::with_capacity(chunk.len());
                    for item in chunk {
                        match item {
                            Ok(ev) => events.push(ev),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    self.push(events, full && failed.is_none());
                    if let Some(e) = failed {
                        tracing::warn!(error = %e, "store watch broke; restarting the watch cache");
                        break;
                    }
                }
            }
            // The store watch ended (error or store closing). Resume after what we published;
            // if that history is gone, start over and make every watcher re-list.
            let resume = self.revision();
            match store.watch(keys::REGISTRY, resume).await {
                Ok(s) => stream = Some(s),
                Err(StoreError::Compacted { .. }) => {
                    let Ok(now) = store.current_revision().await else { return };
                    self.reset(now);
                }
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot restart the store watch; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Appends store events. When `more_may_follow`, the chunk may have cut a transaction in
    /// two, so the trailing events of its last revision wait for the next chunk.
    fn push(&self, events: Vec<weft_store::Event>, more_may_follow: bool) {
        if events.is_empty() {
            return;
        }
        let rendered: Vec<_> = events.iter().filter_map(render).collect();
        let last_revision = events.last().map_or(0, weft_store::Event::revision);
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        for mut ev in rendered {
            ev.seq = ring.next_seq;
            ring.next_seq += 1;
            ring.events.push_back(Arc::new(ev));
        }
        // Publish up to the last complete revision.
        let publish = if more_may_follow {
            ring.events.iter().rev().find(|e| e.revision < last_revision).map(|e| (e.seq + 1, e.revision))
        } else {
            Some((ring.next_seq, last_revision))
        };
        if let Some((seq, revision)) = publish {
            ring.published = ring.published.max(seq);
            ring.revision = ring.revision.max(revision);
        }
        while ring.events.len() > self.capacity {
            if let Some(old) = ring.events.pop_front() {
                ring.oldest_revision = ring.oldest_revision.max(old.revision);
            }
        }
        let revision = ring.revision;
        drop(ring);
        self.published.send_replace(revision);
    }

    fn reset(&self, revision: Revision) {
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        ring.events.clear();
        ring.published = ring.next_seq;
        ring.oldest_revision = revision;
        ring.revision = revision;
        drop(ring);
        self.published.send_replace(revision);
    }

    /// The last revision fully in the cache.
    pub fn revision(&self) -> Revision {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).revision
    }

    pub fn len(&self) -> usize {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.published.subscribe()
    }

    /// Where a reader that has seen everything up to `after` starts.
    pub fn position(&self, after: Revision) -> Result<u64, ApiError> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        if after < ring.oldest_revision {
            return Err(too_old(after, ring.oldest_revision));
        }
        // Published events form a prefix, in revision order: a binary search finds the first
        // one the reader has not seen.
        let published = ring.published;
        let idx = ring.events.partition_point(|e| e.seq < published && e.revision <= after);
        Ok(ring.events.get(idx).filter(|e| e.seq < published).map_or(published, |e| e.seq))
    }

    /// Published events from `seq` on that pass `filter`, at most `max` of them but never
    /// cutting a revision in two. 410 if the reader fell behind the ring.
    pub fn read(&self, seq: u64, max: usize, filter: &Filter) -> Result<Batch, ApiError> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let front = ring.events.front().map_or(ring.next_seq, |e| e.seq);
        if seq < front {
            return Err(ApiError::new(
                ErrorCode::Gone,
                "this watch fell too far behind (the server's history moved on); list again and watch from the list's resourceVersion",
            ));
        }
        let mut events = Vec::new();
        let mut next_seq = seq;
        let mut last_taken = None;
        let mut stopped_at = None;
        for e in ring.events.iter().skip((seq - front) as usize) {
            if e.seq >= ring.published {
                break;
            }
            if events.len() >= max && last_taken != Some(e.revision) {
                stopped_at = Some(e.revision);
                break;
            }
            if filter.matches(e) {
                events.push(Arc::clone(e));
                last_taken = Some(e.revision);
            }
            next_seq = e.seq + 1;
        }
        // Everything before the revision we stopped at has been looked at.
        let revision = stopped_at.map_or(ring.revision, |r| r - 1);
        Ok(Batch { events, next_seq, revision })
    }
}

pub fn too_old(requested: Revision, oldest: Revision) -> ApiError {
    ApiError::new(
        ErrorCode::Gone,
        format!(
            "resourceVersion {requested} is too old (the server keeps history after {oldest}); list again and watch from the list's resourceVersion"
        ),
    )
}

#[derive(Deserialize)]
struct LabelsOnly {
    #[serde(default)]
    metadata: MetaLabels,
}

#[derive(Deserialize, Default)]
struct MetaLabels {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn render(ev: &weft_store::Event) -> Option<CachedEvent> {
    let (kind, namespace, name) = keys::parse(&ev.kv.key)?;
    let revision = ev.revision();
    let event = match ev.kind {
        EventKind::Delete => EventType::Deleted,
        EventKind::Put if ev.kv.create_revision == ev.kv.mod_revision => EventType::Added,
        EventKind::Put => EventType::Modified,
    };
    let object = stored::with_revision(&ev.kv.value, revision);
    let labels = serde_json::from_slice::<LabelsOnly>(&ev.kv.value)
        .map(|l| l.metadata.labels)
        .unwrap_or_default();
    Some(CachedEvent {
        seq: 0,
        revision,
        kind,
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        labels,
        event,
        line: stored::event_line(event, &object),
        object,
    })
}
