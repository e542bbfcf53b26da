//! The weir data plane: accepts client connections, routes each request on
//! the current snapshot and proxies it to a pooled upstream connection.
//!
//! ```text
//!  client ─▶ server.rs (listeners, TLS, HTTP/1 or HTTP/2 by preface or ALPN)
//!              http1/server.rs: weir's own HTTP/1.1 server half (strict
//!                parsing and framing, keep-alive and head deadlines,
//!                lingering close); hyper serves HTTP/2, with
//!                http2_idle.rs closing idle connections;
//!              drain.rs: graceful close of every connection on shutdown
//!         ─▶ Proxy::handle
//!              1. request id            headers.rs
//!              2. edge checks           Host, header/URI limits
//!              3. path normalization    normalize.rs
//!              4. route                 router.rs (snapshot loaded once)
//!              5. forward               pool.rs (per-endpoint pools), route timeout;
//!                                       http1/client.rs runs bodiless HTTP/1.1 exchanges in-task;
//!                                       upgrade.rs relays WebSocket connections after a 101
//!         ◀─ response (hop-by-hop stripped) or respond.rs JSON error
//! ```
//!
//! The snapshot is read lock-free per request (`ArcSwap`); a request keeps
//! the table it started with until it finishes, so a swap never changes a
//! request halfway. Upstream connection pools are kept per endpoint address
//! and protocol (pool.rs), so they survive every swap in which the endpoint
//! stays.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod access_log;
pub mod cidr;
mod drain;
mod headers;
mod http1;
mod http2_idle;
pub mod limits;
pub mod metrics;
pub mod normalize;
mod pause;
pub mod pool;
mod request_body;
mod respond;
mod rewind;
pub mod router;
mod server;
pub mod tls;
mod upgrade;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HOST, HeaderValue, STRICT_TRANSPORT_SECURITY};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use tokio::time::Instant;
use weir_snapshot::Snapshot;

pub use http1::request::MAX_FIELDS as MAX_REQUEST_FIELDS;
pub use metrics::ProxyMetrics;
pub use request_body::ClientBody;
pub use server::{Listener, serve};

pub use crate::cidr::Cidr;
use crate::headers::RequestIds;
use crate::metrics::{NO_ROUTE, UpstreamErrorKind};
use crate::normalize::normalize_path;
use crate::respond::error;
use crate::router::{RoutePolicy, RouteTable};

/// The HTTP/1 work weir does itself on every proxied request, reachable for
/// the criterion benches (`benches/codec.rs`); not an API.
#[doc(hidden)]
pub mod bench {
    /// Serializes a request head for an HTTP/1.1 upstream.
    pub fn encode_request(parts: &http::request::Parts, out: &mut Vec<u8>) {
        crate::http1::client::encode_request(parts, out)
    }

    /// Parses an upstream response head into a header map; `true` when it
    /// was complete and valid.
    pub fn parse_response_head(head: &[u8]) -> bool {
        let mut buf = bytes::BytesMut::from(head);
        matches!(
            crate::http1::client::parse_head(&mut buf, &http::Method::GET),
            Ok(Some(_))
        )
    }

    /// Parses a client's request head as weir's HTTP/1 server does
    /// (request, header map, framing); `true` when it was complete and
    /// valid.
    pub fn parse_request_head(head: &[u8]) -> bool {
        let mut buf = bytes::BytesMut::from(head);
        matches!(
            crate::http1::request::parse(&mut buf, 100, &mut Vec::new()),
            Ok(Some(_))
        )
    }

    /// Writes the head of a response to an HTTP/1.1 client.
    pub fn encode_response_head(parts: &http::response::Parts, out: &mut Vec<u8>) {
        let to = crate::http1::response::Answering::new(
            &http::Method::GET,
            http::Version::HTTP_11,
            false,
        );
        let mut close = false;
        let id = http::HeaderValue::from_static("6bb4c7e6a21936820000000000000000");
        crate::http1::response::encode_head(
            parts,
            None,
            &id,
            hyper::body::SizeHint::with_exact(3),
            to,
            &mut close,
            out,
        );
    }
}

