//! A real api server (embedded store) and agents in-process, for the integration tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_agent::{Agent, AgentError, AgentOptions, BackoffPolicy, CgroupMode};
use weft_api::kinds::instance::InstanceStatus;
use weft_api::wire::Role;
use weft_api::{Instance, Node};
use weft_client::Client;

pub fn testbin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-agent-testbin"))
}

/// Agent logs in test output: `RUST_LOG=weft_agent=debug cargo test -p weft-agent`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub struct Cluster {
    pub url: String,
    pub admin: Client,
    pub agent_token: String,
    pub dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

pub struct AgentTask {
    pub handle: JoinHandle<Result<(), AgentError>>,
    stop: Option<oneshot::Sender<()>>,
}

impl AgentTask {
    /// Asks the agent to shut down and waits for it.
    pub async fn stop(mut self) -> Result<(), AgentError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.handle)
            .await
            .expect("agent did not stop within 60s")
            .expect("agent task panicked")
    }

    /// Kills the agent as `kill -9` would kill a process: its task is dropped where it is.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

impl Drop for Cluster {
    /// A failed test must not leave processes behind: kill every process group the agents
    /// of this cluster recorded.
    fn drop(&mut self) {
        let Ok(datas) = std::fs::read_dir(self.dir.path()) else { return };
        for d in datas.flatten() {
            let Ok(insts) = std::fs::read_dir(d.path().join("agent/instances")) else { continue };
            for i in insts.flatten() {
                let v: Value = serde_json::from_str(&read(&i.path().join("state.json")))
                    .unwrap_or(Value::Null);
                for which in ["/app/pid", "/sidecar/pid"] {
                    if let Some(pid) = v.pointer(which).and_then(Value::as_i64)
                        && pid > 1
                    {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
    }
}

impl Cluster {
    pub async fn start() -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(weft_store::embedded::Embedded::open(dir.path().join("store.redb")).unwrap());
        let server =
            weft_server::Server::start(store, weft_server::Limits::default()).await.unwrap();
        let admin_token = server.ensure_admin_token(dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.serve(
            listener,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(1),
        ));
        let admin = Client::new(&url, Some(admin_token)).unwrap();
        let agent_token = admin.create_token(Role::Agent, None, "test agent").await.unwrap().token;
        Cluster { url, admin, agent_token, dir, _stop: tx }
    }

    /// Options for an agent named `node` with quick timings for tests.
    pub fn options(&self, node: &str) -> AgentOptions {
        let mut o = AgentOptions::new(
            &self.url,
            &self.agent_token,
            self.dir.path().join(format!("data-{node}")),
        );
        o.name = node.to_string();
        o.weft_bin = testbin();
        o.drain_delay = Duration::from_millis(300);
        o.backoff = BackoffPolicy {
            base: Duration::from_millis(300),
            max: Duration::from_secs(2),
            reset: Duration::from_secs(60),
        };
        o.heartbeat_period = Duration::from_millis(200);
        o.usage_period = Duration::from_millis(300);
        o.cgroups = CgroupMode::Auto;
        // Tests end by stopping their agent: leave no process or cgroup behind.
        o.stop_on_exit = true;
        o
    }

    pub fn spawn_agent(&self, options: AgentOptions) -> AgentTask {
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(Agent::run(options, async move {
            let _ = rx.await;
        }));
        AgentTask { handle, stop: Some(tx) }
    }

    pub async fn create(&self, name: &str, node: &str, template: Value) -> Instance {
        let v = json!({
            "apiVersion": "weft/v1",
            "kind": "Instance",
            "metadata": { "name": name, "namespace": "default", "labels": { "deployment": "web" } },
            "spec": { "deployment": "web", "templateHash": "h1", "node": node, "template": template },
        });
        let out = self.admin.put_value(&v, false).await.unwrap();
        serde_json::from_value(out).unwrap()
    }

    pub async fn status(&self, name: &str) -> Option<InstanceStatus> {
        match self.admin.get::<Instance>(Some("default"), name).await {
            Ok(i) => Some(i.status.unwrap_or_default()),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("reading instance {name}: {e}"),
        }
    }

    /// Waits until the instance's status satisfies `f`; panics with the last status after
    /// `limit`.
    pub async fn wait_status(
        &self,
        name: &str,
        limit: Duration,
        f: impl Fn(&InstanceStatus) -> bool,
    ) -> InstanceStatus {
        let start = Instant::now();
        loop {
            let s = self.status(name).await;
            if let Some(s) = &s
                && f(s)
            {
                return s.clone();
            }
            if start.elapsed() > limit {
                panic!("instance {name}: condition not met within {limit:?}; last status: {s:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_ready(&self, name: &str) -> InstanceStatus {
        self.wait_status(name, Duration::from_secs(20), |s| s.ready).await
    }

    pub async fn wait_gone(&self, name: &str, limit: Duration) {
        let start = Instant::now();
        while self.status(name).await.is_some() {
            assert!(start.elapsed() < limit, "instance {name} still exists after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn node(&self, name: &str) -> Option<Node> {
        self.admin.get::<Node>(None, name).await.ok()
    }

    /// Marks an instance terminating, as the deployment controller does.
    pub async fn terminate(&self, name: &str) {
        let mut i: Instance = self.admin.get(Some("default"), name).await.unwrap();
        i.spec.terminating = true;
        i.metadata.resource_version = None;
        self.admin.put(&i).await.unwrap();
    }
}

/// Waits for `f` to return `Some`, polling every 20 ms.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process runs (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state =
                s.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

pub fn app_dir(o: &AgentOptions, name: &str) -> PathBuf {
    o.data_dir.join("agent/instances").join(format!("default_{name}"))
}

pub fn log_dir(o: &AgentOptions, name: &str) -> PathBuf {
    o.data_dir.join("agent/logs").join(format!("default_{name}"))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The agent's saved state of an instance.
pub fn saved(o: &AgentOptions, name: &str) -> Value {
    serde_json::from_str(&read(&app_dir(o, name).join("state.json"))).unwrap_or(Value::Null)
}

pub fn sidecar_pid(o: &AgentOptions, name: &str) -> Option<u32> {
    saved(o, name).pointer("/sidecar/pid").and_then(Value::as_u64).map(|p| p as u32)
}

/// `GET http://addr/path` → (status, body).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: SocketAddr = addr.parse().ok()?;
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

pub fn app(args: &[&str]) -> Value {
    let mut cmd = vec![testbin().display().to_string(), "app".to_string()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    json!(cmd)
}
