//! The weir data plane: accepts client connections, routes each request on
//! the current snapshot and proxies it to a pooled upstream connection.
//!
//! ```text
//!  client ─▶ server.rs (HTTP/1.1 + h2c, limits, header-read timeout, drain)
//!         ─▶ Proxy::handle
//!              1. request id            headers.rs
//!              2. edge checks           framing, Host, header/URI limits
//!              3. path normalization    normalize.rs
//!              4. route                 router.rs (snapshot loaded once)
//!              5. forward               pooled hyper client, route timeout
//!         ◀─ response (hop-by-hop stripped) or respond.rs JSON error
//! ```
//!
//! The snapshot is read lock-free per request (`ArcSwap`); a request keeps
//! the table it started with until it finishes, so a swap never changes a
//! request halfway. Upstream connection pools live in one client keyed by
//! endpoint address, so they survive every swap in which the endpoint stays.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod framing;
mod headers;
pub mod metrics;
pub mod normalize;
mod respond;
pub mod router;
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use weir_snapshot::Snapshot;

pub use metrics::ProxyMetrics;
pub use server::{Listener, serve};

use crate::headers::{RequestIds, X_REQUEST_ID};
use crate::metrics::{NO_ROUTE, UpstreamErrorKind};
use crate::normalize::normalize_path;
use crate::respond::error;
use crate::router::RouteTable;

/// Response body: the upstream's, streamed, or one of weir's own.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Limits and timeouts of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Upstream response-header timeout when the route sets none.
    pub default_timeout: Duration,
    /// TCP connect timeout toward upstreams.
    pub connect_timeout: Duration,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Most bytes of request header names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Longest request target (414 beyond).
    pub max_uri_len: usize,
    /// Idle pooled upstream connections are closed after this.
    pub upstream_idle_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            default_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            max_uri_len: 8 * 1024,
            upstream_idle_timeout: Duration::from_secs(90),
        }
    }
}

struct Installed {
    table: RouteTable,
}

/// The data plane's shared state: the current routing table, the upstream
/// client and the metrics.
pub struct Proxy {
    installed: ArcSwap<Installed>,
    client: Client<HttpConnector, Incoming>,
    config: ProxyConfig,
    metrics: ProxyMetrics,
    ids: RequestIds,
    unrouted: metrics::RouteMetrics,
}

/// Per-connection facts a request needs.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Framing verdicts of the connection's request heads (HTTP/1).
    pub framing: Arc<framing::ConnFraming>,
    /// Client address.
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
}

impl Proxy {
    /// Builds a proxy serving an empty table (everything 404) until the
    /// first [`Proxy::install`].
    pub fn new(config: ProxyConfig, metrics: ProxyMetrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.upstream_idle_timeout)
            .pool_max_idle_per_host(1024)
            .build(connector);
        let unrouted = metrics.route(NO_ROUTE);
        Proxy {
            installed: ArcSwap::from_pointee(Installed {
                table: RouteTable::default(),
            }),
            client,
            config,
            metrics,
            ids: RequestIds::new(),
            unrouted,
        }
    }

    /// Swaps in a new snapshot. Requests already routed finish on the table
    /// they started with; metric series of routes that disappeared are
    /// dropped.
    pub fn install(&self, snapshot: &Snapshot, generation: u64) {
        let table = RouteTable::build(snapshot, &self.metrics, self.config.default_timeout);
        let old = self.installed.swap(Arc::new(Installed { table }));
        let new = self.installed.load();
        for gone in old.table.route_names.difference(&new.table.route_names) {
            self.metrics.forget_route(gone);
        }
        self.metrics
            .snapshot_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.metrics
            .snapshot_routes
            .set(i64::try_from(snapshot.route_count()).unwrap_or(i64::MAX));
        tracing::info!(
            generation,
            routes = snapshot.route_count(),
            "Installed snapshot."
        );
    }

    /// Handles one request. Never fails: every problem becomes a response.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<Body>, Infallible> {
        let start = Instant::now();
        let request_id = self.ids.get(req.headers());
        let (resp, metrics) = match self.route_and_forward(req, conn, &request_id).await {
            Ok((resp, target)) => (resp, Some(target)),
            Err(resp) => (resp, None),
        };
        let mut resp = resp;
        let elapsed = start.elapsed().as_secs_f64();
        let status = resp.status().as_u16();
        match &metrics {
            Some(t) => t.metrics.observe(status, elapsed),
            None => self.unrouted.observe(status, elapsed),
        }
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        Ok(resp)
    }

    /// The request pipeline. `Err` is an early response from weir itself;
    /// when a route matched, `Ok` carries the route for metrics even if the
    /// upstream failed.
    async fn route_and_forward(
        &self,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &HeaderValue,
    ) -> Result<(Response<Body>, Arc<router::Target>), Response<Body>> {
        let reject = |status, code, msg: &str| error(status, code, msg, request_id);
        if conn.framing.is_ambiguous() {
            let mut resp = reject(
                StatusCode::BAD_REQUEST,
                "ambiguous_framing",
                "request framing is ambiguous (Content-Length with Transfer-Encoding, or repeated Content-Length)",
            );
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return Err(resp);
        }
        check_framing(&req, &self.config).map_err(|(s, c, m)| reject(s, c, m))?;
        let host =
            request_host(&req).map_err(|m| reject(StatusCode::BAD_REQUEST, "invalid_host", m))?;

        let path = normalize_path(req.uri().path())
            .map_err(|e| reject(StatusCode::BAD_REQUEST, e.code(), &e.to_string()))?;

        let target = {
            let installed = self.installed.load();
            installed
                .table
                .find(&host.name, &path)
                .cloned()
                .ok_or_else(|| {
                    reject(
                        StatusCode::NOT_FOUND,
                        "no_route",
                        "no route matches this host and path",
                    )
                })?
        };

        let fail = |status, code, msg: &str, kind| {
            target.metrics.upstream_error(kind);
            error(status, code, msg, request_id)
        };
        let Some(endpoint) = target.upstream().and_then(|u| u.pick()) else {
            let resp = fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_endpoints",
                "the backend has no ready endpoints",
                UpstreamErrorKind::NoEndpoints,
            );
            return Ok((resp, target));
        };

        // The upstream gets exactly the path that was routed.
        let path_and_query = match req.uri().query() {
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
            None => PathAndQuery::try_from(path.as_ref()),
        };
        let uri = path_and_query.ok().and_then(|pq| {
            Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(endpoint.authority.clone())
                .path_and_query(pq)
                .build()
                .ok()
        });
        let Some(uri) = uri else {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "request target cannot be forwarded",
            ));
        };
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        headers::strip_hop_by_hop(headers);
        if !headers.contains_key(HOST) {
            // HTTP/2 carries the host in :authority.
            if let Ok(v) = HeaderValue::from_str(&host.original) {
                headers.insert(HOST, v);
            }
        }
        headers::set_forwarded(headers, conn.peer.ip(), conn.proto, &host.original);
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());

        let addr = endpoint.addr;
        match tokio::time::timeout(target.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                // The client's connection is ours: answer in our HTTP version,
                // not the upstream's (an HTTP/1.0 origin must not downgrade
                // the client's keep-alive connection).
                parts.version = Version::HTTP_11;
                Ok((Response::from_parts(parts, Either::Left(body)), target))
            }
            Ok(Err(e)) => {
                tracing::debug!(%addr, route = %target.name, error = %e, "Upstream request failed.");
                if client_body_failed(&e) {
                    // The client's body was malformed or cut short while
                    // streaming: the client's fault, not the backend's.
                    let resp = error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_body",
                        "the request body was malformed or incomplete",
                        request_id,
                    );
                    return Ok((resp, target));
                }
                let (code, msg) = if e.is_connect() {
                    (
                        "upstream_connect_failed",
                        "could not connect to the backend",
                    )
                } else {
                    (
                        "upstream_protocol_error",
                        "the backend closed the connection or sent an invalid response",
                    )
                };
                let resp = fail(
                    StatusCode::BAD_GATEWAY,
                    code,
                    msg,
                    UpstreamErrorKind::Connect,
                );
                Ok((resp, target))
            }
            Err(_) => {
                tracing::debug!(%addr, route = %target.name, "Upstream timed out.");
                let resp = fail(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the backend did not answer in time",
                    UpstreamErrorKind::Timeout,
                );
                Ok((resp, target))
            }
        }
    }
}

