//! Endpoints: the ready instance addresses behind a service, kept by the endpoints controller.
//! Sidecars watch these to balance.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::Validator;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointsSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
}

impl EndpointsSpec {
    pub(crate) fn validate(&self, v: &mut Validator) {
        for (i, a) in self.addresses.iter().enumerate() {
            if a.ip.parse::<std::net::IpAddr>().is_err() {
                v.error(
                    format!("spec.addresses[{i}].ip"),
                    format!("{:?} is not an IP address", a.ip),
                );
            }
            for (name, port) in &a.ports {
                if *port == 0 {
                    v.error(
                        format!("spec.addresses[{i}].ports[{name:?}]"),
                        "must be between 1 and 65535",
                    );
                }
            }
        }
    }
}

/// One instance behind the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointAddress {
    pub instance: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    pub ip: String,
    /// Service port name (or number, as text) → the instance's public port.
    pub ports: BTreeMap<String, u16>,
    #[serde(default = "yes")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}
