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
/// upstream. Their order is [`Known::HopByHop`]'s.
pub(crate) static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The fields weir treats specially, told apart by name. The HTTP/1
/// parsers learn it for free while they recognise names
/// (`http1::field_name`); elsewhere [`Known::of`] matches the name's text,
/// which costs less than one hash lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// A hop-by-hop field: its place in [`HOP_BY_HOP`].
    HopByHop(u8),
    Host,
    Cookie,
    RequestId,
    ForwardedFor,
    /// `X-Real-IP`, `X-Forwarded-Proto` or `X-Forwarded-Host`.
    ForwardedOther,
    ContentLength,
    Expect,
    Date,
    /// `Strict-Transport-Security`.
    Hsts,
    Other,
}

/// Where `Connection`, `TE`, `Transfer-Encoding` and `Upgrade` sit in
/// [`HOP_BY_HOP`].
pub(crate) const CONNECTION_AT: u8 = 0;
pub(crate) const TE_AT: u8 = 4;
pub(crate) const TRANSFER_ENCODING_AT: u8 = 6;
pub(crate) const UPGRADE_AT: u8 = 7;

impl Known {
    /// What a field name, in any case, is.
    pub(crate) fn of(name: &[u8]) -> Known {
        // The spellings upstreams send most, by one comparison each.
        match name {
            b"Server" | b"Content-Type" | b"Cache-Control" | b"Vary" | b"Set-Cookie" | b"ETag"
            | b"Last-Modified" | b"Accept-Ranges" | b"Content-Encoding" | b"Expires" => {
                return Known::Other;
            }
            b"Date" => return Known::Date,
            b"Content-Length" => return Known::ContentLength,
            b"Connection" => return Known::HopByHop(CONNECTION_AT),
            b"Keep-Alive" => return Known::HopByHop(1),
            b"Transfer-Encoding" => return Known::HopByHop(TRANSFER_ENCODING_AT),
            _ => {}
        }
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => Known::HopByHop(TE_AT),
            4 if is("host") => Known::Host,
            4 if is("date") => Known::Date,
            6 if is("cookie") => Known::Cookie,
            6 if is("expect") => Known::Expect,
            7 if is("trailer") => Known::HopByHop(5),
            7 if is("upgrade") => Known::HopByHop(UPGRADE_AT),
            9 if is("x-real-ip") => Known::ForwardedOther,
            10 if is("connection") => Known::HopByHop(CONNECTION_AT),
            10 if is("keep-alive") => Known::HopByHop(1),
            12 if is("x-request-id") => Known::RequestId,
            14 if is("content-length") => Known::ContentLength,
            15 if is("x-forwarded-for") => Known::ForwardedFor,
            16 if is("proxy-connection") => Known::HopByHop(2),
            16 if is("x-forwarded-host") => Known::ForwardedOther,
            17 if is("transfer-encoding") => Known::HopByHop(TRANSFER_ENCODING_AT),
            17 if is("x-forwarded-proto") => Known::ForwardedOther,
            19 if is("proxy-authorization") => Known::HopByHop(3),
            25 if is("strict-transport-security") => Known::Hsts,
            _ => Known::Other,
        }
    }
}

/// Which of the fields weir acts on a message holds: gathered while the
/// message is parsed, or in one pass over its names, so that the lookups
/// and removals that follow happen only for fields that are there (most
/// messages carry few of them).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Present {
    /// Bit `i`: `HOP_BY_HOP[i]`.
    hop_by_hop: u8,
    /// `X-Request-Id`.
    pub(crate) request_id: bool,
    /// `X-Forwarded-For`.
    pub(crate) forwarded_for: bool,
    /// `X-Real-IP`, `X-Forwarded-Proto` or `X-Forwarded-Host`.
    pub(crate) forwarded_other: bool,
    /// `Host` fields (2 means two or more).
    pub(crate) hosts: u8,
    /// `Cookie` fields (2 means two or more).
    pub(crate) cookies: u8,
}

impl Present {
    /// Looks over every field of `headers`.
    pub(crate) fn scan(headers: &HeaderMap) -> Self {
        let mut p = Present::default();
        for (name, _) in headers {
            p.note(Known::of(name.as_str().as_bytes()));
        }
        p
    }

