//! Notify, push and pull: watch streams (NDJSON, held open) and long-polls (one JSON batch),
//! both served from the watch cache.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use std::pin::Pin;
use tokio::sync::watch;

use tokio::time::{Instant, Sleep};
use weft_api::ApiError;
use weft_api::wire::EventType;

use crate::cache::{Delivery, Filter};
use crate::error::Result;
use crate::keys;
use crate::metrics::GaugeGuard;
use crate::state::AppState;
use crate::stored;

/// Events written to a stream per wake-up at most; more are sent in the next chunk.
const BATCH: usize = 512;

/// A watch stream of the objects `filter` selects, starting after revision `after`, or with the
/// current objects as ADDED events followed by a BOOKMARK when `after` is `None`.
pub async fn stream(
    app: Arc<AppState>,
    filter: Filter,
    after: Option<u64>,
    timeout: Option<Duration>,
) -> Result<Response> {
    let (initial, after) = match after {
        Some(a) => (None, a),
        None => {
            let (lines, revision) = initial_events(&app, &filter).await?;
            (Some(lines), revision)
        }
    };
    let seq = app.cache.position(after)?;
    // Watchers that connect together (a fleet of sidecars after a restart) would otherwise get
    // their bookmarks in one burst every interval; a random first delay spreads them out.
    let period = app.limits.bookmark_interval;
    let now = Instant::now();
    let first_bookmark = now + period / 2 + period.mul_f64(rand::random::<f64>());
    let deadline = timeout.map(|t| now + t);
    let watcher = Watcher {
        rx: app.cache.subscribe(),
        _guard: GaugeGuard::new(&app.metrics.watchers),
        app,
        filter,
        seq,
        after,
        seen: after,
        period,
        next_bookmark: first_bookmark,
        last_sent: now,
        deadline,
        timer: Box::pin(tokio::time::sleep_until(earliest(first_bookmark, deadline))),
        initial,
        fresh: true,
        done: false,
    };
    let body = futures::stream::unfold(watcher, |mut w| async move {
        let chunk = w.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), w))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn earliest(a: Instant, b: Option<Instant>) -> Instant {
    b.map_or(a, |b| a.min(b))
}

/// One watch stream's state. Per delivered event it costs a wake-up, a read of the cache and
/// one socket write: the timer is only touched when it fires (at most once per bookmark
/// period), not each time an event goes out, because timer-wheel updates for ten thousand
/// streams per event showed up in profiles.
struct Watcher {
    app: Arc<AppState>,
    filter: Filter,
    seq: u64,
    /// Events at or below this revision were already covered (by the initial list).
    after: u64,
    /// The revision this watcher has seen everything up to.
    seen: u64,
    rx: watch::Receiver<u64>,
    period: Duration,
    next_bookmark: Instant,
    last_sent: Instant,
    deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    initial: Option<Bytes>,
    /// The last read stopped at its batch limit: read again before waiting.
    fresh: bool,
    done: bool,
    _guard: GaugeGuard,
}

impl Watcher {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(initial) = self.initial.take() {
            self.last_sent = Instant::now();
            return Some(initial);
        }
        // Right after a chunk went out, hyper polls again at once; unless something was
        // published since, there is nothing to read and the stream can go straight to waiting.
        let mut read = self.fresh || self.rx.has_changed().unwrap_or(true);
        loop {
            if self.app.cache.is_closed() {
                return None;
            }
            if !read {
                read = true;
                if let Some(bookmark) = self.wait_for_change().await? {
                    return Some(bookmark);
                }
                continue;
            }
            // Mark the current revision seen before reading, so a publish after the read
            // still wakes us.
            self.rx.borrow_and_update();
            match self.app.cache.read(self.seq, BATCH, &self.filter, self.after) {
                Err(e) => {
                    self.done = true;
                    return Some(error_line(&e));
                }
                Ok(batch) => {
                    self.seq = batch.next_seq;
                    self.seen = self.seen.max(batch.revision);
                    if !batch.events.is_empty() {
                        self.app.metrics.watch_events_sent.inc_by(batch.events.len() as u64);
                        self.last_sent = Instant::now();
                        self.fresh = batch.more;
                        return Some(concat_lines(&batch.events));
                    }
                    if batch.more {
                        continue;
                    }
                }
            }
            if let Some(bookmark) = self.wait_for_change().await? {
                return Some(bookmark);
            }
        }
    }

    /// Waits for a publish (`Ok(None)`), a due bookmark (`Ok(Some(line))`) or the end of the
    /// stream (`None`).
    async fn wait_for_change(&mut self) -> Option<Option<Bytes>> {
        tokio::select! {
            changed = self.rx.changed() => {
                changed.ok()?;
                Some(None)
            }
            _ = self.timer.as_mut() => {
                let now = Instant::now();
                if self.deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                // A stream that carried events recently needs no bookmark to move on.
                let due = self.last_sent + self.period;
                let send = now >= self.next_bookmark && now >= due;
                self.next_bookmark = if send { now + self.period } else { due.max(self.next_bookmark) };
                let at = earliest(self.next_bookmark, self.deadline);
                self.timer.as_mut().reset(at);
                if send {
                    self.last_sent = now;
                    return Some(Some(stored::bookmark_line(self.filter.kind.kind, self.seen)));
                }
                Some(None)
            }
        }
    }
}

