//! The deployment controller's I/O: gathers a deployment and its instances from the caches,
//! asks [`plan::reconcile`](super::plan::reconcile) what to do, and does it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use weft_api::{Deployment, Instance};

use super::plan::{Action, NodeState, Observed, reconcile as plan};
use crate::error::Error;
use crate::runtime::{BY_DEPLOYMENT, Context, ObjectKey, lock};

pub const NAME: &str = "deployment";

/// Reconciles one deployment (`key` may name one that is gone: its instances are collected).
pub(crate) async fn reconcile(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>, Error> {
    let deployment = ctx.deployments.get(key);
    let instances = ctx.instances.by_index(BY_DEPLOYMENT, &key.to_string());
    if deployment.is_none() && instances.is_empty() {
        return Ok(None);
    }
    let nodes = &ctx.nodes;
    let node_state = |name: &str| match nodes.get(&ObjectKey::new("", name)) {
        Some(n) if n.status.as_ref().is_some_and(|s| s.ready) && is_draining(&n) => {
            NodeState::Draining
        }
        Some(n) if n.status.as_ref().is_some_and(|s| s.ready) => NodeState::Ready,
        Some(_) => NodeState::NotReady,
        None => NodeState::Unknown,
    };
    let plan = {
        let observed = Observed {
            namespace: &key.namespace,
            name: &key.name,
            deployment: deployment.as_deref(),
            instances: &instances,
            node: &node_state,
            now: SystemTime::now(),
            node_grace: ctx.options.node_grace,
        };
        let mut rng = lock(&ctx.rng);
        plan(&observed, &mut *rng)
    };

    let mut status = None;
    let mut writes = Vec::new();
    for action in plan.actions {
        match action {
            Action::UpdateStatus(s) => status = Some(s),
            other => writes.push(other),
        }
    }
    let results: Vec<Result<(), Error>> = futures::stream::iter(writes)
        .map(|a| act(ctx, key, &instances, a))
        .buffer_unordered(ctx.options.max_concurrent_writes.max(1))
        .collect()
        .await;
    let mut first_error = results.into_iter().find_map(Result::err);
    if let (Some(s), Some(d)) = (status, deployment)
        && let Err(e) = write_status(ctx, &d, s).await
    {
        first_error.get_or_insert(e);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(plan.requeue_after),
    }
}

async fn act(
    ctx: &Context,
    key: &ObjectKey,
    instances: &[Arc<Instance>],
    action: Action,
) -> Result<(), Error> {
    match action {
        Action::Create(i) => {
            let name = i.metadata.name.clone();
            let written = ctx
                .client
                .put(&*i)
                .await
                .map_err(|e| Error::api(format!("creating instance {name} of {key}"), e))?;
            ctx.metrics.wrote(NAME, "created");
            tracing::debug!(deployment = %key, instance = %name, "created");
            ctx.wrote_instance(written);
            Ok(())
        }
        Action::Terminate { name, resource_version, why } => {
            let Some(current) = instances.iter().find(|i| i.metadata.name == name) else {
                return Err(Error::Stale(format!("instance {name}")));
            };
            let mut next = (**current).clone();
            next.metadata.resource_version = resource_version;
            next.spec.terminating = true;
            let written = ctx.client.put(&next).await.map_err(|e| {
                Error::api(format!("marking instance {name} of {key} terminating"), e)
            })?;
            ctx.metrics.wrote(NAME, "terminated");
            tracing::debug!(deployment = %key, instance = %name, ?why, "terminating");
            ctx.wrote_instance(written);
            Ok(())
        }
        Action::Delete { name, resource_version, why } => {
            let target = ObjectKey::new(&key.namespace, &name);
            let gone: Instance = ctx
                .delete_at(&target, resource_version.as_deref())
                .await
                .map_err(|e| Error::api(format!("deleting instance {name} of {key}"), e))?;
            ctx.metrics.wrote(NAME, "deleted");
            tracing::debug!(deployment = %key, instance = %name, ?why, "deleted");
            ctx.deleted_instance(&gone);
            Ok(())
        }
        Action::UpdateStatus(_) => Ok(()),
    }
}

async fn write_status(
    ctx: &Context,
    d: &Deployment,
    status: weft_api::kinds::deployment::DeploymentStatus,
) -> Result<(), Error> {
    let mut next = d.clone();
    next.status = Some(status);
    let key = ObjectKey::of(d);
    let written = ctx
        .client
        .put_status(&next)
        .await
        .map_err(|e| Error::api(format!("writing the status of deployment {key}"), e))?;
    ctx.metrics.wrote(NAME, "status");
    // Recorded without fan-out: nothing else depends on a deployment's status.
    ctx.deployments.write_through(written);
    Ok(())
}

/// A node a node pool is draining for removal: cordoned, with `weft.dev/scale-down`.
pub(crate) fn is_draining(n: &weft_api::Node) -> bool {
    n.spec.unschedulable
        && n.metadata.annotations.contains_key(crate::nodepool::SCALE_DOWN_ANNOTATION)
}
