//! The endpoints controller: one Endpoints object per Service (same name) listing the ready
//! instances behind it, written only when it changes, created and deleted with the Service.
//!
//! [`endpoints_for`] decides (pure); [`controller`] reads the caches and makes the writes.

pub(crate) mod controller;

use std::collections::BTreeMap;

use weft_api::kinds::endpoints::{EndpointAddress, EndpointsSpec};
use weft_api::kinds::instance::Phase;
use weft_api::{Endpoints, Instance, ObjectMeta, Service};

/// Whether `service` selects `instance`: same namespace, every selector label present.
pub fn selects(service: &Service, instance: &Instance) -> bool {
    service.metadata.namespace_or_default() == instance.metadata.namespace_or_default()
        && !service.spec.selector.is_empty()
        && service.spec.selector.iter().all(|(k, v)| instance.metadata.labels.get(k) == Some(v))
}

/// Whether an instance takes traffic: Running, ready, not being stopped, with an address.
pub fn serving(instance: &Instance) -> bool {
    !instance.spec.terminating
        && instance.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Running && s.ready && s.address.parse::<std::net::IpAddr>().is_ok()
        })
}

/// The endpoints of `service` among `instances` (DESIGN.md "Endpoints"): per serving instance
/// it selects, `{instance, node, ip, ports, ready}` where `ports` maps each service port (its
/// name, or its number as text) to the instance's public port for the service port's
/// `targetPort` (resolved by name or number against the instance's template ports, then looked
/// up in `status.ports` by the template port's name). Ports that do not resolve are left out;
/// an instance with none left is left out. Sorted by instance name.
pub fn endpoints_for<'a>(
    service: &Service,
    instances: impl IntoIterator<Item = &'a Instance>,
) -> EndpointsSpec {
    let mut addresses: Vec<EndpointAddress> = instances
        .into_iter()
        .filter(|i| selects(service, i) && serving(i))
        .filter_map(|i| {
            let status = i.status.as_ref()?;
            let ports: BTreeMap<String, u16> = service
                .spec
                .ports
                .iter()
                .filter_map(|sp| {
                    let key = sp.name.clone().unwrap_or_else(|| sp.port.to_string());
                    let target = i.spec.template.port(&sp.target())?;
                    let public = *status.ports.get(&target.name)?;
                    (public != 0).then_some((key, public))
                })
                .collect();
            if ports.is_empty() {
                return None;
            }
            Some(EndpointAddress {
                instance: i.metadata.name.clone(),
                node: i.spec.node.clone().unwrap_or_default(),
                ip: status.address.clone(),
                ports,
                ready: true,
            })
        })
        .collect();
    addresses.sort_by(|a, b| a.instance.cmp(&b.instance));
    EndpointsSpec { addresses }
}

/// The Endpoints object for a service.
pub fn endpoints_object(service: &Service, spec: EndpointsSpec) -> Endpoints {
    let meta = ObjectMeta {
        name: service.metadata.name.clone(),
        namespace: Some(service.metadata.namespace_or_default().to_string()),
        labels: service.metadata.labels.clone(),
        ..ObjectMeta::default()
    };
    Endpoints::new(meta, spec)
}

#[cfg(test)]
mod tests;
