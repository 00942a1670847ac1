//! A throwaway single-member etcd on 127.0.0.1, for tests and benchmarks: started on free
//! ports with a data dir the caller owns, ready once its `/health` says so (polled against a
//! deadline), killed on drop.
//!
//! The binary is `$WEFT_ETCD_BIN` or `etcd` on the `PATH` (Debian: `apt-get install
//! etcd-server`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to become healthy.
const START_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    #[error(
        "etcd is not installed ({0} not found): install it (Debian: apt-get install \
         etcd-server; CI does) or point WEFT_ETCD_BIN at the binary"
    )]
    NotInstalled(String),
    #[error("{0}")]
    Failed(String),
}

/// A running (or killed, see [`LocalEtcd::kill`]) etcd process. Killed on drop.
#[derive(Debug)]
pub struct LocalEtcd {
    binary: PathBuf,
    /// The member name, and the whole cluster as etcd's `--initial-cluster` takes it.
    name: String,
    initial_cluster: Option<String>,
    data_dir: PathBuf,
    log: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl LocalEtcd {
    /// The etcd binary to run: `$WEFT_ETCD_BIN`, else `etcd` found on the `PATH`.
    pub fn binary() -> Result<PathBuf, LocalEtcdError> {
        if let Some(path) = std::env::var_os("WEFT_ETCD_BIN") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(LocalEtcdError::NotInstalled(format!("WEFT_ETCD_BIN={}", path.display())))
            };
        }
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|dir| dir.join("etcd")).find(|p| p.is_file())
        });
        found.ok_or_else(|| LocalEtcdError::NotInstalled("`etcd` on the PATH".into()))
    }

    /// Starts etcd with its data and log under `dir` (which must exist), on two free
    /// loopback ports, and waits until it is healthy.
    pub fn start(dir: &Path) -> Result<LocalEtcd, LocalEtcdError> {
        let binary = LocalEtcd::binary()?;
        let mut last = String::new();
        // A free port can be taken by someone else before etcd binds it: try fresh ones.
        for _ in 0..5 {
            let (client_port, peer_port) = free_ports()?;
            let mut etcd = LocalEtcd {
                binary: binary.clone(),
                name: "weft-test".into(),
                initial_cluster: None,
                data_dir: dir.join("etcd-data"),
                log: dir.join("etcd.log"),
                client_port,
                peer_port,
                child: None,
            };
            match etcd.spawn() {
                Ok(()) => return Ok(etcd),
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => return Err(LocalEtcdError::Failed(e)),
            }
            let _ = std::fs::remove_dir_all(&etcd.data_dir);
        }
        Err(LocalEtcdError::Failed(format!("etcd could not get free ports: {last}")))
    }

    /// For tests: starts etcd, or returns `None` (after saying so on stderr) when it is not
    /// installed and `WEFT_SKIP_ETCD=1` is set.
    ///
    /// # Panics
    ///
    /// When etcd is not installed and skipping was not asked for, or it does not start.
    pub fn for_test(dir: &Path, test: &str) -> Option<LocalEtcd> {
        match LocalEtcd::start(dir) {
            Ok(etcd) => Some(etcd),
            Err(e @ LocalEtcdError::NotInstalled(_)) => {
                if std::env::var("WEFT_SKIP_ETCD").is_ok_and(|v| v == "1") {
                    eprintln!("skipped {test}: {e} (WEFT_SKIP_ETCD=1)");
                    None
                } else {
                    panic!("{test}: {e}; or set WEFT_SKIP_ETCD=1 to skip the etcd tests");
                }
            }
            Err(e) => panic!("{test}: cannot start etcd: {e}"),
        }
    }

    /// `127.0.0.1:PORT`, the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, as `weft server --store` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What etcd logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, keeping the data dir, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data dir and ports (after [`LocalEtcd::kill`]).
    pub fn restart(&mut self) -> Result<(), LocalEtcdError> {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old process's ports may linger for a moment.
                Err(e) if e.contains("address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(LocalEtcdError::Failed(e)),
            }
        }
    }

    /// The value of one Prometheus metric from etcd's `/metrics` (first sample of that name).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.client_port, "/metrics").ok()?;
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .find(|line| line.split([' ', '{']).next() == Some(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_len = self.launch()?;
        self.wait_healthy(log_len)
    }

    /// Starts the process; returns how long its log was before (to show only the new part).
    fn launch(&mut self) -> Result<u64, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("creating {}: {e}", self.log.display()))?;
        let log_len = log.metadata().map(|m| m.len()).unwrap_or(0);
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(self.initial_cluster.clone().unwrap_or_else(|| format!("{}={peer}", self.name)))
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        Ok(log_len)
    }

    fn wait_healthy(&mut self, log_len: u64) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let text = self.log_text();
                let new = text.get(usize::try_from(log_len).unwrap_or(0)..).unwrap_or(&text);
                return Err(format!("etcd exited at start ({status}); its log:\n{new}"));
            }
            if http_get(self.client_port, "/health")
                .is_ok_and(|b| b.contains("\"health\":\"true\""))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "etcd did not become healthy within {START_DEADLINE:?}; its log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A cluster of etcd members on loopback (three for a quorum that survives one loss), for tests
