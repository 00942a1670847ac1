//! Per-instance log files with rotation.
//!
//! The app's stdout and stderr (and the sidecar's) are opened by the agent as one file in
//! append mode and handed to the process directly, rather than piped through the agent: the
//! process then keeps logging while the agent restarts (adoption), and the agent spends no cpu
//! per line. Rotation is therefore "copy and truncate" (logrotate's `copytruncate`): when the
//! file passes the size limit, `app.log.1` becomes `app.log.2`, `app.log` is copied to
//! `app.log.1` and truncated; the writer's next append lands at offset 0. Lines written between
//! the copy and the truncation are lost, and a file can overshoot the limit by what is written
//! between two checks (every second) — the price of not sitting in the data path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The app's log file name in an instance's log dir.
pub const APP_LOG: &str = "app.log";
/// The sidecar's log file name.
pub const SIDECAR_LOG: &str = "sidecar.log";

/// Opens (creating) a log file for appending; the handle is given to a child as stdout/stderr.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

/// Writes one line from the agent itself into a log (start markers), so a reader of the log
/// sees where runs begin.
pub(crate) fn note(file: &mut File, line: &str) {
    let _ = writeln!(file, "{line}");
}

/// `app.log.1` for `app.log` and 1.
pub(crate) fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Rotates `path` if it is larger than `max_bytes`, keeping `keep` files in all (the live one
/// and `keep - 1` numbered ones). Returns whether it rotated.
pub(crate) fn rotate_if_needed(path: &Path, max_bytes: u64, keep: usize) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max_bytes {
        return Ok(false);
    }
    if keep >= 2 {
        for n in (1..keep - 1).rev() {
            match fs::rename(numbered(path, n), numbered(path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        fs::copy(path, numbered(path, 1))?;
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// The last `n` lines of a file (all of it when shorter), reading at most the last `cap`
/// bytes.
pub(crate) fn tail(path: &Path, n: u64, cap: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(cap);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf)?;
    // Count newlines from the end; a final newline does not start a line.
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut seen = 0;
    let mut cut = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                cut = i + 1;
                break;
            }
        }
    }
    if n == 0 {
        cut = buf.len();
    }
    Ok(buf[cut..].to_vec())
}

/// The last non-empty line of a log, trimmed to 200 characters, for status messages ("exited
/// with code 1: OSError: [Errno 98] Address already in use").
pub(crate) fn last_line(path: &Path) -> Option<String> {
    let bytes = tail(path, 5, 16 * 1024).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let line =
        text.lines().rev().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("--- weft"))?;
    let mut line: String = line.chars().take(200).collect();
    if line.len() < text.len() && line.chars().count() == 200 {
        line.push('…');
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_keeping_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let mut f = open_append(&log).unwrap();
        for round in 0..4 {
            writeln!(f, "round {round} {}", "x".repeat(100)).unwrap();
            assert!(rotate_if_needed(&log, 50, 3).unwrap());
            // The writer keeps appending, at the start of the truncated file.
            assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        }
        writeln!(f, "after").unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap(), "after\n");
        assert!(fs::read_to_string(numbered(&log, 1)).unwrap().starts_with("round 3"));
        assert!(fs::read_to_string(numbered(&log, 2)).unwrap().starts_with("round 2"));
        assert!(!numbered(&log, 3).exists());
        assert!(!rotate_if_needed(&log, 50, 3).unwrap());
    }

    #[test]
    fn tails_and_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&log, 2, 1024).unwrap(), b"b\nc\n");
        assert_eq!(tail(&log, 10, 1024).unwrap(), b"a\nb\nc\n");
        assert_eq!(tail(&log, 0, 1024).unwrap(), b"");
        fs::write(&log, "boom: address in use\n--- weft: starting\n\n").unwrap();
        assert_eq!(last_line(&log).unwrap(), "boom: address in use");
    }
}
