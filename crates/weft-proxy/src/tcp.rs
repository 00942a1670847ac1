//! Opaque TCP for `protocol: tcp` ports: bytes are relayed both ways, only connections are
//! counted. The upstream connection is opened as soon as the client connects, before anything
//! is read, so protocols where the server speaks first (SMTP, MySQL, Redis banners) work at
//! once: nothing waits to detect a protocol that the Service port already declares.
//!
//! Endpoint choice, connect-failure retries (to other endpoints, within the retry policy and
//! budget), outlier detection and the connection limit of the circuit breaker apply as for
//! HTTP; a relay ends when either side closes, or when the drain's grace period is over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use weft_traffic::FailureKind;

use crate::cluster::{Cluster, InFlight};
use crate::metrics::ErrorKind;
use crate::pool::connect_counted;
use crate::proxy::Proxy;
use crate::tls::Conn;

/// Relays one accepted connection to an endpoint of `cluster`.
pub(crate) async fn relay(proxy: Arc<Proxy>, cluster: Arc<Cluster>, mut client: Conn) {
    let _guard = proxy.drain.track(&cluster.svc().downstream_connections);
    let _ = client.set_nodelay(true);
    let policy = &cluster.policy;
    let start = Instant::now();
    policy.request_started(start);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries = 0u32;
    let (mut upstream, _counted, ep) = loop {
        let now = Instant::now();
        let Some(ep) = cluster.pick(now, None, &tried) else {
            cluster.svc().error(ErrorKind::NoEndpoint);
            return;
        };
        let addr = ep.id.0.addr;
        tried.push(addr);
        match connect_counted(
            addr,
            &cluster,
            proxy.config.connect_timeout,
            proxy.config.mtls.mesh.as_deref(),
        )
        .await
        {
            Ok((s, counted)) => break (s, counted, ep),
            Err(e) if !e.is_endpoint_error() => {
                cluster.svc().error(ErrorKind::Overloaded);
                return;
            }
            Err(_) => {
                let now = Instant::now();
                cluster.record_failure(ep, now);
                // A connection that was never made is safe to retry for any protocol.
                if policy.retry("CONNECT", FailureKind::ConnectFailure, retries + 1, now) {
                    retries += 1;
                    continue;
                }
                cluster.svc().error(ErrorKind::UpstreamConnect);
                return;
            }
        }
    };
    cluster.record_success(ep);
    let _in_flight = InFlight::begin(&ep.stats, start);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = proxy.drain.forced() => {}
    }
}
