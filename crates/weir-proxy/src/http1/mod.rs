//! HTTP/1.1 on both sides of the proxy, written for weir: the server half
//! that clients talk to, the in-task client half that plain-text upstreams
//! answer, and the body decoder both share.
//!
//! ```text
//!  client ─▶ server.rs  (request.rs parses heads, body.rs hands the body on,
//!                        response.rs frames answers)
//!            ─▶ Proxy::handle ─▶ pool.rs ─▶ client.rs ─▶ upstream
//!                                  decode.rs frames bodies both ways
//! ```
//!
//! HTTP/2 (h2c and h2 over TLS) stays with hyper; an HTTP/2 connection is
//! recognised by its preface (server.rs) or by ALPN (the listener) and
//! handed over.

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod decode;
pub(crate) mod fields;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod server;

use http::header::{self, HeaderName, InvalidHeaderName};

use crate::headers::{CONNECTION_AT, Known, TE_AT, TRANSFER_ENCODING_AT, UPGRADE_AT};

/// A field name as the `http` types hold it, and what weir makes of it.
/// `HeaderName::from_bytes` lower-cases every name through a table and
/// then matches it against about ninety standard names: some 150
/// instructions a name, the largest single cost of turning a head into a
/// header map. The names clients and upstreams send most, in the spellings
/// they send them in, are recognised here by one comparison each; every
/// other name, and every other spelling of these, takes the general path,
/// so the result is the same either way.
pub(crate) fn field_name(raw: &[u8]) -> Result<(HeaderName, Known), InvalidHeaderName> {
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    let other = |name| (name, Known::Other);
    Ok(match raw {
        b"Host" | b"host" => (header::HOST, Known::Host),
        b"Content-Length" | b"content-length" => (header::CONTENT_LENGTH, Known::ContentLength),
        b"Content-Type" | b"content-type" => other(header::CONTENT_TYPE),
        b"Date" | b"date" => (header::DATE, Known::Date),
        b"Server" | b"server" => other(header::SERVER),
        b"Connection" | b"connection" => (header::CONNECTION, Known::HopByHop(CONNECTION_AT)),
        b"Keep-Alive" | b"keep-alive" => (KEEP_ALIVE, Known::HopByHop(1)),
        b"Transfer-Encoding" | b"transfer-encoding" => (
            header::TRANSFER_ENCODING,
            Known::HopByHop(TRANSFER_ENCODING_AT),
        ),
        b"TE" | b"te" => (header::TE, Known::HopByHop(TE_AT)),
        b"Upgrade" | b"upgrade" => (header::UPGRADE, Known::HopByHop(UPGRADE_AT)),
        b"User-Agent" | b"user-agent" => other(header::USER_AGENT),
        b"Accept" | b"accept" => other(header::ACCEPT),
        b"Accept-Encoding" | b"accept-encoding" => other(header::ACCEPT_ENCODING),
        b"Accept-Language" | b"accept-language" => other(header::ACCEPT_LANGUAGE),
        b"Accept-Ranges" | b"accept-ranges" => other(header::ACCEPT_RANGES),
        b"Authorization" | b"authorization" => other(header::AUTHORIZATION),
        b"Cookie" | b"cookie" => (header::COOKIE, Known::Cookie),
        b"Set-Cookie" | b"set-cookie" => other(header::SET_COOKIE),
        b"Cache-Control" | b"cache-control" => other(header::CACHE_CONTROL),
        b"ETag" | b"Etag" | b"etag" => other(header::ETAG),
        b"Last-Modified" | b"last-modified" => other(header::LAST_MODIFIED),
        b"Vary" | b"vary" => other(header::VARY),
        b"Origin" | b"origin" => other(header::ORIGIN),
        b"Referer" | b"referer" => other(header::REFERER),
        b"Content-Encoding" | b"content-encoding" => other(header::CONTENT_ENCODING),
        b"Expect" | b"expect" => (header::EXPECT, Known::Expect),
        b"X-Forwarded-For" | b"x-forwarded-for" => (X_FORWARDED_FOR, Known::ForwardedFor),
        b"X-Forwarded-Proto" | b"x-forwarded-proto" => (X_FORWARDED_PROTO, Known::ForwardedOther),
        b"X-Real-IP" | b"X-Real-Ip" | b"x-real-ip" => (X_REAL_IP, Known::ForwardedOther),
        b"X-Request-ID" | b"X-Request-Id" | b"x-request-id" => (X_REQUEST_ID, Known::RequestId),
        _ => {
            let name = HeaderName::from_bytes(raw)?;
            let known = Known::of(raw);
            (name, known)
        }
    })
}

/// `1*DIGIT` (RFC 9110 §8.6), as a number that fits in 63 bits: a
/// `Content-Length` or chunk count no real message comes near.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_are_the_names_the_general_path_gives() {
        for raw in [
            "Host",
            "host",
            "Content-Length",
            "Content-Type",
            "Date",
            "Server",
            "Connection",
            "Keep-Alive",
            "Transfer-Encoding",
            "User-Agent",
            "Accept",
            "Accept-Encoding",
            "Accept-Language",
            "Accept-Ranges",
            "Authorization",
            "Cookie",
            "Set-Cookie",
            "Cache-Control",
            "ETag",
            "Etag",
            "Last-Modified",
            "Vary",
            "Origin",
            "Referer",
            "Content-Encoding",
            "TE",
            "Upgrade",
            "Expect",
            "Proxy-Connection",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Real-IP",
            "X-Real-Ip",
            "X-Request-ID",
            "X-Request-Id",
            "x-request-id",
            "HOST",
            "X-Custom",
        ] {
            let general = HeaderName::from_bytes(raw.as_bytes()).expect("valid");
            let known = Known::of(raw.as_bytes());
            assert_eq!(
                field_name(raw.as_bytes()).expect("valid"),
                (general.clone(), known),
                "{raw}"
            );
            assert_eq!(
                field_name(raw.to_ascii_lowercase().as_bytes()).expect("valid"),
                (general, known),
                "{raw}"
            );
        }
        assert!(field_name(b"Bad Name").is_err());
    }
}
