//! The etcd client side of the backend (built with the `etcd` feature).

mod leader;
mod watch;

pub use leader::Leadership;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, ElectionClient, GetOptions,
    KvClient, LeaseClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchClient,
};

use crate::{KeyValue, Op, Precondition, Revision, Store, StoreError, TxnResult, WatchStream};

/// How keys are laid out and how long to wait, for [`Etcd::connect_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Prepended to every key as is (for example `/clusters/a`); empty for none. Lists and
    /// watches of a weft prefix starting with `/` see only keys under `{prefix}/`; an empty
    /// weft prefix under `/a` would also see `/ab…` (as with etcd's own namespaces).
    pub prefix: String,
    /// How long connecting may take before etcd is declared unreachable.
    pub connect_timeout: Duration,
    /// How long one request may take (a write waits for etcd's commit and fsync).
    pub request_timeout: Duration,
    /// How long a watch whose connection broke keeps trying to resume before its stream ends
    /// with an error.
    pub watch_resume: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: String::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            watch_resume: Duration::from_secs(30),
        }
    }
}

/// The etcd-backed [`Store`]. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    election: ElectionClient,
    prefix: Vec<u8>,
    /// The endpoints as given, for messages.
    endpoints: String,
    options: Options,
    /// The highest compaction point seen. etcd's compaction point never goes back, so this is
    /// a lower bound of the real one and usually equal to it.
    compacted: AtomicU64,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.options.prefix)
            .finish()
    }
}

/// Why a call to etcd did not give an answer.
enum CallError {
    Etcd(etcd_client::Error),
    Timeout(Duration),
}

impl CallError {
    /// What went wrong, with the causes tonic keeps underneath (e.g. "tcp connect error:
    /// Connection refused (os error 111)").
    fn message(&self) -> String {
        let (mut text, mut source) = match self {
            CallError::Etcd(etcd_client::Error::GRpcStatus(status)) => {
                (status.message().to_string(), std::error::Error::source(status))
            }
            CallError::Etcd(err) => (err.to_string(), std::error::Error::source(err)),
            CallError::Timeout(limit) => return format!("no answer within {limit:?}"),
        };
        while let Some(cause) = source {
            let more = cause.to_string();
            if !text.contains(&more) {
                text = format!("{text}: {more}");
            }
            source = cause.source();
        }
        text
    }

    /// etcd's `ErrCompacted`: the revision asked for is below the compaction point.
    fn is_compacted(&self) -> bool {
        self.message().contains("required revision has been compacted")
    }

    /// etcd's `ErrFutureRev`: the revision asked for is above the current one.
    fn is_future(&self) -> bool {
        self.message().contains("required revision is a future revision")
    }

    /// The request never left: no connection to the endpoint could be made.
    fn never_sent(&self) -> bool {
        let m = self.message().to_ascii_lowercase();
        m.contains("tcp connect error") || m.contains("connection refused")
    }

    /// The connection failed or etcd could not serve (as opposed to refusing the request).
    fn is_unreachable(&self) -> bool {
        /// gRPC status codes (`tonic::Code` as numbers).
        const CANCELLED: i32 = 1;
        const UNKNOWN: i32 = 2;
        const DEADLINE_EXCEEDED: i32 = 4;
        const UNAVAILABLE: i32 = 14;
        match self {
            CallError::Timeout(_) => true,
            CallError::Etcd(etcd_client::Error::GRpcStatus(status)) => {
                match i32::from(status.code()) {
                    UNAVAILABLE | DEADLINE_EXCEEDED => true,
                    // h2 and connection failures surface as Unknown with a transport message,
                    // or as Cancelled ("operation was canceled: transport error: connection
                    // closed") when etcd goes away while the request is on the wire.
                    UNKNOWN | CANCELLED => {
                        // With the causes: tonic keeps "transport error" in the source chain.
                        let m = self.message().to_ascii_lowercase();
                        m.contains("transport")
                            || m.contains("connect")
                            || m.contains("broken pipe")
                    }
                    _ => false,
                }
            }
            CallError::Etcd(
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_),
            ) => true,
            CallError::Etcd(_) => false,
        }
    }
}

