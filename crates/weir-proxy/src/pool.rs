//! Upstream connections: one pool per endpoint and protocol, shared by every
//! snapshot that routes to the endpoint.
//!
//! ```text
//!  Pools ── registry (addr, protocol) ─weak─▶ EndpointPool ◀─ router::Endpoint (per snapshot)
//!                                              ├ HTTP/1.1, no request body, plain:
//!                                              │    idle stack of h1::Conn (in-task exchange)
//!                                              ├ HTTP/1.1 otherwise: idle stack of hyper senders
//!                                              ├ HTTP/1.1 upgrades: a new connection each, never pooled
//!                                              └ HTTP/2:   one shared connection
//! ```
//!
//! - **HTTP/1.1 without a request body** to a plain-text endpoint (most
//!   proxied requests): exchanged in the request's own task (http1/client.rs), on a
//!   stack of connections of its own. An idle connection is checked against
//!   the reactor's readiness before use, so one the upstream closed is
//!   dropped, not written to; one that closes unanswered anyway (the
//!   upstream's idle timer raced the request) has the request sent again
//!   on another connection when the write failed or the method is
//!   idempotent.
//! - **HTTP/1.1** otherwise (a request body, or TLS), through hyper's
//!   client, which streams the request body while reading the response: an
//!   idle connection goes back on the stack when the response body has been
//!   read to its end, not when the headers arrive, so it is reused only
//!   once hyper can write the next request on it; a body dropped half-read
//!   closes the connection instead (in both kinds of stack). The most
//!   recently used connection is taken first, which keeps few connections
//!   warm under low load and lets the rest time out. A request is retried
//!   on another connection only when its pooled connection closed before a
//!   byte of it was written (the upstream closed an idle keep-alive
//!   connection); nothing that may have reached the upstream is retried.
//! - **HTTP/2** (h2c, or TLS with ALPN `h2`): one multiplexed connection per
//!   endpoint, opened by the first request; requests arriving meanwhile wait
//!   for it instead of opening their own. A connection that went away
//!   (GOAWAY, reset) is replaced on the next request.
//! - **TLS toward upstreams**: with a CA (`weir.dev/backend-ca-secret`) the
//!   certificate is verified for the upstream's server name, which is also
//!   sent as SNI. Without one the connection is encrypted but not
//!   authenticated, as ingress-nginx's `backend-protocol: HTTPS` is
//!   (in-cluster services mostly use self-signed certificates): the
//!   handshake's signatures are checked, the certificate is not, and no SNI
//!   is sent (endpoints are pod IPs).
//!
//! Pools are found by address and protocol in a registry of weak
//! references, so a snapshot swap that keeps an endpoint keeps its warm
//! connections, and an endpoint no snapshot uses any more closes them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use weir_snapshot::{UpstreamProtocol, UpstreamTls};

use crate::headers::Forwarded;
use crate::http1::client as h1;
use crate::http1::fields::RawFields;
use crate::pause::Pauses;
use crate::request_body::RequestBody;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed as they
/// come back. The stack never grows beyond the peak concurrency anyway.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No TCP connection.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// TCP, TLS and protocol handshakes took longer than the connect timeout.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// The TLS handshake failed (including a certificate that does not
    /// verify).
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// The verification settings could not be turned into a TLS client.
    #[error("TLS client configuration: {0}")]
    TlsConfig(String),
    /// The HTTP/1.1 or HTTP/2 connection could not be set up (an HTTP/2
    /// upstream that is not one fails here).
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
    /// The exchange failed after the request was handed to a connection.
    #[error(transparent)]
    Http(hyper::Error),
    /// An in-task HTTP/1.1 exchange failed (http1/client.rs).
    #[error(transparent)]
    Exchange(h1::Error),
}

impl SendError {
    /// No connection could be made: the backend is down or unreachable.
    pub(crate) fn is_connect(&self) -> bool {
        !matches!(self, SendError::Http(_) | SendError::Exchange(_))
    }

    /// Connecting took longer than the connect timeout: the backend did not
    /// answer at all (a dropped SYN, a full accept queue), which nginx
    /// answers with 504 as well.
    pub(crate) fn is_connect_timeout(&self) -> bool {
        matches!(self, SendError::ConnectTimeout)
    }

