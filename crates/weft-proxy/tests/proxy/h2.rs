//! HTTP/2 with prior knowledge (h2c) end to end, gRPC-style trailers included.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A body made of fixed frames (data, then trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// An h2c upstream answering like a gRPC server: the request body echoed back, then trailers
/// with `grpc-status` (taken from the request's `x-status`, default 0).
async fn grpc_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let status = req
                        .headers()
                        .get("x-status")
                        .cloned()
                        .unwrap_or(HeaderValue::from_static("0"));
                    let te = req.headers().get("te").cloned();
                    let body =
                        req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", status);
                    trailers.insert("grpc-message", HeaderValue::from_static("done"));
                    let mut res = Response::new(Frames(VecDeque::from([
                        Frame::data(body),
                        Frame::trailers(trailers),
                    ])));
                    res.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    if let Some(te) = te {
                        res.headers_mut().insert("x-saw-te", te);
                    }
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2c_round_trip_preserves_grpc_trailers() {
    let up = grpc_upstream().await;
    let p = TestProxy::start(&[up], Engine::Fast, |_| {}).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (i, status) in ["0", "14", "0"].iter().enumerate() {
        let req = Request::post(format!("http://svc.test/pkg.Service/Method{i}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-status", *status)
            .body(Full::new(Bytes::from(format!("payload-{i}"))))
            .unwrap();
        let res = within("h2 response", tx.send_request(req)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.headers()["x-saw-te"], "trailers");
        let collected = within("h2 body", res.into_body().collect()).await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive at the client");
        assert_eq!(trailers["grpc-status"], *status);
        assert_eq!(trailers["grpc-message"], "done");
        assert_eq!(collected.to_bytes(), format!("payload-{i}"));
    }
    assert_eq!(p.metric("weft_grpc_responses_total", &["grpc_status=\"0\""]), 2.0);
    assert_eq!(p.metric("weft_grpc_responses_total", &["grpc_status=\"14\""]), 1.0);
    assert_eq!(p.metric("weft_requests_total", &["code=\"200\""]), 3.0);
}

#[tokio::test]
async fn h2c_to_an_unreachable_upstream_is_502() {
    let p = TestProxy::start(&[closed_port().await], Engine::Fast, |_| {}).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://svc.test/").body(Full::new(Bytes::new())).unwrap();
    let res = within("h2 response", tx.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 502);
}

#[tokio::test]
async fn grpc_through_a_sidecar_upstream_port_and_the_outbound_listener() {
    let up = grpc_upstream().await;
    let yaml = format!(
        "outbound: {{ listen: 127.0.0.1:0 }}\nupstreams: [ {{ service: orders, port: grpc, listen: 127.0.0.1:0 }} ]\nobjects:\n{}{}",
        service_yaml("orders", "default", "[ { name: grpc, port: 9090, protocol: grpc } ]", "{}"),
        endpoints_yaml("orders", "default", "grpc", &[up]),
    );
    let p = TestSidecar::start(&yaml, Engine::Fast).await;
    // The fixed port ignores the authority; the outbound listener routes by it.
    for (listener, authority) in [("upstream:orders", "anything.test"), ("outbound", "orders:9090")]
    {
        let stream = TcpStream::connect(p.addr(listener)).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post(format!("http://{authority}/pkg.Orders/Get"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-status", "5")
            .body(Full::new(Bytes::from("order-1")))
            .unwrap();
        let res = within("h2 response", tx.send_request(req)).await.unwrap();
        assert_eq!(res.status(), 200, "{listener}");
        let collected = within("h2 body", res.into_body().collect()).await.unwrap();
        assert_eq!(collected.trailers().cloned().unwrap()["grpc-status"], "5", "{listener}");
        assert_eq!(collected.to_bytes(), "order-1");
    }
    assert_eq!(
        p.metric("weft_grpc_responses_total", &["service=\"orders\"", "grpc_status=\"5\""]),
        2.0
    );
}