impl Etcd {
    /// Connects to the etcd cluster at `endpoints` (`HOST:PORT`, or `http://HOST:PORT`), with
    /// every key under `prefix` (empty for none) and default [`Options`] otherwise.
    ///
    /// Fails with a clear `Backend` error if etcd does not answer a read within the connect
    /// timeout: the client itself connects lazily, so this is checked explicitly.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd, StoreError> {
        Etcd::connect_with(endpoints, Options { prefix: prefix.to_string(), ..Options::default() })
            .await
    }

    /// Like [`Etcd::connect`], with explicit [`Options`].
    pub async fn connect_with(endpoints: &[String], options: Options) -> Result<Etcd, StoreError> {
        let shown = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoint given".into()));
        }
        for endpoint in endpoints {
            check_endpoint(endpoint)?;
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            // Finds a dead connection (a partitioned or frozen member) even when idle, so
            // watches notice and resume elsewhere.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // Requests (and watches) fail instead of hanging on a member without a leader.
            .with_require_leader(true);
        let unreachable = |detail: String| {
            StoreError::Unavailable(format!(
                "etcd at {shown} is unreachable: {}; is etcd running?",
                one_line(&detail)
            ))
        };
        let client = match tokio::time::timeout(
            options.connect_timeout,
            Client::connect(endpoints, Some(connect)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(unreachable(CallError::Etcd(err).message())),
            Err(_) => {
                return Err(unreachable(format!("no answer within {:?}", options.connect_timeout)));
            }
        };
        let store = Etcd {
            inner: Arc::new(Inner {
                kv: client.kv_client(),
                watch: client.watch_client(),
                lease: client.lease_client(),
                election: client.election_client(),
                prefix: options.prefix.as_bytes().to_vec(),
                endpoints: shown.clone(),
                options,
                compacted: AtomicU64::new(0),
            }),
        };
        // The client connects lazily: one read proves that etcd is there and has a leader.
        let mut kv = store.inner.kv.clone();
        let probe = GetOptions::new().with_count_only();
        let limit = store.inner.options.connect_timeout;
        let err =
            match tokio::time::timeout(limit, kv.get(store.inner.probe_key(), Some(probe))).await {
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some(CallError::Etcd(err)),
                Err(_) => Some(CallError::Timeout(limit)),
            };
        match err {
            None => {}
            Some(err) if err.is_unreachable() => return Err(unreachable(err.message())),
            Some(err) => return Err(store.inner.fail("a first read", err)),
        }
        let (endpoints, prefix) = (&store.inner.endpoints, &store.inner.options.prefix);
        tracing::debug!(%endpoints, %prefix, "connected to etcd");
        Ok(store)
    }

    /// The endpoints this store talks to, as given.
    pub fn endpoints(&self) -> &str {
        &self.inner.endpoints
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.options.prefix
    }
}

/// `HOST:PORT` or `http://HOST:PORT` with a numeric port.
fn check_endpoint(endpoint: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        StoreError::Backend(format!(
            "invalid etcd endpoint {endpoint:?}: {why}; expected HOST:PORT"
        ))
    };
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    if rest.starts_with("https://") || endpoint.starts_with("https://") {
        return Err(bad("TLS is not supported"));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(bad("no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port is not a number from 1 to 65535")),
    }
}

/// Keeps a message on one line (tonic's can hold newlines).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix);
/// `[0]` means "to the end of the keyspace".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn revision(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn etcd_revision(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// Whether `precondition` holds for a key whose current `mod_revision` is `actual`.
fn holds(precondition: Precondition, actual: Option<Revision>) -> bool {
    match precondition {
        Precondition::None => true,
        Precondition::Absent => actual.is_none(),
        Precondition::Exists => actual.is_some(),
        Precondition::ModRevision(expected) => actual == Some(expected),
    }
}