    /// The client's request body failed while it was streamed upstream
    /// (malformed chunk, cut short): the client's fault, not the backend's.
    pub(crate) fn is_client_body(&self) -> bool {
        matches!(self, SendError::Http(e) if e.is_user())
    }

    /// The client's request body went past the route's limit while it was
    /// streamed upstream.
    pub(crate) fn is_body_too_large(&self) -> bool {
        matches!(self, SendError::Http(e) if crate::request_body::is_too_large(e))
    }
}

/// A request the pool could not forward.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: SendError,
    /// The request itself when none of it reached the upstream (no
    /// connection could be made), so it can go to another endpoint.
    pub(crate) unsent: Option<Request<RequestBody>>,
}

impl Failure {
    fn sent(error: SendError) -> Self {
        Failure {
            error,
            unsent: None,
        }
    }

    fn unsent(error: SendError, req: Request<RequestBody>) -> Self {
        Failure {
            error,
            unsent: Some(req),
        }
    }
}

/// How connections are made; shared by every endpoint pool.
struct Connector {
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// ALPN `http/1.1`.
    tls_http1: TlsConnector,
    /// ALPN `h2`.
    tls_h2: TlsConnector,
    /// The workspace's one crypto provider, for verified upstreams' clients.
    provider: Arc<CryptoProvider>,
}

/// A pool's identity: endpoint, protocol, and for verified TLS the CA
/// fingerprint and server name.
type PoolKey = (SocketAddr, UpstreamProtocol, Option<(String, String)>);

type Registry = Mutex<HashMap<PoolKey, Weak<EndpointPool>>>;

/// How bytes reach the endpoint.
enum Transport {
    Plain,
    Tls {
        connector: TlsConnector,
        name: ServerName<'static>,
    },
    /// A verified upstream whose TLS client could not be built: every
    /// connection fails rather than going out unverified.
    Unusable(String),
}

/// Every endpoint's pool, found by address and protocol. One per
/// [`crate::Proxy`]; route tables take their endpoints' pools from it.
pub struct Pools {
    connector: Arc<Connector>,
    registry: Arc<Registry>,
}

impl Pools {
    /// Pools connecting within `connect_timeout` (TCP, TLS and HTTP
    /// handshakes together) and closing HTTP/1.1 connections idle for
    /// `idle_timeout`. Inside a Tokio runtime a task sweeps idle connections
    /// out; it ends when the pools are dropped.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let provider = Arc::new(crate::tls::provider());
        let connector = Arc::new(Connector {
            connect_timeout,
            idle_timeout,
            tls_http1: tls_connector(&provider, b"http/1.1"),
            tls_h2: tls_connector(&provider, b"h2"),
            provider,
        });
        let registry: Arc<Registry> = Arc::default();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&registry);
            let every = (idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(registry) = weak.upgrade() else {
                        return;
                    };
                    sweep(&registry);
                }
            });
        }
        Pools {
            connector,
            registry,
        }
    }

    /// The pool of `addr` spoken to in `protocol` (verified with `verify`):
    /// the existing one when a snapshot still uses it, else a new, empty one.
    pub(crate) fn endpoint(
        &self,
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        verify: Option<&Arc<UpstreamTls>>,
    ) -> Arc<EndpointPool> {
        let key = (
            addr,
            protocol,
            verify.map(|v| (v.ca_fingerprint.clone(), v.server_name.clone())),
        );
        let mut registry = lock(&self.registry);
        if let Some(pool) = registry.get(&key).and_then(Weak::upgrade) {
            return pool;
        }
        let transport = self.transport(addr, protocol, verify);
        let pool = Arc::new(EndpointPool {
            addr,
            protocol,
            transport,
            connector: self.connector.clone(),
            idle: Mutex::new(Vec::new()),
            idle_conns: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        });
        registry.insert(key, Arc::downgrade(&pool));
        pool
    }

    fn transport(
        &self,
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        verify: Option<&Arc<UpstreamTls>>,
    ) -> Transport {
        if !protocol.is_tls() {
            return Transport::Plain;
        }
        let alpn: &[u8] = if protocol.is_h2() { b"h2" } else { b"http/1.1" };
        let Some(verify) = verify else {
            let connector = if protocol.is_h2() {
                &self.connector.tls_h2
            } else {
                &self.connector.tls_http1
            };
            // An IP address as the server name: rustls sends no SNI for it.
            return Transport::Tls {
                connector: connector.clone(),
                name: ServerName::IpAddress(addr.ip().into()),
            };
        };
        match verified_connector(&self.connector.provider, verify, alpn) {
            Ok((connector, name)) => Transport::Tls { connector, name },
            Err(why) => {
                tracing::error!(%addr, ca = %verify.ca_source, error = %why, "Cannot verify this upstream; its requests fail.");
                Transport::Unusable(why)
            }
        }
    }

    /// Forgets endpoints no snapshot uses any more (their connections
    /// closed when the last snapshot holding them was dropped).
    pub(crate) fn forget_unused(&self) {
        lock(&self.registry).retain(|_, pool| pool.strong_count() > 0);
    }

    /// Pools currently registered, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.registry).len()
    }
}

