//! Open-loop (constant-rate) HTTP/1.1 load generator, wrk2-style: request `i` is due at
//! `start + i / rate` whatever happened to earlier ones, and its latency is measured from that
//! due time, so a slow response that delays later requests is charged to them too (no
//! coordinated omission).
//!
//! usage: openloop --addr HOST:PORT [--rate 1000] [--duration 10] [--warmup 2]
//!                 [--connections 16] [--path /] [--host NAME] [--form origin|absolute]
//!
//! `--host` is the `Host` header (default: the address); `--form absolute` sends
//! `GET http://HOST/path` as clients honouring `HTTP_PROXY` do (a sidecar's outbound listener
//! routes either by the service name in it).
//!
//! Prints one line: `rate=.. sent=.. errors=.. p50_us=.. p90_us=.. p99_us=.. p999_us=..
//! max_us=.. late_p99_us=..` (`late`: how far behind schedule the generator itself sent).
//! Connections are plain blocking sockets, one thread each, keep-alive, no pipelining.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    rate: f64,
    duration: f64,
    warmup: f64,
    connections: usize,
    path: String,
    host: Option<String>,
    absolute: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().map_err(|_| "addr")?,
        rate: 1000.0,
        duration: 10.0,
        warmup: 2.0,
        connections: 16,
        path: "/".into(),
        host: None,
        absolute: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--addr" => {
                a.addr = value.parse().map_err(|_| format!("bad value for {flag}: {value}"))?
            }
            "--rate" => a.rate = value.parse().map_err(bad)?,
            "--duration" => a.duration = value.parse().map_err(bad)?,
            "--warmup" => a.warmup = value.parse().map_err(bad)?,
            "--connections" => {
                a.connections =
                    value.parse().map_err(|_| format!("bad value for {flag}: {value}"))?
            }
            "--path" => a.path = value,
            "--host" => a.host = Some(value),
            "--form" => {
                a.absolute = match value.as_str() {
                    "origin" => false,
                    "absolute" => true,
                    _ => return Err(format!("--form is origin or absolute, not {value}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.rate <= 0.0 || a.duration <= 0.0 || a.connections == 0 {
        return Err("rate, duration and connections must be positive".into());
    }
    Ok(a)
}

/// Reads one response (head, then a Content-Length or chunked body) from `s` into `buf`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let bad = || std::io::Error::other("bad response");
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = res.parse(buf).map_err(|_| bad())? {
            let len = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .ok_or_else(bad)?;
            while buf.len() < head + len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(bad());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..head + len);
            return Ok(());
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sleeps until `at` (no spinning: spinning threads would steal the CPU the measured servers
/// share; the kernel's wake-up slack shows up as `late`).
fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(64);
        }
    };
    let total = ((args.warmup + args.duration) * args.rate) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let warmup_n = (args.warmup * args.rate) as usize;
    let host = args.host.clone().unwrap_or_else(|| args.addr.to_string());
    let target =
        if args.absolute { format!("http://{host}{}", args.path) } else { args.path.clone() };
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    let start = Instant::now() + Duration::from_millis(200);

    let threads: Vec<_> = (0..args.connections)
        .map(|c| {
            let request = request.clone();
            let addr = args.addr;
            let n = args.connections;
            std::thread::spawn(move || {
                let mut samples = Vec::with_capacity(total / n + 1);
                let mut late = Vec::with_capacity(total / n + 1);
                let mut errors = 0usize;
                let mut conn: Option<TcpStream> = None;
                let mut buf = Vec::with_capacity(4096);
                for i in (c..total).step_by(n) {
                    let due = start + interval * i as u32;
                    sleep_until(due);
                    let sent = Instant::now();
                    let s = match conn.as_mut() {
                        Some(s) => s,
                        None => match TcpStream::connect(addr) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                buf.clear();
                                conn.insert(s)
                            }
                            Err(_) => {
                                errors += 1;
                                continue;
                            }
                        },
                    };
                    let ok = s.write_all(&request).is_ok() && read_response(s, &mut buf).is_ok();
                    let done = Instant::now();
                    if !ok {
                        errors += 1;
                        conn = None;
                        continue;
                    }
                    if i >= warmup_n {
                        samples.push((done - due).as_micros() as u64);
                        late.push((sent - due).as_micros() as u64);
                    }
                }
                (samples, late, errors)
            })
        })
        .collect();
    let (mut all, mut all_late, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in threads {
        let (s, l, e) = t.join().unwrap_or_default();
        all.extend(s);
        all_late.extend(l);
        errors += e;
    }
    all.sort_unstable();
    all_late.sort_unstable();
    println!(
        "rate={} sent={} errors={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} late_p99_us={}",
        args.rate,
        all.len(),
        errors,
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 99.9),
        all.last().copied().unwrap_or(0),
        percentile(&all_late, 99.0),
    );
}
