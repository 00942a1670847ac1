//! The accept loop: hyper directly rather than `axum::serve`, for the knobs a control plane
//! needs: TCP_NODELAY (watch events are small writes that must not wait for Nagle), a header
//! read timeout (a client that trickles its headers cannot hold a connection forever), and
//! graceful shutdown with a deadline.

use std::future::Future;
use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client has to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` until `signal` resolves, then stops accepting and waits up to `grace` for
/// open connections to finish. With `tls`, every connection is TLS (a plaintext request gets
/// one 400 saying so). Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    signal: impl Future<Output = ()>,
    grace: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let local = listener.local_addr().ok();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                    router.clone(),
                    move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        req
                    },
                ));
                match &acceptor {
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs in the connection's task, so a slow client holds
                        // up nobody else; the connection joins graceful shutdown once it is up.
                        let acceptor = acceptor.clone();
                        let builder = builder.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            serve_tls(stream, acceptor, builder, service, watcher, local, peer).await;
                        });
                    }
                }
            }
            _ = &mut signal => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("connections still open after the grace period; stopping anyway");
        }
    }
}

async fn serve_tls<S>(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    builder: Builder<TokioExecutor>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    local: Option<SocketAddr>,
    peer: SocketAddr,
) where
    S: hyper::service::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    match crate::tls::starts_with_tls(&stream).await {
        Ok(true) => {}
        Ok(false) => return crate::tls::refuse_plaintext(stream, local).await,
        Err(_) => return,
    }
    let tls =
        match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // Usually a client that does not trust the certificate; it says so itself.
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    let _ = watcher.watch(conn.into_owned()).await;
}
