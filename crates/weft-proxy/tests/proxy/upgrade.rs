//! `Upgrade` passthrough: a WebSocket handshake and echo through the proxy.

use crate::support::*;

#[tokio::test]
async fn websocket_upgrade_echo() {
    for engine in ENGINES {
        let up = RawUpstream::start(|req| {
            if req.header("upgrade") == Some("websocket") {
                Action::UpgradeEcho
            } else {
                Action::Respond(ok("plain", ""))
            }
        })
        .await;
        let p = TestProxy::start(&[up.addr], engine, |_| {}).await;
        let mut conn = Conn::connect(p.addr).await;
        conn.send(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let head = within("101", conn.read_head()).await.unwrap();
        assert_eq!(head.status, 101, "{engine:?}");
        assert_eq!(head.header("upgrade"), Some("websocket"));
        assert!(head.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
        let req = up.last_request();
        assert_eq!(req.header("upgrade"), Some("websocket"), "the upstream sees the upgrade");
        assert_eq!(req.header("sec-websocket-key"), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        for msg in ["hello", "tunnel works", "bye"] {
            conn.send(msg.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            while got.len() < msg.len() {
                let mut b = [0u8; 64];
                let n = within("echo", tokio::io::AsyncReadExt::read(&mut conn.stream, &mut b))
                    .await
                    .unwrap();
                assert!(n > 0, "tunnel closed");
                got.extend_from_slice(&b[..n]);
            }
            assert_eq!(got, msg.as_bytes(), "{engine:?}");
        }
        assert_eq!(p.metric("weft_requests_total", &["code=\"101\""]), 1.0);
    }
}
