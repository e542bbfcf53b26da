//! The data plane's view of a snapshot: hash maps built once per swap so a
//! lookup costs a handful of hash probes whatever the number of routes.
//!
//! Lookup order: exact host, then `*.` wildcard (one label), then the
//! catch-all; inside a host, the Exact path, then the longest Prefix found by
//! probing the request path's element boundaries from the longest down (at
//! most one probe per `/`), then the host's fallback; finally the snapshot's
//! default backend.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use weir_snapshot::{HostMatch, PathMatch, RouteAction, Snapshot};

use crate::metrics::{ProxyMetrics, RouteMetrics};
use crate::pool::{EndpointPool, Pools};

/// FNV-1a: the route maps are built from configuration, not from client
/// input, so they need no hash-flooding defence and a lookup should cost a
/// few instructions per byte, not SipHash's rounds.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// One upstream endpoint: its URI authority prepared, and its connections.
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: Authority,
    pub(crate) pool: Arc<EndpointPool>,
}

/// Runtime form of an upstream: endpoints and the round-robin cursor.
pub(crate) struct Upstream {
    endpoints: Box<[Endpoint]>,
    next: AtomicUsize,
}

impl Upstream {
    /// Next endpoint in round-robin order, `None` when there is none.
    pub(crate) fn pick(&self) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.endpoints.get(i)
    }

    /// Next endpoint in round-robin order that is none of `tried`: where a
    /// request goes when no connection could be made to the one before.
    pub(crate) fn pick_other(&self, tried: &[SocketAddr]) -> Option<&Endpoint> {
        (0..self.endpoints.len())
            .filter_map(|_| self.pick())
            .find(|e| !tried.contains(&e.addr))
    }
}

/// Where a matched request goes.
pub struct Target {
    pub(crate) name: Arc<str>,
    backends: Box<[(Arc<Upstream>, u32)]>,
    total_weight: u32,
    cursor: AtomicUsize,
    /// How long the upstream has to answer once the request body is in,
    /// and the longest pause the client may make in the body.
    pub(crate) timeout: Duration,
    /// The longest pause while the upstream takes nothing of the body.
    pub(crate) send_timeout: Duration,
    /// Connect timeout for new upstream connections; `None` is the pools'
    /// default (`--connect-timeout`).
    pub(crate) connect_timeout: Option<Duration>,
    /// Which requests that got no connection go to another endpoint.
    pub(crate) next_upstream: weir_snapshot::NextUpstream,
    /// Largest request body accepted (413 beyond); `None` accepts any.
    pub(crate) max_body: Option<u64>,
    /// The route opted out of the access log.
    pub(crate) access_log_off: bool,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub(crate) https_redirect: bool,
    /// HTTPS responses carry `Strict-Transport-Security`.
    pub(crate) hsts: bool,
    pub(crate) metrics: RouteMetrics,
    /// The policy enforced before proxying.
    pub(crate) policy: RoutePolicy,
    /// The policy's rate limits, checked after authentication.
    pub(crate) limits: Option<Arc<crate::limits::PolicyLimits>>,
}

/// A route's policy as the data plane holds it.
pub(crate) enum RoutePolicy {
    /// No policy: proxy directly.
    Open,
    /// Run this enforcer first.
    Enforce(Arc<weir_auth::Enforcer>),
    /// The snapshot names a policy that was not built: refuse (fail closed).
    Missing,
}

impl Target {
    /// The route name (`namespace/ingress`), as used in metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The upstream for this request, weighted across backends.
    pub(crate) fn upstream(&self) -> Option<&Upstream> {
        match self.backends.as_ref() {
            [] => None,
            [(only, _)] => Some(only),
            many => {
                let total = self.total_weight.max(1) as usize;
                let mut slot = (self.cursor.fetch_add(1, Ordering::Relaxed) % total) as u32;
                for (u, w) in many {
                    if slot < *w {
                        return Some(u);
                    }
                    slot -= w;
                }
                many.first().map(|(u, _)| u.as_ref())
            }
        }
    }
}

#[derive(Default)]
struct HostTable {
    exact: FastMap<Box<str>, Arc<Target>>,
    prefix: FastMap<Box<str>, Arc<Target>>,
    /// The lengths of the prefixes in `prefix`, longest first: a path is
    /// probed only where a prefix of that length could match.
    prefix_lengths: Box<[usize]>,
    fallback: Option<Arc<Target>>,
}

/// Routing tables of one snapshot.
#[derive(Default)]
pub struct RouteTable {
    exact_hosts: FastMap<Box<str>, HostTable>,
    wildcard_hosts: FastMap<Box<str>, HostTable>,
    any_host: Option<HostTable>,
    default: Option<Arc<Target>>,
    /// Route names, to retire metric series when a route goes away.
    pub(crate) route_names: HashSet<Arc<str>>,
}