    /// Counts one field.
    pub(crate) fn note(&mut self, known: Known) {
        match known {
            Known::HopByHop(i) => self.hop_by_hop |= 1 << i,
            Known::Host => self.hosts = (self.hosts + 1).min(2),
            Known::Cookie => self.cookies = (self.cookies + 1).min(2),
            Known::RequestId => self.request_id = true,
            Known::ForwardedFor => self.forwarded_for = true,
            Known::ForwardedOther => self.forwarded_other = true,
            Known::ContentLength | Known::Expect | Known::Date | Known::Hsts | Known::Other => {}
        }
    }

    /// Whether the hop-by-hop field at `at` in [`HOP_BY_HOP`] is among the
    /// fields.
    pub(crate) fn has(&self, at: u8) -> bool {
        self.hop_by_hop & (1 << at) != 0
    }

    /// Whether `Upgrade` is among the fields.
    pub(crate) fn upgrade(&self) -> bool {
        self.has(UPGRADE_AT)
    }
}

/// Removes hop-by-hop headers and the headers the `Connection` header names.
/// Runs before weir adds its own headers, so a client cannot use
/// `Connection: X-Forwarded-For` to strip what weir sets.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_present(headers, Present::scan(headers));
}

/// [`strip_hop_by_hop`], knowing what `headers` holds.
pub(crate) fn strip_present(headers: &mut HeaderMap, present: Present) {
    if present.hop_by_hop == 0 {
        return;
    }
    if present.has(CONNECTION_AT) {
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
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present.hop_by_hop & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Whether a comma-separated field (`Connection`, ...) lists `token`, in
/// any of its lines and any case.
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| has_token_value(v, token))
}

/// Whether one comma-separated field value lists `token`, in any case.
pub(crate) fn has_token_value(value: &HeaderValue, token: &str) -> bool {
    list_items(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The items of a comma-separated field value (RFC 9110 §5.6.1), trimmed;
/// empty items are kept for the caller to skip or refuse.
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// The fields weir sets on every request it forwards: `X-Forwarded-For`
/// (the client's list with the peer appended), `X-Real-IP`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-Id`. They are
/// kept beside the request rather than in its header map: the in-task
/// HTTP/1.1 exchange, the common one, writes them straight into the
/// request head ([`Forwarded::encode`]), with no hashing, and the other
/// exchanges put them in the map ([`Forwarded::apply`]).
#[derive(Debug)]
pub(crate) struct Forwarded {
    forwarded_for: HeaderValue,
    real_ip: HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    request_id: HeaderValue,
}

impl Forwarded {
    /// The fields for a request with `headers` (`present`: what they
    /// hold). Copies the client sent are taken out of the map: weir's
    /// replace them (the client's `X-Forwarded-For` is extended). `peer` is
    /// the client address as a header value, formatted once per
    /// connection.
    pub(crate) fn new(
        headers: &mut HeaderMap,
        present: Present,
        peer: &HeaderValue,
        proto: &'static str,
        host: Option<HeaderValue>,
        request_id: HeaderValue,
    ) -> Self {
        let mut forwarded_for = peer.clone();
        if present.forwarded_for {
            // Several lines make one list (RFC 9110 §5.3).
            let mut list = Vec::new();
            for prior in headers.get_all(&X_FORWARDED_FOR) {
                let prior = prior.as_bytes().trim_ascii();
                if !prior.is_empty() {
                    list.extend_from_slice(prior);
                    list.extend_from_slice(b", ");
                }
            }
            if !list.is_empty() {
                list.extend_from_slice(peer.as_bytes());
                // Valid values joined by ", " are a valid value.
                forwarded_for = HeaderValue::from_bytes(&list).unwrap_or_else(|_| peer.clone());
            }
            headers.remove(&X_FORWARDED_FOR);
        }
        if present.forwarded_other {
            headers.remove(&X_REAL_IP);
            headers.remove(&X_FORWARDED_PROTO);
            headers.remove(&X_FORWARDED_HOST);
        }
        if present.request_id {
            headers.remove(&X_REQUEST_ID);
        }
        Forwarded {
            forwarded_for,
            real_ip: peer.clone(),
            proto,
            host,
            request_id,
        }
    }

    /// Puts the fields in `headers`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_FORWARDED_FOR.clone(), self.forwarded_for.clone());
        headers.insert(X_REAL_IP.clone(), self.real_ip.clone());
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.proto),
        );
        if let Some(host) = &self.host {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
    }

    /// Writes the fields as HTTP/1 field lines.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut line = |name: &[u8], value: &[u8]| {
            out.extend_from_slice(name);
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        line(b"x-forwarded-for: ", self.forwarded_for.as_bytes());
        line(b"x-real-ip: ", self.real_ip.as_bytes());
        line(b"x-forwarded-proto: ", self.proto.as_bytes());
        if let Some(host) = &self.host {
            line(b"x-forwarded-host: ", host.as_bytes());
        }
        line(b"x-request-id: ", self.request_id.as_bytes());
    }
}