/// Closes idle connections past the idle timeout, and forgets dead pools.
fn sweep(registry: &Registry) {
    let pools: Vec<Arc<EndpointPool>> = {
        let mut registry = lock(registry);
        registry.retain(|_, pool| pool.strong_count() > 0);
        registry.values().filter_map(Weak::upgrade).collect()
    };
    for pool in pools {
        let timeout = pool.connector.idle_timeout;
        lock(&pool.idle).retain(|idle| !idle.sender.is_closed() && idle.since.elapsed() < timeout);
        lock(&pool.idle_conns)
            .retain_mut(|idle| idle.since.elapsed() < timeout && idle.conn.is_quiet());
    }
}

/// A poisoned lock only means another request panicked while holding it;
/// the idle stack and the registry stay consistent (every update is a
/// single push, pop or insert), so carry on with them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// An idle connection for in-task exchanges (http1/client.rs).
struct IdleConn {
    conn: h1::Conn,
    since: Instant,
}

/// The connections to one endpoint in one protocol.
pub(crate) struct EndpointPool {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    transport: Transport,
    connector: Arc<Connector>,
    /// HTTP/1.1 connections ready for a request, most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// Plain HTTP/1.1 connections for requests without a body, exchanged in
    /// the request's task (http1/client.rs); most recently used last.
    idle_conns: Mutex<Vec<IdleConn>>,
    /// The HTTP/2 connection, once made.
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Held while an HTTP/2 connection is being made, so concurrent
    /// requests share it.
    h2_connecting: tokio::sync::Mutex<()>,
}