fn concat_lines(events: &[Delivery]) -> Bytes {
    if events.len() == 1 {
        return events[0].line();
    }
    let mut out = BytesMut::with_capacity(events.iter().map(|e| e.event.line.len()).sum());
    for e in events {
        out.put_slice(&e.line());
    }
    out.freeze()
}

fn error_line(e: &ApiError) -> Bytes {
    let object = serde_json::to_vec(e).unwrap_or_default();
    stored::event_line(EventType::Error, &object)
}

/// The current objects as ADDED lines plus a BOOKMARK at the list's revision.
async fn initial_events(app: &AppState, filter: &Filter) -> Result<(Bytes, u64)> {
    let prefix = keys::prefix(filter.kind, filter.namespace.as_deref());
    let (kvs, revision) = app.store.list(&prefix).await?;
    let mut out = BytesMut::new();
    for kv in kvs {
        let Some((_, _, name)) = keys::parse(&kv.key) else { continue };
        if filter.name.as_deref().is_some_and(|n| n != name) {
            continue;
        }
        if !filter.selector.is_everything() {
            let labels = stored::labels(&kv.value);
            if !filter.selector.matches(&labels) {
                continue;
            }
        }
        let object = stored::with_revision(&kv.value, kv.mod_revision);
        out.put_slice(&stored::event_line(EventType::Added, &object));
    }
    out.put_slice(&stored::bookmark_line(filter.kind.kind, revision));
    Ok((out.freeze(), revision))
}

/// A long-poll: the events after `after` as soon as there are any, or an empty batch when
/// `wait` runs out. Without `after`, waits for changes after the current revision.
pub async fn poll(
    app: Arc<AppState>,
    filter: Filter,
    after: Option<u64>,
    wait: Duration,
    limit: usize,
) -> Result<Response> {
    let _guard = GaugeGuard::new(&app.metrics.pollers);
    let after = after.unwrap_or_else(|| app.cache.revision());
    let mut seq = app.cache.position(after)?;
    let mut rx = app.cache.subscribe();
    let deadline = Instant::now() + wait;
    let mut seen = after;
    loop {
        if app.cache.is_closed() {
            return Ok(poll_response(seen, &[]));
        }
        rx.borrow_and_update();
        let batch = app.cache.read(seq, limit.max(1), &filter, after)?;
        seq = batch.next_seq;
        seen = seen.max(batch.revision);
        if !batch.events.is_empty() {
            return Ok(poll_response(seen, &batch.events));
        }
        if batch.more {
            continue;
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(poll_response(seen, &[]));
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(poll_response(seen, &[])),
        }
    }
}

fn poll_response(revision: u64, events: &[Delivery]) -> Response {
    let mut out =
        BytesMut::with_capacity(64 + events.iter().map(|e| e.event.line.len()).sum::<usize>());
    out.put_slice(b"{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        let line = e.line();
        out.put_slice(&line[..line.len() - 1]);
    }
    out.put_slice(format!("],\"resourceVersion\":\"{revision}\"}}").as_bytes());
    let mut resp = Response::new(Body::from(out.freeze()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