impl RouteTable {
    /// Builds the tables; metric series for each route are resolved here,
    /// and each endpoint's connection pool (the one it already had when a
    /// previous snapshot used it).
    pub fn build(
        snapshot: &Snapshot,
        pools: &Pools,
        policies: &weir_auth::Policies,
        limits: &HashMap<String, Arc<crate::limits::PolicyLimits>>,
        metrics: &ProxyMetrics,
        default_timeout: Duration,
        default_max_body: u64,
    ) -> Self {
        let upstreams: HashMap<&str, Arc<Upstream>> = snapshot
            .upstreams
            .iter()
            .map(|(name, u)| {
                let endpoints = u
                    .endpoints
                    .iter()
                    .filter_map(|addr| {
                        let authority = Authority::try_from(addr.to_string()).ok()?;
                        Some(Endpoint {
                            addr: *addr,
                            authority,
                            pool: pools.endpoint(*addr, u.protocol, u.verify.as_ref()),
                        })
                    })
                    .collect();
                let up = Upstream {
                    endpoints,
                    next: AtomicUsize::new(0),
                };
                (name.0.as_str(), Arc::new(up))
            })
            .collect();
        let mut names: HashMap<Arc<str>, RouteMetrics> = HashMap::new();
        let mut target = |action: &RouteAction| -> Arc<Target> {
            let name: Arc<str> = Arc::from(action.name.as_str());
            let route_metrics = names
                .entry(name.clone())
                .or_insert_with(|| metrics.route(&name))
                .clone();
            let backends: Box<[(Arc<Upstream>, u32)]> = action
                .backends
                .iter()
                .filter_map(|b| Some((upstreams.get(b.upstream.0.as_str())?.clone(), b.weight)))
                .collect();
            let timeout = action
                .timeout_ms
                .map_or(default_timeout, Duration::from_millis);
            Arc::new(Target {
                total_weight: backends.iter().map(|(_, w)| *w).sum(),
                backends,
                cursor: AtomicUsize::new(0),
                name,
                timeout,
                send_timeout: action
                    .send_timeout_ms
                    .map_or(timeout, Duration::from_millis),
                connect_timeout: action.connect_timeout_ms.map(Duration::from_millis),
                next_upstream: action
                    .next_upstream
                    .unwrap_or(weir_snapshot::NextUpstream::DEFAULT),
                max_body: Some(action.max_body_bytes.unwrap_or(default_max_body))
                    .filter(|limit| *limit > 0),
                access_log_off: action.access_log_off,
                https_redirect: action.https_redirect,
                hsts: action.hsts,
                metrics: route_metrics,
                policy: match &action.policy {
                    None => RoutePolicy::Open,
                    Some(p) => policies
                        .get(p)
                        .map_or(RoutePolicy::Missing, |e| RoutePolicy::Enforce(e.clone())),
                },
                limits: action.policy.as_ref().and_then(|p| limits.get(p).cloned()),
            })
        };

        let mut table = RouteTable::default();
        for vhost in &snapshot.hosts {
            let mut host = HostTable::default();
            for route in &vhost.routes {
                let t = target(&route.action);
                let (map, key) = match &route.path {
                    PathMatch::Exact(p) => (&mut host.exact, p),
                    PathMatch::Prefix(p) => (&mut host.prefix, p),
                };
                map.entry(key.as_str().into()).or_insert(t);
            }
            let mut lengths: Vec<usize> = host.prefix.keys().map(|p| p.len()).collect();
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            lengths.dedup();
            host.prefix_lengths = lengths.into();
            host.fallback = vhost.fallback.as_ref().map(&mut target);
            match &vhost.host {
                HostMatch::Exact(h) => {
                    table.exact_hosts.insert(h.as_str().into(), host);
                }
                HostMatch::Wildcard(suffix) => {
                    table.wildcard_hosts.insert(suffix.as_str().into(), host);
                }
                HostMatch::Any => table.any_host = Some(host),
            }
        }
        table.default = snapshot.default_backend.as_ref().map(&mut target);
        table.route_names = names.into_keys().collect();
        table
    }

    /// Finds the target for a lower-case, port-less `host` and a normalized
    /// `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Target>> {
        let vhost = self
            .exact_hosts
            .get(host)
            .or_else(|| {
                if self.wildcard_hosts.is_empty() {
                    return None;
                }
                let dot = host.find('.')?;
                // `*.example.com` needs a non-empty first label.
                if dot == 0 {
                    return None;
                }
                self.wildcard_hosts.get(&host[dot..])
            })
            .or(self.any_host.as_ref());
        vhost.and_then(|h| h.find(path)).or(self.default.as_ref())
    }
}

