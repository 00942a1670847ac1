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

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Auth>,
    pub cache: Arc<WatchCache>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Flips to true when the server begins shutting down; open watches end.
    pub shutdown: watch::Receiver<bool>,
}
