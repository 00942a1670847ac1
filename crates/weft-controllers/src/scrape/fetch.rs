//! A minimal HTTP/1.1 GET for scraping `/metrics` from admin listeners (`host:port`, no TLS,
//! no auth). Written on plain tokio sockets because that is all a scrape needs: one request per
//! connection (`Connection: close`), a body read by `Content-Length`, chunks, or to EOF, and
//! one deadline over the whole exchange so that a stuck peer costs at most `timeout`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bodies past this are refused: a metrics page is kilobytes, and a runaway peer must not make
/// the controllers hold megabytes per scrape.
pub const MAX_BODY: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("reading the answer: {0}")]
    Io(std::io::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("answer is larger than {MAX_BODY} bytes")]
    TooLarge,
}

/// GETs `path` from `addr` (`host:port`, an `http://` prefix is accepted) and returns the body
/// of a 200 as text.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<String, FetchError> {
    tokio::time::timeout(timeout, exchange(addr, path))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn exchange(addr: &str, path: &str) -> Result<String, FetchError> {
    let host = addr.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(host).await.map_err(FetchError::Connect)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(FetchError::Io)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(FetchError::Io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_BODY + 64 * 1024 {
            return Err(FetchError::TooLarge);
        }
        // Stop as soon as a Content-Length body is complete: a peer that ignores
        // `Connection: close` must not hold us until the deadline.
        if let Some((head_len, Some(len))) = head_and_length(&buf)
            && buf.len() >= head_len + len
        {
            break;
        }
    }
    decode(&buf)
}

/// The head's length (with the blank line) and its Content-Length, once the head is complete.
fn head_and_length(buf: &[u8]) -> Option<(usize, Option<usize>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let len = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
    });
    Some((end, len))
}

/// Decodes a complete response.
pub(crate) fn decode(buf: &[u8]) -> Result<String, FetchError> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| FetchError::Malformed("no complete response head".into()))?;
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| FetchError::Malformed("response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| FetchError::Malformed(format!("bad status line {status_line:?}")))?;
    if code != 200 {
        return Err(FetchError::Status(code));
    }
    let (mut length, mut chunked) = (None, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| FetchError::Malformed(format!("bad Content-Length {v:?}")))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = &buf[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = length {
        if body.len() < len {
            return Err(FetchError::Malformed(format!(
                "body cut short: {} of {len} bytes",
                body.len()
            )));
        }
        body[..len].to_vec()
    } else {
        body.to_vec()
    };
    if body.len() > MAX_BODY {
        return Err(FetchError::TooLarge);
    }
    String::from_utf8(body).map_err(|_| FetchError::Malformed("body is not UTF-8".into()))
}

fn dechunk(mut s: &[u8]) -> Result<Vec<u8>, FetchError> {
    let bad = |m: &str| FetchError::Malformed(format!("chunked body: {m}"));
    let mut out = Vec::new();
    loop {
        let line_end = s.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("cut short"))?;
        let size_text = std::str::from_utf8(&s[..line_end]).map_err(|_| bad("bad size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad size"))?;
        s = &s[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if s.len() < size + 2 {
            return Err(bad("cut short"));
        }
        out.extend_from_slice(&s[..size]);
        if out.len() > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        s = &s[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_length_chunked_and_eof_bodies() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello, and more";
        assert_eq!(decode(r).unwrap(), "hello");
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n";
        assert_eq!(decode(r).unwrap(), "hello");
        let r = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert_eq!(decode(r).unwrap(), "hello");
        assert!(matches!(decode(b"HTTP/1.1 503 No\r\n\r\n"), Err(FetchError::Status(503))));
        assert!(matches!(decode(b"garbage"), Err(FetchError::Malformed(_))));
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort";
        assert!(matches!(decode(r), Err(FetchError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_silent_peer_costs_only_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let t = std::time::Instant::now();
        let e = get(&addr, "/metrics", Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, FetchError::Timeout(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        hold.abort();
    }
}
