//! Data-plane metrics. Labels are route and upstream *names* from the
//! snapshot, never request paths, hosts or client addresses, so the series
//! count is bounded by configuration, not by traffic.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Route label for requests that matched no route (404, 400, 431...).
pub const NO_ROUTE: &str = "none";

/// Metrics of the proxy, registered once per process.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    /// Generation of the snapshot being served.
    pub snapshot_generation: IntGauge,
    /// Routes in the snapshot being served.
    pub snapshot_routes: IntGauge,
    /// Client connections currently open.
    pub open_connections: IntGauge,
    /// Client connections switched to another protocol (WebSocket) and
    /// relayed to their upstream; no longer in `open_connections`.
    pub upgraded_connections: IntGauge,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: prometheus::IntCounter,
    /// TLS handshakes that failed or timed out (scanners, clients that
    /// reject the certificate).
    tls_handshake_failures: prometheus::IntCounter,
    /// `weir_client_timeouts_total` by [`ClientTimeout`]; rare events, so
    /// the series are looked up when counted.
    client_timeouts: IntCounterVec,
}

/// Why weir gave up waiting on a client: the `kind` label of
/// `weir_client_timeouts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTimeout {
    /// An HTTP/1 request head was not complete within
    /// `--header-read-timeout` (slow or silent clients, slowloris); the
    /// connection was closed.
    RequestHead,
    /// An idle HTTP/1 keep-alive connection was closed after
    /// `--keepalive-timeout`.
    KeepAlive,
    /// An idle HTTP/2 connection was sent a GOAWAY after
    /// `--keepalive-timeout`.
    Http2Idle,
    /// A request body paused for longer than the route's timeout (408).
    RequestBody,
    /// An HTTP/1 client took no byte of its response for
    /// `--client-send-timeout` (it stopped reading); the connection was
    /// closed.
    ResponseSend,
}

impl ClientTimeout {
    /// Every kind, each exported from the start.
    const ALL: [ClientTimeout; 5] = [
        ClientTimeout::RequestHead,
        ClientTimeout::KeepAlive,
        ClientTimeout::Http2Idle,
        ClientTimeout::RequestBody,
        ClientTimeout::ResponseSend,
    ];

    fn label(self) -> &'static str {
        match self {
            ClientTimeout::RequestHead => "request_head",
            ClientTimeout::KeepAlive => "keepalive",
            ClientTimeout::Http2Idle => "http2_idle",
            ClientTimeout::RequestBody => "request_body",
            ClientTimeout::ResponseSend => "response_send",
        }
    }
}

/// Upstream failure kinds, the `kind` label of `weir_upstream_errors_total`.
#[derive(Clone, Copy, Debug)]
pub enum UpstreamErrorKind {
    /// TCP connect failed or the connection broke before a response.
    Connect,
    /// No response head within the route timeout, or a pause in the
    /// response body longer than it.
    Timeout,
    /// No ready endpoints.
    NoEndpoints,
}

impl ProxyMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "weir_requests_total",
                "Requests answered, by route and status class.",
            ),
            &["route", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_request_duration_seconds",
                "Time from request received to response headers sent, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "weir_upstream_errors_total",
                "Requests that failed toward the upstream, by route and kind (connect, timeout, no_endpoints).",
            ),
            &["route", "kind"],
        )?;
        let snapshot_generation = IntGauge::new(
            "weir_snapshot_generation",
            "Generation of the routing snapshot the data plane serves.",
        )?;
        let snapshot_routes = IntGauge::new(
            "weir_snapshot_routes",
            "Routes in the snapshot the data plane serves.",
        )?;
        let open_connections = IntGauge::new(
            "weir_open_connections",
            "Client connections currently open.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(snapshot_generation.clone()))?;
        registry.register(Box::new(snapshot_routes.clone()))?;
        let access_log_dropped = prometheus::IntCounter::new(
            "weir_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind (requests never wait for it).",
        )?;
        registry.register(Box::new(open_connections.clone()))?;
        let upgraded_connections = IntGauge::new(
            "weir_upgraded_connections",
            "Client connections switched to another protocol (WebSocket) and relayed to their upstream.",
        )?;
        registry.register(Box::new(upgraded_connections.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let tls_handshake_failures = prometheus::IntCounter::new(
            "weir_tls_handshake_failures_total",
            "TLS handshakes on the HTTPS listener that failed or timed out.",
        )?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        let client_timeouts = IntCounterVec::new(
            Opts::new(
                "weir_client_timeouts_total",
                "Waits on clients that timed out, by kind: request_head (connection closed), keepalive (idle connection closed), http2_idle (GOAWAY sent), request_body (408), response_send (connection closed).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(client_timeouts.clone()))?;
        // Every kind is exported from the start, at 0.
        for kind in ClientTimeout::ALL {
            client_timeouts.with_label_values(&[kind.label()]);
        }
        Ok(ProxyMetrics {
            requests,
            duration,
            upstream_errors,
            snapshot_generation,
            snapshot_routes,
            open_connections,
            upgraded_connections,
            access_log_dropped,
            tls_handshake_failures,
            client_timeouts,
        })
    }

    /// Counts a wait on a client that timed out.
    pub(crate) fn client_timed_out(&self, kind: ClientTimeout) {
        self.client_timeouts
            .with_label_values(&[kind.label()])
            .inc();
    }

    /// Counts a failed or timed-out TLS handshake.
    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Resolves the per-route series once, when a snapshot is installed, so
    /// the request path only touches atomics.
    pub(crate) fn route(&self, route: &str) -> RouteMetrics {
        let class = |c: &str| self.requests.with_label_values(&[route, c]);
        let err = |k: &str| self.upstream_errors.with_label_values(&[route, k]);
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self.duration.with_label_values(&[route]),
            connect_errors: err("connect"),
            timeouts: err("timeout"),
            no_endpoints: err("no_endpoints"),
        }
    }

    /// Drops the series of routes that no longer exist, so removed routes do
    /// not accumulate in the registry.
    pub(crate) fn forget_route(&self, route: &str) {
        for c in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let _ = self.requests.remove_label_values(&[route, c]);
        }
        let _ = self.duration.remove_label_values(&[route]);
        for k in ["connect", "timeout", "no_endpoints"] {
            let _ = self.upstream_errors.remove_label_values(&[route, k]);
        }
    }
}

/// Pre-resolved series of one route.
#[derive(Clone)]
pub(crate) struct RouteMetrics {
    by_class: [IntCounter; 5],
    duration: Histogram,
    connect_errors: IntCounter,
    timeouts: IntCounter,
    no_endpoints: IntCounter,
}

impl RouteMetrics {
    pub(crate) fn observe(&self, status: u16, seconds: f64) {
        let idx = usize::from((status / 100).clamp(1, 5) - 1);
        if let Some(c) = self.by_class.get(idx) {
            c.inc();
        }
        self.duration.observe(seconds);
    }

    /// `weir_upstream_errors_total{kind="timeout"}`, for a response body
    /// that pauses too long (pool.rs), counted after the answer has left.
    pub(crate) fn timeouts(&self) -> &IntCounter {
        &self.timeouts
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        match kind {
            UpstreamErrorKind::Connect => self.connect_errors.inc(),
            UpstreamErrorKind::Timeout => self.timeouts.inc(),
            UpstreamErrorKind::NoEndpoints => self.no_endpoints.inc(),
        }
    }
}
