//! A real HTTP upstream (hyper, HTTP/1.1 and h2c) that echoes what it
//! received as JSON. Request headers steer it:
//! - `x-test-delay-ms: N`: wait N ms before answering;
//! - `x-test-download: N`: answer with N bytes, streamed in 64 KiB chunks;
//! - the request body is always read to the end and counted, never buffered;
//! - a WebSocket handshake (`Upgrade: websocket` with a key) is accepted:
//!   the upstream's first message is the JSON echo of the handshake
//!   request, then it echoes every text and binary message.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A running upstream.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it has answered.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections it has accepted.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts an upstream named `name` (echoed in every answer) on a free
    /// loopback port.
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(name, listener)
    }

    /// Starts an upstream that speaks TLS (a certificate for `localhost`
    /// from a CA nobody trusts, ALPN `h2` and `http/1.1`), then HTTP/1.1 or
    /// HTTP/2 as negotiated.
    pub async fn start_tls(name: &str) -> Upstream {
        let leaf = crate::pki::Ca::new("upstream CA").leaf(&["localhost"]);
        Self::start_tls_with(name, &leaf).await
    }

    /// Starts a TLS upstream presenting `leaf`.
    pub async fn start_tls_with(name: &str, leaf: &crate::pki::Leaf) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], leaf.key())
        .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve_on(
            name,
            listener,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    /// Serves on an already bound listener.
    pub fn serve(name: &str, listener: TcpListener) -> Upstream {
        Self::serve_on(name, listener, None)
    }

    fn serve_on(
        name: &str,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let name: Arc<str> = name.into();
        let task_hits = hits.clone();
        let task_connections = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                task_connections.fetch_add(1, Ordering::Relaxed);
                let name = name.clone();
                let hits = task_hits.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, name.clone(), hits.clone()));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            hits,
            connections,
            task,
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The echo handler, shared with the `weir-example-upstream` binary.
pub async fn handle(
    mut req: Request<Incoming>,
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
) -> Result<Response<Body>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(ms) = header("x-test-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let download: Option<usize> = header("x-test-download").and_then(|v| v.parse().ok());
    let websocket_key = header("sec-websocket-key")
        .filter(|_| header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")));
    let on_upgrade = websocket_key
        .is_some()
        .then(|| hyper::upgrade::on(&mut req));
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(" | ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), v.into());
            }
        }
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let mut body = req.into_body();
    let mut body_bytes = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, Bytes::len),
            Err(_) => break,
        }
    }
    if let (Some(key), Some(on_upgrade)) = (websocket_key, on_upgrade) {
        let hello = serde_json::json!({
            "upstream": &*name,
            "uri": uri,
            "headers": headers,
        });
        tokio::spawn(websocket_echo(on_upgrade, hello.to_string()));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let resp = Response::builder()
            .status(http::StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(BoxBody::new(http_body_util::Empty::new()))
            .expect("101 response");
        return Ok(resp);
    }
    if let Some(total) = download {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_stream(total, chunk);
        return Ok(Response::new(BoxBody::new(StreamBody::new(stream))));
    }
    let echo = serde_json::json!({
        "upstream": &*name,
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut resp = Response::new(BoxBody::new(http_body_util::Full::new(Bytes::from(
        echo.to_string(),
    ))));
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    // A hop-by-hop header weir must not pass on to the client.
    resp.headers_mut()
        .insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
    Ok(resp)
}

/// The server side of a WebSocket session: `hello` first, then every text
/// and binary message back as it came (tungstenite answers pings).
async fn websocket_echo(on_upgrade: hyper::upgrade::OnUpgrade, hello: String) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        None,
    )
    .await;
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// A stream of `total` bytes in `chunk`-sized frames, produced lazily.
fn futures_stream(
    total: usize,
    chunk: Bytes,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    struct Chunks {
        left: usize,
        chunk: Bytes,
    }
    impl futures_core::Stream for Chunks {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len());
            self.left -= n;
            let data = self.chunk.slice(..n);
            std::task::Poll::Ready(Some(Ok(Frame::data(data))))
        }
    }
    Chunks { left: total, chunk }
}

/// A backend for answers no well-behaved server gives (a body that stalls,
/// trickles or never ends): for each connection it reads one request head
/// and hands it, with the connection, to `respond`.
pub async fn scripted<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn(Vec<u8>, tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                respond(head, conn).await;
            });
        }
    });
    addr
}
