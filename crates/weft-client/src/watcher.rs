//! A watch that never misses a change, in the manner of kube-rs' watcher.
//!
//! It lists, then follows changes from the list's revision: by push (a held watch stream) or,
//! when streaming fails repeatedly, by pull (long-polls), returning to push later. A broken
//! stream resumes from the last revision seen; a 410 Gone (history compacted) re-lists and says
//! so with [`Event::Restarted`], which carries the complete current state. Transient failures
//! come out as `Err` items between retries with backoff; the stream itself never ends.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::Instant;
use weft_api::selector::Selector;
use weft_api::wire::EventType;
use weft_api::{ErrorCode, KindInfo};

use crate::{Client, ClientError, EventStream};

/// What a watcher reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The complete current set of objects (after the first list, and after every re-list).
    Restarted(Vec<Value>),
    /// An object was created or changed.
    Applied(Value),
    /// An object was deleted (its last state).
    Deleted(Value),
}

/// How to follow changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Push, falling back to pull when streams keep failing.
    Auto,
    Push,
    Pull,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub namespace: Option<String>,
    pub selector: Option<Selector>,
    pub mode: Mode,
    /// How long each long-poll waits.
    pub poll_wait: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            namespace: None,
            selector: None,
            mode: Mode::Auto,
            poll_wait: Duration::from_secs(30),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Streams failing this many times in a row without delivering anything switch to pull.
const PUSH_FAILURES_BEFORE_PULL: u32 = 3;
/// How long to stay on pull before trying push again.
const PULL_SPELL: Duration = Duration::from_secs(60);

enum Phase {
    List,
    Follow,
    Streaming(EventStream, bool),
}

struct State {
    client: Client,
    kind: &'static KindInfo,
    config: Config,
    phase: Phase,
    revision: u64,
    pending: VecDeque<Result<Event, ClientError>>,
    failures: u32,
    push_failures: u32,
    pull_until: Option<Instant>,
}

/// Follows every object of `kind` (in `config.namespace`, or all) matching `config.selector`.
pub fn watcher(
    client: Client,
    kind: &'static KindInfo,
    config: Config,
) -> impl Stream<Item = Result<Event, ClientError>> + Send {
    let state = State {
        client,
        kind,
        config,
        phase: Phase::List,
        revision: 0,
        pending: VecDeque::new(),
        failures: 0,
        push_failures: 0,
        pull_until: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.pending.pop_front() {
                return Some((item, s));
            }
            s.step().await;
        }
    })
}

impl State {
    fn backoff(&self) -> Duration {
        let ms = 100u64.saturating_mul(1 << self.failures.min(10));
        Duration::from_millis(ms).min(self.config.max_backoff)
    }

    async fn fail(&mut self, e: ClientError) {
        self.pending.push_back(Err(e));
        tokio::time::sleep(self.backoff()).await;
        self.failures = self.failures.saturating_add(1);
    }

    fn use_pull(&mut self) -> bool {
        match self.config.mode {
            Mode::Pull => true,
            Mode::Push => false,
            Mode::Auto => match self.pull_until {
                Some(t) if Instant::now() < t => true,
                Some(_) => {
                    self.pull_until = None;
                    self.push_failures = 0;
                    false
                }
                None => false,
            },
        }
    }

    fn push_failed(&mut self) {
        self.push_failures += 1;
        if self.config.mode == Mode::Auto && self.push_failures >= PUSH_FAILURES_BEFORE_PULL {
            tracing::info!(
                kind = self.kind.plural,
                "watch streams keep failing; switching to long-poll"
            );
            self.pull_until = Some(Instant::now() + PULL_SPELL);
        }
    }

    fn gone(e: &ClientError) -> bool {
        e.code() == Some(ErrorCode::Gone)
    }

    async fn step(&mut self) {
        let ns = self.config.namespace.clone();
        let selector = self.config.selector.clone();
        match std::mem::replace(&mut self.phase, Phase::Follow) {
            Phase::List => {
                match self.client.list_value(self.kind, ns.as_deref(), selector.as_ref()).await {
                    Ok(list) => {
                        self.failures = 0;
                        self.revision = list.metadata.resource_version.parse().unwrap_or(0);
                        self.pending.push_back(Ok(Event::Restarted(list.items)));
                        self.phase = Phase::Follow;
                    }
                    Err(e) => {
                        self.phase = Phase::List;
                        self.fail(e).await;
                    }
                }
            }
            Phase::Follow if self.use_pull() => {
                let wait = self.config.poll_wait;
                match self
                    .client
                    .poll(self.kind, ns.as_deref(), selector.as_ref(), Some(self.revision), wait)
                    .await
                {
                    Ok(batch) => {
                        self.failures = 0;
                        for ev in batch.events {
                            self.deliver(ev.kind, ev.object);
                        }
                        if let Ok(rv) = batch.resource_version.parse::<u64>() {
                            self.revision = self.revision.max(rv);
                        }
                    }
                    Err(e) if Self::gone(&e) => self.phase = Phase::List,
                    Err(e) => self.fail(e).await,
                }
            }
            Phase::Follow => {
                match self
                    .client
                    .watch(self.kind, ns.as_deref(), None, selector.as_ref(), Some(self.revision))
                    .await
                {
                    Ok(stream) => self.phase = Phase::Streaming(stream, false),
                    Err(e) if Self::gone(&e) => self.phase = Phase::List,
                    Err(e) => {
                        if !matches!(e, ClientError::Unreachable { .. }) {
                            self.push_failed();
                        }
                        self.fail(e).await;
                    }
                }
            }
            Phase::Streaming(mut stream, delivered) => match stream.next().await {
                Some(Ok(ev)) => {
                    self.failures = 0;
                    self.push_failures = 0;
                    match ev.kind {
                        EventType::Error => {
                            let gone =
                                ev.object.get("code").and_then(Value::as_str) == Some("Gone");
                            self.phase = if gone { Phase::List } else { Phase::Follow };
                            if !gone {
                                let message = ev
                                    .object
                                    .get("message")
                                    .and_then(Value::as_str)
                                    .unwrap_or("watch error");
                                self.pending
                                    .push_back(Err(ClientError::Protocol(message.to_string())));
                            }
                            return;
                        }
                        kind => {
                            if let Some(rv) = ev.revision() {
                                self.revision = self.revision.max(rv);
                            }
                            self.deliver(kind, ev.object);
                        }
                    }
                    self.phase = Phase::Streaming(stream, true);
                }
                Some(Err(e)) => {
                    if !delivered {
                        self.push_failed();
                    }
                    self.fail(e).await;
                }
                // The server ended the stream (restart, timeout): resume from where we are.
                None => {
                    if !delivered {
                        self.push_failed();
                        tokio::time::sleep(self.backoff()).await;
                    }
                }
            },
        }
    }

    fn deliver(&mut self, kind: EventType, object: Value) {
        match kind {
            EventType::Added | EventType::Modified => {
                self.pending.push_back(Ok(Event::Applied(object)))
            }
            EventType::Deleted => self.pending.push_back(Ok(Event::Deleted(object))),
            EventType::Bookmark | EventType::Error => {}
        }
    }
}
