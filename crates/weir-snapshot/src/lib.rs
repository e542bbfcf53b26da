//! The compiled routing model: what the control plane publishes and the data
//! plane serves.
//!
//! ```text
//!  compile(objects) ──▶ Snapshot ──watch──▶ proxy builds its RouteTable once per swap
//! ```
//!
//! Everything here is plain, immutable data: no I/O, no Kubernetes types, no
//! runtime state. A snapshot is shared as `Arc<Snapshot>`, so publishing it
//! and holding it for the life of a request costs one reference count.
//! Collections are sorted so that a snapshot serializes deterministically,
//! which is what makes the compiler's golden files reviewable.

mod policy;
mod tls;

pub use policy::*;
pub use tls::*;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

/// One immutable, complete routing configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Virtual hosts, sorted by host (exact names, then wildcards, then the
    /// catch-all), each with its routes in match-precedence order.
    pub hosts: Vec<VirtualHost>,
    /// Served when no virtual host or route matches (`--default-backend`, or
    /// the `defaultBackend` of an Ingress without host rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<RouteAction>,
    /// Every upstream a route refers to, by name.
    pub upstreams: BTreeMap<UpstreamName, Upstream>,
    /// Every policy a route refers to, by [`Policy::name`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, Policy>,
    /// Ready weir replicas, counted from the EndpointSlices of weir's own
    /// Service when the controller knows it: each replica enforces its
    /// share (limit ÷ replicas) of `localShare` limits while Redis is
    /// unreachable. `None` leaves the configured count in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Certificates the HTTPS listener presents, by the SNI name they are
    /// for: exact host names and wildcards (`*.example.com`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, std::sync::Arc<Certificate>>,
    /// Presented when no certificate matches the SNI name (or there is none):
    /// `--default-ssl-certificate`; without it the data plane's generated one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<std::sync::Arc<Certificate>>,
}

impl Snapshot {
    /// The number of routes across all virtual hosts, for metrics and logs.
    pub fn route_count(&self) -> usize {
        self.hosts.iter().map(|h| h.routes.len()).sum()
    }
}

/// The hosts a virtual host answers for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HostMatch {
    /// One lower-case DNS name, e.g. `shop.example.com`.
    Exact(String),
    /// `*.example.com`: exactly one extra leading label, as the Ingress spec
    /// defines it (`a.example.com` matches, `a.b.example.com` does not).
    /// Holds the suffix including its leading dot: `.example.com`.
    Wildcard(String),
    /// Rules without a host: any host that no other virtual host claims.
    Any,
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(suffix) => write!(f, "*{suffix}"),
            HostMatch::Any => f.write_str("*"),
        }
    }
}

/// Routes for one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualHost {
    /// Which hosts this entry answers for.
    pub host: HostMatch,
    /// Routes in precedence order: the first match wins.
    pub routes: Vec<Route>,
    /// Served for requests to this host that match no route (the
    /// `defaultBackend` of an Ingress that has rules for this host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<RouteAction>,
}

/// One path match and where it sends traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Stable, low-cardinality name used in metrics and logs:
    /// `<namespace>/<ingress>`.
    pub name: String,
    /// The path condition.
    pub path: PathMatch,
    /// What to do with a matching request.
    pub action: RouteAction,
}

/// A path condition, already validated and normalized by the compiler.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    /// The whole path equals this string (case-sensitive).
    Exact(String),
    /// The path starts with these `/`-separated elements. Stored without a
    /// trailing slash (`/` itself is the empty element list), because the
    /// Ingress spec ignores one: `/foo/` and `/foo` match the same requests.
    Prefix(String),
}

impl PathMatch {
    /// Whether `path` (already normalized by the data plane) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => prefix_matches(p, path),
        }
    }
}

/// Element-wise prefix match as the Ingress spec defines it: `/foo` matches
/// `/foo`, `/foo/` and `/foo/bar` but not `/foobar`. `prefix` carries no
/// trailing slash; the empty prefix (from `/`) matches every path.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Where a matching request goes and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteAction {
    /// Name of the route in metrics when this action is a fallback.
    pub name: String,
    /// Weighted backends; today one, canaries add more.
    pub backends: Vec<WeightedBackend>,
    /// Upstream response-header timeout for this route; `None` means the
    /// proxy's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Upstream connect timeout for this route (TCP, TLS and handshake of a
    /// new connection); `None` means the proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Longest pause while the upstream takes nothing of a streaming
    /// request body (ingress-nginx's `proxy-send-timeout`); `None` means
    /// the route's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout_ms: Option<u64>,
    /// When a request that got no connection goes to another endpoint
    /// (ingress-nginx's `proxy-next-upstream`); `None` is the default,
    /// [`NextUpstream::DEFAULT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream: Option<NextUpstream>,
    /// Largest request body accepted, in bytes (413 beyond); `Some(0)`
    /// accepts any size, `None` means the proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// No access-log lines for this route (`weir.dev/access-log: "false"`):
    /// health checks and noisy internal routes stay out of the logs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub access_log_off: bool,
    /// The policy enforced before proxying, a key of [`Snapshot::policies`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Plain-HTTP requests get a 308 to `https://` (the host has a
    /// certificate and `ssl-redirect` is on, or `force-ssl-redirect`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// HTTPS responses carry `Strict-Transport-Security` (the host has a
    /// certificate from an Ingress).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hsts: bool,
}