/// `308 Permanent Redirect` to the same host, path and query over HTTPS:
/// 308 rather than 301 so clients keep the method and body.
fn https_redirect(host: &str, port: u16, uri: &Uri, request_id: &HeaderValue) -> Response<Body> {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut resp = error(
        StatusCode::PERMANENT_REDIRECT,
        "https_required",
        "this host is served over HTTPS",
        request_id,
    );
    match HeaderValue::try_from(location) {
        Ok(v) => {
            resp.headers_mut().insert(http::header::LOCATION, v);
        }
        // Unreachable in practice (host and path were validated); without a
        // Location the client still learns why.
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

/// Response body: the upstream's, streamed, or one of weir's own.
pub type Body = Either<pool::UpstreamBody, Full<Bytes>>;

/// The handler's answer to a request: the response; the upstream's fields
/// when they travel as they arrived (http1/fields.rs) rather than in the
/// response's map, which then holds only what weir adds; and the request
/// id the server sends in `X-Request-Id` (written straight into an HTTP/1
/// head, or put in an HTTP/2 response's map), replacing any the upstream
/// sent.
pub(crate) struct Answer {
    pub(crate) response: Response<access_log::Logged<Body>>,
    pub(crate) fields: Option<http1::fields::RawFields>,
    pub(crate) request_id: HeaderValue,
}

/// Limits and timeouts of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Upstream response timeout when the route sets none: from the end of
    /// the request body, and the longest pause in it (request_body.rs).
    pub default_timeout: Duration,
    /// Largest request body when the route sets none (413 beyond); 0
    /// accepts any size.
    pub max_body_bytes: u64,
    /// TCP connect timeout toward upstreams.
    pub connect_timeout: Duration,
    /// Time an HTTP/1 client has to send a request head, from its first
    /// byte or the connection opening (http1/server.rs).
    pub header_read_timeout: Duration,
    /// Idle HTTP/1 client connections are closed, and HTTP/2 ones sent a
    /// GOAWAY, this long after their last response (http1/server.rs, http2_idle.rs).
    pub keepalive_timeout: Duration,
    /// An HTTP/1 client that takes no byte of its response for this long
    /// has its connection closed (http1/server.rs), as nginx's
    /// `send_timeout`: a client that stops reading would otherwise hold
    /// its connection, and the upstream's, for as long as it likes.
    pub client_send_timeout: Duration,
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Most bytes of request header names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Longest request target (414 beyond).
    pub max_uri_len: usize,
    /// Idle pooled upstream connections are closed after this.
    pub upstream_idle_timeout: Duration,
    /// Proxies in front of weir whose `X-Forwarded-For` entries rate limits
    /// believe when keying by client address.
    pub trusted_proxies: Vec<Cidr>,
    /// Port in the `Location` of HTTP→HTTPS redirects (443 is left out):
    /// the port clients reach HTTPS on, not necessarily the listener's.
    pub https_redirect_port: u16,
    /// `Strict-Transport-Security` value for HTTPS responses of hosts with
    /// a certificate; `None` sends none.
    pub hsts: Option<HeaderValue>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            default_timeout: Duration::from_secs(60),
            // ingress-nginx's default `proxy-body-size`.
            max_body_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            // nginx's keepalive_timeout.
            keepalive_timeout: Duration::from_secs(75),
            // nginx's send_timeout.
            client_send_timeout: Duration::from_secs(60),
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            max_uri_len: 8 * 1024,
            trusted_proxies: Vec::new(),
            upstream_idle_timeout: Duration::from_secs(90),
            https_redirect_port: 443,
            hsts: Some(HeaderValue::from_static(
                "max-age=31536000; includeSubDomains",
            )),
        }
    }
}

struct Installed {
    table: RouteTable,
    /// `(policy, rule)` of every rate-limit rule, to drop the decision
    /// series of rules the next snapshot no longer has.
    limit_series: std::collections::HashSet<(String, String)>,
}

/// The data plane's shared state: the current routing table, the upstream
/// connection pools and the metrics.
pub struct Proxy {
    installed: ArcSwap<Installed>,
    pools: pool::Pools,
    config: ProxyConfig,
    metrics: ProxyMetrics,
    ids: RequestIds,
    unrouted: metrics::RouteMetrics,
    auth: weir_auth::AuthRuntime,
    limiter: Arc<weir_ratelimit::RateLimiter>,
    access_log: access_log::AccessLog,
    /// Certificates by SNI, swapped with each snapshot (HTTPS listeners).
    tls: Option<Arc<tls::Resolver>>,
    /// Relays of upgraded connections, which outlive their HTTP
    /// connection: the drain waits for them too.
    relays: tokio_util::task::TaskTracker,
}

