//! The node controller's I/O: heartbeat checks on timers, NotReady writes, evictions.

use std::time::{Duration, SystemTime};

use weft_api::Instance;

use super::health::{HeartbeatCheck, check_heartbeat, evictions};
use crate::error::Error;
use crate::runtime::{BY_NODE, Context, ObjectKey, lock};

pub const NAME: &str = "node";

pub(crate) async fn reconcile(ctx: &Context, name: &String) -> Result<Option<Duration>, Error> {
    let key = ObjectKey::new("", name.as_str());
    let now = SystemTime::now();
    let mut node = ctx.nodes.get(&key);
    let mut recheck: Option<Duration> = None;
    let mut soonest = |d: Duration| recheck = Some(recheck.map_or(d, |r| r.min(d)));

    if let Some(n) = &node {
        lock(&ctx.missing_nodes).remove(name);
        match check_heartbeat(n, now, ctx.options.node_grace) {
            // Checked again when the grace would run out; a heartbeat in between re-queues
            // the node anyway and pushes the check back.
            HeartbeatCheck::Fresh { recheck_after } => {
                soonest(recheck_after + Duration::from_millis(50))
            }
            HeartbeatCheck::NotReady => {}
            HeartbeatCheck::MarkNotReady(status) => {
                let mut next = (**n).clone();
                next.status = Some(*status);
                let written = ctx
                    .client
                    .put_status(&next)
                    .await
                    .map_err(|e| Error::api(format!("marking node {name} NotReady"), e))?;
                ctx.metrics.wrote(NAME, "not-ready");
                tracing::warn!(node = %name, "node stopped heartbeating; marked NotReady");
                if let Some(change) = ctx.nodes.write_through(written) {
                    crate::runtime::dispatch::node(ctx, &change);
                }
                node = ctx.nodes.get(&key);
            }
        }
    }

    let bound = ctx.instances.by_index(BY_NODE, name);
    let missing_since = if node.is_none() && !bound.is_empty() {
        Some(*lock(&ctx.missing_nodes).entry(name.clone()).or_insert(now))
    } else {
        if node.is_none() {
            lock(&ctx.missing_nodes).remove(name);
        }
        None
    };
    let eviction =
        evictions(node.as_deref(), missing_since, &bound, now, ctx.options.eviction_timeout);
    if let Some(after) = eviction.recheck_after {
        soonest(after + Duration::from_millis(50));
    }
    let mut first_error = None;
    for (instance, rv) in eviction.delete {
        let target = ObjectKey::new(
            bound
                .iter()
                .find(|i| i.metadata.name == instance)
                .map(|i| i.metadata.namespace_or_default().to_string())
                .unwrap_or_default(),
            instance.as_str(),
        );
        match ctx.delete_at::<Instance>(&target, rv.as_deref()).await {
            Ok(gone) => {
                ctx.metrics.wrote(NAME, "evicted");
                tracing::warn!(node = %name, instance = %target, "evicted: its node has been lost too long");
                ctx.deleted_instance(&gone);
            }
            Err(e) => {
                first_error.get_or_insert(Error::api(format!("evicting instance {target}"), e));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(recheck),
    }
}
