//! Reading `/proc`: process identity (for adoption), cpu and memory of process groups (usage
//! without cgroups), and the machine's size (node capacity).

use std::collections::{HashMap, HashSet};
use std::fs;

/// Clock ticks per second in `/proc/<pid>/stat` times. `USER_HZ` is 100 on every Linux
/// architecture weft targets (it is part of the ABI, unlike the kernel's internal HZ).
pub(crate) const USER_HZ: u64 = 100;

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub pgid: i32,
    /// User + system cpu time, in `USER_HZ` ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in ticks: with the pid, a process's identity (pids are reused,
    /// a (pid, start time) pair is not).
    pub start_ticks: u64,
}

pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        pgid: f.get(2)?.parse().ok()?,
        cpu_ticks: num(11)? + num(12)?,
        start_ticks: num(19)?,
    })
}

pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether the process `pid` that started at `start_ticks` is still running (not gone, not a
/// zombie waiting to be reaped).
pub(crate) fn alive(pid: u32, start_ticks: u64) -> bool {
    matches!(stat(pid), Some(s) if s.start_ticks == start_ticks && !matches!(s.state, 'Z' | 'X'))
}

/// The command line of a process, or `None` when it is gone (or a zombie: empty).
pub(crate) fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    Some(raw.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// Resident memory of one process in bytes (`VmRSS`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kb_field(&status, "VmRSS:")
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Cpu seconds and resident bytes summed over each wanted process group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct GroupUsage {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
}

/// One pass over `/proc`, summing cpu and memory per process group in `wanted`.
pub(crate) fn scan_groups(wanted: &HashSet<i32>) -> HashMap<i32, GroupUsage> {
    let mut out: HashMap<i32, GroupUsage> = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    let Ok(dir) = fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(s) = stat(pid) else { continue };
        if !wanted.contains(&s.pgid) {
            continue;
        }
        let u = out.entry(s.pgid).or_default();
        u.cpu_seconds += s.cpu_ticks as f64 / USER_HZ as f64;
        u.memory_bytes += rss_bytes(pid).unwrap_or(0);
    }
    out
}

/// Logical cpus of the machine (at least 1).
pub(crate) fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// Physical memory in bytes (`MemTotal`), if readable.
pub(crate) fn mem_total() -> Option<u64> {
    kb_field(&fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// The host name, made into a valid node name (lower case, DNS subdomain characters).
pub(crate) fn node_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    name = name.trim_matches(|c: char| c == '-' || c == '.').to_string();
    name.truncate(253);
    if name.is_empty() { "node".to_string() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgid, 4242);
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.start_ticks, 98765);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(alive(me, s.start_ticks));
        assert!(!alive(me, s.start_ticks + 1));
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(mem_total().unwrap() > 0);
        assert!(!node_name().is_empty());
    }
}