impl EndpointPool {
    /// The protocol spoken to this endpoint.
    pub(crate) fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Sends `req` (its URI already in the form the protocol wants) and
    /// returns the response once its head has arrived, without its
    /// hop-by-hop fields; the body streams.
    /// A new connection made for it gets `connect_timeout` (the route's),
    /// or the pools' default. When no connection can be made, the request
    /// comes back with the error, untouched.
    /// `now` is the request's arrival, good enough for the idle
    /// connections' ages (a clock read saved per request).
    /// `forwarded`: the fields weir sets, written with the head.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        forwarded: &Forwarded,
        connect_timeout: Option<Duration>,
        now: Instant,
    ) -> Result<Response<UpstreamBody>, Failure> {
        // The exchanges with a body, or over HTTP/2 or TLS, are boxed: the
        // common bodiless one is the smallest, and this future's size is
        // that of its largest branch, carried (and copied) by every
        // request's future.
        if self.protocol.is_h2() {
            forwarded.apply(req.headers_mut());
            Box::pin(self.send_h2(req, connect_timeout)).await
        } else if self.protocol == UpstreamProtocol::Http && req.body().is_end_stream() {
            // The body is empty: only the head goes.
            let (parts, body) = req.into_parts();
            self.send_bodiless(parts, forwarded, connect_timeout, now)
                .await
                .map_err(|(error, unsent)| Failure {
                    error,
                    unsent: unsent.map(|parts| Request::from_parts(parts, body)),
                })
        } else {
            forwarded.apply(req.headers_mut());
            Box::pin(self.send_h1(req, connect_timeout)).await
        }
    }

    /// A request without a body on a plain HTTP/1.1 connection, exchanged
    /// in this task (http1/client.rs). A reused connection that the upstream had
    /// closed leaves the request unanswered; it is sent again on another
    /// connection when nothing can have been processed: the write failed,
    /// or the method is idempotent (RFC 9110 §9.2.2), as nginx's
    /// `proxy_next_upstream error` does.
    ///
    /// When no connection can be made, the request head comes back with
    /// the error.
    async fn send_bodiless(
        self: &Arc<Self>,
        parts: http::request::Parts,
        forwarded: &Forwarded,
        connect_timeout: Option<Duration>,
        now: Instant,
    ) -> Result<Response<UpstreamBody>, (SendError, Option<http::request::Parts>)> {
        let idempotent = parts.method.is_idempotent();
        loop {
            let (mut conn, reused) = match self.checkout_conn(now) {
                Some(conn) => (conn, true),
                None => match Box::pin(self.connect_conn(connect_timeout)).await {
                    Ok(conn) => (conn, false),
                    Err(e) => return Err((e, Some(parts))),
                },
            };
            conn.encode(&parts, forwarded);
            match h1::exchange(conn, &parts.method).await {
                Ok((resp, fields, answer)) => {
                    let body = match answer {
                        h1::Answer::Whole(body, conn) => {
                            if let Some(conn) = conn {
                                // Idle since the request's arrival: an age
                                // overstated by the exchange, which only
                                // retires it sooner.
                                self.give_back_conn(conn, now);
                            }
                            BodyKind::Whole(Some(body).filter(|b| !b.is_empty()))
                        }
                        h1::Answer::Streaming(reader) => BodyKind::Streaming(reader, self.clone()),
                    };
                    let body = UpstreamBody {
                        kind: body,
                        fields: Some(fields),
                        stall: None,
                    };
                    return Ok(Response::from_parts(resp, body));
                }
                // Each retry takes another pooled connection, so this ends
                // at a fresh connection, which is not retried.
                Err(e) if reused && e.is_unanswered() && (idempotent || e.is_unsent()) => {
                    tracing::debug!(addr = %self.addr, error = %e, "Pooled connection closed before answering; retrying on another.");
                }
                Err(e) => return Err((SendError::Exchange(e), None)),
            }
        }
    }

    /// A request that asks to switch protocols (upgrade.rs), on a new
    /// connection of its own: after a `101` the connection belongs to the
    /// relay, and after any other answer it closes with the response body.
    /// A `101` response carries the upstream's upgrade in its extensions
    /// (`hyper::upgrade::on`) and keeps its fields (the relay needs
    /// `Upgrade`); any other answer comes without hop-by-hop fields.
    pub(crate) async fn send_upgrade(
        &self,
        mut req: Request<RequestBody>,
        forwarded: &Forwarded,
        connect_timeout: Option<Duration>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        forwarded.apply(req.headers_mut());
        let mut sender = match Box::pin(self.connect::<Http1<true>>(connect_timeout)).await {
            Ok(sender) => sender,
            Err(e) => return Err(Failure::unsent(e, req)),
        };
        let mut resp = sender
            .send_request(req)
            .await
            .map_err(|e| Failure::sent(SendError::Http(e)))?;
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            crate::headers::strip_hop_by_hop(resp.headers_mut());
        }
        Ok(resp.map(|body| UpstreamBody::new(body, None)))
    }

    /// The most recently returned idle connection the upstream has not
    /// closed, as of `now`.
    fn checkout_conn(&self, now: Instant) -> Option<h1::Conn> {
        let mut idle = lock(&self.idle_conns);
        while let Some(mut candidate) = idle.pop() {
            if now.saturating_duration_since(candidate.since) < self.connector.idle_timeout
                && candidate.conn.is_quiet()
            {
                return Some(candidate.conn);
            }
        }
        None
    }

    /// Puts `conn` on the idle stack, idle since `since`.
    fn give_back_conn(&self, conn: h1::Conn, since: Instant) {
        let mut idle = lock(&self.idle_conns);
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.remove(0);
        }
        idle.push(IdleConn { conn, since });
    }

    async fn connect_conn(&self, timeout: Option<Duration>) -> Result<h1::Conn, SendError> {
        self.within_connect_timeout(timeout, self.tcp())
            .await
            .map(h1::Conn::new)
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        connect_timeout: Option<Duration>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                // Boxed: connecting (TCP, TLS, handshake) is a large future
                // needed once per connection; inline it would be carried and
                // moved with every request's future.
                None => match Box::pin(self.connect::<Http1<false>>(connect_timeout)).await {
                    Ok(sender) => (sender, false),
                    Err(e) => return Err(Failure::unsent(e, req)),
                },
            };
            match sender.try_send_request(req).await {
                Ok(mut resp) => {
                    crate::headers::strip_hop_by_hop(resp.headers_mut());
                    let pool = self.clone();
                    return Ok(resp.map(|body| UpstreamBody::new(body, Some((pool, sender)))));
                }
                Err(mut e) => match e.take_message() {
                    // The pooled connection closed before the request was
                    // written: nothing reached the upstream, try another.
                    // Each retry pops a connection off the stack, so this
                    // ends at a fresh connection, which is not retried.
                    Some(unsent) if reused => {
                        tracing::debug!(addr = %self.addr, error = %e.error(), "Pooled connection closed before the request was written; retrying on another.");
                        req = unsent;
                    }
                    _ => return Err(Failure::sent(SendError::Http(e.into_error()))),
                },
            }
        }
    }

    /// The most recently returned idle connection that is still open.
    async fn checkout(&self) -> Option<http1::SendRequest<RequestBody>> {
        loop {
            let idle = lock(&self.idle).pop()?;
            if idle.sender.is_closed() || idle.since.elapsed() >= self.connector.idle_timeout {
                continue;
            }
            let mut sender = idle.sender;
            // Returned at the end of a body, the connection turns ready as
            // soon as hyper's connection task has seen that end too.
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn give_back(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn send_h2(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        connect_timeout: Option<Duration>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let mut fresh = false;
        loop {
            let (mut sender, made) = match self.h2_sender(connect_timeout).await {
                Ok(sender) => sender,
                Err(e) => return Err(Failure::unsent(e, req)),
            };
            fresh |= made;
            match sender.try_send_request(req).await {
                Ok(mut resp) => {
                    crate::headers::strip_hop_by_hop(resp.headers_mut());
                    return Ok(resp.map(|body| UpstreamBody::new(body, None)));
                }
                Err(mut e) => {
                    self.forget_closed_h2();
                    match e.take_message() {
                        // The connection was closing (GOAWAY) before this
                        // stream was opened: once more, on a new one.
                        Some(unsent) if !fresh => req = unsent,
                        _ => return Err(Failure::sent(SendError::Http(e.into_error()))),
                    }
                }
            }
        }
    }

    /// The shared HTTP/2 connection, made if there is none (`true`).
    async fn h2_sender(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<(http2::SendRequest<RequestBody>, bool), SendError> {
        if let Some(sender) = self.open_h2() {
            return Ok((sender, false));
        }
        // Waiting for another request's connect counts against this
        // request's own connect timeout: a route with a short one does not
        // wait out a longer one's attempt first.
        let made = async {
            let _one_at_a_time = self.h2_connecting.lock().await;
            if let Some(sender) = self.open_h2() {
                return Ok((sender, false));
            }
            let sender = Box::pin(self.establish::<Http2>()).await?;
            *lock(&self.h2) = Some(sender.clone());
            Ok((sender, true))
        };
        self.within_connect_timeout(connect_timeout, made).await
    }

    fn open_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        lock(&self.h2).as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Drops the shared connection once it has closed, so the next request
    /// makes a new one.
    fn forget_closed_h2(&self) {
        let mut h2 = lock(&self.h2);
        if h2.as_ref().is_some_and(|s| s.is_closed()) {
            *h2 = None;
        }
    }

    /// A new connection: TCP, TLS when the transport has it, then `H`'s
    /// HTTP handshake, all within the connect timeout.
    async fn connect<H: Handshake>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<H::Sender, SendError> {
        self.within_connect_timeout(timeout, self.establish::<H>())
            .await
    }

    /// TCP, TLS and `H`'s handshake, with no time limit of its own.
    async fn establish<H: Handshake>(&self) -> Result<H::Sender, SendError> {
        let tcp = self.tcp().await?;
        match &self.transport {
            Transport::Plain => H::handshake(tcp).await,
            Transport::Tls { connector, name } => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(SendError::Tls)?;
                H::handshake(tls).await
            }
            Transport::Unusable(why) => Err(SendError::TlsConfig(why.clone())),
        }
    }

    /// Connecting, whatever it takes (TCP, TLS, HTTP handshake), gets one
    /// connect timeout: `timeout` (the route's), or the pools' default.
    async fn within_connect_timeout<T>(
        &self,
        timeout: Option<Duration>,
        connect: impl Future<Output = Result<T, SendError>>,
    ) -> Result<T, SendError> {
        tokio::time::timeout(timeout.unwrap_or(self.connector.connect_timeout), connect)
            .await
            .map_err(|_| SendError::ConnectTimeout)?
    }

    async fn tcp(&self) -> Result<TcpStream, SendError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(SendError::Connect)?;
        // Requests and responses are written whole; waiting to coalesce
        // them only adds latency.
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        Ok(tcp)
    }
}

/// An HTTP handshake over an established byte stream, plain or TLS.
trait Handshake {
    /// What requests are sent through.
    type Sender;

    fn handshake(io: impl Io) -> impl Future<Output = Result<Self::Sender, SendError>> + Send;
}

/// A byte stream to an upstream: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Runs a connection's I/O in its own task until it closes.
fn drive<C>(conn: C, protocol: &'static str)
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, protocol, "Upstream connection failed.");
        }
    });
}

