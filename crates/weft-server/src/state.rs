//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_store::Store;

use crate::auth::Auth;
use crate::cache::WatchCache;
use crate::metrics::Metrics;

/// Tunables of a running api server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 past it).
    pub max_body: usize,
    /// Events kept for resuming watches and polls; also how many revisions of store history
    /// are kept before compaction.
    pub history: usize,
    /// How often an idle watch stream gets a bookmark.
    pub bookmark_interval: Duration,
    /// Longest long-poll `wait=` accepted.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 3 * 1024 * 1024,
            history: 10_000,
            bookmark_interval: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
        }
    }
}

/// Serialises writes to the same key within this server: the api's read-merge-compare-and-swap
/// would otherwise lose races to concurrent writers of one object and, without a
/// resourceVersion ("last writer wins"), have to answer 409 after too many retries. Keys hash
/// onto a fixed set of stripes; an apply locks its stripes in order, so it cannot deadlock.
pub struct KeyLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for KeyLocks {
    fn default() -> KeyLocks {
        KeyLocks { stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect() }
    }
}

impl KeyLocks {
    fn stripe(&self, key: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.stripes.len() as u64) as usize
    }

    /// Locks every stripe the keys fall on, in stripe order.
    pub async fn lock<'a>(
        &'a self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<tokio::sync::MutexGuard<'a, ()>> {
        let mut stripes: Vec<usize> = keys.into_iter().map(|k| self.stripe(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.stripes[s].lock().await);
        }
        guards
    }
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Auth>,
    pub cache: Arc<WatchCache>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub locks: KeyLocks,
    /// Flips to true when the server begins shutting down; open watches end.
    pub shutdown: watch::Receiver<bool>,
    /// The workload certificate authority, once enabled ([`crate::Server::enable_ca`]).
    pub ca: std::sync::OnceLock<crate::ca::CaService>,
    /// Other registries served on `/metrics` beside the api's own (the controllers', when
    /// they run in this process).
    pub extra_metrics: crate::metrics::Sources,
    /// The audit log of writes, when enabled ([`crate::Server::enable_audit`]).
    pub audit: std::sync::OnceLock<crate::audit::AuditLog>,
}