/// Per-connection facts a request needs, shared by its requests.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The peer IP as a header value, formatted once per connection.
    pub(crate) peer_value: HeaderValue,
    /// An HTTP/2 connection's idle deadline, told when streams start and
    /// end (HTTP/1 connections keep their deadlines themselves).
    pub(crate) idle: Option<Arc<http2_idle::IdleClock>>,
}

impl ConnInfo {
    /// Facts about a new connection.
    pub(crate) fn new(
        peer: SocketAddr,
        proto: &'static str,
        idle: Option<Arc<http2_idle::IdleClock>>,
    ) -> Self {
        ConnInfo {
            peer,
            proto,
            peer_value: headers::peer_value(peer.ip()),
            idle,
        }
    }
}

impl Proxy {
    /// Builds a proxy serving an empty table (everything 404) until the
    /// first [`Proxy::install`].
    pub fn new(
        config: ProxyConfig,
        metrics: ProxyMetrics,
        auth: weir_auth::AuthRuntime,
        limiter: Arc<weir_ratelimit::RateLimiter>,
    ) -> Self {
        let pools = pool::Pools::new(config.connect_timeout, config.upstream_idle_timeout);
        let unrouted = metrics.route(NO_ROUTE);
        Proxy {
            installed: ArcSwap::from_pointee(Installed {
                table: RouteTable::default(),
                limit_series: Default::default(),
            }),
            pools,
            config,
            metrics,
            ids: RequestIds::new(),
            unrouted,
            auth,
            limiter,
            access_log: access_log::AccessLog::default(),
            tls: None,
            relays: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Writes access-log lines to `destination` (off until called), a
    /// `sample` fraction of requests and every 5xx.
    pub fn with_access_log(
        mut self,
        destination: &access_log::Destination,
        sample: f64,
    ) -> std::io::Result<Self> {
        self.access_log = access_log::AccessLog::start(
            destination,
            sample,
            self.metrics.access_log_dropped.clone(),
        )?;
        Ok(self)
    }

    /// Swaps in a new snapshot. Requests already routed finish on the table
    /// they started with; metric series of routes that disappeared are
    /// dropped.
    pub fn install(&self, snapshot: &Snapshot, generation: u64) {
        if let Some(tls) = &self.tls {
            tls.install(snapshot);
        }
        let policies = self.auth.build(snapshot);
        let limits = limits::build_all(snapshot, &self.limiter);
        let table = RouteTable::build(
            snapshot,
            &self.pools,
            &policies,
            &limits,
            &self.metrics,
            self.config.default_timeout,
            self.config.max_body_bytes,
        );
        let limit_series = limits::series(snapshot);
        let old = self.installed.swap(Arc::new(Installed {
            table,
            limit_series,
        }));
        let new = self.installed.load();
        // Endpoints the tables no longer use (their last in-flight request
        // done) leave the registry here and in the idle sweep.
        self.pools.forget_unused();
        for gone in old.table.route_names.difference(&new.table.route_names) {
            self.metrics.forget_route(gone);
        }
        for gone in old.limit_series.difference(&new.limit_series) {
            limits::forget(self.limiter.metrics(), gone);
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

    /// Whether the data plane can enforce every policy it serves: remote
    /// JWKS have been fetched once. `/readyz` stays red until then.
    pub fn ready(&self) -> bool {
        self.auth.ready()
    }

    /// Enables HTTPS: the returned configuration presents the installed
    /// snapshot's certificates (and those of every later snapshot).
    pub fn with_tls(mut self) -> Result<(Self, Arc<rustls::ServerConfig>), tls::TlsError> {
        let resolver = Arc::new(tls::Resolver::new()?);
        let config = tls::server_config(resolver.clone())?;
        self.tls = Some(resolver);
        Ok((self, config))
    }

    /// Handles one request. Never fails: every problem becomes a response.
    /// `present`: which of the fields weir acts on the request carries (the
    /// HTTP/1 parser learns it as it parses).
    /// `timer`: the timer the route timeout runs on, lent by the caller
    /// (an HTTP/1 connection's own is idle while a request is in flight).
    pub(crate) async fn handle(
        &self,
        req: Request<ClientBody>,
        present: headers::Present,
        conn: &ConnInfo,
        timer: Pin<&mut tokio::time::Sleep>,
    ) -> Answer {
        let start = Instant::now();
        // Ends with the response body, or here if the request is abandoned.
        let in_flight = conn.idle.as_ref().map(|clock| clock.start());
        let request_id = self.ids.get(req.headers(), present);
        // Only what the log line needs, and only when there is a log.
        let arrival = self
            .access_log
            .enabled()
            .then(|| access_log::Arrival::of(&req, conn.peer, start.into_std()));
        let mut facts = access_log::Facts::default();
        let https = conn.proto == "https";
        let (resp, metrics) = match self
            .route_and_forward(
                req,
                present,
                conn,
                &request_id,
                &mut facts,
                request_body::Timing {
                    arrived: start,
                    timer,
                },
            )
            .await
        {
            Ok((resp, target)) => (resp, Some(target)),
            Err(resp) => (resp, None),
        };
        let mut resp = resp;
        // An upstream's fields, when they travel as they arrived.
        let fields = match resp.body_mut() {
            Either::Left(upstream) => upstream.take_fields(),
            Either::Right(_) => None,
        };
        let elapsed = start.elapsed().as_secs_f64();
        let status = resp.status().as_u16();
        match &metrics {
            Some(t) => {
                t.metrics.observe(status, elapsed);
                if https
                    && t.hsts
                    && let Some(hsts) = &self.config.hsts
                    && !resp.headers().contains_key(STRICT_TRANSPORT_SECURITY)
                    && !fields.as_ref().is_some_and(|f| f.has(headers::Known::Hsts))
                {
                    resp.headers_mut()
                        .insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
                }
            }
            None => self.unrouted.observe(status, elapsed),
        }
        let record = arrival.and_then(|arrival| {
            access_log::Record::new(&self.access_log, arrival, &request_id, status, facts)
        });
        Answer {
            response: resp.map(|body| access_log::Logged::new(body, record, in_flight)),
            fields,
            request_id,
        }
    }

    /// weir's answer to a request it could not parse (http1/server.rs): a
    /// JSON error with a new request id, counted as unrouted.
    pub(crate) fn refuse(&self, status: StatusCode, code: &str, message: &str) -> Answer {
        let request_id = self.ids.fresh();
        self.unrouted.observe(status.as_u16(), 0.0);
        Answer {
            response: error(status, code, message, &request_id)
                .map(|body| access_log::Logged::new(body, None, None)),
            fields: None,
            request_id,
        }
    }

    /// The request pipeline. `Err` is an early response from weir itself;
    /// when a route matched, `Ok` carries the route for metrics even if the
    /// upstream failed.
    async fn route_and_forward(
        &self,
        mut req: Request<ClientBody>,
        mut present: headers::Present,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        facts: &mut access_log::Facts,
        timing: request_body::Timing<'_>,
    ) -> Result<(Response<Body>, Arc<router::Target>), Response<Body>> {
        let start = timing.arrived;
        let reject = |status, code, msg: &str| error(status, code, msg, request_id);
        check_limits(&req, &self.config).map_err(|(s, c, m)| reject(s, c, m))?;
        let host = request_host(&req, present.hosts)
            .map_err(|m| reject(StatusCode::BAD_REQUEST, "invalid_host", m))?;

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

        if self.access_log.enabled() {
            facts.route = Some(target.name.clone());
            facts.off = target.access_log_off;
        }
        if target.https_redirect && conn.proto == "http" {
            let resp = https_redirect(
                &host.name,
                self.config.https_redirect_port,
                req.uri(),
                request_id,
            );
            return Ok((resp, target));
        }
        // A declared length over the route's limit is refused before a byte
        // of the body is read, and before any policy runs, as nginx's
        // client_max_body_size is; bodies without a declared length are
        // counted as they stream (request_body.rs). hyper's size hint is
        // the declared length (HTTP/1 Content-Length, HTTP/2 content-length).
        if let Some(limit) = target.max_body
            && hyper::body::Body::size_hint(req.body())
                .exact()
                .is_some_and(|len| len > limit)
        {
            return Ok((body_too_large(limit, req.version(), request_id), target));
        }

        // HTTP/2 carries the host in :authority; the upstream needs a Host.
        let (host_value, insert_host) = match host.header {
            Some(v) => (Some(v.clone()), false),
            None => (HeaderValue::from_str(host.original).ok(), true),
        };
        drop(host);

        // The upstream gets exactly the path that was routed. When
        // normalization changed nothing, the original is reused as is.
        let path_and_query = match (&path, req.uri().path_and_query()) {
            (Cow::Borrowed(_), Some(pq)) => Some(pq.clone()),
            _ => match req.uri().query() {
                Some(q) => PathAndQuery::try_from(format!("{path}?{q}")).ok(),
                None => PathAndQuery::try_from(path.as_ref()).ok(),
            },
        };
        drop(path);
        let Some(mut path_and_query) = path_and_query else {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "request target cannot be forwarded",
            ));
        };

        // Filters, in DESIGN.md's order: authentication, authorization,
        // rate limits.
        let mut limit_headers = None;
        match &target.policy {
            RoutePolicy::Open => {}
            RoutePolicy::Enforce(enforcer) => {
                let mut target_uri = Uri::from(path_and_query);
                // Policy futures are boxed so that routes without a policy do
                // not carry (and move) their size in every request's future.
                let enforced = Box::pin(enforcer.enforce(req.headers_mut(), &mut target_uri)).await;
                let caller = match enforced {
                    Ok(caller) => {
                        if self.access_log.enabled() {
                            facts.user = match &caller {
                                weir_auth::Caller::Anonymous => None,
                                weir_auth::Caller::Consumer(name) => Some((*name).to_owned()),
                                weir_auth::Caller::Jwt(claims) => {
                                    claims["sub"].as_str().map(str::to_owned)
                                }
                            };
                        }
                        caller
                    }
                    Err(r) => {
                        let mut resp = error(r.status, r.code, &r.message, request_id);
                        if let Some(challenge) = r.www_authenticate {
                            resp.headers_mut()
                                .insert(http::header::WWW_AUTHENTICATE, challenge);
                        }
                        return Ok((resp, target));
                    }
                };
                path_and_query = target_uri
                    .into_parts()
                    .path_and_query
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                // The policy may have set or removed fields.
                present = headers::Present::scan(req.headers());
                if let Some(limits) = &target.limits {
                    let client = limits::ClientAddr {
                        peer: conn.peer.ip(),
                        trusted: &self.config.trusted_proxies,
                    };
                    let verdict = Box::pin(limits.check(
                        &self.limiter,
                        req.headers(),
                        client,
                        &caller,
                        &target.name,
                    ))
                    .await;
                    match verdict {
                        limits::Verdict::Admit(h) => {
                            facts.ratelimit = Some("allowed");
                            limit_headers = Some(h)
                        }
                        limits::Verdict::Refuse {
                            status,
                            code,
                            message,
                            headers,
                        } => {
                            facts.ratelimit = Some("rejected");
                            let mut resp = error(status, code, &message, request_id);
                            resp.headers_mut().extend(headers);
                            return Ok((resp, target));
                        }
                    }
                }
            }
            RoutePolicy::Missing => {
                let resp = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "policy_invalid",
                    "the route's policy is not available",
                    request_id,
                );
                return Ok((resp, target));
            }
        }

        let fail = |status, code, msg: &str, kind| {
            target.metrics.upstream_error(kind);
            error(status, code, msg, request_id)
        };
        let Some((upstream, endpoint)) = target.upstream().and_then(|u| Some((u, u.pick()?)))
        else {
            let resp = fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_endpoints",
                "the backend has no ready endpoints",
                UpstreamErrorKind::NoEndpoints,
            );
            return Ok((resp, target));
        };
        let protocol = endpoint.pool.protocol();
        // An upgrade needs an HTTP/1.1 upstream; toward HTTP/2 the request
        // goes as plain HTTP (its Upgrade stripped as hop-by-hop).
        let upgrade = if protocol.is_h2() || !present.upgrade() {
            None
        } else {
            upgrade::requested(&req).and_then(|value| {
                let client = req.extensions_mut().remove::<upgrade::ClientUpgrade>()?;
                Some((value, client))
            })
        };
        let uri = if protocol.is_h2() {
            // HTTP/2 names the host in :authority, taken from the URI: the
            // client's host, as an HTTP/1.1 upstream would see it in Host.
            let authority = host_value
                .as_ref()
                .and_then(|v| Authority::try_from(v.as_bytes()).ok())
                .unwrap_or_else(|| endpoint.authority.clone());
            let scheme = if protocol.is_tls() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .ok()
        } else {
            // HTTP/1.1 writes the URI as the request target: origin-form.
            Some(Uri::from(path_and_query))
        };
        let Some(uri) = uri else {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "request target cannot be forwarded",
            ));
        };
        *req.uri_mut() = uri;
        *req.version_mut() = if protocol.is_h2() {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let headers = req.headers_mut();
        // gRPC servers want `TE: trailers` (the only TE HTTP/2 allows);
        // every other hop-by-hop header stops here.
        let te_trailers = protocol.is_h2()
            && headers
                .get_all(http::header::TE)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        headers::strip_present(headers, present);
        if protocol.is_h2() {
            if te_trailers {
                headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
            }
            // The host travels in :authority.
            headers.remove(HOST);
        } else {
            if insert_host && let Some(v) = &host_value {
                headers.insert(HOST, v.clone());
            }
            headers::join_cookies(headers, present);
        }
        let forwarded = headers::Forwarded::new(
            headers,
            present,
            &conn.peer_value,
            conn.proto,
            host_value,
            request_id.clone(),
        );
        let client_upgrade = upgrade.map(|(value, on)| {
            upgrade::restore(headers, value);
            on
        });

        let version = req.version();
        let req = req.map(|body| request_body::RequestBody::new(body, target.max_body));
        let progress = req.body().progress();
        let upgrading = client_upgrade.is_some();
        let mut addr = endpoint.addr;
        // Pinned in place, as within_timeout wants (see there).
        let answered = request_body::within_timeout(
            pin!(send_with_next_upstream(
                &target,
                upstream,
                endpoint,
                Outgoing {
                    req,
                    forwarded: &forwarded,
                    upgrading,
                    arrived: start,
                },
                &mut addr,
            )),
            timing,
            target.timeout,
            target.send_timeout,
            progress.as_deref(),
        )
        .await;
        facts.upstream = Some(addr);
        match answered {
            Ok(Ok(resp)) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client) = client_upgrade
                {
                    let mut resp = self.switch(resp, client, &target, request_id);
                    if let Some(h) = limit_headers {
                        resp.headers_mut().extend(h);
                    }
                    return Ok((resp, target));
                }
                // Hop-by-hop fields are gone already (pool.rs).
                let (mut parts, mut body) = resp.into_parts();
                // The route's timeout limits each pause in the body too.
                body.time_reads(target.timeout, target.metrics.timeouts());
                // The client's connection is ours: answer in our HTTP version,
                // not the upstream's (an HTTP/1.0 origin must not downgrade
                // the client's keep-alive connection).
                parts.version = Version::HTTP_11;
                if let Some(h) = limit_headers {
                    parts.headers.extend(h);
                }
                Ok((Response::from_parts(parts, Either::Left(body)), target))
            }
            Ok(Err(e)) => {
                tracing::debug!(%addr, route = %target.name, error = %e, "Upstream request failed.");
                if let Some(limit) = target.max_body
                    && e.is_body_too_large()
                {
                    return Ok((body_too_large(limit, version, request_id), target));
                }
                if e.is_client_body() {
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
                let (status, code, msg) = if e.is_connect_timeout() {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_connect_timeout",
                        "could not connect to the backend in time",
                    )
                } else if e.is_connect() {
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream_connect_failed",
                        "could not connect to the backend",
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream_protocol_error",
                        "the backend closed the connection or sent an invalid response",
                    )
                };
                let resp = fail(status, code, msg, UpstreamErrorKind::Connect);
                Ok((resp, target))
            }
            Err(request_body::Expired::Client) => {
                tracing::debug!(%addr, route = %target.name, "The client stopped sending its request body.");
                self.metrics
                    .client_timed_out(metrics::ClientTimeout::RequestBody);
                let resp = error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_body_timeout",
                    "the request body stopped arriving",
                    request_id,
                );
                Ok((body_left_unread(resp, version), target))
            }
            Err(request_body::Expired::Upstream) => {
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

impl Proxy {
    /// Answers the client's upgrade request with the upstream's `101` and
    /// relays the two connections from then on (upgrade.rs).
    fn switch(
        &self,
        mut resp: Response<pool::UpstreamBody>,
        client: upgrade::ClientUpgrade,
        target: &router::Target,
        request_id: &HeaderValue,
    ) -> Response<Body> {
        let upstream = hyper::upgrade::on(&mut resp);
        let mut headers = resp.into_parts().0.headers;
        // RFC 9110 §15.2.2: a 101 names the protocol switched to.
        let Some(protocol) = headers.get(http::header::UPGRADE).cloned() else {
            tracing::debug!(route = %target.name, "Upstream answered 101 without an Upgrade field.");
            target.metrics.upstream_error(UpstreamErrorKind::Connect);
            return error(
                StatusCode::BAD_GATEWAY,
                "upstream_protocol_error",
                "the backend switched protocols without naming one",
                request_id,
            );
        };
        headers::strip_hop_by_hop(&mut headers);
        upgrade::restore(&mut headers, protocol);
        self.relays.spawn(upgrade::relay(
            client,
            upstream,
            target.timeout,
            self.metrics.upgraded_connections.clone(),
        ));
        let mut switched = Response::new(Either::Right(Full::default()));
        *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *switched.headers_mut() = headers;
        switched
    }

    /// Waits until every relay of an upgraded connection has ended (after
    /// the listeners stopped accepting).
    pub async fn relays_ended(&self) {
        self.relays.close();
        self.relays.wait().await;
    }

    /// Upgraded connections being relayed.
    pub fn relays_open(&self) -> usize {
        self.relays.len()
    }
}

/// What the request itself brings to [`send_with_next_upstream`].
struct Outgoing<'a> {
    req: Request<request_body::RequestBody>,
    /// The fields weir sets on it.
    forwarded: &'a headers::Forwarded,
    /// It asks to switch protocols (upgrade.rs).
    upgrading: bool,
    /// When it arrived (the pools' clock).
    arrived: Instant,
}