/// HTTP/1.1; `UPGRADES` lets a `101` hand the connection over to the
/// caller instead of failing the exchange.
struct Http1<const UPGRADES: bool>;

impl<const UPGRADES: bool> Handshake for Http1<UPGRADES> {
    type Sender = http1::SendRequest<RequestBody>;

    async fn handshake(io: impl Io) -> Result<Self::Sender, SendError> {
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::Handshake)?;
        if UPGRADES {
            drive(conn.with_upgrades(), "HTTP/1.1");
        } else {
            drive(conn, "HTTP/1.1");
        }
        Ok(sender)
    }
}

/// HTTP/2 (prior knowledge on TCP, ALPN `h2` on TLS).
struct Http2;

impl Handshake for Http2 {
    type Sender = http2::SendRequest<RequestBody>;

    async fn handshake(io: impl Io) -> Result<Self::Sender, SendError> {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Notice a dead peer on a busy connection instead of waiting for
            // the route timeout of every request on it.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::Handshake)?;
        drive(conn, "HTTP/2");
        Ok(sender)
    }
}

/// A response body from an upstream. A body read from a pooled HTTP/1.1
/// connection carries it, and it goes back to its pool when the body has
/// been read to the end.
pub struct UpstreamBody {
    kind: BodyKind,
    /// The response's fields as they arrived (an in-task HTTP/1.1
    /// exchange), for whoever writes them on; `None` when they are in the
    /// response's map.
    fields: Option<RawFields>,
    /// The longest pause allowed while the body arrives
    /// ([`UpstreamBody::time_reads`]); boxed, as only a body still
    /// arriving has one.
    stall: Option<Box<Stall>>,
}

