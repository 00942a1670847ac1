//! Starting and stopping a real `weft server`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct WeftServer {
    child: Child,
    pub url: String,
    pub addr: String,
    pub token: String,
    /// `<data-dir>/api-ca.crt`: what to trust when the server runs with TLS.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl WeftServer {
    /// Starts `weft server` on a free loopback port with a fresh data dir.
    pub fn start(weft: &Path, extra: &[&str]) -> anyhow::Result<WeftServer> {
        let dir = tempfile::Builder::new().prefix("weft-bench-").tempdir_in(std::env::temp_dir())?;
        let child = Command::new(weft)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["server", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", weft.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = loop {
            if let Ok(u) = std::fs::read_to_string(dir.path().join("server"))
                && !u.trim().is_empty()
            {
                break u.trim().to_string();
            }
            if Instant::now() > deadline {
                bail!("weft server did not start within 20s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let token = std::fs::read_to_string(dir.path().join("admin.token"))?.trim().to_string();
        let addr = url.trim_start_matches("http://").trim_start_matches("https://").to_string();
        let ca_file = dir.path().join("api-ca.crt");
        Ok(WeftServer { child, url, addr, token, ca_file, _dir: dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WeftServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/weft` next to the running bench binary.
pub fn sibling_weft() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("weft")))
        .unwrap_or_else(|| PathBuf::from("weft"))
}

/// Cpu seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident memory of a process in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}
