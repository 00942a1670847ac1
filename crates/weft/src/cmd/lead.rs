//! `weft server --controllers`: the controllers, scheduler and autoscaler beside the api, on one
//! server at a time. On the embedded store there is only one server, which always leads. On
//! etcd every replica campaigns (etcd's election, on a lease); the winner runs the controllers
//! until it stops or loses its lease, and then another replica takes over.

#[cfg(feature = "etcd")]
use std::time::Duration;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use weft_client::Client;

use weft_controllers::{Controllers, Metrics};

use super::server::StoreTarget;

/// The election's lease: a dead leader is replaced after at most this long.
#[cfg(feature = "etcd")]
const LEASE: Duration = Duration::from_secs(5);

/// Runs the controllers through `client` whenever this server leads, until `stop` fires.
pub async fn run(
    target: StoreTarget,
    client: Client,
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    match target {
        StoreTarget::Embedded => {
            eprintln!("controllers running (embedded store: this server is the only one)");
            metrics.leader.set(1);
            run_controllers(&client, &data_dir, &metrics, stopped(stop.clone())).await;
            metrics.leader.set(0);
        }
        #[cfg(not(feature = "etcd"))]
        StoreTarget::Etcd { .. } => {
            let _ = stop.wait_for(|s| *s).await;
        }
        #[cfg(feature = "etcd")]
        StoreTarget::Etcd { endpoints, prefix } => {
            let id = format!("{}-{}", hostname(), std::process::id());
            let mut delay = Duration::from_millis(200);
            loop {
                let etcd = match weft_store::etcd::Etcd::connect(&endpoints, &prefix).await {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("controllers: cannot reach etcd for the election: {e}; retrying");
                        if wait_or_stop(&mut stop, delay).await {
                            return;
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                let campaign = etcd.lead("controllers", &id, LEASE);
                let mut leadership = tokio::select! {
                    r = campaign => match r {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("controllers: campaign failed: {e}; retrying");
                            if wait_or_stop(&mut stop, delay).await {
                                return;
                            }
                            continue;
                        }
                    },
                    () = stopped(stop.clone()) => return,
                };
                delay = Duration::from_millis(200);
                eprintln!("controllers: leading as {id}; controllers running");
                metrics.leader.set(1);
                let (end_tx, end_rx) = watch::channel(false);
                let run = run_controllers(&client, &data_dir, &metrics, stopped(end_rx));
                tokio::pin!(run);
                let stopping = tokio::select! {
                    () = &mut run => false,
                    () = leadership.lost() => false,
                    () = stopped(stop.clone()) => true,
                };
                let _ = end_tx.send(true);
                run.await;
                metrics.leader.set(0);
                if stopping {
                    leadership.resign().await;
                    return;
                }
                eprintln!(
                    "controllers: lost leadership (lease not renewed); controllers stopped, campaigning again"
                );
            }
        }
    }
}

/// The controllers (sharing `metrics` with the api's `/metrics`), with the local node
/// provider: its agents stop when leadership ends.
async fn run_controllers(
    client: &Client,
    data_dir: &std::path::Path,
    metrics: &Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let options = weft_controllers::Options::default();
    let controllers = Controllers::with_metrics(client.clone(), options, metrics.clone());
    crate::local_pool::run_controllers(controllers, data_dir, client, shutdown).await;
}

/// Waits `d` unless `stop` fires first (then `true`).
#[cfg(feature = "etcd")]
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

#[cfg(feature = "etcd")]
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "weft".into())
}
