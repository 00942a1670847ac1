//! Many watch streams read by one thread with a plain epoll loop (mio).
//!
//! Real watchers live on other machines; here they share two cores with the server they
//! measure, so they must cost as little as possible per event: no task per stream, no wake-up
//! hand-offs, one read per readable socket and a scan of only the bytes that just arrived.

use std::io::{self, Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::http::find;

struct Stream {
    sock: TcpStream,
    buf: Vec<u8>,
    head_done: bool,
    next: usize,
    times: Vec<Instant>,
}

/// What the reader thread reports: per stream, when it saw each round.
pub type Times = Vec<Vec<Instant>>;

/// Opens `count` watch streams (sending `request` on each) and reads them on one thread until
/// every stream has seen `rounds` rounds (a body containing `"round":"<r>"`), or `stop` is set.
/// `connected` counts streams whose response head arrived; `received[r]` counts streams that
/// saw round r.
pub fn spawn(
    addr: String,
    request: Vec<u8>,
    count: usize,
    rounds: usize,
    connected: Arc<AtomicUsize>,
    received: Arc<Vec<AtomicUsize>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<io::Result<Times>> {
    std::thread::spawn(move || {
        let mut poll = Poll::new()?;
        let mut streams = Vec::with_capacity(count);
        for i in 0..count {
            let mut s = StdStream::connect(&addr)?;
            s.set_nodelay(true)?;
            s.write_all(&request)?;
            s.set_nonblocking(true)?;
            let mut sock = TcpStream::from_std(s);
            poll.registry().register(&mut sock, Token(i), Interest::READABLE)?;
            streams.push(Stream {
                sock,
                buf: Vec::with_capacity(1024),
                head_done: false,
                next: 1,
                times: Vec::new(),
            });
        }
        let needles: Vec<Vec<u8>> =
            (0..=rounds).map(|r| format!("\"round\":\"{r}\"").into_bytes()).collect();
        let mut events = Events::with_capacity(4096);
        let mut chunk = vec![0u8; 16384];
        let mut done = 0;
        while done < count && !stop.load(Ordering::Relaxed) {
            poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            for ev in events.iter() {
                let s = &mut streams[ev.token().0];
                loop {
                    match s.sock.read(&mut chunk) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "a watch stream closed",
                            ));
                        }
                        Ok(n) => {
                            let mut from = s.buf.len();
                            s.buf.extend_from_slice(&chunk[..n]);
                            if !s.head_done {
                                let Some(end) = find(&s.buf, b"\r\n\r\n") else { continue };
                                if !s.buf.starts_with(b"HTTP/1.1 200") {
                                    let head = String::from_utf8_lossy(&s.buf[..end]).to_string();
                                    return Err(io::Error::other(format!("watch refused: {head}")));
                                }
                                s.head_done = true;
                                s.buf.drain(..end + 4);
                                from = 0;
                                connected.fetch_add(1, Ordering::Relaxed);
                            }
                            while s.next <= rounds {
                                let needle = &needles[s.next];
                                let Some(at) =
                                    find(&s.buf[from.saturating_sub(needle.len())..], needle)
                                else {
                                    break;
                                };
                                s.times.push(Instant::now());
                                received[s.next].fetch_add(1, Ordering::Relaxed);
                                let consumed =
                                    from.saturating_sub(needle.len()) + at + needle.len();
                                s.buf.drain(..consumed);
                                from = 0;
                                s.next += 1;
                                if s.next > rounds {
                                    done += 1;
                                }
                            }
                            if s.buf.len() > 4096 {
                                let keep = s.buf.len() - 64;
                                s.buf.drain(..keep);
                            }
                            // A short read emptied the socket; with edge-triggered readiness a
                            // later arrival raises a new event, so no second read is needed.
                            if n < chunk.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(streams.into_iter().map(|s| s.times).collect())
    })
}
