//! What the agent remembers about each instance on disk, so that a restarted agent adopts the
//! processes it left running (or cleans them up) instead of starting second copies.
//!
//! `<data-dir>/agent/instances/<ns>_<name>/state.json`, written atomically (temporary file and
//! rename) whenever a process starts or stops. A process is recognised by its pid *and* its
//! start time (`/proc/<pid>/stat`): pids are reused, the pair is not. The command line is not
//! compared: a shebang script or a wrapper that `exec`s legitimately changes it.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cgroups::Group;
use crate::env::PortAlloc;
use crate::procfs;

pub(crate) const STATE_FILE: &str = "state.json";

/// One instance's remembered state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Saved {
    pub namespace: String,
    pub name: String,
    /// The Instance object's uid: a new object with the same name is a different instance.
    pub uid: String,
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<PortAlloc>,
    pub outbound: u16,
    pub admin: u16,
    pub app: Option<SavedProc>,
    pub sidecar: Option<SavedProc>,
    pub restarts: u32,
    pub streak: u32,
    pub cgroup: Option<Group>,
    /// The app exited for good (Succeeded or Failed): do not start it again.
    #[serde(default)]
    pub finished: bool,
    /// The template's grace period, for stopping leftovers.
    pub grace_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SavedProc {
    pub pid: u32,
    pub start_ticks: u64,
    pub started_unix_ms: u64,
}

impl SavedProc {
    pub(crate) fn of(pid: u32, start_ticks: u64, started: SystemTime) -> SavedProc {
        let ms = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        SavedProc { pid, start_ticks, started_unix_ms: ms }
    }

    pub(crate) fn started(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.started_unix_ms)
    }

    /// Whether this is still the process that was recorded (and it has not exited).
    pub(crate) fn alive(&self) -> bool {
        procfs::alive(self.pid, self.start_ticks) && procfs::cmdline(self.pid).is_some()
    }
}

impl Saved {
    pub(crate) fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    pub(crate) fn all_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.ports.iter().flat_map(|p| [p.app, p.public]).collect();
        v.extend([self.outbound, self.admin].into_iter().filter(|p| *p != 0));
        v
    }
}

/// `<ns>_<name>`: the directory and cgroup name of an instance. `_` cannot occur in either
/// part (both are DNS labels), so the name is unambiguous.
pub(crate) fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

pub(crate) fn save(dir: &Path, s: &Saved) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(".state.json.tmp");
    let bytes = serde_json::to_vec_pretty(s).map_err(io::Error::other)?;
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, dir.join(STATE_FILE))
}

/// Every remembered instance: its directory and what could be read of it.
pub(crate) fn load_all(instances: &Path) -> Vec<(PathBuf, Result<Saved, String>)> {
    let Ok(entries) = fs::read_dir(instances) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let file = dir.join(STATE_FILE);
        let r = match fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Saved>(&bytes)
                .map_err(|err| format!("{} is unreadable: {err}", file.display())),
            Err(err) => Err(format!("{}: {err}", file.display())),
        };
        out.push((dir, r));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let me = procfs::stat(std::process::id()).unwrap();
        let s = Saved {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "u1".into(),
            ip: Some(Ipv4Addr::new(127, 1, 0, 9)),
            app: Some(SavedProc::of(std::process::id(), me.start_ticks, SystemTime::now())),
            grace_ms: 1500,
            ..Saved::default()
        };
        let d = dir.path().join(key("default", "web-1"));
        save(&d, &s).unwrap();
        fs::create_dir_all(dir.path().join("junk")).unwrap();
        let all = load_all(dir.path());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1.as_ref().unwrap(), &s);
        assert!(all[1].1.is_err());
        assert!(s.app.as_ref().unwrap().alive());
        let other = SavedProc { start_ticks: me.start_ticks + 1, ..s.app.clone().unwrap() };
        assert!(!other.alive());
    }
}
