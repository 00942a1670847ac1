//! Cgroups: cpu shares, cpu quota and memory limit per instance, cpu and memory accounting,
//! and out-of-memory detection.
//!
//! Layout: `<controller mount>/<the agent's own cgroup>/weft/<node>/<ns>_<instance>`. Nesting
//! under the agent's own cgroup keeps instances inside whatever limits the agent itself runs
//! under (a container, a systemd slice, a sandbox) and needs no rights above it; the node name
//! keeps several agents on one machine (tests, simulated clusters) apart.
//!
//! cgroup v2 is used when `/sys/fs/cgroup` offers the `cpu` and `memory` controllers and they
//! can be enabled for the subtree; otherwise v1's separately mounted `cpu`, `cpuacct` (optional,
//! for accounting) and `memory` hierarchies, found through `/proc/self/mountinfo`. Only the app
//! is placed in the group: the sidecar is the node's overhead, not the app's budget, and an app
//! hitting its memory limit must not take its proxy down with it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_api::kinds::template::Resources;

/// Whether to use cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupMode {
    /// Use them where writable; otherwise say so once and run without.
    #[default]
    Auto,
    /// Never touch cgroups.
    Off,
}

/// The cpu period for quotas (DESIGN.md: 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup support found on this machine.
#[derive(Clone, Debug)]
pub(crate) enum Cgroups {
    Off { why: String },
    V1 { cpu: PathBuf, cpuacct: Option<PathBuf>, memory: PathBuf },
    V2 { base: PathBuf },
}

/// One instance's group (kept in its state file so a restarted agent finds it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub(crate) enum Group {
    V1 { cpu: PathBuf, cpuacct: Option<PathBuf>, memory: PathBuf },
    V2 { dir: PathBuf },
}

impl Cgroups {
    /// Finds usable cgroups for agent `node`; never fails (it reports why it runs without).
    pub(crate) fn detect(mode: CgroupMode, node: &str) -> Cgroups {
        if mode == CgroupMode::Off {
            return Cgroups::Off { why: "turned off (--cgroups off)".into() };
        }
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let v2 = match detect_v2(&own, node) {
            Ok(c) => return c,
            Err(e) => e,
        };
        match detect_v1(&own, &mounts, node) {
            Ok(c) => c,
            Err(v1) => Cgroups::Off { why: format!("cgroup v2: {v2}; cgroup v1: {v1}") },
        }
    }

    /// Removes the node's own directories (`weft/<node>`, and `weft` if empty), when the
    /// agent stops with its instances. Best effort: a group still in use stays.
    pub(crate) fn remove_node_dirs(&self) {
        let dirs: Vec<&PathBuf> = match self {
            Cgroups::Off { .. } => Vec::new(),
            Cgroups::V1 { cpu, cpuacct, memory } => {
                [Some(cpu), cpuacct.as_ref(), Some(memory)].into_iter().flatten().collect()
            }
            Cgroups::V2 { base } => vec![base],
        };
        for d in dirs {
            if fs::remove_dir(d).is_ok()
                && let Some(parent) = d.parent()
            {
                let _ = fs::remove_dir(parent);
            }
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !matches!(self, Cgroups::Off { .. })
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Cgroups::Off { why } => format!("off ({why})"),
            Cgroups::V1 { cpu, memory, .. } => {
                format!("v1 (cpu {}, memory {})", cpu.display(), memory.display())
            }
            Cgroups::V2 { base } => format!("v2 ({})", base.display()),
        }
    }

