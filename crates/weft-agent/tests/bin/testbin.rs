//! Test helper for weft-agent's integration tests and benchmark (not shipped).
//!
//! `weft-agent-testbin proxy …` stands in for `weft proxy` in sidecar mode: it takes the same
//! flags (`--server --token/WEFT_TOKEN --instance --namespace --inbound NAME=PUB:APP[:PROTO]
//! --outbound --admin --upstream-port`), binds every listener (failing like the proxy when an
//! address is in use), relays inbound TCP to the app, answers `/ready` on the admin address,
//! and checks its token against the api server.
//!
//! `weft-agent-testbin app [--print-env] [--ignore-term] [--exit CODE] [--alloc-mib N]
//! [--marker FILE] [--spam BYTES] [--health-file FILE] [--no-listen]` is an app that listens on
//! `$PORT` at once (HTTP: `/healthz` is 200 while the health file exists, or always without
//! one) and does whatever its flags say.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let code = match args.first().map(String::as_str) {
        Some("proxy") => rt.block_on(proxy(&args[1..])),
        Some("app") => rt.block_on(app(&args[1..])),
        _ => {
            eprintln!("usage: weft-agent-testbin proxy|app [flags]");
            64
        }
    };
    std::process::exit(code);
}

fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            if let Some(v) = it.next() {
                out.push(v.as_str());
            }
        } else if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            out.push(v);
        }
    }
    out
}

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    values(args, flag).into_iter().next()
}