/// Which requests that got no connection go to another endpoint, and how
/// many endpoints one request may try. Only requests of which nothing was
/// sent qualify: the upstream cannot have acted on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NextUpstream {
    /// After a refused connection or a failed TLS/HTTP/2 handshake.
    pub on_error: bool,
    /// After the connect timeout.
    pub on_timeout: bool,
    /// Endpoints one request may try in all, the first included; `0` for
    /// every endpoint of the backend.
    pub tries: u32,
}

impl NextUpstream {
    /// ingress-nginx's defaults: `proxy-next-upstream: error timeout`,
    /// `proxy-next-upstream-tries: 3`.
    pub const DEFAULT: NextUpstream = NextUpstream {
        on_error: true,
        on_timeout: true,
        tries: 3,
    };
}

/// One backend of a route with its share of traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WeightedBackend {
    /// The upstream, a key of [`Snapshot::upstreams`].
    pub upstream: UpstreamName,
    /// Relative weight, 0–1000.
    pub weight: u32,
}

/// The name of an upstream: `<namespace>/<service>:<port>`. Stable across
/// snapshots, so runtime state (pools, balancer positions, health) keyed by
/// it survives a swap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UpstreamName(pub String);

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of interchangeable endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// Ready endpoints, sorted and de-duplicated. Empty means every request
    /// routed here gets 503, which is how a Service with no ready pods must
    /// behave.
    pub endpoints: Vec<SocketAddr>,
    /// How weir speaks to the endpoints (`weir.dev/backend-protocol`, the
    /// ingress-nginx `backend-protocol` annotation, or the Service port's
    /// `appProtocol`). Absent from dumps when it is plain HTTP/1.1.
    #[serde(default, skip_serializing_if = "UpstreamProtocol::is_http")]
    pub protocol: UpstreamProtocol,
    /// Verify the upstream's certificate (TLS protocols only), from
    /// `weir.dev/backend-ca-secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<std::sync::Arc<UpstreamTls>>,
}

/// The protocol weir speaks to an upstream. gRPC services need HTTP/2 (`H2c`
/// in cleartext, `H2` over TLS); `Https` is HTTP/1.1 over TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over TCP, with keep-alive.
    #[default]
    Http,
    /// HTTP/2 over TCP with prior knowledge (gRPC without TLS).
    H2c,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TLS, negotiated with ALPN (gRPC with TLS).
    H2,
}

impl UpstreamProtocol {
    /// Plain HTTP/1.1, the default.
    pub fn is_http(&self) -> bool {
        *self == UpstreamProtocol::Http
    }

    /// The name used in annotations, upstream names and dumps.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpstreamProtocol::Http => "http",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Https => "https",
            UpstreamProtocol::H2 => "h2",
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamProtocol::Https | UpstreamProtocol::H2)
    }

    /// Whether requests go out as HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self, UpstreamProtocol::H2c | UpstreamProtocol::H2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_element_wise() {
        assert!(prefix_matches("/foo", "/foo"));
        assert!(prefix_matches("/foo", "/foo/"));
        assert!(prefix_matches("/foo", "/foo/bar"));
        assert!(!prefix_matches("/foo", "/foobar"));
        assert!(!prefix_matches("/foo/bar", "/foo"));
        assert!(prefix_matches("", "/"));
        assert!(prefix_matches("", "/anything/at/all"));
    }

    #[test]
    fn exact_is_exact() {
        let m = PathMatch::Exact("/foo".into());
        assert!(m.matches("/foo"));
        assert!(!m.matches("/foo/"));
        assert!(!m.matches("/Foo"));
    }
}

/// What providers publish on the `tokio::sync::watch` channel: a snapshot and
/// its generation, which increases by one each time a different snapshot is
/// published. The channel holds `None` until the first snapshot, which is how
/// `/readyz` knows whether there is anything to serve.
#[derive(Clone, Debug)]
pub struct Published {
    /// Monotonic generation, starting at 1.
    pub generation: u64,
    /// The snapshot.
    pub snapshot: std::sync::Arc<Snapshot>,
}
