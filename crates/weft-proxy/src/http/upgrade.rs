//! `Upgrade` passthrough (WebSocket and friends): the request goes to the upstream on a
//! connection of its own; if the upstream answers 101, both sides become one byte tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{Exchange, ProxyBody};
use super::forward::{Failure, fail, prepare_h1, respond};
use crate::cluster::Cluster;

pub(crate) async fn forward(
    ex: Exchange,
    addr: SocketAddr,
    cluster: &Arc<Cluster>,
    deadline: Instant,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let ctx = ex.ctx().clone();
    let worker = &ctx.worker;
    let timeout = deadline.saturating_duration_since(Instant::now());
    let client_side = hyper::upgrade::on(&mut req);
    prepare_h1(&mut req, &addr.to_string());
    let sent = tokio::time::timeout(timeout, async {
        let mut tx = worker.pool.connect_h1(addr, cluster).await.map_err(Failure::Connect)?;
        tx.send_request(req).await.map_err(Failure::Upstream)
    })
    .await;
    let mut res = match sent {
        Ok(Ok(res)) => res,
        Ok(Err(failure)) => return fail(ex, failure),
        Err(_) => {
            return ex.local(
                StatusCode::GATEWAY_TIMEOUT,
                Some(crate::metrics::ErrorKind::UpstreamTimeout),
                "upstream timed out\n",
            );
        }
    };
    let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let upstream_side = hyper::upgrade::on(&mut res);
        let tunnel_ctx = ctx.clone();
        tokio::spawn(async move {
            let drain = &tunnel_ctx.worker.proxy.drain;
            let (Ok(client), Ok(upstream)) = tokio::join!(client_side, upstream_side) else {
                return;
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                () = drain.forced() => {}
            }
            // The tunnel counted as the client connection until here.
            drop(tunnel_ctx);
        });
    }
    respond(ex, res, switching, http::Version::HTTP_11)
}
