//! `weft agent` as a child process joining a server (`--join`), for the multi-node tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{BIN, up, wait_for};

/// A `weft agent` process; SIGTERM (then SIGKILL) on drop.
pub struct AgentProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl AgentProcess {
    /// With `stop_on_exit`, SIGTERM stops the node's instances and marks it NotReady; without,
    /// it leaves them running and the node just goes silent (as a crashed machine would).
    pub fn start(
        server: &str,
        token: &str,
        name: &str,
        address: &str,
        dir: &Path,
        stop_on_exit: bool,
    ) -> AgentProcess {
        up::ensure_demo_binary();
        let log = dir.with_extension(if stop_on_exit { "stop.log" } else { "log" });
        let out = std::fs::File::create(&log).unwrap();
        // Workloads find weft-demo by name, as on a machine where it is installed.
        let bin_dir = Path::new(BIN).parent().unwrap();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let child = Command::new(BIN)
            .args(["--data-dir", dir.to_str().unwrap(), "--token", token, "agent"])
            .args(["--join", server, "--name", name, "--address", address])
            .args(["--heartbeat", "1s", "--cgroups", "off"])
            .args(stop_on_exit.then_some("--stop-on-exit"))
            .env("PATH", path)
            .env_remove("WEFT_SERVER")
            .env_remove("WEFT_TOKEN")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn weft agent");
        AgentProcess { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and wait for the exit.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_for("the agent to stop", Duration::from_secs(60), || {
            self.child.try_wait().ok().flatten().map(drop)
        });
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            for _ in 0..200 {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
