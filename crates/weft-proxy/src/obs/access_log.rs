//! The JSON access log: one object per line per request, written by one task from a bounded
//! queue (a request never waits for the disk or a slow terminal; lines that do not fit are
//! dropped and counted in `weft_access_log_dropped_total`).

use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::{AccessLog, ObsMetrics, Record};

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    record: &'a Record,
}

/// Writes lines until the queue closes. A file that cannot be opened or written stops the log
/// (said once on stderr) and counts the lines as dropped from then on.
pub(crate) async fn run(mut rx: mpsc::Receiver<Arc<Record>>, to: AccessLog, metrics: ObsMetrics) {
    let out: Box<dyn AsyncWrite + Send + Unpin> = match &to {
        AccessLog::Off => return,
        AccessLog::Stdout => Box::new(tokio::io::stdout()),
        AccessLog::Stderr => Box::new(tokio::io::stderr()),
        AccessLog::File(path) => {
            match tokio::fs::OpenOptions::new().create(true).append(true).open(path).await {
                Ok(f) => Box::new(f),
                Err(e) => {
                    eprintln!("weft proxy: access log {}: {e}; not logging", path.display());
                    while rx.recv().await.is_some() {
                        metrics.log_dropped.inc();
                    }
                    return;
                }
            }
        }
    };
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(512);
    let mut failed = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Write what is queued, then flush once.
        while let Some(record) = next {
            if failed {
                metrics.log_dropped.inc();
            } else {
                line.clear();
                let l = Line { time: rfc3339(record.end_unix_nanos), record: &record };
                if serde_json::to_writer(&mut line, &l).is_ok() {
                    line.push(b'\n');
                    if out.write_all(&line).await.is_err() {
                        failed = true;
                        metrics.log_dropped.inc();
                    } else {
                        metrics.log_written.inc();
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if !failed && out.flush().await.is_err() {
            failed = true;
        }
        if failed {
            eprintln!("weft proxy: cannot write the access log ({to:?}); dropping lines");
        }
    }
    let _ = out.flush().await;
}

/// `2026-11-25T06:01:02.123456Z` from nanoseconds since the Unix epoch.
pub(crate) fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let micros = (unix_nanos % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(1_764_050_462_123_456_789), "2025-11-25T06:01:02.123456Z");
    }

    #[tokio::test]
    async fn writes_json_lines_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (tx, rx) = mpsc::channel(4);
        let metrics = ObsMetrics::default();
        let task = tokio::spawn(run(rx, AccessLog::File(path.clone()), metrics.clone()));
        let r = Record {
            parent: None,
            start_unix_nanos: 0,
            end_unix_nanos: 1_000_000,
            direction: "inbound",
            method: "GET".into(),
            authority: Some("catalog".into()),
            path: "/a".into(),
            status: 200,
            duration_ms: 1.0,
            bytes_in: Some(0),
            bytes_out: 3,
            upstream: Some("catalog".into()),
            endpoint: None,
            retries: 1,
            error: None,
            trace_id: [b'a'; 32],
            span_id: [b'b'; 16],
        };
        tx.send(Arc::new(r.clone())).await.unwrap();
        tx.send(Arc::new(r)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["time"], "1970-01-01T00:00:00.001000Z");
        assert_eq!(lines[0]["path"], "/a");
        assert_eq!(lines[0]["retries"], 1);
        assert_eq!(lines[0]["trace_id"], "a".repeat(32));
        assert_eq!(metrics.log_written.get(), 2);
    }
}
