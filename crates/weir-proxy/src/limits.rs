//! The rate-limit filter: turns a policy's rules into checks for one request
//! (bucket keys from the client address, headers, claims, consumer or
//! route), asks the process-wide [`RateLimiter`], and reports the outcome in
//! response headers: `RateLimit-Policy` / `RateLimit` (IETF httpapi draft),
//! or `X-RateLimit-*`, and `Retry-After` on 429.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use prometheus::IntCounter;
use weir_auth::Caller;
use weir_ratelimit::{
    Algorithm, BucketName, Check, Decision, Limit, OnStoreFailure, RateLimiter, Scope, Source,
};
use weir_snapshot::{
    RateAlgorithm, RateLimitHeaders, RateLimitKey, RateLimits, RateScope, StoreFailure,
};

use crate::cidr::Cidr;

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

struct Counters {
    allowed: IntCounter,
    rejected: IntCounter,
    shadow_rejected: IntCounter,
    failure_allowed: IntCounter,
    failure_denied: IntCounter,
}

struct Rule {
    name: String,
    key: Vec<RateLimitKey>,
    /// The bucket family, hashed once: policy, rule, algorithm, period.
    /// Not requests or burst: raising a limit keeps the counts.
    family: BucketName,
    limit: Limit,
    scope: Scope,
    on_store_failure: OnStoreFailure,
    shadow: bool,
    counters: Counters,
}

/// A policy's rate limits, built once per snapshot.
pub struct PolicyLimits {
    /// Rules that refuse, decided together.
    enforced: Vec<Rule>,
    /// Shadow rules, decided apart so their refusals never keep the
    /// enforced rules from consuming.
    shadow: Vec<Rule>,
    /// Whether a rule is keyed by client address (resolved only then).
    needs_client_ip: bool,
    headers: RateLimitHeaders,
    /// `RateLimit-Policy`, the same on every response.
    policy_header: Option<HeaderValue>,
}

/// What the filter decided.
pub(crate) enum Verdict {
    /// Proceed; add these headers to the response.
    Admit(HeaderMap),
    /// Refuse with this status, error code, message and headers.
    Refuse {
        status: http::StatusCode,
        code: &'static str,
        message: String,
        headers: HeaderMap,
    },
}

impl PolicyLimits {
    /// Compiles `limits`; counters are resolved here, not per request.
    pub(crate) fn build(limits: &RateLimits, metrics: &weir_ratelimit::RateLimitMetrics) -> Self {
        let (shadow, enforced): (Vec<Rule>, Vec<Rule>) = limits
            .rules
            .iter()
            .map(|r| {
                let counter = |result: &str| {
                    metrics.decisions.with_label_values(&[
                        limits.source.as_str(),
                        r.name.as_str(),
                        result,
                    ])
                };
                let algorithm = match r.algorithm {
                    RateAlgorithm::Gcra => Algorithm::Gcra,
                    RateAlgorithm::SlidingWindow => Algorithm::SlidingWindow,
                    RateAlgorithm::FixedWindow => Algorithm::FixedWindow,
                };
                let family = BucketName::new(&[
                    limits.source.as_bytes(),
                    r.name.as_bytes(),
                    format!("{algorithm:?}/{}", r.period_ms).as_bytes(),
                ]);
                Rule {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    family,
                    limit: Limit {
                        algorithm,
                        requests: r.requests,
                        period: Duration::from_millis(r.period_ms),
                        burst: r.burst,
                    },
                    scope: match r.scope {
                        RateScope::Local => Scope::Local,
                        RateScope::Global => Scope::Global,
                    },
                    on_store_failure: match r.on_store_failure {
                        StoreFailure::Allow => OnStoreFailure::Allow,
                        StoreFailure::Deny => OnStoreFailure::Deny,
                        StoreFailure::LocalShare => OnStoreFailure::LocalShare,
                    },
                    shadow: r.shadow,
                    counters: Counters {
                        allowed: counter(RESULTS[0]),
                        rejected: counter(RESULTS[1]),
                        shadow_rejected: counter(RESULTS[2]),
                        failure_allowed: counter(RESULTS[3]),
                        failure_denied: counter(RESULTS[4]),
                    },
                }
            })
            .partition(|r| r.shadow);
        let draft = matches!(
            limits.headers,
            RateLimitHeaders::Draft | RateLimitHeaders::Both
        );
        let policy_header = draft
            .then(|| {
                let items: Vec<String> = enforced
                    .iter()
                    .map(|r| {
                        format!(
                            "\"{}\";q={};w={}",
                            r.name,
                            r.limit.requests,
                            r.limit.period.as_secs().max(1)
                        )
                    })
                    .collect();
                (!items.is_empty()).then(|| HeaderValue::from_str(&items.join(", ")).ok())
            })
            .flatten()
            .flatten();
        let needs_client_ip = enforced
            .iter()
            .chain(&shadow)
            .any(|r| r.key.contains(&RateLimitKey::ClientIp));
        PolicyLimits {
            enforced,
            shadow,
            needs_client_ip,
            headers: limits.headers,
            policy_header,
        }
    }