    /// Creates the group `name` with the limits of `resources`.
    pub(crate) fn create(&self, name: &str, resources: &Resources) -> io::Result<Option<Group>> {
        let shares = resources.requests.cpu.as_ref().map(|c| shares(c.as_milli_ceil()));
        let quota = resources.limits.cpu.as_ref().map(|c| quota_us(c.as_milli_ceil()));
        let memory = resources.limits.memory.as_ref().map(|m| m.as_units_ceil());
        match self {
            Cgroups::Off { .. } => Ok(None),
            Cgroups::V1 { cpu, cpuacct, memory: mem } => {
                let (cpu, acct, mem) =
                    (cpu.join(name), cpuacct.as_ref().map(|a| a.join(name)), mem.join(name));
                for d in [Some(&cpu), acct.as_ref(), Some(&mem)].into_iter().flatten() {
                    fs::create_dir_all(d)?;
                }
                if let Some(s) = shares {
                    write(&cpu, "cpu.shares", &s.to_string())?;
                }
                write(&cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(&cpu, "cpu.cfs_quota_us", &quota.map_or("-1".into(), |q| q.to_string()))?;
                // -1 is "no limit" for v1 memory too; written so a reused group is reset.
                write(
                    &mem,
                    "memory.limit_in_bytes",
                    &memory.map_or("-1".into(), |m| m.to_string()),
                )?;
                Ok(Some(Group::V1 { cpu, cpuacct: acct, memory: mem }))
            }
            Cgroups::V2 { base } => {
                let dir = base.join(name);
                fs::create_dir_all(&dir)?;
                if let Some(s) = shares {
                    write(&dir, "cpu.weight", &weight(s).to_string())?;
                }
                let max = quota.map_or("max".to_string(), |q| q.to_string());
                write(&dir, "cpu.max", &format!("{max} {CPU_PERIOD_US}"))?;
                write(&dir, "memory.max", &memory.map_or("max".into(), |m| m.to_string()))?;
                if memory.is_some() && dir.join("memory.swap.max").exists() {
                    // Without this a limited app swaps instead of being stopped at its limit.
                    let _ = write(&dir, "memory.swap.max", "0");
                }
                Ok(Some(Group::V2 { dir }))
            }
        }
    }
}

impl Group {
    /// The `cgroup.procs` files a process must be written to, to be in this group.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        match self {
            Group::V1 { cpu, cpuacct, memory } => [Some(cpu), cpuacct.as_ref(), Some(memory)]
                .into_iter()
                .flatten()
                .map(|d| d.join("cgroup.procs"))
                .collect(),
            Group::V2 { dir } => vec![dir.join("cgroup.procs")],
        }
    }

    /// Every process in the group (including ones that left the app's process group).
    pub(crate) fn pids(&self) -> Vec<u32> {
        let file = match self {
            Group::V1 { memory, .. } => memory.join("cgroup.procs"),
            Group::V2 { dir } => dir.join("cgroup.procs"),
        };
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Cpu seconds used so far and memory in use (working set: usage minus inactive file
    /// cache, as the kubelet reports it).
    pub(crate) fn usage(&self) -> (Option<f64>, Option<u64>) {
        match self {
            Group::V1 { cpuacct, memory, cpu } => {
                let acct = cpuacct.as_ref().unwrap_or(cpu);
                let cpu = read_u64(&acct.join("cpuacct.usage")).map(|ns| ns as f64 / 1e9);
                let used = read_u64(&memory.join("memory.usage_in_bytes"));
                let inactive = stat_field(&memory.join("memory.stat"), "total_inactive_file");
                (cpu, used.map(|u| u.saturating_sub(inactive.unwrap_or(0))))
            }
            Group::V2 { dir } => {
                let cpu = stat_field(&dir.join("cpu.stat"), "usage_usec").map(|us| us as f64 / 1e6);
                let used = read_u64(&dir.join("memory.current"));
                let inactive = stat_field(&dir.join("memory.stat"), "inactive_file");
                (cpu, used.map(|u| u.saturating_sub(inactive.unwrap_or(0))))
            }
        }
    }

    /// How many times the kernel's OOM killer has killed a process of this group.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        match self {
            // `oom_kill` is in memory.oom_control since Linux 4.13.
            Group::V1 { memory, .. } => stat_field(&memory.join("memory.oom_control"), "oom_kill"),
            Group::V2 { dir } => stat_field(&dir.join("memory.events"), "oom_kill"),
        }
    }

    /// Removes the group's directories; fails (EBUSY) while processes remain.
    pub(crate) fn remove(&self) -> io::Result<()> {
        let dirs: Vec<&PathBuf> = match self {
            Group::V1 { cpu, cpuacct, memory } => {
                [Some(cpu), cpuacct.as_ref(), Some(memory)].into_iter().flatten().collect()
            }
            Group::V2 { dir } => vec![dir],
        };
        let mut result = Ok(());
        for d in dirs {
            match fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => result = Err(e),
            }
        }
        result
    }
}

