//! A running `weft up` for the end-to-end tests (`up.rs`, `autoscale.rs`): started on free
//! ports with its own data dir, driven through the CLI, interrupted like Ctrl-C on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BIN, Out, weft};

/// Builds the demo's workload binary beside `weft` when this test runs on its own
/// (`cargo test --workspace` builds it anyway).
pub fn ensure_demo_binary() {
    let demo = Path::new(BIN).with_file_name("weft-demo");
    if demo.exists() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "weft-demo"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build -p weft-demo");
    assert!(status.success() && demo.exists(), "could not build {}", demo.display());
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// A running `weft up`, interrupted (then killed) on drop.
pub struct Up {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub api: String,
    pub gateway: String,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Up {
    /// Starts `weft up ARGS` and waits for its "weft is up" banner.
    pub fn start(args: &[&str]) -> Up {
        ensure_demo_binary();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let log = tmp.path().join("up.log");
        let (api_port, gw_port) = (super::closed_port(), super::closed_port());
        let api = format!("127.0.0.1:{api_port}");
        let gateway = format!("127.0.0.1:{gw_port}");
        let mut up = Up { _tmp: tmp, dir, api, gateway, log, child: None };
        up.spawn(args);
        up
    }

    /// Starts `weft up ARGS` on this data dir and these addresses; waits for the banner.
    pub fn spawn(&mut self, args: &[&str]) {
        assert!(self.child.is_none());
        self.child = Some(spawn_up(&self.dir, &self.api, &self.gateway, args, &self.log));
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if self.log_text().contains("weft is up") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("weft up exited early ({status}):\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "weft up not up in 180s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec!["--data-dir", self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        weft(&all, None)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.cli(&all);
        out.ok();
        serde_json::from_str(&out.stdout).expect("json output")
    }

    /// Items of `weft get KIND -o json`.
    pub fn items(&self, kind: &str) -> Vec<Value> {
        let v = self.json(&["get", kind]);
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// SIGINT, as Ctrl-C would, then waits for the exit.
    pub fn interrupt(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weft up still running after SIGINT:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn spawn_up(dir: &Path, api: &str, gateway: &str, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .args(["up", "--data-dir", dir.to_str().unwrap(), "--listen", api, "--gateway", gateway])
        .args(args)
        .env_remove("WEFT_SERVER")
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_DATA_DIR")
        .env_remove("WEFT_LOG")
        .env_remove("WEFT_CA_FILE")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn weft up")
}

/// One HTTP/1.1 GET with `Connection: close`: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: shop.local\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Pids of processes whose command line mentions `needle` (sidecars carry the api address).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .filter(|pid| {
            // Zombies are gone for every purpose but their parent's bookkeeping.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .collect()
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}