/// A limit on the pauses in a response body (pause.rs), as nginx's
/// `proxy_read_timeout`: an upstream that sends a head and then nothing
/// would otherwise hold the client's connection and the upstream's until
/// one of them closes.
struct Stall {
    pauses: Pauses,
    /// `weir_upstream_errors_total{kind="timeout"}` of the route.
    timed_out: prometheus::IntCounter,
}

enum BodyKind {
    /// From hyper's client (HTTP/2, TLS, requests with a body).
    Hyper {
        inner: Incoming,
        give_back: Option<(Arc<EndpointPool>, http1::SendRequest<RequestBody>)>,
    },
    /// Arrived with the response head; `None` once taken or when empty.
    Whole(Option<Bytes>),
    /// Still arriving on an in-task connection (http1/client.rs).
    Streaming(h1::Reader, Arc<EndpointPool>),
}

/// Why an upstream response body failed midway.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// From hyper's client.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// From an in-task exchange.
    #[error(transparent)]
    Exchange(#[from] h1::Error),
    /// The upstream paused its body for longer than the route's timeout.
    #[error("the upstream sent no part of the body for {0:?}")]
    Stalled(Duration),
}

impl UpstreamBody {
    fn new(
        inner: Incoming,
        give_back: Option<(Arc<EndpointPool>, http1::SendRequest<RequestBody>)>,
    ) -> Self {
        let mut body = UpstreamBody {
            kind: BodyKind::Hyper { inner, give_back },
            fields: None,
            stall: None,
        };
        // An empty body (HEAD, 204, 304, Content-Length: 0) may never be
        // polled: the connection is free now.
        if body.is_end_stream() {
            body.release();
        }
        body
    }

