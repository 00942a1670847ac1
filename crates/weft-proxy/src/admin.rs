//! The admin listener: `/metrics` (Prometheus text), `/ready`, `/live`, `/config` (the effective
//! configuration; for a sidecar also `routes`: services, endpoints with their health, inbound
//! routes, at the revision being served; for a gateway `routes.ingress`, in the order they are
//! tried, and the services behind them).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::Proxy;

pub(crate) async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(handle(&proxy, &req)) }
            });
            let mut builder = http1::Builder::new();
            builder.keep_alive(true);
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn handle(proxy: &Proxy, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            proxy.refresh_gauges();
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                proxy.metrics().encode(),
            )
        }
        "/ready" if proxy.is_ready() => text(StatusCode::OK, PLAIN, "ready\n"),
        "/ready" if proxy.drain.is_draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "draining\n")
        }
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "waiting for the first configuration from the control plane\n",
        ),
        "/live" => text(StatusCode::OK, PLAIN, "live\n"),
        "/config" => {
            let mut json = serde_json::to_value(proxy.config()).unwrap_or_default();
            if let (crate::proxy::Mode::Sidecar(s), Some(obj)) = (&proxy.mode, json.as_object_mut())
            {
                // The plain proxy's fields say nothing about a sidecar.
                for plain in ["listen", "upstreams", "service", "direction"] {
                    obj.remove(plain);
                }
                obj.insert("routes".into(), s.snapshot.load().describe(std::time::Instant::now()));
            }
            match serde_json::to_vec_pretty(&json) {
                Ok(body) => text(StatusCode::OK, "application/json", body),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, "cannot encode config\n"),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /metrics, /ready, /live or /config\n",
        ),
    }
}