/// cpu.shares for a request in millicores: 1024 per core, at least 2 (the kernel's minimum).
pub(crate) fn shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).max(2)
}

/// cpu.cfs_quota_us for a limit in millicores, at the 100 ms period; at least 1 ms (the
/// kernel's minimum).
pub(crate) fn quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)
}

/// cgroup v2 cpu.weight (1..10000) for v1 shares (2..262144), the kubelet's mapping.
pub(crate) fn weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value).map_err(|e| {
        io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", dir.join(file).display()))
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` line of a cgroup stat file.
fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn detect_v2(own: &str, node: &str) -> Result<Cgroups, String> {
    let root = Path::new("/sys/fs/cgroup");
    let controllers = fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|_| "not mounted at /sys/fs/cgroup".to_string())?;
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !has("cpu") || !has("memory") {
        return Err(format!("offers only {:?}", controllers.trim()));
    }
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/");
    let mut dir = root.join(own.trim_start_matches('/'));
    // Enable cpu and memory for each level below the agent's own group. The kernel refuses
    // that for a non-root group that has processes of its own (the agent): run the agent in a
    // leaf of a delegated subtree (systemd `Delegate=yes`) to use cgroups then.
    for part in ["weft", node] {
        fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory")
            .map_err(|e| format!("cannot enable cpu and memory below {}: {e}", dir.display()))?;
        dir = dir.join(part);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory")
        .map_err(|e| format!("cannot enable cpu and memory below {}: {e}", dir.display()))?;
    Ok(Cgroups::V2 { base: dir })
}

/// A v1 hierarchy: where it is mounted and which part of it the mount shows.
struct V1Mount {
    point: PathBuf,
    root: String,
    controllers: Vec<String>,
}

fn v1_mounts(mountinfo: &str) -> Vec<V1Mount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split_whitespace();
            if r.next()? != "cgroup" {
                return None;
            }
            let options = r.nth(1)?;
            let f: Vec<&str> = left.split_whitespace().collect();
            Some(V1Mount {
                point: PathBuf::from(f.get(4)?),
                root: f.get(3)?.to_string(),
                controllers: options.split(',').map(String::from).collect(),
            })
        })
        .collect()
}

fn detect_v1(own: &str, mountinfo: &str, node: &str) -> Result<Cgroups, String> {
    let mounts = v1_mounts(mountinfo);
    let base = |controller: &str| -> Result<PathBuf, String> {
        let m = mounts
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
            .ok_or_else(|| format!("no {controller} hierarchy mounted"))?;
        let path = own
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, ctl, path) = (p.next()?, p.next()?, p.next()?);
                ctl.split(',').any(|c| c == controller).then_some(path)
            })
            .unwrap_or("/");
        let rel = path.strip_prefix(m.root.as_str()).unwrap_or(path);
        let dir = m.point.join(rel.trim_start_matches('/')).join("weft").join(node);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    };
    let cpu = base("cpu")?;
    let memory = base("memory")?;
    let cpuacct = base("cpuacct").ok();
    // Writable, not just creatable: open the files the agent will write.
    for (dir, file) in
        [(&cpu, "cpu.shares"), (&cpu, "cpu.cfs_quota_us"), (&memory, "memory.limit_in_bytes")]
    {
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join(file))
            .map_err(|e| format!("cannot write {}: {e}", dir.join(file).display()))?;
    }
    Ok(Cgroups::V1 { cpu, cpuacct, memory })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(shares(1000), 1024);
        assert_eq!(shares(500), 512);
        assert_eq!(shares(1), 2);
        assert_eq!(quota_us(1000), 100_000);
        assert_eq!(quota_us(250), 25_000);
        assert_eq!(quota_us(1), 1000);
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
    }

    #[test]
    fn finds_v1_mounts() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
";
        let m = v1_mounts(info);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(m[0].controllers.contains(&"cpu".to_string()));
    }
}