/// HTTP/2 clients may split `Cookie` into one field per cookie (RFC 9113
/// §8.2.3); an HTTP/1.1 upstream must get them as one field, joined with
/// "; ". A single field is left alone.
pub(crate) fn join_cookies(headers: &mut HeaderMap, present: Present) {
    if present.cookies < 2 {
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
/// IPv4 is written digit by digit: through `Display` it cost about 1,500
/// instructions and two allocations, a tenth of a short connection's
/// user-space work (callgrind).
pub(crate) fn peer_value(peer: IpAddr) -> HeaderValue {
    let v4 = match peer {
        IpAddr::V4(v4) => v4,
        // An IP address always formats to a valid header value.
        IpAddr::V6(_) => {
            return HeaderValue::from_str(&peer.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        }
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            text[len] = b'0' + d;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Generates request ids: a random per-process prefix and a counter, so ids
/// are unique without a syscall or lock per request. Ids are made
/// [`ID_BLOCK`] at a time into one buffer that each id's header value
/// shares, so a request costs no allocation for its id.
pub(crate) struct RequestIds {
    /// Tells this generator's blocks from another's (tests make several).
    instance: u64,
    /// The prefix, as the id's first 16 hex digits.
    prefix: [u8; 16],
    counter: AtomicU64,
}

/// Ids made at a time, per thread.
const ID_BLOCK: u64 = 64;
/// Hex digits in an id.
const ID_LEN: usize = 32;

thread_local! {
    /// The current block: whose it is, its ids, and the next one's index.
    static ID_BLOCKS: std::cell::RefCell<(u64, bytes::Bytes, usize)> =
        const { std::cell::RefCell::new((0, bytes::Bytes::new(), 0)) };
}

/// `n` as 16 lower-case hex digits.
fn hex16(n: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate().take(16) {
        *digit = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        let mut prefix = [0u8; 16];
        hex16(h.finish(), &mut prefix);
        RequestIds {
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    /// Keeps a client's id when it is sane (1–128 of `[A-Za-z0-9._:-]`), so
    /// traces can span systems; otherwise makes a new one. `present`: what
    /// `headers` holds.
    pub(crate) fn get(&self, headers: &HeaderMap, present: Present) -> HeaderValue {
        if present.request_id
            && let Some(v) = headers.get(&X_REQUEST_ID)
        {
            let b = v.as_bytes();
            if !b.is_empty()
                && b.len() <= 128
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
            {
                return v.clone();
            }
        }
        self.fresh()
    }

    /// A new id, for a request that brought no valid one (or whose head
    /// could not be parsed).
    pub(crate) fn fresh(&self) -> HeaderValue {
        let id = ID_BLOCKS.with_borrow_mut(|(owner, block, next)| {
            if *owner != self.instance || *next as u64 == ID_BLOCK {
                *block = self.block();
                *owner = self.instance;
                *next = 0;
            }
            let at = *next * ID_LEN;
            *next += 1;
            block.slice(at..at + ID_LEN)
        });
        // Hex digits are always a valid header value.
        HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// The next [`ID_BLOCK`] ids, one after another.
    fn block(&self) -> bytes::Bytes {
        let first = self.counter.fetch_add(ID_BLOCK, Ordering::Relaxed);
        let mut block = vec![0u8; ID_BLOCK as usize * ID_LEN];
        for (k, id) in block.chunks_exact_mut(ID_LEN).enumerate() {
            id[..16].copy_from_slice(&self.prefix);
            hex16(first + k as u64, &mut id[16..]);
        }
        block.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_known_in_any_case() {
        for name in [
            "Server",
            "Content-Type",
            "Cache-Control",
            "Vary",
            "Set-Cookie",
            "ETag",
            "Last-Modified",
            "Accept-Ranges",
            "Content-Encoding",
            "Expires",
            "Date",
            "Content-Length",
            "Connection",
            "Keep-Alive",
            "Transfer-Encoding",
            "Proxy-Connection",
            "Proxy-Authorization",
            "TE",
            "Trailer",
            "Upgrade",
            "Host",
            "Cookie",
            "X-Request-Id",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Real-IP",
            "Expect",
            "Strict-Transport-Security",
        ] {
            let known = Known::of(name.as_bytes());
            assert_eq!(
                known,
                Known::of(name.to_ascii_lowercase().as_bytes()),
                "{name}"
            );
            assert_eq!(
                known,
                Known::of(name.to_ascii_uppercase().as_bytes()),
                "{name}"
            );
            let listed = HOP_BY_HOP
                .iter()
                .position(|h| h.as_str().eq_ignore_ascii_case(name));
            assert_eq!(
                listed.map(|i| Known::HopByHop(i as u8)),
                matches!(known, Known::HopByHop(_)).then_some(known),
                "{name}"
            );
        }
        assert_eq!(Known::of(b"content-LENGTH"), Known::ContentLength);
        assert_eq!(Known::of(b"X-Custom"), Known::Other);
    }

    #[test]
    fn split_cookies_are_joined_for_http1() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        let present = Present::scan(&h);
        join_cookies(&mut h, present);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1"]);
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.append("cookie", HeaderValue::from_static("c=3"));
        let present = Present::scan(&h);
        join_cookies(&mut h, present);
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
        let present = Present::scan(&h);
        Forwarded::new(
            &mut h,
            present,
            &peer_value("10.0.0.1".parse().unwrap()),
            "http",
            None,
            HeaderValue::from_static("id"),
        )
        .apply(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert_eq!(h.get("host").unwrap(), "a");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
    }

    #[test]
    fn forwarding_fields_replace_the_clients_and_extend_its_list() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let present = Present::scan(&h);
        let fwd = Forwarded::new(
            &mut h,
            present,
            &peer_value("10.0.0.1".parse().unwrap()),
            "https",
            Some(HeaderValue::from_static("shop")),
            HeaderValue::from_static("abc"),
        );
        assert_eq!(h.len(), 1, "only accept is left: {h:?}");
        let mut wire = Vec::new();
        fwd.encode(&mut wire);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\nx-real-ip: 10.0.0.1\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: shop\r\nx-request-id: abc\r\n"
        );
        fwd.apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop");
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn request_ids() {
        let other = RequestIds::new();
        let ids = RequestIds::new();
        let h = HeaderMap::new();
        let theirs = other.get(&h, Present::default());
        let mine: Vec<_> = (0..ID_BLOCK + 2)
            .map(|_| ids.get(&h, Present::default()))
            .collect();
        assert_ne!(
            theirs.as_bytes()[..16],
            mine[0].as_bytes()[..16],
            "prefixes differ"
        );
        for (n, id) in mine.iter().enumerate() {
            assert!(
                id.to_str().unwrap().ends_with(&format!("{n:016x}")),
                "{id:?}"
            );
            assert_eq!(id.as_bytes()[..16], mine[0].as_bytes()[..16]);
        }
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        let a = ids.get(&h, Present::scan(&h));
        let b = ids.get(&h, Present::scan(&h));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(b.to_str().unwrap().ends_with("0001"), "{b:?}");
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ids.get(&h, Present::scan(&h)), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("bad id<script>"));
        assert_ne!(ids.get(&h, Present::scan(&h)), "bad id<script>");
    }

    #[test]
    fn peer_values_read_as_the_address_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.9",
            "255.255.255.255",
            "192.168.0.10",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(peer_value(addr), addr.to_string().as_str(), "{ip}");
        }
    }
}