/// Sends a request to `endpoint` and, while no connection can be made
/// there, to the upstream's other endpoints, as the route's next-upstream
/// settings allow. `addr` ends as the endpoint that answered or failed
/// last.
async fn send_with_next_upstream(
    target: &router::Target,
    upstream: &router::Upstream,
    mut endpoint: &router::Endpoint,
    outgoing: Outgoing<'_>,
    addr: &mut SocketAddr,
) -> Result<Response<pool::UpstreamBody>, pool::SendError> {
    let Outgoing {
        mut req,
        forwarded,
        upgrading,
        arrived,
    } = outgoing;
    let next_upstream = &target.next_upstream;
    // Endpoints that took no connection; allocated only then.
    let mut tried = Vec::new();
    loop {
        *addr = endpoint.addr;
        let sent = if upgrading {
            // Boxed: rare, and not worth carrying in every request's
            // future.
            Box::pin(
                endpoint
                    .pool
                    .send_upgrade(req, forwarded, target.connect_timeout),
            )
            .await
        } else {
            endpoint
                .pool
                .send(req, forwarded, target.connect_timeout, arrived)
                .await
        };
        let failure = match sent {
            Ok(resp) => return Ok(resp),
            Err(failure) => failure,
        };
        // No connection could be made, so nothing was sent: the request
        // goes to another endpoint, whatever its method, as ingress-nginx's
        // proxy-next-upstream (error timeout, 3 tries by default) does. A
        // pod that has just stopped refuses connections until its
        // EndpointSlice catches up; clients do not see it. A request that
        // was sent is never retried: the upstream may have acted on it.
        let case = if failure.error.is_connect_timeout() {
            next_upstream.on_timeout
        } else {
            next_upstream.on_error
        };
        let Some(unsent) = failure.unsent.filter(|_| case) else {
            return Err(failure.error);
        };
        tried.push(endpoint.addr);
        let more = next_upstream.tries == 0 || tried.len() < next_upstream.tries as usize;
        let Some(next) = more.then(|| upstream.pick_other(&tried)).flatten() else {
            return Err(failure.error);
        };
        tracing::debug!(addr = %endpoint.addr, next = %next.addr, route = %target.name, error = %failure.error, "No connection to the endpoint; trying another.");
        target.metrics.upstream_error(UpstreamErrorKind::Connect);
        (endpoint, req) = (next, unsent);
    }
}

