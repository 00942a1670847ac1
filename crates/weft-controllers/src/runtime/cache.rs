//! In-memory copies of api objects, kept current by a watch (kube-rs' "reflector").
//!
//! Two things make it safe to decide from: it only moves forward (an event older than what it
//! holds is dropped, by resourceVersion), and controllers write their own successful writes
//! through it at once. Without the second, a deployment reconciled again before the watch
//! delivered its new instances would create them twice. Deletions leave a tombstone until the
//! watch has moved past them, so a late event cannot bring the object back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;
use tokio::sync::watch;
use weft_api::Resource;
use weft_client::watcher::Event;

/// Namespace and name (namespace empty for cluster-scoped kinds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    pub fn of<T: Resource>(obj: &T) -> ObjectKey {
        let meta = obj.metadata();
        let namespace = if T::info().namespaced {
            meta.namespace_or_default().to_string()
        } else {
            String::new()
        };
        ObjectKey { namespace, name: meta.name.clone() }
    }

    /// The namespace to give the api (`None` for cluster-scoped kinds).
    pub fn ns(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(self.namespace.as_str())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// An object's change as the cache saw it.
#[derive(Debug)]
pub struct Change<T> {
    pub old: Option<Arc<T>>,
    pub new: Option<Arc<T>>,
}

impl<T> Change<T> {
    /// The object before and after, whichever exist.
    pub fn both(&self) -> impl Iterator<Item = &Arc<T>> {
        self.old.iter().chain(self.new.iter())
    }
}

/// A secondary key for looking objects up (e.g. instances by deployment, by node).
pub type IndexFn<T> = fn(&T) -> Option<String>;

struct Index<T> {
    name: &'static str,
    key: IndexFn<T>,
    map: HashMap<String, HashSet<ObjectKey>>,
}

struct Inner<T> {
    objects: BTreeMap<ObjectKey, Arc<T>>,
    indexes: Vec<Index<T>>,
    /// Deleted at this revision; older events for the key are stale.
    tombstones: HashMap<ObjectKey, u64>,
    /// Our own writes the watch has not confirmed yet, kept across a re-list.
    unconfirmed: HashSet<ObjectKey>,
    /// The newest revision the watch has delivered.
    watched: u64,
}

/// The objects of one kind.
pub struct Cache<T: Resource> {
    inner: RwLock<Inner<T>>,
    synced: watch::Sender<bool>,
}

fn revision<T: Resource>(obj: &T) -> u64 {
    obj.metadata().revision().unwrap_or(0)
}

impl<T: Resource> Default for Cache<T> {
    fn default() -> Self {
        Cache::new(Vec::new())
    }
}

impl<T: Resource> Cache<T> {
    /// A cache with secondary indexes `(name, key function)`.
    pub fn new(indexes: Vec<(&'static str, IndexFn<T>)>) -> Cache<T> {
        Cache {
            inner: RwLock::new(Inner {
                objects: BTreeMap::new(),
                indexes: indexes
                    .into_iter()
                    .map(|(name, key)| Index { name, key, map: HashMap::new() })
                    .collect(),
                tombstones: HashMap::new(),
                unconfirmed: HashSet::new(),
                watched: 0,
            }),
            synced: watch::channel(false).0,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner<T>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<T>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the first list has arrived.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once the first list has arrived.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<T>> {
        self.read().objects.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every object, in key order.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.read().objects.values().cloned().collect()
    }

    pub fn keys(&self) -> Vec<ObjectKey> {
        self.read().objects.keys().cloned().collect()
    }

    /// The objects of one namespace, in name order.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<T>> {
        let start = ObjectKey::new(namespace, "");
        self.read()
            .objects
            .range(start..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The objects whose index `index` has value `value`, in key order.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<T>> {
        let inner = self.read();
        let Some(ix) = inner.indexes.iter().find(|i| i.name == index) else {
            return Vec::new();
        };
        let mut keys: Vec<&ObjectKey> =
            ix.map.get(value).map(|s| s.iter().collect()).unwrap_or_default();
        keys.sort();
        keys.into_iter().filter_map(|k| inner.objects.get(k).cloned()).collect()
    }

    /// Applies a watch event, returning what changed.
    pub fn apply(&self, event: Event) -> Vec<Change<T>> {
        let mut inner = self.write();
        let changes = match event {
            Event::Restarted(items) => inner.restart(items),
            Event::Applied(v) => match decode::<T>(v) {
                Some(obj) => {
                    let rev = revision(&obj);
                    inner.watched = inner.watched.max(rev);
                    inner.upsert(obj, true).into_iter().collect()
                }
                None => Vec::new(),
            },
            Event::Deleted(v) => match decode::<T>(v) {
                Some(obj) => {
                    let rev = revision(&obj);
                    inner.watched = inner.watched.max(rev);
                    inner.remove(ObjectKey::of(&obj), rev).into_iter().collect()
                }
                None => Vec::new(),
            },
        };
        inner.prune();
        drop(inner);
        if !self.is_synced() {
            self.synced.send_replace(true);
        }
        changes
    }

    /// Records an object as just written by us (from the write's answer).
    pub fn write_through(&self, obj: T) -> Option<Change<T>> {
        self.write().upsert(obj, false)
    }

    /// Records an object as just deleted by us, at `revision` (the deletion's).
    pub fn remove_through(&self, key: &ObjectKey, revision: u64) -> Option<Change<T>> {
        self.write().remove(key.clone(), revision)
    }
}

fn decode<T: Resource>(v: Value) -> Option<T> {
    match serde_json::from_value::<T>(v) {
        Ok(obj) => Some(obj),
        Err(e) => {
            tracing::warn!(kind = T::KIND, error = %e, "ignoring an object that does not decode");
            None
        }
    }
}

impl<T: Resource> Inner<T> {
    fn index_insert(&mut self, key: &ObjectKey, obj: &T) {
        for ix in &mut self.indexes {
            if let Some(v) = (ix.key)(obj) {
                ix.map.entry(v).or_default().insert(key.clone());
            }
        }
    }

    fn index_remove(&mut self, key: &ObjectKey, obj: &T) {
        for ix in &mut self.indexes {
            if let Some(v) = (ix.key)(obj)
                && let Some(set) = ix.map.get_mut(&v)
            {
                set.remove(key);
                if set.is_empty() {
                    ix.map.remove(&v);
                }
            }
        }
    }

    fn upsert(&mut self, obj: T, from_watch: bool) -> Option<Change<T>> {
        let key = ObjectKey::of(&obj);
        let rev = revision(&obj);
        if self.tombstones.get(&key).is_some_and(|dead| *dead >= rev) {
            return None;
        }
        if let Some(current) = self.objects.get(&key)
            && revision(&**current) >= rev
        {
            return None;
        }
        self.tombstones.remove(&key);
        if from_watch {
            self.unconfirmed.remove(&key);
        } else {
            self.unconfirmed.insert(key.clone());
        }
        let new = Arc::new(obj);
        let old = self.objects.insert(key.clone(), new.clone());
        if let Some(o) = &old {
            self.index_remove(&key, o);
        }
        self.index_insert(&key, &new);
        Some(Change { old, new: Some(new) })
    }

    fn remove(&mut self, key: ObjectKey, rev: u64) -> Option<Change<T>> {
        if let Some(current) = self.objects.get(&key)
            && revision(&**current) > rev
        {
            // A newer incarnation (re-created after this deletion) is already here.
            return None;
        }
        let dead = self.tombstones.entry(key.clone()).or_insert(rev);
        *dead = (*dead).max(rev);
        self.unconfirmed.remove(&key);
        let old = self.objects.remove(&key)?;
        self.index_remove(&key, &old);
        Some(Change { old: Some(old), new: None })
    }

    fn restart(&mut self, items: Vec<Value>) -> Vec<Change<T>> {
        let fresh: Vec<T> = items.into_iter().filter_map(decode::<T>).collect();
        let listed = fresh.iter().map(revision).max().unwrap_or(0);
        self.watched = self.watched.max(listed);
        let mut seen = HashSet::new();
        let mut changes = Vec::new();
        for obj in fresh {
            let key = ObjectKey::of(&obj);
            seen.insert(key.clone());
            // Our own newer write beats the list; anything else is taken as listed.
            let ours_newer = self.unconfirmed.contains(&key)
                && self.objects.get(&key).is_some_and(|c| revision(&**c) > revision(&obj));
            if ours_newer {
                continue;
            }
            if self.tombstones.get(&key).is_some_and(|dead| *dead > listed) {
                continue;
            }
            let unchanged =
                self.objects.get(&key).is_some_and(|c| revision(&**c) == revision(&obj));
            if unchanged {
                continue;
            }
            let new = Arc::new(obj);
            let old = self.objects.insert(key.clone(), new.clone());
            if let Some(o) = &old {
                self.index_remove(&key, o);
            }
            self.index_insert(&key, &new);
            changes.push(Change { old, new: Some(new) });
        }
        let gone: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                // Kept: listed, or written by us after the list was taken.
                let ours_and_newer = self.unconfirmed.contains(*k) && revision(&***v) > listed;
                !(seen.contains(*k) || ours_and_newer)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(old) = self.objects.remove(&key) {
                self.index_remove(&key, &old);
                changes.push(Change { old: Some(old), new: None });
            }
        }
        changes
    }

    /// Drops what the watch has moved past: tombstones and unconfirmed marks at or below the
    /// newest revision delivered can no longer be contradicted by a late event.
    fn prune(&mut self) {
        let watched = self.watched;
        self.tombstones.retain(|_, rev| *rev > watched);
        let objects = &self.objects;
        self.unconfirmed.retain(|k| objects.get(k).is_some_and(|o| revision(&**o) > watched));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_api::Instance;

    use super::*;

    fn inst(name: &str, rev: u64, node: Option<&str>) -> Value {
        let mut v = json!({
            "apiVersion": "weft/v1", "kind": "Instance",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rev.to_string()},
            "spec": {"deployment": "web", "template": {"command": ["x"]}}
        });
        if let Some(n) = node {
            v["spec"]["node"] = json!(n);
        }
        v
    }

    fn typed(v: Value) -> Instance {
        serde_json::from_value(v).unwrap()
    }

    fn cache() -> Cache<Instance> {
        Cache::new(vec![("node", |i: &Instance| i.spec.node.clone())])
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn events_move_forward_only() {
        let c = cache();
        assert!(!c.is_synced());
        assert_eq!(c.apply(Event::Restarted(vec![inst("a", 5, None)])).len(), 1);
        assert!(c.is_synced());
        assert_eq!(c.apply(Event::Applied(inst("a", 4, Some("n1")))).len(), 0, "older is ignored");
        assert_eq!(c.apply(Event::Applied(inst("a", 6, Some("n1")))).len(), 1);
        assert_eq!(c.by_index("node", "n1").len(), 1);
        assert_eq!(c.apply(Event::Applied(inst("a", 7, Some("n2")))).len(), 1);
        assert!(c.by_index("node", "n1").is_empty(), "index follows the change");
        assert_eq!(c.by_index("node", "n2")[0].metadata.name, "a");
    }

    #[test]
    fn own_writes_show_at_once_and_late_events_do_not_undo_them() {
        let c = cache();
        c.apply(Event::Restarted(vec![]));
        let ch = c.write_through(typed(inst("a", 10, None))).unwrap();
        assert!(ch.old.is_none());
        assert!(c.get(&key("a")).is_some());
        // The watch delivers the same write: no change.
        assert!(c.apply(Event::Applied(inst("a", 10, None))).is_empty());
        // Deleted by us at 12; an event from before (11) must not resurrect it.
        assert!(c.remove_through(&key("a"), 12).is_some());
        assert!(c.apply(Event::Applied(inst("a", 11, Some("n1")))).is_empty());
        assert!(c.get(&key("a")).is_none());
        // Re-created later: a newer incarnation is accepted.
        assert_eq!(c.apply(Event::Applied(inst("a", 13, None))).len(), 1);
        // And the old deletion's event does not remove it.
        assert!(c.apply(Event::Deleted(inst("a", 12, None))).is_empty());
        assert!(c.get(&key("a")).is_some());
    }

    #[test]
    fn a_relist_replaces_everything_but_our_newer_writes() {
        let c = cache();
        c.apply(Event::Restarted(vec![inst("a", 1, None), inst("b", 2, None)]));
        c.write_through(typed(inst("mine", 20, None)));
        let changes = c.apply(Event::Restarted(vec![inst("a", 3, None), inst("c", 4, None)]));
        let mut names: Vec<String> = c.list().iter().map(|i| i.metadata.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["a", "c", "mine"]);
        // a modified, c added, b removed.
        assert_eq!(changes.len(), 3);
        assert_eq!(c.in_namespace("default").len(), 3);
        assert!(c.in_namespace("other").is_empty());
    }

    #[test]
    fn keys_print_like_kubectl() {
        assert_eq!(ObjectKey::new("default", "web").to_string(), "default/web");
        assert_eq!(ObjectKey::new("", "node-1").to_string(), "node-1");
        assert_eq!(ObjectKey::new("", "node-1").ns(), None);
    }
}
