//! The `local` node provider: a pool node is a `weft agent` process on this machine, started
//! and stopped by the controllers' leader (`weft up`, `weft server --controllers`).
//!
//! Each agent gets its own data dir (`<data-dir>/nodepools/<pool>/<node>/`, with `agent.pid`
//! and `agent.log`), joins the api with an agent-role token this provider mints, reports the
//! template's capacity (`--capacity`, and `--reserved` = capacity − allocatable) and stops its
//! instances when it stops (`--stop-on-exit`).
//!
//! Agents never outlive their server: [`LocalProvider::shutdown`] stops them when the
//! controllers stop (shutdown or lost leadership), the child handles kill them if the server
//! unwinds without it, and a server that died without either (SIGKILL) cleans up at the next
//! start: [`LocalProvider::new`] stops every agent a `agent.pid` names and removes its dir.
//! The pool's Nodes then have no machine; the controller deletes them and makes new ones if
//! instances still need the room. (Adopting the old agents instead would keep their instances
//! running, but would trust processes and tokens from a previous run.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use weft_api::kinds::template::ResourceList;
use weft_api::wire::Role;
use weft_client::Client;
use weft_controllers::nodepool::{NewNode, NodeProvider, ProviderError};

const PID_FILE: &str = "agent.pid";
/// SIGTERM gives an agent this long to stop its instances before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

struct LocalAgent {
    pool: String,
    child: Child,
    dir: PathBuf,
}

/// Agent processes on this machine, one per pool node.
pub struct LocalProvider {
    exe: PathBuf,
    root: PathBuf,
    api: String,
    admin: Client,
    token: tokio::sync::Mutex<Option<String>>,
    agents: Mutex<HashMap<String, LocalAgent>>,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider").field("root", &self.root).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalProvider {
    /// A provider keeping its agents under `<data_dir>/nodepools`, joining `api` (an admin
    /// client mints their token). Stops agents a previous run left behind.
    pub async fn new(data_dir: &Path, api: &str, admin: Client) -> anyhow::Result<LocalProvider> {
        let exe = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("finding this executable for node-pool agents: {e}"))?;
        let root = data_dir.join("nodepools");
        clean_up_leftovers(&root).await;
        Ok(LocalProvider {
            exe,
            root,
            api: api.to_string(),
            admin,
            token: tokio::sync::Mutex::new(None),
            agents: Mutex::new(HashMap::new()),
        })
    }

    async fn agent_token(&self) -> Result<String, ProviderError> {
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref() {
            return Ok(t.clone());
        }
        let created = self
            .admin
            .create_token(Role::Agent, None, "agents of local node pools")
            .await
            .map_err(|e| ProviderError::retryable(format!("minting an agent token: {e}")))?;
        *token = Some(created.token.clone());
        Ok(created.token)
    }

    /// Stops every agent this provider started (their instances stop with them).
    pub async fn shutdown(&self) {
        let agents: Vec<(String, LocalAgent)> = lock(&self.agents).drain().collect();
        let stops = agents.into_iter().map(|(name, agent)| async move {
            stop(&name, agent.child, &agent.dir).await;
        });
        futures::future::join_all(stops).await;
    }
}

fn resources_flag(list: &ResourceList) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &list.cpu {
        parts.push(format!("cpu={c}"));
    }
    if let Some(m) = &list.memory {
        parts.push(format!("memory={m}"));
    }
    parts.join(",")
}

fn reserved(node: &NewNode) -> ResourceList {
    let minus = |c: &Option<weft_api::quantity::Quantity>,
                 a: &Option<weft_api::quantity::Quantity>| {
        match (c, a) {
            (Some(c), Some(a)) => Some(c.saturating_sub(*a)),
            _ => None,
        }
    };
    ResourceList {
        cpu: minus(&node.capacity.cpu, &node.allocatable.cpu),
        memory: minus(&node.capacity.memory, &node.allocatable.memory),
    }
}

/// SIGTERM, up to [`STOP_GRACE`], SIGKILL; then the node's dir goes.
async fn stop(name: &str, mut child: Child, dir: &Path) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
            tracing::warn!(node = name, "local pool agent did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
    let _ = child.wait().await;
    let _ = tokio::fs::remove_dir_all(dir).await;
}

