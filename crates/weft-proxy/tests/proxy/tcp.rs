//! Opaque TCP for `protocol: tcp` ports: bytes relayed as they are, server-speaks-first works
//! at once.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A server that greets each client first, then echoes.
async fn banner_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(b"220 hello\r\n").await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn read_exact_within(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within("bytes from the relay", s.read_exact(&mut buf)).await.unwrap();
    buf
}

#[tokio::test]
async fn tcp_passthrough_inbound_and_upstream_port() {
    let server = banner_echo().await;
    let yaml = format!(
        "labels: {{ deployment: db }}\n\
         inbound: [ {{ port: db, listen: 127.0.0.1:0, app: {server}, protocol: tcp }} ]\n\
         upstreams: [ {{ service: db, listen: 127.0.0.1:0 }} ]\n\
         objects:\n{}{}",
        service_yaml("db", "default", "[ { name: db, port: 5432, protocol: tcp } ]", "{}"),
        endpoints_yaml("db", "default", "db", &[server]),
    );
    let p = TestSidecar::start(&yaml, Engine::Fast).await;
    for label in ["inbound:db", "upstream:db"] {
        let mut s = TcpStream::connect(p.addr(label)).await.unwrap();
        // The server speaks first: nothing is sent before the banner arrives.
        assert_eq!(read_exact_within(&mut s, 11).await, b"220 hello\r\n", "{label}");
        s.write_all(b"not http at all\0\xff").await.unwrap();
        assert_eq!(read_exact_within(&mut s, 17).await, b"not http at all\0\xff", "{label}");
    }
    // Closed by the clients: the relays end and are no longer counted.
    wait_until("relays closed", || p.proxy.open_connections() == 0).await;
    assert_eq!(p.metric("weft_tcp_connections", &["service=\"db\"", "peer=\"downstream\""]), 0.0);
}

#[tokio::test]
async fn tcp_connect_failures_are_retried_on_another_endpoint() {
    let server = banner_echo().await;
    let closed = closed_port().await;
    let yaml = format!(
        "upstreams: [ {{ service: db, listen: 127.0.0.1:0 }} ]\nobjects:\n{}{}",
        service_yaml(
            "db",
            "default",
            "[ { name: db, port: 5432, protocol: tcp } ]",
            "{ loadBalancer: round-robin }"
        ),
        endpoints_yaml("db", "default", "db", &[closed, server]),
    );
    let p = TestSidecar::start(&yaml, Engine::Fast).await;
    for _ in 0..4 {
        let mut s = TcpStream::connect(p.addr("upstream:db")).await.unwrap();
        assert_eq!(read_exact_within(&mut s, 11).await, b"220 hello\r\n");
    }
    assert!(p.metric("weft_retries_total", &["service=\"db\""]) >= 1.0);
}
