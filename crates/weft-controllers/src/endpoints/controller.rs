//! The endpoints controller's I/O: computes a service's endpoints from the caches and writes
//! the Endpoints object when it differs; deletes Endpoints whose service is gone.

use std::time::Duration;

use weft_api::Endpoints;

use super::{endpoints_for, endpoints_object};
use crate::error::Error;
use crate::runtime::{Context, ObjectKey};

pub const NAME: &str = "endpoints";

pub(crate) async fn reconcile(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>, Error> {
    let current = ctx.endpoints.get(key);
    let Some(service) = ctx.services.get(key) else {
        if let Some(ep) = current {
            let gone: Endpoints = ctx
                .delete_at(key, ep.metadata.resource_version.as_deref())
                .await
                .map_err(|e| Error::api(format!("deleting endpoints {key}"), e))?;
            ctx.metrics.wrote(NAME, "deleted");
            ctx.endpoints.remove_through(key, gone.metadata.revision().unwrap_or(0));
        }
        return Ok(None);
    };
    let instances = ctx.instances.in_namespace(&key.namespace);
    let spec = endpoints_for(&service, instances.iter().map(|i| &**i));
    if current.as_ref().is_some_and(|c| c.spec == spec) {
        return Ok(None);
    }
    let mut next = endpoints_object(&service, spec);
    let action = match &current {
        Some(c) => {
            // Compare-and-swap against what we diffed with; keep what others put in metadata.
            next.metadata = c.metadata.clone();
            "updated"
        }
        None => "created",
    };
    let written = ctx
        .client
        .put(&next)
        .await
        .map_err(|e| Error::api(format!("writing endpoints {key}"), e))?;
    ctx.metrics.wrote(NAME, action);
    tracing::debug!(service = %key, addresses = written.spec.addresses.len(), "endpoints written");
    // No fan-out: only this controller reads Endpoints, and it just decided them.
    ctx.endpoints.write_through(written);
    Ok(None)
}
