//! Client-facing listeners: HTTP/1.1 and h2c (prior knowledge) on one port,
//! HTTPS (HTTP/1.1 and h2 by ALPN) on another, protocol limits, and
//! graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::drain::{Drain, Registration};
use crate::framing::{ConnFraming, FramingGuard};
use crate::head_deadline::{self, Graceful, HeadClock};
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The head deadline is weir's own (head_deadline.rs): hyper's arms
        // and drops a timer for every request.
        .header_read_timeout(None)
        // hyper's own limits sit above weir's (checked in the handler with a
        // JSON answer), as a backstop against oversized heads.
        .max_headers(proxy.config.max_headers * 2)
        .max_buf_size((proxy.config.max_header_bytes + proxy.config.max_uri_len) * 2 + 8192)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(proxy.config.max_header_bytes * 2).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let connections = Drain::new();
    let proto = listener.proto;
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
                match &acceptor {
                    None => spawn_connection(stream, peer, proto, &proxy, &builder, connections.register()),
                    Some(acceptor) => spawn_tls(stream, peer, acceptor, &proxy, &builder, connections.register()),
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
/// it like any connection. Handshakes that start before a drain are not
/// counted by it; they are cut by the drain deadline at worst.
fn spawn_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    proxy: &Arc<Proxy>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    drain: Registration,
) {
    let accept = acceptor.accept(stream);
    let proxy = proxy.clone();
    let builder = builder.clone();
    let timeout = proxy.config.header_read_timeout;
    tokio::spawn(async move {
        let tls = match tokio::time::timeout(timeout, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                proxy.metrics.tls_handshake_failed();
                tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                return;
            }
            Err(_) => {
                proxy.metrics.tls_handshake_failed();
                tracing::debug!(%peer, "TLS handshake timed out.");
                return;
            }
        };
        serve_io(tls, peer, "https", proxy, builder, drain).await;
    });
}

fn spawn_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    proto: &'static str,
    proxy: &Arc<Proxy>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    drain: Registration,
) {
    tokio::spawn(serve_io(
        stream,
        peer,
        proto,
        proxy.clone(),
        builder.clone(),
        drain,
    ));
}

/// Serves one client connection (plain TCP or established TLS) until it
/// ends or the drain closes it, counted in `weir_open_connections`.
async fn serve_io<IO>(
    io: IO,
    peer: SocketAddr,
    proto: &'static str,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Registration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let framing = Arc::new(ConnFraming::default());
    let clock = HeadClock::new();
    let info = Arc::new(ConnInfo::new(peer, proto, framing.clone(), clock.clone()));
    let service_proxy = proxy.clone();
    let service = service_fn(move |req| {
        let proxy = service_proxy.clone();
        let info = info.clone();
        async move { proxy.handle(req, info).await }
    });
    let io = TokioIo::new(FramingGuard::new(io, framing, clock.clone()));
    // Upgrades only happen when the handler answers 101 (upgrade.rs);
    // other requests pay nothing for them.
    let conn = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    let gauge = &proxy.metrics.open_connections;
    gauge.inc();
    let waits = head_deadline::Waits {
        head: proxy.config.header_read_timeout,
        keepalive: proxy.config.keepalive_timeout,
    };
    let timed_out = |kind| proxy.metrics.client_timed_out(kind);
    match head_deadline::serve_within(conn, &clock, waits, &drain, timed_out).await {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "Connection ended with an error."),
        None => tracing::debug!(%peer, "No request in time; connection closed."),
    }
    gauge.dec();
}

impl<I, B, S, E> Graceful for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}
