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
/// upstream. Pre-parsed, so checking a header map costs name comparisons, not
/// parsing and hashing.
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Removes hop-by-hop headers and the headers the `Connection` header names.
/// Runs before weir adds its own headers, so a client cannot use
/// `Connection: X-Forwarded-For` to strip what weir sets.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry few of them: one pass of cheap name comparisons
    // finds which, so only those are hashed and removed.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for key in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == key) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Tokens that are hop-by-hop anyway are removed below.
            .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            // Never let a client remove the Host header this way.
            .filter(|n| n != http::header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// Whether a comma-separated field (`Connection`, ...) lists `token`, in
/// any of its lines and any case.
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Sets `X-Forwarded-For` (appending the peer), `X-Real-IP`,
/// `X-Forwarded-Proto` and `X-Forwarded-Host`. `peer` is the client address
/// as a header value, formatted once per connection.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) if !prior.as_bytes().trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prior.len() + 2 + peer.len());
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer.as_bytes());
            // Both parts are valid header values and ", " is too.
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| peer.clone())
        }
        _ => peer.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_REAL_IP.clone(), peer.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// HTTP/2 clients may split `Cookie` into one field per cookie (RFC 9113
/// §8.2.3); an HTTP/1.1 upstream must get them as one field, joined with
/// "; ". A single field is left alone.
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(http::header::COOKIE).iter();
    if values.nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (i, v) in headers.get_all(http::header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Valid values joined by "; " are a valid value; on the impossible
    // failure the fields stay split, as they came.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// The client address as a header value; computed once per connection.
pub(crate) fn peer_value(peer: IpAddr) -> HeaderValue {
    // An IP address always formats to a valid header value.
    HeaderValue::from_str(&peer.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            let word = if i < 16 { self.prefix } else { n };
            let shift = 60 - 4 * (i % 16);
            *byte = HEX[((word >> shift) & 0xf) as usize];
        }
        // Hex digits are always a valid header value.
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cookies_are_joined_for_http1() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1"]);
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.append("cookie", HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2; c=3"]
        );
    }

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
        set_forwarded(
            &mut h,
            &peer_value("10.0.0.1".parse().unwrap()),
            "http",
            None,
        );
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
        set_forwarded(
            &mut h,
            &peer_value("10.0.0.1".parse().unwrap()),
            "http",
            None,
        );
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
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(b.to_str().unwrap().ends_with("0001"), "{b:?}");
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ids.get(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("bad id<script>"));
        assert_ne!(ids.get(&h), "bad id<script>");
    }
}
