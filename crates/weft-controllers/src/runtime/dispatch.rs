//! Fan-out: which controller keys a change concerns. Runs on the watch task for every change,
//! so it only queues keys; the work happens in the workers.

use weft_api::kinds::service::ACTIVATION_ANNOTATION;
use weft_api::{Deployment, Endpoints, Instance, Node, Service};

use super::{BY_NODE, Change, Context, ObjectKey, lock};
use crate::endpoints::{selects, serving};
use crate::scheduler::controller::needs_scheduling;

pub(crate) fn deployment(ctx: &Context, change: &Change<Deployment>) {
    for d in change.both().take(1) {
        ctx.queues.deployments.add(ObjectKey::of(&**d));
    }
}

pub(crate) fn service(ctx: &Context, change: &Change<Service>) {
    for s in change.both().take(1) {
        ctx.queues.endpoints.add(ObjectKey::of(&**s));
    }
    // A proxy holds a request for this service and asks for an instance: the autoscalers
    // decide now rather than after the next scrape round.
    let requested = |s: &Option<std::sync::Arc<Service>>| {
        s.as_ref().and_then(|s| s.metadata.annotations.get(ACTIVATION_ANNOTATION).cloned())
    };
    let new = requested(&change.new);
    if new.is_some() && new != requested(&change.old) {
        ctx.autoscale_tick.notify_one();
    }
}

pub(crate) fn endpoints(ctx: &Context, change: &Change<Endpoints>) {
    for e in change.both().take(1) {
        ctx.queues.endpoints.add(ObjectKey::of(&**e));
    }
}

/// Address, ports, node and labels: what of an instance its services' endpoints show.
type EndpointView<'a> = (
    &'a str,
    &'a std::collections::BTreeMap<String, u16>,
    &'a Option<String>,
    &'a std::collections::BTreeMap<String, String>,
);

/// What of an instance its services' endpoints show; `None` when it is not serving.
fn endpoint_view(i: &Instance) -> Option<EndpointView<'_>> {
    let s = i.status.as_ref()?;
    serving(i).then_some((s.address.as_str(), &s.ports, &i.spec.node, &i.metadata.labels))
}

pub(crate) fn instance(ctx: &Context, change: &Change<Instance>) {
    let Some(any) = change.both().next() else { return };
    let key = ObjectKey::of(&**any);

    // Deployments: any change of their instances (readiness, phase, node) may matter.
    for i in change.both() {
        if !i.spec.deployment.is_empty() {
            ctx.queues.deployments.add(ObjectKey::new(&key.namespace, &i.spec.deployment));
        }
    }

    // Scheduler: bookkeeping first, so the next decision sees this change.
    let freed = lock(&ctx.scheduler).observe_instance(&key, change.new.as_deref());
    if let Some(new) = &change.new
        && needs_scheduling(new)
    {
        ctx.queues.scheduling.add(key.clone());
    }
    if freed {
        let parked = lock(&ctx.scheduler).take_parked();
        ctx.queues.scheduling.add_all(parked);
    }

    // Endpoints: only when what they show changes.
    let before = change.old.as_deref().and_then(endpoint_view);
    let after = change.new.as_deref().and_then(endpoint_view);
    if before != after {
        for svc in ctx.services.in_namespace(&key.namespace) {
            if change.both().any(|i| selects(&svc, i)) {
                ctx.queues.endpoints.add(ObjectKey::of(&*svc));
            }
        }
    }

    // Nodes: an instance on a node that is not (or no longer) there needs the node controller
    // to keep time for its eviction.
    if let Some(node) = change.new.as_ref().and_then(|i| i.spec.node.as_ref()) {
        let ready = ctx
            .nodes
            .get(&ObjectKey::new("", node))
            .is_some_and(|n| n.status.as_ref().is_some_and(|s| s.ready));
        if !ready {
            ctx.queues.nodes.add(node.clone());
        }
    }
}

pub(crate) fn node(ctx: &Context, change: &Change<Node>) {
    let Some(any) = change.both().next() else { return };
    let name = any.metadata.name.clone();
    ctx.queues.nodes.add(name.clone());

    let more_room = lock(&ctx.scheduler).observe_node(&name, change.new.as_deref());
    if more_room {
        let parked = lock(&ctx.scheduler).take_parked();
        ctx.queues.scheduling.add_all(parked);
    }

    let ready = |n: Option<&std::sync::Arc<Node>>| {
        n.is_some_and(|n| n.status.as_ref().is_some_and(|s| s.ready))
    };
    let draining = |n: Option<&std::sync::Arc<Node>>| {
        n.is_some_and(|n| crate::deployment::controller::is_draining(n))
    };
    if ready(change.old.as_ref()) != ready(change.new.as_ref())
        || draining(change.old.as_ref()) != draining(change.new.as_ref())
        || change.new.is_none()
    {
        // Its instances may now be lost (or found again), or must move: their deployments
        // decide.
        for i in ctx.instances.by_index(BY_NODE, &name) {
            if !i.spec.deployment.is_empty() {
                ctx.queues
                    .deployments
                    .add(ObjectKey::new(i.metadata.namespace_or_default(), &i.spec.deployment));
            }
        }
    }
}