    /// Limits each pause in the body to `limit` (the route's timeout); on
    /// a longer one the body fails, its connection closes and `timed_out`
    /// is counted. Nothing to do for a body that is already whole.
    pub(crate) fn time_reads(&mut self, limit: Duration, timed_out: &prometheus::IntCounter) {
        if matches!(self.kind, BodyKind::Whole(_)) || self.is_end_stream() {
            return;
        }
        self.stall = Some(Box::new(Stall {
            pauses: Pauses::new(limit),
            timed_out: timed_out.clone(),
        }));
    }

    /// The response's fields, when they travel as they arrived rather than
    /// in its map (http1/fields.rs).
    pub(crate) fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }

    /// The body has ended: its connection, if any and still usable, goes
    /// back to its pool.
    fn release(&mut self) {
        match std::mem::replace(&mut self.kind, BodyKind::Whole(None)) {
            BodyKind::Hyper {
                give_back: Some((pool, sender)),
                ..
            } => pool.give_back(sender),
            BodyKind::Streaming(reader, pool) => {
                if let Some(conn) = reader.into_reusable() {
                    pool.give_back_conn(conn, Instant::now());
                }
            }
            BodyKind::Hyper { .. } | BodyKind::Whole(_) => {}
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = match &mut self.kind {
            BodyKind::Whole(body) => return Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Streaming(reader, _) => reader
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::from))),
            BodyKind::Hyper { inner, .. } => Pin::new(inner)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::from))),
        };
        let frame = match (polled, self.stall.as_deref_mut()) {
            (Poll::Ready(frame), stall) => {
                if let Some(stall) = stall {
                    stall.pauses.moved();
                }
                frame
            }
            (Poll::Pending, None) => return Poll::Pending,
            (Poll::Pending, Some(stall)) => {
                ready!(stall.pauses.poll_pause(cx));
                stall.timed_out.inc();
                Some(Err(BodyError::Stalled(stall.pauses.limit())))
            }
        };
        match &frame {
            // A failed body leaves its connection in an unknown state: it
            // is dropped (closed), not returned.
            Some(Err(_)) => self.kind = BodyKind::Whole(None),
            None => self.release(),
            Some(Ok(_)) if self.is_end_stream() => self.release(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Hyper { inner, .. } => inner.is_end_stream(),
            BodyKind::Whole(body) => body.is_none(),
            BodyKind::Streaming(reader, _) => reader.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Hyper { inner, .. } => inner.size_hint(),
            BodyKind::Whole(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
            BodyKind::Streaming(reader, _) => reader.size_hint(),
        }
    }
}