type Rejection = (StatusCode, &'static str, &'static str);

/// `413` for a body over the route's limit.
fn body_too_large(limit: u64, version: Version, request_id: &HeaderValue) -> Response<Body> {
    let resp = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is larger than this route accepts ({limit} bytes)"),
        request_id,
    );
    body_left_unread(resp, version)
}

/// An answer given while the rest of the request body stays unread. An
/// HTTP/1 connection closes after it: nothing after the body could be
/// framed (an HTTP/2 stream just ends).
fn body_left_unread(mut resp: Response<Body>, version: Version) -> Response<Body> {
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Edge checks on size and method, for HTTP/1 and HTTP/2 alike. Framing
/// is judged where each protocol is parsed (http1/request.rs; hyper's h2
/// for HTTP/2, which refuses connection-specific fields and checks
/// `content-length` against the data).
fn check_limits(req: &Request<ClientBody>, config: &ProxyConfig) -> Result<(), Rejection> {
    let h = req.headers();
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

struct RequestHost<'a> {
    /// Lower-case, without port: what routing matches on.
    name: Cow<'a, str>,
    /// As sent (with port), for `Host` on HTTP/2 requests.
    original: &'a str,
    /// The `Host` field, when the request has one.
    header: Option<&'a HeaderValue>,
}

/// The request's host: exactly one valid `Host` header on HTTP/1.1 (it must
/// agree with an absolute-form target), `:authority` on HTTP/2. Borrowed from
/// the request; allocates only to lower-case a host sent in upper case.
/// `hosts`: how many `Host` fields the request has (2 for two or more).
fn request_host<B>(req: &Request<B>, hosts: u8) -> Result<RequestHost<'_>, &'static str> {
    if hosts > 1 {
        return Err("more than one Host header");
    }
    let header = if hosts == 1 {
        req.headers().get(HOST)
    } else {
        None
    };
    let authority: &str = match (header, req.uri().authority()) {
        (Some(h), Some(a)) => {
            if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) {
                return Err("Host header disagrees with the request target");
            }
            a.as_str()
        }
        (Some(h), None) => h.to_str().map_err(|_| "invalid Host header")?,
        (None, Some(a)) => a.as_str(),
        (None, None) if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 => {
            return Ok(RequestHost {
                name: Cow::Borrowed(""),
                original: "",
                header,
            });
        }
        (None, None) => return Err("missing Host header"),
    };
    let host = split_host(authority)?;
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err("empty Host header");
    }
    let name = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Ok(RequestHost {
        name,
        original: authority,
        header,
    })
}

