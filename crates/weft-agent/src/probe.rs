//! Readiness and liveness probes: the checks (HTTP, TCP, exec), the threshold bookkeeping, and
//! the schedule.
//!
//! Schedule: a readiness check runs every `periodSeconds` once it has passed. Until the first
//! pass it runs at `clamp(time since start / 10, 10 ms, period)`: every 10 ms for the first
//! 100 ms, then ever more slowly (100 ms at 1 s, 1 s at 10 s) up to the period. An app that
//! listens at once is seen ready within ~10 ms of starting, one that takes 3 s within ~0.3 s
//! of that, at a total cost of about 10·ln(T / 100 ms) + 10 checks before the first pass.
//! Failure messages are only reported after the first second (or after a first pass), so a
//! normal start does not flash "probe failed" into the status. Liveness runs at its period
//! from `initialDelaySeconds` on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_api::kinds::template::Probe;

use crate::spawn::signal_group;

/// One health check.
#[derive(Clone, Debug)]
pub(crate) enum Check {
    Http { addr: SocketAddr, path: String },
    Tcp { addr: SocketAddr },
    Exec { argv: Vec<String>, env: Vec<(String, String)>, workdir: PathBuf },
}

impl Check {
    /// Runs the check once; `Err` says why it failed, for the instance status.
    pub(crate) async fn run(&self, timeout: Duration) -> Result<(), String> {
        match self {
            Check::Tcp { addr } => {
                match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
                    Err(_) => Err(format!("connecting to {addr} took over {timeout:?}")),
                }
            }
            Check::Http { addr, path } => {
                match tokio::time::timeout(timeout, http_status(*addr, path)).await {
                    Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
                    Ok(Ok(code)) => Err(format!("GET http://{addr}{path} answered {code}")),
                    Ok(Err(e)) => Err(format!("GET http://{addr}{path}: {e}")),
                    Err(_) => Err(format!("GET http://{addr}{path} took over {timeout:?}")),
                }
            }
            Check::Exec { argv, env, workdir } => exec(argv, env, workdir, timeout).await,
        }
    }
}

/// A minimal HTTP/1.1 GET: connects, sends the request, reads the status line. Probes and the
/// sidecar-ready check need nothing more, and this costs one connection and no client state.
pub(crate) async fn http_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: weft-agent\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s.read(&mut chunk).await.map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {:?}", line.chars().take(60).collect::<String>())),
    }
}

async fn exec(
    argv: &[String],
    env: &[(String, String)],
    workdir: &std::path::Path,
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the exec probe has no command".into());
    };
    let path = env.iter().find(|(k, _)| k == "PATH").map_or(crate::env::DEFAULT_PATH, |(_, v)| v);
    let program = crate::spawn::resolve(program, path, workdir).map_err(|e| e.0)?;
    let child = tokio::process::Command::new(&program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if text.is_empty() {
                text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            }
            let first: String = text.lines().next().unwrap_or("").chars().take(160).collect();
            let status = match out.status.code() {
                Some(c) => format!("exited with code {c}"),
                None => "was killed".to_string(),
            };
            Err(if first.is_empty() {
                format!("{} {status}", argv.join(" "))
            } else {
                format!("{} {status}: {first}", argv.join(" "))
            })
        }
        Ok(Err(e)) => Err(format!("running {}: {e}", argv.join(" "))),
        Err(_) => {
            if let Some(pid) = pid {
                signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            Err(format!("{} took over {timeout:?}", argv.join(" ")))
        }
    }
}

/// Consecutive results against the thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    pub passing: bool,
}

impl Tracker {
    pub(crate) fn new(probe: &Probe, passing: bool) -> Tracker {
        Tracker {
            success_threshold: probe.success_threshold.max(1),
            failure_threshold: probe.failure_threshold.max(1),
            successes: 0,
            failures: 0,
            passing,
        }
    }

    /// Records one result; returns the new state when it changed.
    pub(crate) fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.passing && self.successes >= self.success_threshold {
                self.passing = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.passing && self.failures >= self.failure_threshold {
                self.passing = false;
                return Some(false);
            }
        }
        None
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// The wait before the next readiness check (see the module docs).
pub(crate) fn next_delay(since_start: Duration, passed_once: bool, period: Duration) -> Duration {
    if passed_once {
        return period;
    }
    (since_start / 10).clamp(Duration::from_millis(10), period.max(Duration::from_millis(10)))
}

/// What the probes tell the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Readiness changed, or (when not ready) why not.
    Ready(bool, String),
    /// Liveness failed `failureThreshold` times in a row: restart.
    LivenessFailed(String),
}

/// A probe with its check; `None` probe means "the default": TCP on the first port until it
/// first passes, then ready for the life of the process.
#[derive(Debug)]
pub(crate) struct Plan {
    pub readiness: Option<(Probe, Check)>,
    pub default_port: Option<SocketAddr>,
    pub liveness: Option<(Probe, Check)>,
}

/// How long failures stay unreported after start (see the module docs).
const QUIET_START: Duration = Duration::from_secs(1);

