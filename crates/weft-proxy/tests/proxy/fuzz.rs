//! Fuzz-style robustness: thousands of random and mutated requests over raw TCP. The proxy must
//! answer each with a status or close the connection, never panic, and keep serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close, x-a\r\nX-A: 1\r\nTE: trailers\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(v.len().max(1));
        match rng.below(7) {
            0 => v.insert(at.min(v.len()), rng.next() as u8),
            1 if !v.is_empty() => {
                v.remove(at.min(v.len() - 1));
            }
            2 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = rng.next() as u8;
            }
            3 => v.splice(at.min(v.len())..at.min(v.len()), b"\r\n".iter().copied()).for_each(drop),
            4 => v.truncate(at),
            5 => {
                let n = rng.below(3000);
                v.splice(at.min(v.len())..at.min(v.len()), std::iter::repeat_n(b'a', n))
                    .for_each(drop);
            }
            _ => {
                let n = rng.below(40);
                v.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
    v
}

/// Sends `input`, half-closes, and reads what comes back until close or a short quiet period.
async fn probe(addr: std::net::SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(input).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            Ok(_) => return out,
            Err(_) => panic!("no answer and no close for {:?}", String::from_utf8_lossy(input)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_requests_never_break_the_proxy() {
    let panics = Arc::new(AtomicUsize::new(0));
    let p2 = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        p2.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let up = RawUpstream::start(|req| {
        if req.header("upgrade").is_some() {
            Action::UpgradeEcho
        } else {
            Action::Respond(ok("ok", ""))
        }
    })
    .await;
    for engine in ENGINES {
        let p = TestProxy::start(&[up.addr], engine, |c| {
            c.header_timeout = std::time::Duration::from_millis(500);
            c.max_header_bytes = 4096;
        })
        .await;
        let mut rng = Rng(0x5eed_0000_0000_0001 ^ engine as u64);
        let mut statuses = std::collections::BTreeMap::new();
        let cases = 1500;
        let mut inputs = Vec::with_capacity(cases);
        for i in 0..cases {
            let input = if i % 10 == 0 {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect::<Vec<u8>>()
            } else {
                let seed = SEEDS[rng.below(SEEDS.len())];
                mutate(&mut rng, seed)
            };
            inputs.push(input);
        }
        for chunk in inputs.chunks(50) {
            let addr = p.addr;
            let answers = futures_join(
                chunk.iter().cloned().map(|input| async move { probe(addr, &input).await }),
            )
            .await;
            for (input, out) in chunk.iter().zip(answers) {
                if out.is_empty() {
                    *statuses.entry("closed".to_string()).or_insert(0) += 1;
                    continue;
                }
                let text = String::from_utf8_lossy(&out);
                if text.starts_with("PRI") || input.starts_with(b"PRI * HTTP/2.0") {
                    // An HTTP/2 preface gets HTTP/2 frames back.
                    *statuses.entry("h2".to_string()).or_insert(0) += 1;
                    continue;
                }
                let status: u16 = text
                    .strip_prefix("HTTP/1.")
                    .and_then(|r| r.get(2..5))
                    .and_then(|s| s.parse().ok())
                    .or_else(|| out.starts_with(&[0, 0]).then_some(0)) // h2 frames
                    .unwrap_or_else(|| {
                        panic!(
                            "{engine:?}: not an HTTP answer to {:?}: {text:?}",
                            String::from_utf8_lossy(input)
                        )
                    });
                *statuses.entry(status.to_string()).or_insert(0) += 1;
                assert!(
                    matches!(status, 0 | 101 | 200 | 400..=499 | 501 | 505),
                    "{engine:?}: {status} for {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        eprintln!("{engine:?}: {statuses:?}");
        // Still serving normal traffic.
        let res = Conn::connect(p.addr).await.request(&get("/")).await.unwrap();
        assert_eq!(res.status, 200);
        wait_until("all connections closed", || p.proxy.open_connections() == 0).await;
        assert_eq!(p.metric("weft_requests_in_flight", &[]), 0.0, "{engine:?}");
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the proxy panicked");
}

async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
