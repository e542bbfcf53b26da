//! The admin listener: `/healthz` (the process is alive), `/readyz` (a
//! snapshot is installed, its remote JWKS are fetched, the listeners are
//! bound and no shutdown has begun)
//! and `/metrics` (Prometheus text). It never passes through routing or
//! policies, and it is a separate port so it can stay off the public Service.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: Arc<AtomicBool>,
    proxy: Arc<weir_proxy::Proxy>,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new((registry, ready, proxy));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&req, &state.0, &state.1, &state.2)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    registry: &Registry,
    ready: &AtomicBool,
    proxy: &weir_proxy::Proxy,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap_or_default()
    };
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if !ready.load(Ordering::Acquire) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
        "/readyz" if !proxy.ready() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for JWKS\n",
        ),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let mut buf = Vec::with_capacity(16 * 1024);
            let encoder = TextEncoder::new();
            if encoder.encode(&registry.gather(), &mut buf).is_err() {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n",
                );
            }
            Response::builder()
                .header(header::CONTENT_TYPE, encoder.format_type())
                .body(Full::new(Bytes::from(buf)))
                .unwrap_or_default()
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
