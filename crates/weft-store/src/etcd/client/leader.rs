//! Leader election on etcd's own recipe: a lease kept alive by the candidate, and a campaign
//! (etcd's election api) that returns once the candidate's key under the election is the oldest.
//! Several `weft server` replicas campaign for the controllers; one acts at a time.
//!
//! No double actions: the leader counts itself lost once it has gone two thirds of the lease's
//! time to live without a successful keep-alive, before the lease can expire on etcd and let
//! another campaign win.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{CallError, Etcd, one_line};
use crate::StoreError;

/// Leadership of one election, held until [`Leadership::lost`] resolves or it is dropped (which
/// revokes the lease, so another candidate takes over at once rather than after the TTL).
pub struct Leadership {
    lost: watch::Receiver<bool>,
    lease: i64,
    etcd: Etcd,
    keeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").field("lease", &self.lease).finish_non_exhaustive()
    }
}

impl Etcd {
    /// Campaigns in election `name` (under the store's key prefix) as `id`, with a lease of
    /// `ttl` (at least 2 s); returns once this candidate leads. Cancel-safe: dropping the future
    /// while it waits leaves a lease that etcd expires after `ttl`.
    pub async fn lead(
        &self,
        name: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<Leadership, StoreError> {
        let inner = &self.inner;
        let secs = ttl.as_secs().max(2) as i64;
        let mut lease_client = inner.lease.clone();
        let granted = inner
            .call(lease_client.grant(secs, None))
            .await
            .map_err(|e| inner.fail("granting a lease for the election", e))?;
        let lease = granted.id();
        let mut key = inner.prefix.clone();
        key.extend_from_slice(b"/weft/elections/");
        key.extend_from_slice(name.as_bytes());
        let (tx, lost) = watch::channel(false);
        // Keep the lease alive while campaigning too: a campaign can wait for a long time.
        let keeper =
            tokio::spawn(keep_alive(self.clone(), lease, Duration::from_secs(secs as u64), tx));
        let mut election = inner.election.clone();
        // No request timeout here: campaigning waits for the current leader to go.
        match election.campaign(key, id.as_bytes().to_vec(), lease).await {
            Ok(_) => Ok(Leadership { lost, lease, etcd: self.clone(), keeper }),
            Err(e) => {
                keeper.abort();
                Err(inner.fail("campaigning for leadership", CallError::Etcd(e)))
            }
        }
    }
}

impl Leadership {
    /// Resolves when leadership is lost (the lease could not be kept alive).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Whether leadership is still held.
    pub fn holds(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Gives leadership up now: the lease is revoked and another candidate wins at once.
    pub async fn resign(self) {
        self.keeper.abort();
        let mut lease = self.etcd.inner.lease.clone();
        let _ = self.etcd.inner.call(lease.revoke(self.lease)).await;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
        let mut lease = self.etcd.inner.lease.clone();
        let id = self.lease;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = lease.revoke(id).await;
            });
        }
    }
}

/// Renews `lease` every third of `ttl`; says lost after two thirds of `ttl` without a renewal
/// (or when etcd says the lease is gone), and stops.
async fn keep_alive(etcd: Etcd, lease: i64, ttl: Duration, lost: watch::Sender<bool>) {
    let every = ttl / 3;
    let limit = ttl * 2 / 3;
    let mut last_ok = Instant::now();
    let mut client = etcd.inner.lease.clone();
    let mut stream = None;
    loop {
        if stream.is_none() {
            match tokio::time::timeout(every, client.keep_alive(lease)).await {
                Ok(Ok(pair)) => stream = Some(pair),
                Ok(Err(e)) => {
                    tracing::warn!(error = %one_line(&e.to_string()), "election lease keep-alive")
                }
                Err(_) => {}
            }
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let renewed = tokio::time::timeout(every, async {
                keeper.keep_alive().await?;
                responses.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(r))) if r.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => {
                    // etcd says the lease expired: someone else may lead already.
                    let _ = lost.send(true);
                    return;
                }
                _ => stream = None,
            }
        }
        if last_ok.elapsed() >= limit {
            let _ = lost.send(true);
            return;
        }
        // Right after a renewal, wait a third of the TTL; after a failure, retry soon.
        let pause = if last_ok.elapsed() < Duration::from_millis(50) {
            every
        } else {
            Duration::from_millis(200)
        };
        tokio::time::sleep(pause).await;
    }
}