    /// Decides one request. `route` names the route for `route` keys.
    pub(crate) async fn check(
        &self,
        limiter: &Arc<RateLimiter>,
        request: &HeaderMap,
        client: ClientAddr<'_>,
        caller: &Caller<'_>,
        route: &str,
    ) -> Verdict {
        let client_ip = self.needs_client_ip.then(|| client.resolve(request));
        let check_of = |r: &Rule| {
            let mut name = r.family.clone();
            for k in &r.key {
                match k {
                    RateLimitKey::ClientIp => match client_ip {
                        Some(IpAddr::V4(ip)) => name.part(&ip.octets()),
                        Some(IpAddr::V6(ip)) => name.part(&ip.octets()),
                        None => name.part(b""),
                    },
                    RateLimitKey::Header(h) => {
                        name.part(request.get(h.as_str()).map_or(&b""[..], |v| v.as_bytes()))
                    }
                    RateLimitKey::Claim(path) => {
                        name.part(caller.claim(path).unwrap_or_default().as_bytes())
                    }
                    RateLimitKey::Consumer => name.part(caller.consumer().unwrap_or("").as_bytes()),
                    RateLimitKey::Route => name.part(route.as_bytes()),
                };
            }
            Check {
                bucket: name.finish(),
                limit: r.limit,
                scope: r.scope,
                on_store_failure: r.on_store_failure,
            }
        };
        let (enforced, shadow) = (&self.enforced, &self.shadow);
        let mut headers = HeaderMap::new();
        let mut refused: Option<(bool, Duration, &str)> = None;
        if !enforced.is_empty() {
            let checks: Vec<Check> = enforced.iter().map(check_of).collect();
            let decisions = limiter.check(&checks).await;
            for (rule, d) in enforced.iter().zip(&decisions) {
                count(rule, d, false);
                if !d.outcome.allowed && d.source != Source::NotChecked {
                    let by_store_failure = d.source == Source::FailedClosed;
                    let retry = d.outcome.retry_after;
                    match &mut refused {
                        Some((_, r, _)) if *r >= retry => {}
                        _ => refused = Some((by_store_failure, retry, rule.name.as_str())),
                    }
                }
            }
            self.report(&decisions, &mut headers);
        }
        if refused.is_none() && !shadow.is_empty() {
            let checks: Vec<Check> = shadow.iter().map(check_of).collect();
            for (rule, d) in shadow.iter().zip(limiter.check(&checks).await) {
                count(rule, &d, true);
                if !d.outcome.allowed && d.source != Source::NotChecked {
                    tracing::debug!(rule = %rule.name, "Shadow rate limit would have refused the request.");
                }
            }
        }
        match refused {
            None => Verdict::Admit(headers),
            Some((by_store_failure, retry, rule)) => {
                let secs = ceil_secs(retry).max(1);
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
                if by_store_failure {
                    Verdict::Refuse {
                        status: http::StatusCode::SERVICE_UNAVAILABLE,
                        code: "rate_limit_unavailable",
                        message: format!(
                            "rate limit {rule:?} cannot be checked right now and is configured to refuse meanwhile"
                        ),
                        headers,
                    }
                } else {
                    Verdict::Refuse {
                        status: http::StatusCode::TOO_MANY_REQUESTS,
                        code: "rate_limited",
                        message: format!("rate limit {rule:?} exceeded; retry after {secs}s"),
                        headers,
                    }
                }
            }
        }
    }

    /// The limit headers for the enforced rules' `decisions`.
    fn report(&self, decisions: &[Decision], headers: &mut HeaderMap) {
        let checked = || {
            self.enforced
                .iter()
                .zip(decisions)
                .filter(|(_, d)| d.source != Source::NotChecked)
        };
        if matches!(
            self.headers,
            RateLimitHeaders::Draft | RateLimitHeaders::Both
        ) {
            if let Some(p) = &self.policy_header {
                headers.insert(RATELIMIT_POLICY.clone(), p.clone());
            }
            let items: Vec<String> = checked()
                .map(|(r, d)| {
                    format!(
                        "\"{}\";r={};t={}",
                        r.name,
                        d.outcome.remaining,
                        ceil_secs(d.outcome.reset)
                    )
                })
                .collect();
            if let Ok(v) = HeaderValue::from_str(&items.join(", "))
                && !items.is_empty()
            {
                headers.insert(RATELIMIT.clone(), v);
            }
        }
        if matches!(
            self.headers,
            RateLimitHeaders::Legacy | RateLimitHeaders::Both
        ) && let Some((r, d)) = checked().min_by_key(|(_, d)| d.outcome.remaining)
        {
            headers.insert(X_LIMIT.clone(), HeaderValue::from(r.limit.requests));
            headers.insert(X_REMAINING.clone(), HeaderValue::from(d.outcome.remaining));
            headers.insert(
                X_RESET.clone(),
                HeaderValue::from(ceil_secs(d.outcome.reset)),
            );
        }
    }
}