/// Whether a forwarding failure came from reading the client's request body:
/// hyper reports a failed outgoing body stream as a "user" error.
fn client_body_failed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return h.is_user();
        }
        source = s.source();
    }
    false
}

type Rejection = (StatusCode, &'static str, &'static str);

/// Edge checks on framing and size that hyper's parser leaves to us.
/// Ambiguous framing is refused, never normalized and passed on.
fn check_framing(req: &Request<Incoming>, config: &ProxyConfig) -> Result<(), Rejection> {
    let h = req.headers();
    let te = h.get_all(TRANSFER_ENCODING).iter().count();
    let cl = h.get_all(CONTENT_LENGTH).iter().count();
    if te > 0 && cl > 0 {
        return Err((
            StatusCode::BAD_REQUEST,
            "ambiguous_framing",
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if cl > 1 {
        return Err((
            StatusCode::BAD_REQUEST,
            "ambiguous_framing",
            "more than one Content-Length",
        ));
    }
    if te > 1
        || h.get(TRANSFER_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "unsupported_transfer_encoding",
            "only Transfer-Encoding: chunked is accepted",
        ));
    }
    if h.len() > config.max_headers {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "too many request headers",
        ));
    }
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if bytes > config.max_header_bytes {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "request headers too large",
        ));
    }
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > config.max_uri_len {
        return Err((
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "request target too long",
        ));
    }
    if req.method() == http::Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "CONNECT is not supported",
        ));
    }
    Ok(())
}

struct RequestHost {
    /// Lower-case, without port: what routing matches on.
    name: String,
    /// As sent (with port), for `Host` and `X-Forwarded-Host`.
    original: String,
}

/// The request's host: exactly one valid `Host` header on HTTP/1.1 (it must
/// agree with an absolute-form target), `:authority` on HTTP/2.
fn request_host(req: &Request<Incoming>) -> Result<RequestHost, &'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    let authority = match (header, req.uri().authority()) {
        (Some(h), Some(a)) => {
            if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) {
                return Err("Host header disagrees with the request target");
            }
            a.clone()
        }
        (Some(h), None) => {
            http::uri::Authority::try_from(h.as_bytes()).map_err(|_| "invalid Host header")?
        }
        (None, Some(a)) => a.clone(),
        (None, None) if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 => {
            return Ok(RequestHost {
                name: String::new(),
                original: String::new(),
            });
        }
        (None, None) => return Err("missing Host header"),
    };
    if authority.as_str().contains('@') {
        return Err("userinfo is not allowed in Host");
    }
    let name = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("empty Host header");
    }
    Ok(RequestHost {
        name,
        original: authority.as_str().to_owned(),
    })
}
