//! Binding listeners and accepting connections until the drain starts.
//!
//! The accept loop hands each connection to a handler; the HTTP proxy is one handler, an opaque
//! TCP forwarder (later, with configuration) is another.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::drain::Drain;

/// A listener that cannot be bound, said in one line with what to do about it, e.g. `cannot
/// listen for the gateway on 127.0.0.1:8080: address already in use; pick another with
/// --gateway`. Embedders (`weft up`) can find it in an `anyhow` chain with `downcast_ref`.
#[derive(Debug)]
pub struct BindError {
    /// Which listener: `the gateway`, `the outbound listener`, `inbound port http`, ...
    pub what: String,
    /// The flag that sets its address (`--gateway`).
    pub flag: &'static str,
    pub addr: SocketAddr,
    pub error: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, addr, flag) = (&self.what, self.addr, self.flag);
        // The OS's text ("Address already in use (os error 98)") is for programmers.
        let reason = match self.error.kind() {
            io::ErrorKind::AddrInUse => "address already in use; pick another with ",
            io::ErrorKind::AddrNotAvailable => {
                "no such address on this machine; pick another with "
            }
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges); pick another with "
            }
            _ => return write!(f, "cannot listen for {what} on {addr}: {}", self.error),
        };
        write!(f, "cannot listen for {what} on {addr}: {reason}{flag}")
    }
}

impl std::error::Error for BindError {}

/// Binds a listening socket (SO_REUSEADDR, a deep backlog). Call inside a tokio runtime.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts connections and hands each to `on_conn` until the drain starts; then the listener is
/// closed, so new connections are refused.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    drain: &Drain,
    mut on_conn: impl FnMut(TcpStream, SocketAddr),
) {
    let mut signaled = pin!(drain.signaled());
    loop {
        tokio::select! {
            biased;
            () = &mut signaled => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => on_conn(stream, peer),
                Err(e) if is_per_connection(&e) => {}
                // Out of file descriptors or memory: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