fn has(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn bind(addr: &str) -> Result<TcpListener, i32> {
    TcpListener::bind(addr).await.map_err(|e| {
        eprintln!("testbin sidecar: cannot listen on {addr}: {e}");
        1
    })
}

async fn proxy(args: &[String]) -> i32 {
    let token =
        value(args, "--token").map(String::from).or_else(|| std::env::var("WEFT_TOKEN").ok());
    let shown: Vec<&str> = args.iter().map(String::as_str).collect();
    say(&format!(
        "testbin sidecar: {} token={}",
        shown.join(" "),
        if token.is_some() { "set" } else { "unset" }
    ));
    let mut term = signal(SignalKind::terminate()).expect("signal");
    for inbound in values(args, "--inbound") {
        let Some((_, rest)) = inbound.split_once('=') else { return 64 };
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() < 4 {
            eprintln!("testbin sidecar: bad --inbound {inbound}");
            return 64;
        }
        let public = format!("{}:{}", parts[0], parts[1]);
        let app: SocketAddr = match format!("{}:{}", parts[2], parts[3]).parse() {
            Ok(a) => a,
            Err(_) => return 64,
        };
        let l = match bind(&public).await {
            Ok(l) => l,
            Err(c) => return c,
        };
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(app).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
    }
    let mut sinks = values(args, "--upstream-port")
        .into_iter()
        .filter_map(|u| u.split_once('=').map(|(_, a)| a.to_string()))
        .collect::<Vec<_>>();
    sinks.extend(value(args, "--outbound").map(String::from));
    for addr in sinks {
        let l = match bind(&addr).await {
            Ok(l) => l,
            Err(c) => return c,
        };
        tokio::spawn(async move { while l.accept().await.is_ok() {} });
    }
    let Some(admin) = value(args, "--admin") else {
        eprintln!("testbin sidecar: --admin is required");
        return 64;
    };
    let admin = match bind(admin).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    if let (Some(server), Some(token), Some(instance)) =
        (value(args, "--server"), token, value(args, "--instance"))
    {
        let ns = value(args, "--namespace").unwrap_or("default").to_string();
        let (server, instance) = (server.to_string(), instance.to_string());
        tokio::spawn(async move {
            let c = weft_client::Client::new(&server, Some(token)).expect("client");
            match c.get::<weft_api::Instance>(Some(&ns), &instance).await {
                Ok(_) => say("testbin sidecar: token ok"),
                Err(e) => say(&format!("testbin sidecar: token check failed: {e}")),
            }
        });
    }
    // An instance whose name contains "slow-sidecar" gets a sidecar that is not ready for its
    // first 300 ms, to show that the app waits for it.
    let slow = value(args, "--instance").is_some_and(|i| i.contains("slow-sidecar"));
    let ready_at = std::time::Instant::now() + Duration::from_millis(if slow { 300 } else { 0 });
    let said = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((s, _)) = admin.accept().await {
            let said = said.clone();
            tokio::spawn(http(s, move |path| match path {
                "/ready" if std::time::Instant::now() < ready_at => (503, "not yet\n".to_string()),
                "/ready" | "/live" => {
                    if !said.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        say(&format!("testbin sidecar: ready at {}", unix_ms()));
                    }
                    (200, "ready\n".to_string())
                }
                _ => (404, "not found\n".to_string()),
            }));
        }
    });
    term.recv().await;
    say("testbin sidecar: got SIGTERM, exiting");
    0
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// Serves one HTTP/1.1 request with `answer(path) -> (status, body)`.
async fn http(mut s: TcpStream, answer: impl Fn(&str) -> (u16, String)) {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (code, body) = answer(&path);
    let resp = format!(
        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
}

async fn app(args: &[String]) -> i32 {
    let pid = std::process::id();
    let marker = value(args, "--marker").map(String::from);
    let mark = |what: &str| {
        if let Some(m) = &marker
            && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(m)
        {
            let _ = writeln!(f, "{} {what} pid={pid}", unix_ms());
        }
    };
    mark("started");
    say(&format!("testbin app: started pid={pid}"));
    if has(args, "--print-env") {
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        vars.sort();
        for (k, v) in vars {
            say(&format!("ENV {k}={v}"));
        }
    }
    if let Some(bytes) = value(args, "--spam").and_then(|v| v.parse::<usize>().ok()) {
        let line = format!("{}\n", "spam ".repeat(20));
        let mut out = std::io::stdout().lock();
        let mut written = 0;
        while written < bytes {
            let _ = out.write_all(line.as_bytes());
            written += line.len();
        }
        let _ = out.flush();
    }
    if let Some(code) = value(args, "--exit").and_then(|v| v.parse::<i32>().ok()) {
        say(&format!("testbin app: exiting with code {code}"));
        return code;
    }
    let mut hog = Vec::new();
    if let Some(mib) = value(args, "--alloc-mib").and_then(|v| v.parse::<usize>().ok()) {
        for i in 0..mib {
            let mut chunk = vec![0u8; 1 << 20];
            for j in (0..chunk.len()).step_by(4096) {
                chunk[j] = (i + j) as u8;
            }
            hog.push(chunk);
            if i % 16 == 0 {
                say(&format!("testbin app: allocated {} MiB", i + 1));
            }
        }
        say(&format!("testbin app: holding {mib} MiB"));
    }
    if !has(args, "--no-listen")
        && let Ok(port) = std::env::var("PORT")
    {
        let l = match TcpListener::bind(format!("0.0.0.0:{port}")).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("testbin app: cannot listen on port {port}: {e}");
                return 1;
            }
        };
        let health = value(args, "--health-file").map(String::from);
        let me = std::env::var("WEFT_INSTANCE").unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let health = health.clone();
                let me = me.clone();
                tokio::spawn(http(s, move |path| match path {
                    "/healthz" => match &health {
                        Some(f) if !std::path::Path::new(f).exists() => (503, "unhealthy\n".into()),
                        _ => (200, "ok\n".into()),
                    },
                    _ => (200, format!("hello from {me}\n")),
                }));
            }
        });
    }
    let mut term = signal(SignalKind::terminate()).expect("signal");
    let ignore = has(args, "--ignore-term");
    loop {
        term.recv().await;
        mark("sigterm");
        if ignore {
            say("testbin app: got SIGTERM, ignoring it");
            continue;
        }
        say("testbin app: got SIGTERM, exiting");
        drop(hog);
        tokio::time::sleep(Duration::from_millis(1)).await;
        return 0;
    }
}