/// of a store whose members come and go.
#[derive(Debug)]
pub struct LocalEtcdCluster {
    pub members: Vec<LocalEtcd>,
}

impl LocalEtcdCluster {
    /// Starts `n` members with data and logs under `dir` (which must exist), and waits until
    /// every one is healthy.
    pub fn start(dir: &Path, n: usize) -> Result<LocalEtcdCluster, LocalEtcdError> {
        let binary = LocalEtcd::binary()?;
        let mut members = Vec::with_capacity(n);
        // All ports at once: ports found one pair at a time could repeat.
        let ports = distinct_free_ports(2 * n)?;
        for i in 0..n {
            let (client_port, peer_port) = (ports[2 * i], ports[2 * i + 1]);
            members.push(LocalEtcd {
                binary: binary.clone(),
                name: format!("m{i}"),
                initial_cluster: None,
                data_dir: dir.join(format!("etcd-m{i}")),
                log: dir.join(format!("etcd-m{i}.log")),
                client_port,
                peer_port,
                child: None,
            });
        }
        let cluster: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let cluster = cluster.join(",");
        let mut lens = Vec::with_capacity(n);
        for m in &mut members {
            m.initial_cluster = Some(cluster.clone());
            lens.push(m.launch().map_err(LocalEtcdError::Failed)?);
        }
        // A member is healthy only once a quorum has formed, so all start before any is awaited.
        for (m, len) in members.iter_mut().zip(lens) {
            m.wait_healthy(len).map_err(LocalEtcdError::Failed)?;
        }
        Ok(LocalEtcdCluster { members })
    }

    /// `etcd://A,B,C`, as `weft server --store` takes it.
    pub fn url(&self) -> String {
        let all: Vec<String> = self.members.iter().map(LocalEtcd::endpoint).collect();
        format!("etcd://{}", all.join(","))
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn distinct_free_ports(n: usize) -> Result<Vec<u16>, LocalEtcdError> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| LocalEtcdError::Failed(format!("finding free ports: {e}")))?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| LocalEtcdError::Failed(format!("finding free ports: {e}")))
}

/// Two distinct free loopback ports.
fn free_ports() -> Result<(u16, u16), LocalEtcdError> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| LocalEtcdError::Failed(format!("finding a free port: {e}")))
    };
    let (a, _la) = bind()?;
    let (b, _lb) = bind()?;
    Ok((a, b))
}

/// A tiny HTTP/1.0 GET against etcd's client port: the body.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        return Err(std::io::Error::other(format!("GET {path}: {head}")));
    }
    Ok(body.to_string())
}
