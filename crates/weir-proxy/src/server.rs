//! Client-facing listeners: HTTP/1.1 and h2c (prior knowledge) on one port,
//! HTTPS (HTTP/1.1 and h2 by ALPN) on another, and the graceful drain on
//! shutdown. HTTP/1 connections are served by weir's own server half
//! (http1/server.rs); HTTP/2 ones, recognised by their preface or by ALPN,
//! by hyper's.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::drain::{Drain, Registration};
use crate::headers::{Present, X_REQUEST_ID};
use crate::http1::server::{self as h1, Ended};
use crate::http2_idle::{self, Graceful, IdleClock};
use crate::metrics::ClientTimeout;
use crate::request_body::ClientBody;
use crate::rewind::Rewind;
use crate::{ConnInfo, Proxy};

/// A bound listener and what it serves.
pub struct Listener {
    /// The bound socket.
    pub socket: TcpListener,
    /// `http` or `https`, for `X-Forwarded-Proto` and redirects.
    pub proto: &'static str,
    /// Terminate TLS with this configuration (the HTTPS listener).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What every connection of a listener shares.
struct Shared {
    proxy: Arc<Proxy>,
    proto: &'static str,
    http1: h1::Limits,
    http2: http2::Builder<TokioExecutor>,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits up to `drain` for in-flight requests and relayed (upgraded)
/// connections; connections still open after that are closed. Returns how
/// many connections were cut off.
pub async fn serve(
    listener: Listener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> usize {
    let config = &proxy.config;
    let http1 = h1::Limits {
        head: config.header_read_timeout,
        keepalive: config.keepalive_timeout,
        send: config.client_send_timeout,
        // A backstop above the handler's own limits (checked with a JSON
        // answer), against heads that would fill memory.
        max_head: (config.max_header_bytes + config.max_uri_len) * 2 + 8192,
        max_line: config.max_uri_len + 64,
        max_fields: config.max_headers,
        detect_http2: listener.tls.is_none(),
    };
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(config.max_header_bytes * 2).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let shared = Arc::new(Shared {
        proxy: proxy.clone(),
        proto: listener.proto,
        http1,
        http2,
    });
    let connections = Drain::new();
    let acceptor = listener.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.socket.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "Accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let registration = connections.register();
                match &acceptor {
                    None => {
                        tokio::spawn(serve_connection(stream, peer, shared.clone(), registration, false));
                    }
                    Some(acceptor) => spawn_tls(stream, peer, acceptor, &shared, registration),
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = connections.open();
    tracing::info!(
        open,
        upgraded = proxy.relays_open(),
        "Draining connections."
    );
    connections.start();
    let drained = async {
        connections.closed().await;
        proxy.relays_ended().await;
    };
    tokio::select! {
        () = drained => { tracing::info!("All connections drained."); 0 }
        () = tokio::time::sleep(drain) => {
            tracing::warn!("Drain deadline reached; closing the remaining connections.");
            open + proxy.relays_open()
        }
    }
}

/// Finishes the TLS handshake in the connection's own task (within the
/// header-read timeout, so a silent client cannot hold a slot), then serves
/// the protocol ALPN chose. Handshakes that start before a drain are
/// counted by it and cut by the drain deadline at worst.
fn spawn_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    shared: &Arc<Shared>,
    registration: Registration,
) {
    let accept = acceptor.accept(stream);
    let shared = shared.clone();
    let timeout = shared.proxy.config.header_read_timeout;
    tokio::spawn(async move {
        let tls = match tokio::time::timeout(timeout, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                shared.proxy.metrics.tls_handshake_failed();
                tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                return;
            }
            Err(_) => {
                shared.proxy.metrics.tls_handshake_failed();
                tracing::debug!(%peer, "TLS handshake timed out.");
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        serve_connection(tls, peer, shared, registration, h2).await;
    });
}

/// Serves one client connection (plain TCP or established TLS) until it
/// ends or the drain closes it, counted in `weir_open_connections`.
///
/// The two servers' futures are boxed: unboxed they made this future, the
/// connection's task, about 8 KB, and spawning it copied all of it about
/// eight times (measured with a uprobe on memmove: 74 KB copied per
/// connection, 21 KB boxed; 4 % less CPU per request on connections that
/// carry one request each, `CLOSE=1 bench/cpu-split.sh`).
async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    shared: Arc<Shared>,
    drain: Registration,
    http2: bool,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let proxy = &shared.proxy;
    let gauge = &proxy.metrics.open_connections;
    gauge.inc();
    if http2 {
        Box::pin(serve_http2(io, Bytes::new(), peer, &shared, &drain)).await;
    } else {
        let info = ConnInfo::new(peer, shared.proto, None);
        let served = Box::pin(h1::serve(io, proxy, &info, &drain, shared.http1));
        if let Ended::Http2(io, read) = served.await {
            Box::pin(serve_http2(io, read, peer, &shared, &drain)).await;
        }
    }
    gauge.dec();
}

/// Serves an HTTP/2 connection with hyper, `read` being what was read of
/// it already (the preface, on a plain-text listener).
async fn serve_http2<IO>(
    io: IO,
    read: Bytes,
    peer: SocketAddr,
    shared: &Shared,
    drain: &Registration,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let clock = IdleClock::new();
    let info = Arc::new(ConnInfo::new(peer, shared.proto, Some(clock.clone())));
    let proxy = shared.proxy.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        let info = info.clone();
        async move {
            let present = Present::scan(req.headers());
            let req = req.map(ClientBody::H2);
            let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
            let answer = proxy.handle(req, present, &info, timer).await;
            let mut resp = answer.response;
            if let Some(fields) = answer.fields {
                fields.append_to(resp.headers_mut());
            }
            resp.headers_mut()
                .insert(X_REQUEST_ID.clone(), answer.request_id);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = shared
        .http2
        .serve_connection(TokioIo::new(Rewind::new(io, read)), service);
    let config = &shared.proxy.config;
    let waits = http2_idle::Waits {
        keepalive: config.keepalive_timeout,
        grace: config.header_read_timeout,
    };
    let idled = || {
        shared
            .proxy
            .metrics
            .client_timed_out(ClientTimeout::Http2Idle)
    };
    match http2_idle::serve_within(conn, &clock, waits, drain, idled).await {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error.")
        }
        None => tracing::debug!(%peer, "Idle HTTP/2 connection did not close; dropped."),
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}
