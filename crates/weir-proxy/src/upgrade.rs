//! HTTP/1.1 protocol upgrades (WebSocket, RFC 6455 §4; RFC 9110 §7.8):
//! which requests may switch protocols, and the byte relay after the
//! upstream has switched.
//!
//! ```text
//!  client ──GET, Connection: upgrade, Upgrade: websocket──▶ weir ──(same, own connection)──▶ upstream
//!  client ◀──────────── 101 Switching Protocols ─────────── weir ◀──────── 101 ──────────── upstream
//!  client ◀════════════════ bytes both ways (relay) ════════════════════════════════════▶ upstream
//! ```
//!
//! `Upgrade` and `Connection` are hop-by-hop, so weir passes them on only
//! for an upgrade it will relay: an HTTP/1.1 request without a body, on a
//! route whose upstream speaks HTTP/1.1. The request goes through routing
//! and every policy like any other, on an upstream connection of its own
//! (after a 101 the connection belongs to the relay and never returns to a
//! pool). Only an upstream's `101` starts the relay; any other answer is
//! proxied as a normal response and the client's connection stays HTTP.
//!
//! `Upgrade: h2c` is never passed on: an upstream that accepted it would
//! read every later request on the relayed connection directly, past
//! weir's routing and policies ("h2c smuggling"). Such a request is
//! forwarded without its upgrade, as any other request.
//!
//! A relay ends, closing both connections, when either side has closed and
//! everything it sent before has been written to the other (as nginx's
//! upgraded mode does; a WebSocket has its own closing handshake, so a
//! half-open connection serves nobody), or when no byte has moved either
//! way for the route's timeout: ingress-nginx's `proxy-read-timeout`,
//! which closes idle WebSockets there too.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use http::{Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::headers::has_token;
use crate::rewind::Rewind;

/// A client connection that has switched protocols: the stream, with what
/// the client sent after its upgrade request put back in front.
pub(crate) type Upgraded = Box<dyn Stream>;

/// What a relayed stream is.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// `io` after the 101 was written; `read` is what had been read of it
/// beyond the request.
pub(crate) fn upgraded<IO>(io: IO, read: Bytes) -> Upgraded
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    Box::new(Rewind::new(io, read))
}

/// How a request that may switch protocols gets its client connection once
/// the 101 has been written: put in the request's extensions by the
/// HTTP/1 server (http1/server.rs), taken by the handler. Extensions must
/// be `Clone`; the one receiver goes to whoever takes it first.
#[derive(Clone)]
pub(crate) struct ClientUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl ClientUpgrade {
    pub(crate) fn new(rx: oneshot::Receiver<Upgraded>) -> Self {
        ClientUpgrade(Arc::new(Mutex::new(Some(rx))))
    }

    fn take(&self) -> Option<oneshot::Receiver<Upgraded>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The `Upgrade` value to pass on when `req` asks to switch protocols in a
/// way weir relays; `None` means the request is forwarded as plain HTTP.
pub(crate) fn requested<B: hyper::body::Body>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    // Most requests stop at this one lookup.
    let headers = req.headers();
    let mut values = headers.get_all(UPGRADE).iter();
    let value = values.next()?;
    if values.next().is_some()
        || !has_token(headers, CONNECTION, "upgrade")
        || !req.body().is_end_stream()
    {
        return None;
    }
    let protocols = value.to_str().ok()?;
    let mut any = false;
    for protocol in protocols.split(',').map(str::trim) {
        let name = protocol.split('/').next().unwrap_or(protocol);
        if protocol.is_empty() || name.eq_ignore_ascii_case("h2c") {
            return None;
        }
        any = true;
    }
    any.then(|| value.clone())
}

/// Puts back the two hop-by-hop fields an upgrade needs on the next hop,
/// after the others were stripped.
pub(crate) fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
}

/// Relays bytes between the client and the upstream once both connections
/// have switched protocols, until one side closes or nothing moves for
/// `idle`. Counted in `weir_upgraded_connections` while it runs.
pub(crate) async fn relay(
    client: ClientUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    open: IntGauge,
) {
    let Some(client) = client.take() else {
        return;
    };
    let (client, upstream) = tokio::join!(client, upstream);
    let (client, upstream) = match (client, upstream) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(_), _) => {
            tracing::debug!("The client's connection was not handed over.");
            return;
        }
        (_, Err(e)) => {
            tracing::debug!(error = %e, "Protocol upgrade did not complete.");
            return;
        }
    };
    open.inc();
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let client = Activity::new(client, epoch, last.clone());
    let upstream = Activity::new(TokioIo::new(upstream), epoch, last.clone());
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_upstream, mut to_upstream) = tokio::io::split(upstream);
    let up = pass(&mut from_client, &mut to_upstream, "client");
    let down = pass(&mut from_upstream, &mut to_client, "upstream");
    tokio::pin!(up, down);
    loop {
        // Wakes when the session would have been quiet for `idle`; bytes
        // that moved meanwhile push the deadline on.
        let moved = last.load(Ordering::Relaxed);
        tokio::select! {
            () = &mut up => break,
            () = &mut down => break,
            () = tokio::time::sleep_until(epoch + Duration::from_millis(moved) + idle) => {
                if last.load(Ordering::Relaxed) == moved {
                    tracing::debug!(idle = ?idle, "Upgraded connection idle; closing it.");
                    break;
                }
            }
        }
    }
    open.dec();
}

/// Copies one direction until `from` closes, then closes `to` for
/// writing; everything read has been written and flushed by then.
async fn pass<R, W>(from: &mut R, to: &mut W, side: &'static str)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match tokio::io::copy(from, to).await {
        Ok(bytes) => {
            tracing::debug!(side, bytes, "Upgraded connection closed.");
            if let Err(e) = tokio::io::AsyncWriteExt::shutdown(to).await {
                tracing::debug!(side, error = %e, "Closing the other side failed.");
            }
        }
        Err(e) => tracing::debug!(side, error = %e, "Upgraded connection failed."),
    }
}

/// A relayed stream that notes when bytes last arrived from it, in
/// milliseconds since `epoch`, shared by both directions of one relay.
struct Activity<T> {
    inner: T,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Activity<T> {
    fn new(inner: T, epoch: Instant, last: Arc<AtomicU64>) -> Self {
        Activity { inner, epoch, last }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        version: Version,
        headers: &[(&str, &str)],
    ) -> Request<http_body_util::Empty<bytes::Bytes>> {
        let mut b = Request::builder().version(version).uri("/ws");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(http_body_util::Empty::new()).unwrap()
    }

    #[test]
    fn which_requests_upgrade() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(
            requested(&req(Version::HTTP_11, &ws))
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        for (version, headers, why) in [
            (Version::HTTP_10, &ws[..], "HTTP/1.0 has no upgrades"),
            (
                Version::HTTP_11,
                &[("upgrade", "websocket")][..],
                "Connection does not list upgrade",
            ),
            (
                Version::HTTP_11,
                &[("connection", "upgrade")][..],
                "no Upgrade field",
            ),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "h2c")][..],
                "h2c is never relayed",
            ),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "websocket, H2C")][..],
                "h2c among others",
            ),
            (
                Version::HTTP_11,
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("upgrade", "x"),
                ][..],
                "two Upgrade fields",
            ),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", " , ")][..],
                "no protocol",
            ),
        ] {
            assert_eq!(requested(&req(version, headers)), None, "{why}");
        }
        let body = Request::builder()
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
            .unwrap();
        assert_eq!(requested(&body), None, "a request with a body");
    }
}