/// Runs the probes of one app run, reporting to `tx` until the receiver is gone.
pub(crate) async fn run(plan: Plan, tx: mpsc::Sender<Event>) {
    let started = Instant::now();
    let readiness = async {
        match (plan.readiness, plan.default_port) {
            (Some((probe, check)), _) => readiness_loop(&probe, &check, started, &tx).await,
            (None, Some(addr)) => {
                let check = Check::Tcp { addr };
                let mut reported = String::new();
                loop {
                    match check.run(Duration::from_secs(1)).await {
                        Ok(()) => {
                            let _ = tx.send(Event::Ready(true, String::new())).await;
                            return;
                        }
                        Err(e) if started.elapsed() >= QUIET_START && e != reported => {
                            let msg = format!("waiting for the app to listen: {e}");
                            if tx.send(Event::Ready(false, msg)).await.is_err() {
                                return;
                            }
                            reported = e;
                        }
                        Err(_) => {}
                    }
                    let d = next_delay(started.elapsed(), false, Duration::from_secs(1));
                    tokio::time::sleep(d).await;
                }
            }
            (None, None) => {
                let _ = tx.send(Event::Ready(true, String::new())).await;
            }
        }
    };
    let liveness = async {
        let Some((probe, check)) = &plan.liveness else { return };
        tokio::time::sleep(Duration::from_secs(probe.initial_delay_seconds.into())).await;
        let period = Duration::from_secs(probe.period_seconds.max(1).into());
        let timeout = Duration::from_secs(probe.timeout_seconds.max(1).into());
        let mut t = Tracker::new(probe, true);
        loop {
            let r = check.run(timeout).await;
            let failed = r.as_ref().err().cloned().unwrap_or_default();
            if t.record(r.is_ok()) == Some(false) {
                let msg = format!("liveness probe failed {} times: {failed}", t.failures());
                let _ = tx.send(Event::LivenessFailed(msg)).await;
                return;
            }
            tokio::time::sleep(period).await;
        }
    };
    tokio::join!(readiness, liveness);
}

async fn readiness_loop(probe: &Probe, check: &Check, started: Instant, tx: &mpsc::Sender<Event>) {
    tokio::time::sleep(Duration::from_secs(probe.initial_delay_seconds.into())).await;
    let period = Duration::from_secs(probe.period_seconds.max(1).into());
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1).into());
    let mut t = Tracker::new(probe, false);
    let mut passed_once = false;
    let mut reported = String::new();
    loop {
        let r = check.run(timeout).await;
        let event = match (t.record(r.is_ok()), &r) {
            (Some(true), _) => {
                passed_once = true;
                reported.clear();
                Some(Event::Ready(true, String::new()))
            }
            (Some(false), Err(e)) => {
                reported = e.clone();
                Some(Event::Ready(
                    false,
                    format!("readiness probe failed {} times: {e}", t.failures()),
                ))
            }
            // Still not passing: say why, once per distinct reason, after the quiet start.
            (None, Err(e))
                if !t.passing
                    && *e != reported
                    && (passed_once || started.elapsed() >= QUIET_START) =>
            {
                reported = e.clone();
                Some(Event::Ready(false, format!("readiness probe failing: {e}")))
            }
            _ => None,
        };
        if let Some(ev) = event
            && tx.send(ev).await.is_err()
        {
            return;
        }
        let since = started.elapsed();
        tokio::time::sleep(next_delay(since, passed_once, period)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: u32, failure: u32) -> Probe {
        Probe {
            http: None,
            tcp: None,
            exec: None,
            initial_delay_seconds: 0,
            period_seconds: 10,
            timeout_seconds: 1,
            failure_threshold: failure,
            success_threshold: success,
        }
    }

    #[test]
    fn thresholds() {
        let mut t = Tracker::new(&probe(2, 3), false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None);
    }

    #[test]
    fn fast_until_first_pass() {
        let p = Duration::from_secs(10);
        assert_eq!(next_delay(Duration::ZERO, false, p), Duration::from_millis(10));
        assert_eq!(next_delay(Duration::from_secs(1), false, p), Duration::from_millis(100));
        assert_eq!(next_delay(Duration::from_secs(500), false, p), p);
        assert_eq!(next_delay(Duration::ZERO, true, p), p);
    }

    #[tokio::test]
    async fn checks() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
                let line = if ok { "HTTP/1.1 204 No Content" } else { "HTTP/1.1 503 Nope" };
                let _ =
                    s.write_all(format!("{line}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let t = Duration::from_secs(1);
        assert_eq!(Check::Http { addr, path: "/ok".into() }.run(t).await, Ok(()));
        let e = Check::Http { addr, path: "/bad".into() }.run(t).await.unwrap_err();
        assert!(e.ends_with("answered 503"), "{e}");
        assert_eq!(Check::Tcp { addr }.run(t).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(Check::Tcp { addr: closed }.run(t).await.unwrap_err().contains("cannot connect"));
        let env = vec![("PATH".to_string(), "/bin:/usr/bin".to_string())];
        let dir = std::env::temp_dir();
        let exec = |cmd: &str| Check::Exec {
            argv: vec!["sh".into(), "-c".into(), cmd.into()],
            env: env.clone(),
            workdir: dir.clone(),
        };
        assert_eq!(exec("exit 0").run(t).await, Ok(()));
        let e = exec("echo not yet; exit 3").run(t).await.unwrap_err();
        assert!(e.ends_with("exited with code 3: not yet"), "{e}");
        let e = exec("sleep 5").run(Duration::from_millis(100)).await.unwrap_err();
        assert!(e.contains("took over"), "{e}");
    }
}
