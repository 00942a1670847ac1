//! Starting, watching and stopping processes.
//!
//! Every process (app, sidecar, exec probe) is started in its own process group
//! (`process_group(0)`), so a signal to the group reaches the children an app forks too; the
//! group id is the leader's pid. Standard output and error go straight to a log file (see
//! `logs`). Exit is watched by a task per process: `wait()` for the agent's own children,
//! polling `/proc` for processes adopted from an earlier agent (they are not our children).
//!
//! When the instance has a cgroup, the program is started through a two-line `/bin/sh`
//! wrapper that writes its own pid into the group's `cgroup.procs` files and then `exec`s the
//! program: the app is in its group before it runs a single instruction or forks, which a
//! "move it right after spawn" cannot promise (and `pre_exec` would need unsafe code).

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::procfs;

/// Joins the cgroups named before `--` (by writing its own pid to each `cgroup.procs`), then
/// becomes the program after `--`. Exit 125 when a cgroup cannot be joined.
const CGROUP_WRAPPER: &str =
    r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#;

/// The exit code of the wrapper when it could not join the cgroup.
pub(crate) const CGROUP_JOIN_FAILED: i32 = 125;

/// How a process ended. Both fields are `None` for an adopted process, whose status only its
/// real parent (init) saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    pub(crate) fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => {
                let name = Signal::try_from(s).map(|s| s.as_str()).unwrap_or("unknown signal");
                format!("was killed by signal {s} ({name})")
            }
            (None, None) => "exited (status unknown: it was adopted from an earlier agent)".into(),
        }
    }

    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A running process group whose leader the agent watches.
#[derive(Debug)]
pub(crate) struct Proc {
    pub pid: u32,
    /// With `pid`, the process's identity (see `procfs::ProcStat::start_ticks`).
    pub start_ticks: u64,
    /// Wall-clock start, for `status.startTime`.
    pub started: SystemTime,
    exit: watch::Receiver<Option<Exit>>,
    waiter: JoinHandle<()>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Stop watching; the process itself is left alone (an agent that exits without
        // stopping its instances leaves them to the next agent). Tokio reaps a dropped child
        // in the background when it exits.
        self.waiter.abort();
    }
}

/// What to run.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    /// Program (resolved to a path) and arguments.
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub workdir: &'a Path,
    /// Receives stdout and stderr.
    pub log: &'a std::fs::File,
    /// `cgroup.procs` files to join before the program runs (empty: no cgroup).
    pub cgroup_procs: &'a [PathBuf],
}

/// Starts a process in its own process group.
pub(crate) fn launch(l: &Launch<'_>) -> io::Result<Proc> {
    let Some((program, args)) = l.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let mut cmd = if l.cgroup_procs.is_empty() {
        let mut c = tokio::process::Command::new(program);
        c.args(args);
        c
    } else {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(CGROUP_WRAPPER)
            .arg("weft-cgroup")
            .args(l.cgroup_procs)
            .arg("--")
            .arg(program)
            .args(args);
        c
    };
    cmd.env_clear()
        .envs(l.env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))))
        .current_dir(l.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(l.log.try_clone()?))
        .stderr(Stdio::from(l.log.try_clone()?))
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let pid =
        child.id().ok_or_else(|| io::Error::other("the process exited before it was seen"))?;
    // The child exists from fork on, so its stat is readable now (a zombie's too).
    let start_ticks = procfs::stat(pid).map_or(0, |s| s.start_ticks);
    let (tx, exit) = watch::channel(None);
    let waiter = tokio::spawn(async move {
        let status = child.wait().await;
        let e = match status {
            Ok(s) => Exit { code: s.code(), signal: s.signal() },
            Err(_) => Exit::default(),
        };
        let _ = tx.send(Some(e));
    });
    Ok(Proc { pid, start_ticks, started: SystemTime::now(), exit, waiter })
}

/// Watches a process started by an earlier agent. `None` if it is no longer the same process.
pub(crate) fn adopt(pid: u32, start_ticks: u64, started: SystemTime) -> Option<Proc> {
    if !procfs::alive(pid, start_ticks) {
        return None;
    }
    let (tx, exit) = watch::channel(None);
    let waiter = tokio::spawn(async move {
        // Not our child: no SIGCHLD, no wait(). Poll; 100 ms is what an exit may go unnoticed.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if !procfs::alive(pid, start_ticks) {
                let _ = tx.send(Some(Exit::default()));
                return;
            }
        }
    });
    Some(Proc { pid, start_ticks, started, exit, waiter })
}

