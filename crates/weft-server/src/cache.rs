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
    /// The labels the object had before this event, for selector watches (an object can move
    /// into or out of a selection).
    pub prev_labels: Prev,
    pub event: EventType,
    /// `{"type":…,"object":…}\n`
    pub line: Bytes,
    /// The object alone (for long-poll batches, which are a JSON document, not lines).
    pub object: Bytes,
}

/// What an object's labels were before an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prev {
    /// The event created the object.
    Created,
    Known(BTreeMap<String, String>),
    /// Replayed history whose earlier state the cache never saw.
    Unknown,
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
    /// How this watcher sees the event, if at all. With a label selector an update can bring
    /// an object into the selection (ADDED) or take it out (DELETED), as Kubernetes does.
    pub fn matches(&self, e: &CachedEvent) -> Option<EventType> {
        let scoped = e.kind == self.kind
            && self.namespace.as_ref().is_none_or(|ns| e.namespace.as_ref() == Some(ns))
            && self.name.as_ref().is_none_or(|n| &e.name == n);
        if !scoped {
            return None;
        }
        if self.selector.is_everything() {
            return Some(e.event);
        }
        let now = self.selector.matches(&e.labels);
        let before = match &e.prev_labels {
            Prev::Created => false,
            Prev::Known(l) => self.selector.matches(l),
            Prev::Unknown => now,
        };
        match (e.event, before, now) {
            (EventType::Added, _, true) => Some(EventType::Added),
            (EventType::Deleted, _, true) => Some(EventType::Deleted),
            (EventType::Modified, true, true) => Some(EventType::Modified),
            (EventType::Modified, false, true) => Some(EventType::Added),
            (EventType::Modified, true, false) => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// An event as one reader receives it: its type may differ from the stored event's (see
/// [`Filter::matches`]).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Arc<CachedEvent>,
    pub kind: EventType,
}

impl Delivery {
    /// The NDJSON line, re-rendered only when the type changed.
    pub fn line(&self) -> Bytes {
        if self.kind == self.event.event {
            self.event.line.clone()
        } else {
            stored::event_line(self.kind, &self.event.object)
        }
    }
}

/// Every object's current labels, so an update's previous labels are known. Events up to
/// `exact_after` come from history replayed at start, before this index's snapshot; the first
/// event of a key among those has unknown previous labels.
#[derive(Default)]
struct LabelIndex {
    current: std::collections::HashMap<String, BTreeMap<String, String>>,
    replay: std::collections::HashMap<String, BTreeMap<String, String>>,
    exact_after: Revision,
}

impl LabelIndex {
    fn prev_and_update(
        &mut self,
        ev: &weft_store::Event,
        labels: &BTreeMap<String, String>,
    ) -> Prev {
        let created = ev.kind == EventKind::Put && ev.kv.create_revision == ev.kv.mod_revision;
        let map =
            if ev.revision() > self.exact_after { &mut self.current } else { &mut self.replay };
        let prev = match (created, map.get(&ev.kv.key)) {
            (true, _) => Prev::Created,
            (false, Some(l)) => Prev::Known(l.clone()),
            (false, None) if ev.revision() > self.exact_after => Prev::Known(BTreeMap::new()),
            (false, None) => Prev::Unknown,
        };
        match ev.kind {
            EventKind::Delete => {
                map.remove(&ev.kv.key);
            }
            EventKind::Put => {
                map.insert(ev.kv.key.clone(), labels.clone());
            }
        }
        prev
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
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Delivery>,
    pub next_seq: u64,
    pub revision: Revision,
    /// The batch stopped at `max`: more events are ready now.
    pub more: bool,
}

pub struct WatchCache {
    ring: RwLock<Ring>,
    capacity: usize,
    published: watch::Sender<Revision>,
    /// Set when the server shuts down; readers see it on their next wake-up. It rides on the
    /// same channel as new revisions so a watcher waits on one thing, not two.
    closed: std::sync::atomic::AtomicBool,
    /// Only the follower task touches it; the mutex is never contended.
    labels: std::sync::Mutex<LabelIndex>,
}

impl WatchCache {
    /// Starts the cache: fills it from the store's retained history (at most `capacity`
    /// revisions back) and follows the store from there.
    pub async fn start(
        store: Arc<dyn Store>,
        capacity: usize,
    ) -> Result<Arc<WatchCache>, StoreError> {
        let current = store.current_revision().await?;
        let compacted = store.compacted_revision().await?;
        let from = current.saturating_sub(capacity as u64).max(compacted);
        let cache = Arc::new(WatchCache::empty(capacity, from));
        let (objects, listed_at) = store.list(keys::REGISTRY).await?;
        {
            let mut index = cache.labels.lock().unwrap_or_else(|p| p.into_inner());
            index.exact_after = listed_at;
            for kv in objects {
                index.current.insert(kv.key, stored::labels(&kv.value));
            }
        }
        let stream = store.watch(keys::REGISTRY, from).await?;
        tokio::spawn(Arc::clone(&cache).follow(store, stream));
        Ok(cache)
    }

    /// An empty cache whose history starts after `from`.
    fn empty(capacity: usize, from: Revision) -> WatchCache {
        let (tx, _) = watch::channel(from);
        WatchCache {
            ring: RwLock::new(Ring {
                events: VecDeque::with_capacity(capacity.min(1 << 16)),
                next_seq: 0,
                published: 0,
                oldest_revision: from,
                revision: from,
            }),
            capacity: capacity.max(1),
            published: tx,
            closed: std::sync::atomic::AtomicBool::new(false),
            labels: std::sync::Mutex::new(LabelIndex::default()),
        }
    }

    /// Ends every watch and long-poll: they return at their next wake-up, which this causes.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.published.send_modify(|_| {});
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
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
        let rendered: Vec<_> = {
            let mut index = self.labels.lock().unwrap_or_else(|p| p.into_inner());
            let rendered = events.iter().filter_map(|e| render(e, &mut index)).collect();
            if index.exact_after > 0
                && events.last().is_some_and(|e| e.revision() > index.exact_after)
            {
                index.replay = Default::default();
            }
            rendered
        };
        let last_revision = events.last().map_or(0, weft_store::Event::revision);
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        for mut ev in rendered {
            ev.seq = ring.next_seq;
            ring.next_seq += 1;
            ring.events.push_back(Arc::new(ev));
        }
        // Publish up to the last complete revision.
        let publish = if more_may_follow {
            ring.events
                .iter()
                .rev()
                .find(|e| e.revision < last_revision)
                .map(|e| (e.seq + 1, e.revision))
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

    /// Published events from `seq` on with a revision above `after` that `filter` lets through,
    /// at most `max` of them but never cutting a revision in two. 410 if the reader fell behind
    /// the ring. Events at or below `after` are stepped over without counting, so a reader far
    /// behind its own starting point does not stall on batches it must skip.
    pub fn read(
        &self,
        seq: u64,
        max: usize,
        filter: &Filter,
        after: Revision,
    ) -> Result<Batch, ApiError> {
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
            if e.revision > after
                && let Some(kind) = filter.matches(e)
            {
                events.push(Delivery { event: Arc::clone(e), kind });
                last_taken = Some(e.revision);
            }
            next_seq = e.seq + 1;
        }
        // Everything before the revision we stopped at has been looked at.
        let revision = stopped_at.map_or(ring.revision, |r| r - 1);
        Ok(Batch { events, next_seq, revision, more: stopped_at.is_some() })
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

fn render(ev: &weft_store::Event, index: &mut LabelIndex) -> Option<CachedEvent> {
    let (kind, namespace, name) = keys::parse(&ev.kv.key)?;
    let revision = ev.revision();
    let event = match ev.kind {
        EventKind::Delete => EventType::Deleted,
        EventKind::Put if ev.kv.create_revision == ev.kv.mod_revision => EventType::Added,
        EventKind::Put => EventType::Modified,
    };
    let object = stored::with_revision(&ev.kv.value, revision);
    let labels = stored::labels(&ev.kv.value);
    let prev_labels = index.prev_and_update(ev, &labels);
    Some(CachedEvent {
        seq: 0,
        revision,
        kind,
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        labels,
        prev_labels,
        event,
        line: stored::event_line(event, &object),
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::kinds;
    use weft_store::{Event, KeyValue};

    fn put(name: &str, rev: u64, created: u64, labels: &str) -> Event {
        let value = format!(
            r#"{{"apiVersion":"weft/v1","kind":"Service","metadata":{{"labels":{{{labels}}},"name":"{name}","namespace":"default"}}}}"#
        );
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: format!("/registry/services/default/{name}"),
                value: value.into(),
                create_revision: created,
                mod_revision: rev,
                version: 1,
            },
        }
    }

    fn all() -> Filter {
        Filter {
            kind: &kinds::SERVICE,
            namespace: None,
            name: None,
            selector: Selector::everything(),
        }
    }

    #[test]
    fn publishes_whole_revisions_only() {
        let c = WatchCache::empty(100, 0);
        // A full chunk may have cut revision 2 in two: its events wait.
        c.push(vec![put("a", 1, 1, ""), put("b", 2, 2, ""), put("c", 2, 2, "")], true);
        assert_eq!(c.revision(), 1);
        let b = c.read(0, 100, &all(), 0).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.revision, 1);
        // The rest of revision 2 arrives: now all of it is visible together.
        c.push(vec![put("d", 2, 2, "")], false);
        assert_eq!(c.revision(), 2);
        let b = c.read(b.next_seq, 100, &all(), 0).unwrap();
        assert_eq!(
            b.events.iter().map(|e| e.event.name.as_str()).collect::<Vec<_>>(),
            ["b", "c", "d"]
        );
    }

    #[test]
    fn events_are_rendered_once_with_type_and_revision() {
        let c = WatchCache::empty(10, 0);
        c.push(vec![put("a", 1, 1, ""), put("a", 2, 1, "")], false);
        let b = c.read(0, 10, &all(), 0).unwrap();
        assert_eq!(b.events[0].kind, EventType::Added);
        assert_eq!(b.events[1].kind, EventType::Modified);
        let line: serde_json::Value = serde_json::from_slice(&b.events[1].line()).unwrap();
        assert_eq!(line["type"], "MODIFIED");
        assert_eq!(line["object"]["metadata"]["resourceVersion"], "2");
    }

    #[test]
    fn positions_resume_exactly() {
        let c = WatchCache::empty(100, 0);
        c.push((1..=5).map(|r| put(&format!("o{r}"), r, r, "")).collect(), false);
        let seq = c.position(3).unwrap();
        let b = c.read(seq, 100, &all(), 0).unwrap();
        assert_eq!(b.events.iter().map(|e| e.event.revision).collect::<Vec<_>>(), [4, 5]);
        // At or beyond the head: nothing yet, and the next events are found.
        let head = c.position(5).unwrap();
        assert!(c.read(head, 100, &all(), 0).unwrap().events.is_empty());
        c.push(vec![put("o6", 6, 6, "")], false);
        assert_eq!(c.read(head, 100, &all(), 0).unwrap().events[0].event.revision, 6);
    }

    #[test]
    fn eviction_makes_old_positions_gone() {
        let c = WatchCache::empty(3, 0);
        c.push((1..=10).map(|r| put("o", r, 1, "")).collect(), false);
        assert_eq!(c.len(), 3);
        assert_eq!(c.position(6).unwrap_err().code, ErrorCode::Gone);
        assert!(c.position(7).is_ok());
        // A reader whose cursor was evicted is told to re-list.
        assert_eq!(c.read(0, 10, &all(), 0).unwrap_err().code, ErrorCode::Gone);
    }

    #[test]
    fn limits_never_split_a_revision() {
        let c = WatchCache::empty(100, 0);
        c.push(
            vec![put("a", 1, 1, ""), put("b", 2, 2, ""), put("c", 2, 2, ""), put("d", 3, 3, "")],
            false,
        );
        let b = c.read(0, 2, &all(), 0).unwrap();
        // Two events requested, but revision 2 has two: all of it comes, then we stop.
        assert_eq!(
            b.events.iter().map(|e| e.event.name.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(b.revision, 2);
        let rest = c.read(b.next_seq, 2, &all(), 0).unwrap();
        assert_eq!(rest.events[0].event.name, "d");
    }

    #[test]
    fn selector_watches_see_objects_enter_and_leave() {
        let c = WatchCache::empty(100, 0);
        let web = Filter { selector: Selector::parse("tier=web").unwrap(), ..all() };
        c.push(vec![put("a", 1, 1, r#""tier":"db""#)], false);
        assert!(c.read(0, 10, &web, 0).unwrap().events.is_empty());
        c.push(vec![put("a", 2, 1, r#""tier":"web""#)], false);
        let b = c.read(0, 10, &web, 0).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.events[0].kind, EventType::Added, "moved into the selection");
        let line: serde_json::Value = serde_json::from_slice(&b.events[0].line()).unwrap();
        assert_eq!(line["type"], "ADDED");
        c.push(vec![put("a", 3, 1, r#""tier":"web","x":"y""#)], false);
        c.push(vec![put("a", 4, 1, r#""tier":"db""#)], false);
        let b = c.read(b.next_seq, 10, &web, 0).unwrap();
        let kinds: Vec<_> = b.events.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, [EventType::Modified, EventType::Deleted], "then out of it");
        // Unfiltered watchers see the stored types.
        let b = c.read(0, 10, &all(), 0).unwrap();
        assert!(b.events.iter().skip(1).all(|d| d.kind == EventType::Modified));
    }

    #[test]
    fn skipped_revisions_do_not_count_towards_the_limit() {
        let c = WatchCache::empty(100, 0);
        c.push((1..=20).map(|r| put(&format!("o{r}"), r, r, "")).collect(), false);
        // Everything up to 18 is already covered: a limit of 2 still reaches 19 and 20.
        let b = c.read(0, 2, &all(), 18).unwrap();
        assert_eq!(b.events.iter().map(|e| e.event.revision).collect::<Vec<_>>(), [19, 20]);
        assert!(!b.more);
        let b = c.read(0, 2, &all(), 0).unwrap();
        assert!(b.more, "stopped at the limit with more ready");
    }

    #[test]
    fn filters_by_namespace_name_and_labels() {
        let c = WatchCache::empty(100, 0);
        c.push(vec![put("a", 1, 1, r#""tier":"web""#), put("b", 2, 2, r#""tier":"db""#)], false);
        let web = Filter { selector: Selector::parse("tier=web").unwrap(), ..all() };
        assert_eq!(c.read(0, 10, &web, 0).unwrap().events.len(), 1);
        let named = Filter { name: Some("b".into()), ..all() };
        assert_eq!(c.read(0, 10, &named, 0).unwrap().events[0].event.name, "b");
        let other_ns = Filter { namespace: Some("prod".into()), ..all() };
        let b = c.read(0, 10, &other_ns, 0).unwrap();
        assert!(b.events.is_empty());
        // Filtered-out events still move the reader on.
        assert_eq!(b.revision, 2);
        let nodes = Filter { kind: &kinds::NODE, ..all() };
        assert!(c.read(0, 10, &nodes, 0).unwrap().events.is_empty());
    }
}