impl Inner {
    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// The etcd range `[start, end)` of the keys starting with `prefix`.
    fn range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        if start.is_empty() {
            // etcd refuses an empty key; ("\0", "\0") is the whole keyspace.
            return (vec![0], vec![0]);
        }
        let end = prefix_end(&start);
        (start, end)
    }

    /// A key used only to read revisions (its value never matters).
    fn probe_key(&self) -> Vec<u8> {
        self.key("\0")
    }

    fn weft_key(&self, key: &[u8]) -> Result<String, StoreError> {
        let rest = key.strip_prefix(self.prefix.as_slice()).ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd returned key {:?} outside the prefix {:?}",
                String::from_utf8_lossy(key),
                self.options.prefix
            ))
        })?;
        String::from_utf8(rest.to_vec()).map_err(|_| {
            StoreError::Backend(format!(
                "etcd key {:?} is not UTF-8, so it was not written by weft",
                String::from_utf8_lossy(key)
            ))
        })
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.weft_key(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: revision(kv.create_revision()),
            mod_revision: revision(kv.mod_revision()),
            version: u64::try_from(kv.version()).unwrap_or(0),
        })
    }

    /// Runs one request with the request timeout.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CallError> {
        let limit = self.options.request_timeout;
        match tokio::time::timeout(limit, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(CallError::Etcd(err)),
            Err(_) => Err(CallError::Timeout(limit)),
        }
    }

    /// Like [`Inner::call`] for a request made by `make`, sent again (at most twice) when it
    /// could not even be sent: with several endpoints, the client may first try a member that
    /// just died, and a connection that was never made carried nothing, so resending is safe
    /// for any request.
    async fn call_again<T, Fut>(&self, mut make: impl FnMut() -> Fut) -> Result<T, CallError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tries = 0;
        loop {
            match self.call(make()).await {
                Err(e) if tries < 2 && e.never_sent() => tries += 1,
                other => return other,
            }
        }
    }

    /// The error for a failed call, saying what was being done.
    fn fail(&self, what: &str, err: CallError) -> StoreError {
        let detail = one_line(&err.message());
        let endpoints = &self.endpoints;
        if err.is_unreachable() {
            return StoreError::Unavailable(format!(
                "etcd at {endpoints} is unreachable: {detail} ({what}); is etcd running?"
            ));
        }
        let limit = if detail.contains("too many operations in txn request") {
            Some("etcd's --max-txn-ops limit, 128 by default")
        } else if detail.contains("request is too large") || detail.contains("larger than max") {
            Some("etcd's --max-request-bytes limit, 1.5 MiB by default")
        } else {
            None
        };
        match limit {
            Some(limit) => StoreError::TooLarge(format!(
                "etcd at {endpoints} refused {what}: {detail} ({limit})"
            )),
            None => StoreError::Backend(format!("etcd at {endpoints} refused {what}: {detail}")),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .call_again(|| {
                let mut kv = self.kv.clone();
                let key = self.probe_key();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await
            .map_err(|e| self.fail("reading the current revision", e))?;
        resp.header()
            .map(|h| revision(h.revision()))
            .ok_or_else(|| StoreError::Backend("etcd answered without a header".into()))
    }

    /// Whether the state at revision `r` (>= 1) can still be read, i.e. `r` is at or after the
    /// compaction point. Revisions in the future count as readable.
    async fn readable(&self, r: Revision) -> Result<bool, StoreError> {
        let options = GetOptions::new().with_count_only().with_revision(etcd_revision(r.max(1)));
        let probe = || {
            let mut kv = self.kv.clone();
            let (key, options) = (self.probe_key(), options.clone());
            async move { kv.get(key, Some(options)).await }
        };
        match self.call_again(probe).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_compacted() => Ok(false),
            Err(e) if e.is_future() => Ok(true),
            Err(e) => Err(self.fail("probing the compaction point", e)),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        let known = self.compacted.load(Ordering::Relaxed);
        // Compaction never goes back: if `known` is still readable, it is the point.
        if known > 1 && self.readable(known).await? {
            return Ok(known);
        }
        if known <= 1 && self.readable(1).await? {
            // Nothing was ever compacted (or only revision 1, etcd's empty initial state,
            // which holds no event: the same thing for watchers).
            return Ok(0);
        }
        // The smallest readable revision, in (known, current]: the current revision is
        // always readable, since compaction keeps the state at its point.
        let (mut lo, mut hi) = (known.max(1), self.current_revision().await?);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.readable(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.compacted.fetch_max(hi, Ordering::Relaxed);
        Ok(hi)
    }

    fn note_compacted(&self, r: Revision) {
        self.compacted.fetch_max(r, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let inner = &*self.inner;
        let resp = inner
            .call_again(|| {
                let mut kv = inner.kv.clone();
                let key = inner.key(key);
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|e| inner.fail(&format!("reading {key}"), e))?;
        resp.kvs().first().map(|kv| inner.kv(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        /// Keys per request: bounds the size of one answer (etcd and the client cap messages).
        const PAGE: i64 = 500;
        let inner = &*self.inner;
        let (start, end) = inner.range(prefix);
        let what = format!("listing {prefix}");
        // Later pages are read at the first page's revision: one snapshot. If a compaction
        // passes that revision meanwhile, start over.
        'attempt: for _ in 0..5 {
            let mut items = Vec::new();
            let mut at: i64 = 0;
            let mut from = start.clone();
            loop {
                let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                if at != 0 {
                    options = options.with_revision(at);
                }
                let page = || {
                    let mut kv = inner.kv.clone();
                    let (from, options) = (from.clone(), options.clone());
                    async move { kv.get(from, Some(options)).await }
                };
                let resp = match inner.call_again(page).await {
                    Ok(resp) => resp,
                    Err(e) if at != 0 && e.is_compacted() => continue 'attempt,
                    Err(e) => return Err(inner.fail(&what, e)),
                };
                if at == 0 {
                    at = resp.header().map(|h| h.revision()).ok_or_else(|| {
                        StoreError::Backend("etcd answered without a header".into())
                    })?;
                }
                for kv in resp.kvs() {
                    items.push(inner.kv(kv)?);
                }
                match resp.kvs().last() {
                    Some(last) if resp.more() => {
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => return Ok((items, revision(at))),
                }
            }
        }
        Err(StoreError::Backend(format!(
            "etcd at {}: {what}: compactions kept overtaking the listing; try again",
            inner.endpoints
        )))
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<TxnResult, StoreError> {
        crate::check_distinct_keys(&ops)?;
        let inner = &*self.inner;
        if ops.is_empty() {
            let revision = inner.current_revision().await?;
            return Ok(TxnResult { revision, results: Vec::new() });
        }
        let mut compares = Vec::new();
        let mut writes = Vec::with_capacity(ops.len());
        let mut reads = Vec::new();
        for op in &ops {
            let key = inner.key(op.key());
            let precondition = match op {
                Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
            };
            match precondition {
                Precondition::None => {}
                Precondition::Absent => {
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                }
                Precondition::Exists => {
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Greater, 0));
                }
                Precondition::ModRevision(r) => {
                    compares.push(Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        etcd_revision(r),
                    ));
                    if r == 0 {
                        // An absent key compares as mod_revision 0; the contract wants it to exist.
                        compares.push(Compare::create_revision(key.clone(), CompareOp::Greater, 0));
                    }
                }
            }
            if precondition != Precondition::None {
                reads.push(TxnOp::get(key.clone(), None));
            }
            writes.push(match op {
                Op::Put { value, .. } => {
                    TxnOp::put(key, value.to_vec(), Some(PutOptions::new().with_prev_key()))
                }
                Op::Delete { .. } => TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key())),
            });
        }
        let request = Txn::new().when(compares).and_then(writes).or_else(reads);
        let what = format!("a transaction on {}", ops[0].key());
        let send = || {
            let mut kv = inner.kv.clone();
            let request = request.clone();
            async move { kv.txn(request).await }
        };
        let resp = inner.call_again(send).await.map_err(|e| inner.fail(&what, e))?;
        let rev = resp
            .header()
            .map(|h| revision(h.revision()))
            .ok_or_else(|| StoreError::Backend("etcd answered without a header".into()))?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            return Err(inner.first_failure(&ops, &responses));
        }
        if responses.len() != ops.len() {
            return Err(StoreError::Backend(format!(
                "etcd answered {} results for {} operations",
                responses.len(),
                ops.len()
            )));
        }
        let mut results = Vec::with_capacity(ops.len());
        for (op, response) in ops.into_iter().zip(responses) {
            results.push(match (op, response) {
                (Op::Put { key, value, .. }, TxnOpResponse::Put(put)) => {
                    let prev = put.prev_key();
                    Some(KeyValue {
                        key,
                        value,
                        create_revision: prev.map_or(rev, |p| revision(p.create_revision())),
                        mod_revision: rev,
                        version: prev.map_or(1, |p| u64::try_from(p.version()).unwrap_or(0) + 1),
                    })
                }
                (Op::Delete { .. }, TxnOpResponse::Delete(delete)) => {
                    delete.prev_kvs().first().map(|kv| inner.kv(kv)).transpose()?
                }
                (op, other) => {
                    return Err(StoreError::Backend(format!(
                        "etcd answered {other:?} to an operation on {}",
                        op.key()
                    )));
                }
            });
        }
        Ok(TxnResult { revision: rev, results })
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compacted_revision().await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        watch::watch(self.inner.clone(), prefix, after).await
    }

    async fn compact(&self, to: Revision) -> Result<(), StoreError> {
        let inner = &*self.inner;
        if to <= 1 {
            // Revision 1 is etcd's empty initial state: nothing to discard.
            return Ok(());
        }
        let current = inner.current_revision().await?;
        if to > current {
            return Err(StoreError::FutureRevision { requested: to, current });
        }
        let compact = || {
            let mut kv = inner.kv.clone();
            async move { kv.compact(etcd_revision(to), None).await }
        };
        match inner.call_again(compact).await {
            Ok(_) => {
                inner.note_compacted(to);
                Ok(())
            }
            // Already compacted to `to` or beyond (by us or anyone sharing the etcd).
            Err(e) if e.is_compacted() => Ok(()),
            Err(e) if e.is_future() => Err(StoreError::FutureRevision {
                requested: to,
                current: inner.current_revision().await?,
            }),
            Err(e) => Err(inner.fail(&format!("compacting to revision {to}"), e)),
        }
    }
}

impl Inner {
    /// After etcd refused a transaction's comparisons: the first op, in order, whose
    /// precondition fails on the key states read by the failure branch.
    fn first_failure(&self, ops: &[Op], responses: &[TxnOpResponse]) -> StoreError {
        let mut states: HashMap<&str, Option<Revision>> = HashMap::new();
        let mut reads = responses.iter();
        for op in ops {
            let precondition = match op {
                Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
            };
            if precondition == Precondition::None {
                continue;
            }
            match reads.next() {
                Some(TxnOpResponse::Get(get)) => {
                    states
                        .insert(op.key(), get.kvs().first().map(|kv| revision(kv.mod_revision())));
                }
                other => {
                    return StoreError::Backend(format!(
                        "etcd answered {other:?} to the read of {}",
                        op.key()
                    ));
                }
            }
        }
        for op in ops {
            let precondition = match op {
                Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
            };
            let actual = states.get(op.key()).copied().flatten();
            if !holds(precondition, actual) {
                return StoreError::PreconditionFailed {
                    key: op.key().to_string(),
                    expected: precondition,
                    actual,
                };
            }
        }
        StoreError::Backend(format!(
            "etcd at {} refused a transaction's comparisons, yet they hold on what it read",
            self.endpoints
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn endpoints_are_host_and_port() {
        for good in ["127.0.0.1:2379", "http://etcd-1:2379", "[::1]:2379", "localhost:1"] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in
            ["", "127.0.0.1", ":2379", "host:", "host:0", "host:99999", "https://h:1", "a/b:1"]
        {
            match check_endpoint(bad) {
                Err(StoreError::Backend(msg)) => assert!(msg.contains("HOST:PORT"), "{msg}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn preconditions() {
        assert!(holds(Precondition::None, None));
        assert!(holds(Precondition::Absent, None));
        assert!(!holds(Precondition::Absent, Some(3)));
        assert!(holds(Precondition::Exists, Some(3)));
        assert!(!holds(Precondition::Exists, None));
        assert!(holds(Precondition::ModRevision(3), Some(3)));
        assert!(!holds(Precondition::ModRevision(3), Some(4)));
        assert!(!holds(Precondition::ModRevision(0), None));
    }
}