impl Proc {
    /// Waits for the leader to exit (cancel-safe).
    pub(crate) async fn exited(&mut self) -> Exit {
        let exit = self.exit.wait_for(Option::is_some).await.map(|e| e.unwrap_or_default());
        match exit {
            Ok(e) => e,
            // The waiter is gone (only when the agent is being torn down): never resolve.
            Err(_) => std::future::pending().await,
        }
    }

    pub(crate) fn exit_now(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    pub(crate) fn signal(&self, sig: Signal) {
        signal_group(self.pid, sig);
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; finally SIGKILL to whatever is left of
    /// the group (children that outlived their parent). Returns how the leader ended.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Exit {
        if let Some(e) = self.exit_now() {
            signal_group(self.pid, Signal::SIGKILL);
            return e;
        }
        self.signal(Signal::SIGTERM);
        let exit = match tokio::time::timeout(grace, self.exited()).await {
            Ok(e) => e,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                // SIGKILL cannot be ignored; the bound only guards against a process stuck in
                // the kernel (uninterruptible I/O).
                tokio::time::timeout(Duration::from_secs(10), self.exited())
                    .await
                    .unwrap_or_default()
            }
        };
        signal_group(self.pid, Signal::SIGKILL);
        exit
    }
}

/// Sends `sig` to process group `pgid`, ignoring "no such process".
pub(crate) fn signal_group(pgid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return; // never signal "every process" or init's group
    }
    let _ = killpg(Pid::from_raw(raw), sig);
}

/// Kills a process left over from an earlier agent, if it is still the process recorded
/// (pid and start time), with SIGTERM, `grace`, SIGKILL.
pub(crate) async fn kill_leftover(pid: u32, start_ticks: u64, grace: Duration) {
    if !procfs::alive(pid, start_ticks) {
        return;
    }
    signal_group(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !procfs::alive(pid, start_ticks) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if procfs::stat(pid).is_some_and(|s| s.start_ticks == start_ticks) {
        signal_group(pid, Signal::SIGKILL);
    }
}

/// Why a program cannot be started, for `reason: CommandNotFound`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotFound(pub String);

/// Finds `program` the way a shell would: a name with a `/` is a path (relative to `workdir`),
/// a bare name is looked up on `path` (the agent's PATH). It must be an executable file.
pub(crate) fn resolve(program: &str, path: &str, workdir: &Path) -> Result<PathBuf, NotFound> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = workdir.join(program);
        return if executable(&p) {
            Ok(p)
        } else if p.exists() {
            Err(NotFound(format!("{program:?} is not an executable file")))
        } else {
            Err(NotFound(format!("{program:?} does not exist")))
        };
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(program);
        if executable(&p) {
            return Ok(p);
        }
    }
    Err(NotFound(format!(
        "{program:?} was not found on the agent's PATH ({path}); install it or give its full path"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        assert!(resolve("sh", "/nonexistent:/bin:/usr/bin", dir.path()).is_ok());
        let e = resolve("no-such-program-weft", "/bin", dir.path()).unwrap_err();
        assert!(e.0.contains("not found on the agent's PATH (/bin)"), "{e:?}");
        std::fs::write(dir.path().join("data.txt"), "x").unwrap();
        let e = resolve("./data.txt", "/bin", dir.path()).unwrap_err();
        assert!(e.0.contains("not an executable"), "{e:?}");
        let e = resolve("./missing", "/bin", dir.path()).unwrap_err();
        assert!(e.0.contains("does not exist"), "{e:?}");
    }

    #[tokio::test]
    async fn stops_a_group_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::logs::open_append(&dir.path().join("log")).unwrap();
        let argv: Vec<String> =
            ["/bin/sh", "-c", "trap '' TERM; : > trapped; sleep 30 & sleep 30; wait"]
                .map(String::from)
                .to_vec();
        let mut p = launch(&Launch {
            argv: &argv,
            env: &[("PATH".into(), "/bin:/usr/bin".into())],
            workdir: dir.path(),
            log: &log,
            cgroup_procs: &[],
        })
        .unwrap();
        assert!(procfs::alive(p.pid, p.start_ticks));
        // A SIGTERM sent before the shell installs its trap would end it early.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dir.path().join("trapped").exists() {
            assert!(std::time::Instant::now() < deadline, "the shell never set its trap");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = std::time::Instant::now();
        let e = p.stop(Duration::from_millis(300)).await;
        assert_eq!(e.signal, Some(9), "{e:?}");
        assert!(t.elapsed() >= Duration::from_millis(300));
        // The background `sleep` went with its group.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left: Vec<(u32, char)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| procfs::stat(pid).map(|s| (pid, s)))
            .filter(|(_, s)| s.pgid == p.pid as i32 && !matches!(s.state, 'Z' | 'X'))
            .map(|(pid, s)| (pid, s.state))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