/// Whole seconds, rounded up: a client told to wait must not come back early.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn count(rule: &Rule, d: &Decision, shadow: bool) {
    let c = &rule.counters;
    match (d.source, d.outcome.allowed) {
        (Source::NotChecked, _) => {}
        (Source::FailedOpen, _) => c.failure_allowed.inc(),
        (Source::FailedClosed, _) => c.failure_denied.inc(),
        (_, true) => c.allowed.inc(),
        (_, false) if shadow => c.shadow_rejected.inc(),
        (_, false) => c.rejected.inc(),
    }
}

/// The client's address as rate limits see it.
#[derive(Clone, Copy)]
pub(crate) struct ClientAddr<'a> {
    /// The TCP peer.
    pub(crate) peer: IpAddr,
    /// Proxies whose `X-Forwarded-For` entries are believed.
    pub(crate) trusted: &'a [Cidr],
}

impl ClientAddr<'_> {
    /// The peer, or when the peer is a trusted proxy, the right-most
    /// `X-Forwarded-For` entry not itself a trusted proxy (entries left of
    /// it could have been written by the client).
    pub(crate) fn resolve(&self, headers: &HeaderMap) -> IpAddr {
        let mut client = self.peer;
        if !self.is_trusted(client) {
            return client;
        }
        // Right to left: the last header line's last entry is the nearest hop.
        let hops = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .rev()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.rsplit(','));
        for hop in hops {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Garbage from here on: the last trusted hop is the client.
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// The `result` labels of `weir_ratelimit_decisions_total`.
const RESULTS: [&str; 5] = [
    "allowed",
    "rejected",
    "shadow_rejected",
    "store_failure_allowed",
    "store_failure_denied",
];

/// The `(policy, rule)` label pairs a snapshot's rules count decisions in.
pub(crate) fn series(
    snapshot: &weir_snapshot::Snapshot,
) -> std::collections::HashSet<(String, String)> {
    snapshot
        .policies
        .values()
        .filter_map(|p| p.rate_limits.as_ref())
        .flat_map(|l| l.rules.iter().map(|r| (l.source.clone(), r.name.clone())))
        .collect()
}

/// Drops the decision series of a rule no snapshot has any more, so a
/// deleted or renamed rule does not stay in `/metrics` forever.
pub(crate) fn forget(
    metrics: &weir_ratelimit::RateLimitMetrics,
    (policy, rule): &(String, String),
) {
    for result in RESULTS {
        // Absent when the rule never decided that way: nothing to drop.
        let _ = metrics
            .decisions
            .remove_label_values(&[policy.as_str(), rule.as_str(), result]);
    }
}

/// Builds the per-policy limits of a snapshot.
pub(crate) fn build_all(
    snapshot: &weir_snapshot::Snapshot,
    limiter: &RateLimiter,
) -> std::collections::HashMap<String, Arc<PolicyLimits>> {
    let mut global_without_store = false;
    let out = snapshot
        .policies
        .iter()
        .filter_map(|(name, p)| {
            let limits = p.rate_limits.as_ref()?;
            global_without_store |=
                !limiter.has_store() && limits.rules.iter().any(|r| r.scope == RateScope::Global);
            Some((
                name.clone(),
                Arc::new(PolicyLimits::build(limits, limiter.metrics())),
            ))
        })
        .collect();
    // Once per process: every snapshot would say the same.
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if global_without_store && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "Global rate limits are enforced per replica: weir runs without --redis-url."
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    #[test]
    fn client_address_behind_trusted_proxies() {
        let trusted = cidrs(&["10.0.0.0/8", "::1/128"]);
        let mut h = HeaderMap::new();
        h.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.1.1.1"),
        );
        let peer = |ip: &str| ClientAddr {
            peer: ip.parse().expect("ip"),
            trusted: &trusted,
        };
        // Behind two trusted hops: the first untrusted entry from the right;
        // the spoofed left-most entry is ignored.
        assert_eq!(peer("10.2.2.2").resolve(&h).to_string(), "203.0.113.9");
        // An untrusted peer's header is not believed.
        assert_eq!(peer("198.51.100.1").resolve(&h).to_string(), "198.51.100.1");
        // Nothing trusted: the peer.
        let none = ClientAddr {
            peer: "10.2.2.2".parse().expect("ip"),
            trusted: &[],
        };
        assert_eq!(none.resolve(&h).to_string(), "10.2.2.2");
    }
}
