//! The Node object: registration, heartbeats, and the agent's own node-bound api token.

use std::path::Path;
use std::time::{Duration, SystemTime};

use weft_api::kinds::node::{NodeSpec, NodeStatus};
use weft_api::kinds::template::ResourceList;
use weft_api::quantity::Quantity;
use weft_api::wire::{Role, TokenRequest};
use weft_api::{ErrorCode, Node, ObjectMeta};
use weft_client::{Client, ClientError};

use crate::procfs;

/// What the agent says about its node.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    pub name: String,
    pub address: String,
    pub capacity: ResourceList,
    pub allocatable: ResourceList,
    pub metrics_address: String,
    pub cgroups: bool,
}

impl NodeInfo {
    pub(crate) fn status(&self, ready: bool) -> NodeStatus {
        NodeStatus {
            address: self.address.clone(),
            capacity: self.capacity.clone(),
            allocatable: self.allocatable.clone(),
            heartbeat_time: Some(now_rfc3339()),
            ready,
            cgroups: self.cgroups,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            metrics_address: Some(self.metrics_address.clone()),
            conditions: Vec::new(),
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The machine's capacity, with `overrides` (`--capacity`) taking precedence per resource.
pub(crate) fn capacity(overrides: &ResourceList) -> ResourceList {
    ResourceList {
        cpu: overrides.cpu.or_else(|| Some(Quantity::from_units(procfs::cpus()))),
        memory: overrides.memory.or_else(|| procfs::mem_total().map(Quantity::from_bytes_binary)),
    }
}

/// Capacity minus what is reserved for the system.
pub(crate) fn allocatable(capacity: &ResourceList, reserved: &ResourceList) -> ResourceList {
    let minus = |c: &Option<Quantity>, r: &Option<Quantity>| match (c, r) {
        (Some(c), Some(r)) => Some(c.saturating_sub(*r)),
        (c, _) => *c,
    };
    ResourceList {
        cpu: minus(&capacity.cpu, &reserved.cpu),
        memory: minus(&capacity.memory, &reserved.memory),
    }
}

/// Whether an error means "this token will never work" rather than "try again".
pub(crate) fn fatal(e: &ClientError) -> bool {
    matches!(e.code(), Some(ErrorCode::Unauthorized | ErrorCode::Forbidden))
        || matches!(e, ClientError::InvalidUrl(_))
}

fn node_object(info: &NodeInfo, ready: bool) -> Node {
    let mut n = Node::new(ObjectMeta::named(&info.name), NodeSpec::default());
    n.status = Some(info.status(ready));
    n
}

/// Creates the Node if it is absent (its spec belongs to people: `unschedulable`, `pool`) and
/// writes its status.
pub(crate) async fn register(client: &Client, info: &NodeInfo) -> Result<(), ClientError> {
    match client.get::<Node>(None, &info.name).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            client.put(&Node::new(ObjectMeta::named(&info.name), NodeSpec::default())).await?;
        }
        Err(e) => return Err(e),
    }
    client.put_status(&node_object(info, true)).await?;
    Ok(())
}

/// Keeps `heartbeatTime` fresh, forever.
pub(crate) async fn heartbeat(client: Client, info: NodeInfo, period: Duration) {
    let mut failing = false;
    loop {
        tokio::time::sleep(period).await;
        match client.put_status(&node_object(&info, true)).await {
            Ok(_) if failing => {
                tracing::info!(node = %info.name, "heartbeats get through again");
                failing = false;
            }
            Ok(_) => {}
            // Deleted by someone: register again (a node that exists is a node that works).
            Err(e) if e.is_not_found() => {
                if let Err(e) = register(&client, &info).await {
                    tracing::warn!(node = %info.name, "cannot register the node again: {e}");
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(node = %info.name, "heartbeat failed (retrying): {e}");
                    failing = true;
                }
            }
        }
    }
}

/// Marks the node not ready (the agent is stopping with its instances).
pub(crate) async fn mark_not_ready(client: &Client, info: &NodeInfo) {
    let _ =
        tokio::time::timeout(Duration::from_secs(2), client.put_status(&node_object(info, false)))
            .await;
}

/// The agent's own api token, bound to its node (the node restriction: it may write this
/// Node and the Instances on it, nothing else). The token the agent was started with (a join
/// token shared by every agent) is traded for it once; it is kept in `file` (0600) for the
/// next start. A token that is already bound, or may not mint, is used as it is.
pub(crate) async fn credential(
    join: &Client,
    server: &str,
    file: &Path,
    node: &str,
) -> Result<Client, ClientError> {
    if let Ok(text) = std::fs::read_to_string(file) {
        let token = text.trim();
        if !token.is_empty() {
            let own = Client::new(server, Some(token.to_string()))?;
            match own.get::<Node>(None, node).await {
                Ok(_) => return Ok(own),
                Err(e) if e.is_not_found() => return Ok(own),
                // Revoked or expired: trade the join token again.
                Err(e) if e.code() == Some(ErrorCode::Unauthorized) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let req = TokenRequest {
        role: Role::Agent,
        ttl: None,
        description: format!("agent of node {node}"),
        node: Some(node.to_string()),
        instance: None,
    };
    match join.request_token(&req).await {
        Ok(created) => {
            write_secret(file, &created.token).map_err(|e| {
                ClientError::Protocol(format!(
                    "cannot keep the node's api token in {}: {e}",
                    file.display()
                ))
            })?;
            Client::new(server, Some(created.token))
        }
        Err(e) if e.code() == Some(ErrorCode::Forbidden) => Ok(join.clone()),
        Err(e) => Err(e),
    }
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_is_capacity_minus_reserved() {
        let q = |s: &str| Some(s.parse::<Quantity>().unwrap());
        let cap = ResourceList { cpu: q("4"), memory: q("8Gi") };
        let res = ResourceList { cpu: q("500m"), memory: None };
        let a = allocatable(&cap, &res);
        assert_eq!(a.cpu, q("3500m"));
        assert_eq!(a.memory, q("8Gi"));
        let detected = capacity(&ResourceList { cpu: q("2"), memory: None });
        assert_eq!(detected.cpu, q("2"));
        assert!(detected.memory.is_some());
    }
}
