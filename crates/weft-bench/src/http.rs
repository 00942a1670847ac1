//! A minimal HTTP/1.1 keep-alive client for load generation.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Builds the bytes of one request.
pub fn request(method: &str, path: &str, token: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.map_or(0, <[u8]>::len)
    )
    .into_bytes();
    if let Some(b) = body {
        r.extend_from_slice(b);
    }
    r
}

impl Conn {
    pub async fn connect(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(8192) })
    }

    /// Sends a request and reads the response; returns the status code and body.
    pub async fn roundtrip(&mut self, req: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head =
                    std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("non-UTF-8 header"))?;
                let status: u16 =
                    head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .ok_or_else(|| bad("response without Content-Length"))?;
                let total = end + 4 + len;
                while self.buf.len() < total {
                    let n = self.stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(bad("connection closed mid-body"));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Ok((status, self.buf[end + 4..total].to_vec()));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        // Jump between candidate first bytes rather than comparing every window.
        let at = hay[i..=hay.len() - needle.len()].iter().position(|b| *b == first)?;
        let start = i + at;
        if &hay[start + 1..start + needle.len()] == rest {
            return Some(start);
        }
        i = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds() {
        assert_eq!(super::find(b"abcabd", b"abd"), Some(3));
        assert_eq!(super::find(b"ab", b"abd"), None);
        assert_eq!(super::find(b"xx\"round\":\"1\"", b"\"round\":\"1\""), Some(2));
    }
}
