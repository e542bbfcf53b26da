//! Header hygiene between client and upstream: hop-by-hop removal,
//! forwarding headers, request ids.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies drop.
/// `proxy-authorization` carries credentials meant for a proxy, never for the
/// upstream.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers and the headers the `Connection` header names.
/// Runs before weir adds its own headers, so a client cannot use
/// `Connection: X-Forwarded-For` to strip what weir sets.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            // Never let a client remove the Host header this way.
            .filter(|n| n != http::header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Sets `X-Forwarded-For` (appending the peer), `X-Real-IP`,
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &'static str,
    host: &str,
) {
    let peer_text = peer.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {peer_text}"),
        _ => peer_text.clone(),
    };
    // Every value here is built from validated parts; a failure would mean a
    // prior header held bytes `HeaderValue` accepts but `to_str` rejects,
    // which the `to_str` filter above already excludes.
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer_text) {
        headers.insert(X_REAL_IP.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST.clone(), v);
    }
}

/// Generates request ids: a random per-process prefix and a counter, so ids
/// are unique without a syscall or lock per request.
pub(crate) struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        RequestIds {
            prefix: h.finish(),
            counter: AtomicU64::new(0),
        }
    }

    /// Keeps a client's id when it is sane (1–128 of `[A-Za-z0-9._:-]`), so
    /// traces can span systems; otherwise makes a new one.
    pub(crate) fn get(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty()
                && b.len() <= 128
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
            {
                return v.clone();
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}{:016x}", self.prefix, n);
        // Hex digits are always a valid header value.
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_removed_but_not_ours() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("x-secret, x-forwarded-for, host"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("host", HeaderValue::from_static("a"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        set_forwarded(&mut h, "10.0.0.1".parse().unwrap(), "http", "a");
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert_eq!(h.get("host").unwrap(), "a");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
    }

    #[test]
    fn xff_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        set_forwarded(&mut h, "10.0.0.1".parse().unwrap(), "http", "a");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.1.1.1, 10.0.0.1");
    }

    #[test]
    fn request_ids() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        let a = ids.get(&h);
        let b = ids.get(&h);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ids.get(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("bad id<script>"));
        assert_ne!(ids.get(&h), "bad id<script>");
    }
}
