//! A work queue of keys, as client-go's: a key is queued at most once, handed to one worker
//! at a time (added again while being worked on, it is queued once the worker is done), can be
//! added after a delay (timers for rechecks), and failing keys back off exponentially.
//!
//! Workers wait on a `Notify`, not a poll interval: a key added is picked up at once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First retry delay after a failure; doubles per failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    /// Added while processing: queue again when done.
    dirty: HashSet<K>,
    delayed: BTreeMap<(Instant, u64), K>,
    due: HashMap<K, (Instant, u64)>,
    failures: HashMap<K, u32>,
    seq: u64,
    closed: bool,
}

pub struct Queue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    depth: Gauge,
}

impl<K: Clone + Eq + Hash> Queue<K> {
    /// A queue reporting its depth (keys waiting, due or not) on `depth`.
    pub fn new(depth: Gauge) -> Queue<K> {
        Queue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BTreeMap::new(),
                due: HashMap::new(),
                failures: HashMap::new(),
                seq: 0,
                closed: false,
            }),
            notify: Notify::new(),
            depth,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, s: &State<K>) {
        self.depth.set((s.ready.len() + s.dirty.len() + s.due.len()) as i64);
    }

    /// Queues a key now.
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        if s.processing.contains(&key) {
            s.dirty.insert(key);
        } else if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            self.notify.notify_one();
        }
        self.report(&s);
    }

    pub fn add_all(&self, keys: impl IntoIterator<Item = K>) {
        for k in keys {
            self.add(k);
        }
    }

    /// Queues a key after `delay` (an earlier pending time for the same key wins).
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut s = self.lock();
        if s.closed {
            return;
        }
        if let Some(&(when, seq)) = s.due.get(&key) {
            if when <= at {
                return;
            }
            s.delayed.remove(&(when, seq));
        }
        s.seq += 1;
        let seq = s.seq;
        s.delayed.insert((at, seq), key.clone());
        s.due.insert(key, (at, seq));
        self.report(&s);
        // A waiting worker may need to wake earlier than it planned.
        self.notify.notify_one();
    }

    /// Queues a failed key after its backoff (which grows with each failure until `forget`).
    pub fn add_rate_limited(&self, key: K) {
        let n = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.add_after(key, backoff(n));
    }

    /// Clears a key's failure count (after it succeeded).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// Waits for keys and takes up to `max` of them; each must be given back with `done`.
    /// `None` once the queue is closed.
    pub async fn next_batch(&self, max: usize) -> Option<Vec<K>> {
        loop {
            let notified = self.notify.notified();
            let wait = {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                let now = Instant::now();
                while let Some((&(at, seq), _)) = s.delayed.iter().next() {
                    if at > now {
                        break;
                    }
                    let key = s.delayed.remove(&(at, seq)).expect("present");
                    s.due.remove(&key);
                    if s.processing.contains(&key) {
                        s.dirty.insert(key);
                    } else if s.queued.insert(key.clone()) {
                        s.ready.push_back(key);
                    }
                }
                if !s.ready.is_empty() {
                    let mut batch = Vec::new();
                    while batch.len() < max.max(1) {
                        let Some(k) = s.ready.pop_front() else { break };
                        s.queued.remove(&k);
                        s.processing.insert(k.clone());
                        batch.push(k);
                    }
                    if !s.ready.is_empty() {
                        // More work than this worker took: wake another.
                        self.notify.notify_one();
                    }
                    self.report(&s);
                    return Some(batch);
                }
                s.delayed.keys().next().map(|(at, _)| *at)
            };
            match wait {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Gives a key back after working on it.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.remove(key) && !s.closed && s.queued.insert(key.clone()) {
            s.ready.push_back(key.clone());
            self.notify.notify_one();
        }
        self.report(&s);
    }

    /// Keys waiting (now or later) or being worked on.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.dirty.len() + s.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        // A worker between its check and its wait would miss `notify_waiters`; the stored
        // permit of `notify_one` catches it.
        self.notify.notify_one();
    }
}

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BASE_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue<&'static str> {
        Queue::new(Gauge::default())
    }

    #[tokio::test]
    async fn keys_are_deduplicated_and_kept_in_order() {
        let q = queue();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_batch(10).await.unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = queue();
        q.add("a");
        let batch = q.next_batch(1).await.unwrap();
        q.add("a");
        q.add("b");
        // "a" is being worked on: only "b" is handed out.
        assert_eq!(q.next_batch(10).await.unwrap(), ["b"]);
        q.done(&batch[0]);
        assert_eq!(q.next_batch(10).await.unwrap(), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_come_when_due_and_the_earliest_time_wins() {
        let q = queue();
        q.add_after("late", Duration::from_secs(10));
        q.add_after("late", Duration::from_secs(2));
        q.add_after("late", Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(q.next_batch(10).await.unwrap(), ["late"]);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_add_wakes_a_worker_waiting_for_a_later_key() {
        let q = std::sync::Arc::new(queue());
        q.add_after("later", Duration::from_secs(60));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next_batch(10).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.add("now");
        assert_eq!(waiter.await.unwrap().unwrap(), ["now"]);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(5), Duration::from_millis(80));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_until_forgotten() {
        let q = queue();
        let start = Instant::now();
        q.add_rate_limited("k");
        q.next_batch(1).await.unwrap();
        q.done(&"k");
        q.add_rate_limited("k");
        q.next_batch(1).await.unwrap();
        q.done(&"k");
        assert_eq!(start.elapsed(), Duration::from_millis(15));
        q.forget(&"k");
        let start = Instant::now();
        q.add_rate_limited("k");
        q.next_batch(1).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test]
    async fn closing_releases_workers() {
        let q = std::sync::Arc::new(queue());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next_batch(1).await });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