/// Splits `host[:port]` (or `[v6]:port`) and validates both parts: a host of
/// DNS/IPv4 characters or a bracketed IPv6 literal, a port of at most five
/// digits. No userinfo, spaces or other delimiters.
fn split_host(authority: &str) -> Result<&str, &'static str> {
    const INVALID: &str = "invalid Host header";
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or(INVALID)?;
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(INVALID);
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(INVALID),
        };
        (&authority[..end + 2], port)
    } else {
        // One pass: the name's characters, and where a port begins.
        let bytes = authority.as_bytes();
        let mut colon = None;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b':' {
                colon = Some(i);
                break;
            }
            if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
                return Err(INVALID);
            }
        }
        match colon {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(INVALID);
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn hosts() {
        assert_eq!(split_host("Example.com:8080"), Ok("Example.com"));
        assert_eq!(split_host("example.com"), Ok("example.com"));
        assert_eq!(split_host("[::1]:80"), Ok("[::1]"));
        assert_eq!(split_host("[::1]"), Ok("[::1]"));
        assert_eq!(split_host("10.0.0.1:1"), Ok("10.0.0.1"));
        for bad in [
            "a@b", "a b", "a:b", "a:", "a:123456", "[::1", "[zz]", "[::1]x", "a/b", "a:1:2", "",
        ] {
            if bad.is_empty() {
                continue;
            }
            assert!(split_host(bad).is_err(), "{bad:?} accepted");
        }
    }
}