impl HostTable {
    fn find(&self, path: &str) -> Option<&Arc<Target>> {
        if let Some(t) = self.exact.get(path) {
            return Some(t);
        }
        // Prefixes are stored without a trailing slash, and match element by
        // element: the whole path (unless it ends in '/'), or the part
        // before a '/'. Longest first, and only at the lengths the table
        // has.
        let bytes = path.as_bytes();
        for &len in &self.prefix_lengths {
            let boundary = match bytes.get(len) {
                Some(b) => *b == b'/',
                None => len == bytes.len() && !path.ends_with('/'),
            };
            if boundary && let Some(t) = path.get(..len).and_then(|p| self.prefix.get(p)) {
                return Some(t);
            }
        }
        self.fallback.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_snapshot::{
        Route, Upstream as SnapUpstream, UpstreamName, VirtualHost, WeightedBackend,
    };

    fn action(name: &str) -> RouteAction {
        RouteAction {
            name: name.into(),
            backends: vec![WeightedBackend {
                upstream: UpstreamName("u".into()),
                weight: 1,
            }],
            timeout_ms: None,
            connect_timeout_ms: None,
            send_timeout_ms: None,
            next_upstream: None,
            max_body_bytes: None,
            access_log_off: false,
            policy: None,
            https_redirect: false,
            hsts: false,
        }
    }

    fn route(name: &str, path: PathMatch) -> Route {
        Route {
            name: name.into(),
            path,
            action: action(name),
        }
    }

    fn table() -> RouteTable {
        let snapshot = Snapshot {
            replicas: None,
            certificates: Default::default(),
            default_certificate: None,
            hosts: vec![
                VirtualHost {
                    host: HostMatch::Exact("shop.example.com".into()),
                    routes: vec![
                        route("exact-foo", PathMatch::Exact("/foo".into())),
                        route("prefix-foo", PathMatch::Prefix("/foo".into())),
                        route("prefix-foo-bar", PathMatch::Prefix("/foo/bar".into())),
                        route("root", PathMatch::Prefix("".into())),
                    ],
                    fallback: None,
                },
                VirtualHost {
                    host: HostMatch::Wildcard(".example.com".into()),
                    routes: vec![route("wild", PathMatch::Prefix("/api".into()))],
                    fallback: Some(action("wild-fallback")),
                },
                VirtualHost {
                    host: HostMatch::Any,
                    routes: vec![route("any", PathMatch::Exact("/health".into()))],
                    fallback: None,
                },
            ],
            default_backend: Some(action("global")),
            upstreams: [(
                UpstreamName("u".into()),
                SnapUpstream {
                    endpoints: vec!["127.0.0.1:1".parse().unwrap()],
                    protocol: Default::default(),
                    verify: None,
                },
            )]
            .into(),
            policies: Default::default(),
        };
        let metrics = ProxyMetrics::register(&prometheus::Registry::new()).unwrap();
        RouteTable::build(
            &snapshot,
            &Pools::new(Duration::from_secs(1), Duration::from_secs(1)),
            &weir_auth::Policies::new(),
            &HashMap::new(),
            &metrics,
            Duration::from_secs(1),
            0,
        )
    }

    fn name(t: &RouteTable, host: &str, path: &str) -> Option<String> {
        t.find(host, path).map(|t| t.name.to_string())
    }

    #[test]
    fn ingress_spec_path_table() {
        let t = table();
        let h = "shop.example.com";
        assert_eq!(name(&t, h, "/foo").as_deref(), Some("exact-foo"));
        assert_eq!(name(&t, h, "/foo/").as_deref(), Some("prefix-foo"));
        assert_eq!(name(&t, h, "/foo/baz").as_deref(), Some("prefix-foo"));
        assert_eq!(name(&t, h, "/foo/bar").as_deref(), Some("prefix-foo-bar"));
        assert_eq!(name(&t, h, "/foo/bar/").as_deref(), Some("prefix-foo-bar"));
        assert_eq!(name(&t, h, "/foo/barista").as_deref(), Some("prefix-foo"));
        assert_eq!(name(&t, h, "/foobar").as_deref(), Some("root"));
        assert_eq!(name(&t, h, "/").as_deref(), Some("root"));
    }

    #[test]
    fn host_order() {
        let t = table();
        assert_eq!(name(&t, "a.example.com", "/api/x").as_deref(), Some("wild"));
        assert_eq!(
            name(&t, "a.example.com", "/other").as_deref(),
            Some("wild-fallback")
        );
        // One label only.
        assert_eq!(
            name(&t, "a.b.example.com", "/health").as_deref(),
            Some("any")
        );
        assert_eq!(name(&t, ".example.com", "/health").as_deref(), Some("any"));
        assert_eq!(name(&t, "other.test", "/health").as_deref(), Some("any"));
        assert_eq!(name(&t, "other.test", "/nope").as_deref(), Some("global"));
    }
}