/// Stops the agents named by `agent.pid` files under `root` (a server that died without
/// stopping them) and removes their dirs.
async fn clean_up_leftovers(root: &Path) {
    let Ok(pools) = std::fs::read_dir(root) else { return };
    for pool in pools.flatten() {
        let Ok(nodes) = std::fs::read_dir(pool.path()) else { continue };
        for node in nodes.flatten() {
            let dir = node.path();
            if let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE))
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
                .filter(|pid| is_our_agent(*pid, &node.file_name().to_string_lossy()))
            {
                tracing::info!(pid, dir = %dir.display(), "stopping a node-pool agent left by a previous run");
                let pid = Pid::from_raw(pid);
                let _ = kill(pid, Signal::SIGTERM);
                let deadline = tokio::time::Instant::now() + STOP_GRACE;
                while kill(pid, None).is_ok() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Whether `pid` is a `weft agent` for node `name` (not a process that reused the pid).
fn is_our_agent(pid: i32, name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&&b"agent"[..]) && args.contains(&name.as_bytes())
}

#[async_trait::async_trait]
impl NodeProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, node: &NewNode) -> Result<(), ProviderError> {
        if lock(&self.agents).contains_key(&node.name) {
            return Ok(());
        }
        let token = self.agent_token().await?;
        let dir = self.root.join(&node.pool).join(&node.name);
        let fail = |what: &str, e: std::io::Error| {
            ProviderError::retryable(format!("{what} {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating", e))?;
        let log = std::fs::File::create(dir.join("agent.log"))
            .map_err(|e| fail("creating a log in", e))?;
        let log2 = log.try_clone().map_err(|e| fail("opening a log in", e))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["agent", "--join", &self.api, "--name", &node.name])
            .args(["--address", "127.0.0.1", "--heartbeat", "1s", "--stop-on-exit"])
            .args(["--capacity", &resources_flag(&node.capacity)]);
        let reserved = resources_flag(&reserved(node));
        if !reserved.is_empty() {
            cmd.args(["--reserved", &reserved]);
        }
        // Workload binaries installed beside weft (the demo's weft-demo) are found by name,
        // as on the home node (`weft up` puts the same dir on its agent's PATH).
        if let Some(bin_dir) = self.exe.parent() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![bin_dir.to_path_buf()];
            dirs.extend(std::env::split_paths(&path));
            if let Ok(joined) = std::env::join_paths(dirs) {
                cmd.env("PATH", joined);
            }
        }
        // The token goes through the environment: command lines are world-readable.
        cmd.env("WEFT_TOKEN", token)
            .env_remove("WEFT_SERVER")
            .env_remove("WEFT_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            ProviderError::retryable(format!("starting {} agent: {e}", self.exe.display()))
        })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(dir.join(PID_FILE), format!("{pid}\n"));
        }
        tracing::info!(node = %node.name, pool = %node.pool, dir = %dir.display(), "started a local pool agent");
        lock(&self.agents)
            .insert(node.name.clone(), LocalAgent { pool: node.pool.clone(), child, dir });
        Ok(())
    }

    async fn delete(&self, pool: &str, node: &str) -> Result<(), ProviderError> {
        let agent = lock(&self.agents).remove(node);
        match agent {
            Some(a) => stop(node, a.child, &a.dir).await,
            None => {
                let _ = tokio::fs::remove_dir_all(self.root.join(pool).join(node)).await;
            }
        }
        Ok(())
    }

    async fn list(&self, pool: &str) -> Result<Vec<String>, ProviderError> {
        let mut agents = lock(&self.agents);
        let mut exited = Vec::new();
        for (name, a) in agents.iter_mut() {
            if let Ok(Some(status)) = a.child.try_wait() {
                tracing::warn!(node = %name, %status, log = %a.dir.join("agent.log").display(), "local pool agent exited");
                exited.push(name.clone());
            }
        }
        for name in exited {
            if let Some(a) = agents.remove(&name) {
                let _ = std::fs::remove_file(a.dir.join(PID_FILE));
            }
        }
        Ok(agents.iter().filter(|(_, a)| a.pool == pool).map(|(n, _)| n.clone()).collect())
    }
}

/// Runs the controllers with the `local` provider attached until `shutdown`, then stops the
/// provider's agents: they belong to this run of the controllers, and a new leader (here or
/// elsewhere) makes its own.
pub async fn run_controllers(
    controllers: weft_controllers::Controllers,
    data_dir: &Path,
    client: &Client,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let provider = match LocalProvider::new(data_dir, client.base_url(), client.clone()).await {
        Ok(p) => Some(std::sync::Arc::new(p)),
        Err(e) => {
            eprintln!("node pools: the local provider is unavailable: {e}");
            None
        }
    };
    let controllers = match &provider {
        Some(p) => controllers.with_node_provider(p.clone()),
        None => controllers,
    };
    controllers.run(shutdown).await;
    if let Some(p) = provider {
        p.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(cpu: Option<&str>, memory: Option<&str>) -> ResourceList {
        ResourceList {
            cpu: cpu.map(|c| c.parse().unwrap()),
            memory: memory.map(|m| m.parse().unwrap()),
        }
    }

    #[test]
    fn agent_flags_declare_the_template() {
        let node = NewNode {
            pool: "burst".into(),
            name: "burst-abcde".into(),
            capacity: list(Some("2"), Some("2Gi")),
            allocatable: list(Some("1500m"), Some("2Gi")),
            labels: Default::default(),
        };
        assert_eq!(resources_flag(&node.capacity), "cpu=2,memory=2Gi");
        // allocatable = capacity - reserved, as the agent computes it.
        assert_eq!(resources_flag(&reserved(&node)), "cpu=500m,memory=0");
        assert_eq!(resources_flag(&list(None, None)), "");
    }

    #[test]
    fn only_our_agents_are_recognised_by_pid() {
        assert!(!is_our_agent(std::process::id() as i32, "burst-abcde"));
        assert!(!is_our_agent(i32::MAX, "burst-abcde"));
    }
}