fn tls_connector(provider: &Arc<CryptoProvider>, alpn: &[u8]) -> TlsConnector {
    #[allow(clippy::expect_used)]
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // Invariant: ring's provider has TLS 1.3 and 1.2 cipher suites and
        // key exchanges, so the default versions are always supported.
        .expect("ring supports the default TLS versions");
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(provider.clone())))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TLS client that verifies the upstream's certificate against the CA
/// certificates of `verify`, for its server name (sent as SNI).
fn verified_connector(
    provider: &Arc<CryptoProvider>,
    verify: &UpstreamTls,
    alpn: &[u8],
) -> Result<(TlsConnector, ServerName<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for root in &verify.roots {
        roots.add(root.clone()).map_err(|e| e.to_string())?;
    }
    let name = ServerName::try_from(verify.server_name.clone()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// Accepts any upstream certificate, but checks the handshake signatures
/// made with it (see the module documentation for why).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pools_are_shared_by_address_and_protocol_while_used() {
        let pools = Pools::new(Duration::from_secs(1), Duration::from_secs(60));
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let a = pools.endpoint(addr, UpstreamProtocol::Http, None);
        let b = pools.endpoint(addr, UpstreamProtocol::Http, None);
        assert!(Arc::ptr_eq(&a, &b), "one pool per endpoint");
        let c = pools.endpoint(addr, UpstreamProtocol::H2c, None);
        assert!(!Arc::ptr_eq(&a, &c), "one pool per protocol");
        drop((a, b, c));
        pools.forget_unused();
        assert_eq!(pools.len(), 0, "unused pools are forgotten");
    }

    /// An upstream whose first connection answers one request and then
    /// closes on the next without answering (as a server closing an idle
    /// keep-alive connection races a new request); later connections
    /// answer every request. Logs (connection, method) per request.
    async fn closes_after_one(log: Arc<Mutex<Vec<(usize, String)>>>) -> SocketAddr {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    for served in 0.. {
                        let Some(head) = crate::http1::client::tests::read_head(&mut tcp).await
                        else {
                            return;
                        };
                        let method = String::from_utf8_lossy(&head)
                            .split(' ')
                            .next()
                            .unwrap_or("")
                            .to_owned();
                        lock(&log).push((conn, method));
                        if conn == 0 && served == 1 {
                            return;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if tcp.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn forwarded() -> Forwarded {
        Forwarded::new(
            &mut http::HeaderMap::new(),
            Default::default(),
            &http::HeaderValue::from_static("10.0.0.1"),
            "http",
            None,
            http::HeaderValue::from_static("id"),
        )
    }

    fn request(method: http::Method) -> http::request::Parts {
        Request::builder()
            .method(method)
            .uri("/")
            .header("host", "up")
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    #[tokio::test]
    async fn idempotent_requests_unanswered_on_a_reused_connection_go_again() {
        let pools = Pools::new(Duration::from_secs(2), Duration::from_secs(60));
        let log = Arc::default();
        let addr = closes_after_one(Arc::clone(&log)).await;
        let pool = pools.endpoint(addr, UpstreamProtocol::Http, None);
        for _ in 0..2 {
            let resp = pool
                .send_bodiless(
                    request(http::Method::GET),
                    &forwarded(),
                    None,
                    Instant::now(),
                )
                .await
                .expect("answered");
            assert_eq!(resp.status(), 200);
        }
        assert_eq!(
            *lock(&log),
            [
                (0, "GET".to_owned()),
                (0, "GET".to_owned()),
                (1, "GET".to_owned())
            ],
            "the unanswered GET went again on a new connection"
        );
    }

    #[tokio::test]
    async fn other_requests_unanswered_on_a_reused_connection_fail() {
        let pools = Pools::new(Duration::from_secs(2), Duration::from_secs(60));
        let log = Arc::default();
        let addr = closes_after_one(Arc::clone(&log)).await;
        let pool = pools.endpoint(addr, UpstreamProtocol::Http, None);
        let resp = pool
            .send_bodiless(
                request(http::Method::POST),
                &forwarded(),
                None,
                Instant::now(),
            )
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200);
        let (err, unsent) = pool
            .send_bodiless(
                request(http::Method::POST),
                &forwarded(),
                None,
                Instant::now(),
            )
            .await
            .err()
            .expect("unanswered");
        assert!(unsent.is_none(), "sent: not for another endpoint");
        assert!(
            matches!(&err, SendError::Exchange(e) if e.is_unanswered()),
            "{err}"
        );
        assert!(!err.is_connect(), "a protocol error, not a connect error");
        assert_eq!(
            *lock(&log),
            [(0, "POST".to_owned()), (0, "POST".to_owned())],
            "not sent twice"
        );
    }

    #[tokio::test]
    async fn connect_failure_is_a_connect_error() {
        let pools = Pools::new(Duration::from_secs(2), Duration::from_secs(60));
        // A port nobody listens on: bind, read the port, close.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        for protocol in [
            UpstreamProtocol::Http,
            UpstreamProtocol::H2c,
            UpstreamProtocol::H2,
        ] {
            let pool = pools.endpoint(addr, protocol, None);
            let err = if protocol.is_h2() {
                pool.connect::<Http2>(None).await.err()
            } else {
                pool.connect::<Http1<false>>(None).await.err()
            }
            .expect("refused");
            assert!(err.is_connect(), "{protocol:?}: {err}");
        }
    }
}
