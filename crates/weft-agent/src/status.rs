//! Writing Instance status: one writer task per instance that always writes the latest status
//! and skips intermediate ones, so a burst of changes (start, ready, usage) costs at most one
//! write in flight plus one queued.
//!
//! Status writes carry no `resourceVersion`: the agent that runs an instance is the only writer
//! of its status once it is bound, and the server merges a status write into the stored object
//! without touching the spec, so there is nothing to conflict with (and no 409 to re-read on).
//! A 404 means the object is gone; the watch tells the supervisor, the writer just stops trying.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_api::kinds::instance::InstanceStatus;
use weft_client::Client;

/// The latest status of one instance, shared by its supervisor and the usage collector.
#[derive(Debug)]
pub(crate) struct StatusCell {
    tx: watch::Sender<(u64, InstanceStatus)>,
    written: watch::Receiver<u64>,
}

impl StatusCell {
    /// Changes the status; it is written if it changed.
    pub(crate) fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        self.tx.send_if_modified(|(seq, s)| {
            let before = s.clone();
            f(s);
            let changed = *s != before;
            if changed {
                *seq += 1;
            }
            changed
        });
    }

    pub(crate) fn get(&self) -> InstanceStatus {
        self.tx.borrow().1.clone()
    }

    /// Waits (up to `limit`) until the latest status has been written.
    pub(crate) async fn flush(&self, limit: Duration) {
        let want = self.tx.borrow().0;
        let mut written = self.written.clone();
        let _ = tokio::time::timeout(limit, written.wait_for(|w| *w >= want)).await;
    }
}

/// Starts the writer for one instance; the task ends when the returned handle is aborted.
pub(crate) fn start(
    client: Client,
    namespace: String,
    name: String,
    initial: InstanceStatus,
    write_initial: bool,
) -> (Arc<StatusCell>, JoinHandle<()>) {
    let (tx, mut rx) = watch::channel((0u64, initial));
    let (done_tx, written) = watch::channel(0u64);
    if write_initial {
        rx.mark_changed();
    }
    let task = tokio::spawn(async move {
        let mut complained = false;
        while rx.changed().await.is_ok() {
            let (seq, status) = rx.borrow_and_update().clone();
            let body = json!({
                "apiVersion": weft_api::API_VERSION,
                "kind": "Instance",
                "metadata": { "name": name, "namespace": namespace },
                "status": status,
            });
            let mut delay = Duration::from_millis(100);
            loop {
                match client.put_value(&body, true).await {
                    Ok(_) => {
                        if complained {
                            tracing::info!(instance = %name, namespace = %namespace, "status writes work again");
                            complained = false;
                        }
                        break;
                    }
                    Err(e) if e.is_not_found() => break,
                    Err(e) => {
                        if !complained {
                            tracing::warn!(instance = %name, namespace = %namespace, "cannot write instance status (retrying): {e}");
                            complained = true;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        // A newer status replaces this one.
                        if rx.has_changed().unwrap_or(false) {
                            break;
                        }
                    }
                }
            }
            let _ = done_tx.send(seq);
        }
    });
    (Arc::new(StatusCell { tx, written }), task)
}
