//! A connection that is plain TCP or TLS over TCP, for the code paths that serve both (client
//! connections of inbound listeners, upstream connections to other sidecars). The plain case
//! is one branch per poll on top of the `TcpStream`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// Plain TCP or TLS.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsConn>),
}

/// A TLS stream and the decrypted bytes [`Conn::peek`] has read ahead.
pub(crate) struct TlsConn {
    io: TlsStream<TcpStream>,
    ahead: Vec<u8>,
    pos: usize,
    /// The client's verified identity (inbound connections).
    peer: Option<weft_ca::SpiffeId>,
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Conn {
        Conn::Tcp(s)
    }
}

impl Conn {
    pub(crate) fn tls(io: TlsStream<TcpStream>) -> Conn {
        Conn::Tls(Box::new(TlsConn { io, ahead: Vec::new(), pos: 0, peer: None }))
    }

    pub(crate) fn set_peer(&mut self, peer: Option<weft_ca::SpiffeId>) {
        if let Conn::Tls(t) = self {
            t.peer = peer;
        }
    }

    /// The verified identity of the client of an accepted mTLS connection; `None` for
    /// plaintext.
    pub(crate) fn peer(&self) -> Option<&weft_ca::SpiffeId> {
        match self {
            Conn::Tcp(_) => None,
            Conn::Tls(t) => t.peer.as_ref(),
        }
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nodelay(on),
            Conn::Tls(t) => t.io.get_ref().0.set_nodelay(on),
        }
    }

    /// Like `TcpStream::peek`: the next bytes without consuming them (TLS: decrypted, kept
    /// for the next reads). 0 means the peer closed.
    pub(crate) async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.peek(buf).await,
            Conn::Tls(t) => {
                if t.pos >= t.ahead.len() {
                    t.ahead.clear();
                    t.pos = 0;
                    let mut chunk = vec![0u8; buf.len().max(1)];
                    let n = t.io.read(&mut chunk).await?;
                    t.ahead.extend_from_slice(&chunk[..n]);
                }
                let avail = &t.ahead[t.pos..];
                let n = avail.len().min(buf.len());
                buf[..n].copy_from_slice(&avail[..n]);
                Ok(n)
            }
        }
    }

    /// Whether the connection is TLS.
    #[allow(dead_code)]
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

impl AsyncRead for Conn {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(t) => {
                if t.pos < t.ahead.len() {
                    let avail = &t.ahead[t.pos..];
                    let n = avail.len().min(buf.remaining());
                    buf.put_slice(&avail[..n]);
                    t.pos += n;
                    if t.pos >= t.ahead.len() {
                        t.ahead = Vec::new();
                        t.pos = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                Pin::new(&mut t.io).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Conn {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(t) => Pin::new(&mut t.io).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(t) => Pin::new(&mut t.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Tls(t) => t.io.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(t) => Pin::new(&mut t.io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(t) => Pin::new(&mut t.io).poll_shutdown(cx),
        }
    }
}
