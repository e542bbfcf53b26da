//! Responses to HTTP/1 clients: the head as written on the wire, and the
//! body's framing (RFC 9112 §4-§7).
//!
//! weir owns the client's connection, so it frames every response itself,
//! whatever the upstream did: a `Content-Length` it can vouch for (the
//! upstream's, when its body is read by that length, or the size of a body
//! already in hand), else chunked to HTTP/1.1 clients and delimited by the
//! close to HTTP/1.0 ones. `Connection` is weir's too: it says `close` when
//! the connection ends after this response and `keep-alive` to an HTTP/1.0
//! client that asked for it; the upstream's own connection options never
//! reach the client (they were removed as hop-by-hop). A response with no
//! `Date` gets one (RFC 9110 §6.6.1), from a per-thread cache renewed each
//! second.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, HeaderMap, HeaderValue, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version, response};
use hyper::body::SizeHint;

use super::fields::RawFields;
use crate::headers::{Known, X_REQUEST_ID, list_items};

/// What the head's encoding needs to know of the request it answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answering {
    /// A `HEAD` request: the response has no body, whatever its fields say.
    pub(crate) head: bool,
    /// The client's version (HTTP/1.0 gets no chunked bodies).
    pub(crate) version: Version,
    /// The client takes trailer fields (`TE: trailers`).
    pub(crate) trailers: bool,
}

impl Answering {
    /// What matters of `method` and `version`.
    pub(crate) fn new(method: &Method, version: Version, trailers: bool) -> Self {
        Answering {
            head: method == Method::HEAD,
            version,
            trailers,
        }
    }
}

/// How the body is written after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304); whatever the body yields is dropped.
    None,
    /// Exactly this many bytes are left to write.
    Length(u64),
    /// Chunked, with trailer fields passed on when the client takes them.
    Chunked { trailers: bool },
    /// Until the connection closes (HTTP/1.0 clients, unknown length).
    Close,
}

/// Writes the status line and fields of `parts` into `out` (an upstream's
/// fields as they arrived, `raw`, first), framed for a body of `size`, with
/// `request_id` as `X-Request-Id` (replacing any the fields hold).
/// `close`: the connection ends after this response, so the head says so;
/// it is set here too when the response's own `Connection` field or its
/// framing means it. Returns the body framing.
pub(crate) fn encode_head(
    parts: &response::Parts,
    raw: Option<&RawFields>,
    request_id: &HeaderValue,
    size: SizeHint,
    to: Answering,
    close: &mut bool,
    out: &mut Vec<u8>,
) -> Framing {
    let status = parts.status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let bodiless = to.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // 204 and 1xx have no length at all; HEAD and 304 keep the one that
    // describes the representation.
    let keeps_length = !(status.is_informational() || status == StatusCode::NO_CONTENT);
    out.reserve(64 + parts.headers.len() * 32);
    status_line(to.version, status, out);

    let mut length: Option<u64> = None;
    let mut date = false;
    // The upstream's fields, as they arrived (no hop-by-hop among them).
    // The first valid length counts (repeats of it are dropped); an invalid
    // one is dropped and the body framed by itself.
    let mut length_field = |value: &[u8], out: &mut Vec<u8>| {
        if length.is_none()
            && let Some(n) = content_length(value)
        {
            length = Some(n);
            if keeps_length {
                out.extend_from_slice(b"content-length: ");
                decimal(n, out);
                out.extend_from_slice(b"\r\n");
            }
        }
    };
    for (name, value, known) in raw.into_iter().flat_map(RawFields::iter) {
        match known {
            Known::ContentLength => {
                length_field(value, out);
                continue;
            }
            Known::RequestId | Known::HopByHop(_) => continue,
            Known::Date => date = true,
            _ => {}
        }
        field(name, value, out);
    }
    for (name, value) in &parts.headers {
        if *name == CONNECTION && !switching {
            // weir decides the connection's fate; a `close` asked for by
            // the handler (after a refused body, say) is honoured.
            *close |= crate::headers::has_token_value(value, "close");
            continue;
        }
        if *name == TRANSFER_ENCODING {
            continue;
        }
        if *name == CONTENT_LENGTH {
            length_field(value.as_bytes(), out);
            continue;
        }
        if *name == DATE {
            date = true;
        } else if *name == X_REQUEST_ID {
            continue;
        }
        field(name.as_str().as_bytes(), value.as_bytes(), out);
    }
    field(b"x-request-id", request_id.as_bytes(), out);

    let framing = if bodiless || switching {
        Framing::None
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = size.exact() {
        out.extend_from_slice(b"content-length: ");
        decimal(n, out);
        out.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else if to.version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked {
            trailers: to.trailers,
        }
    } else {
        *close = true;
        Framing::Close
    };
    if !switching {
        if *close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if to.version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    if !date {
        out.extend_from_slice(b"date: ");
        DATE_CACHE.with(|d| d.borrow_mut().extend(out));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// `HTTP/1.1 200 OK\r\n` and the like. HTTP/1.0 clients are answered as
/// HTTP/1.0, so they never meet a feature of 1.1 they cannot read.
fn status_line(version: Version, status: StatusCode, out: &mut Vec<u8>) {
    if version == Version::HTTP_11 && status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if version == Version::HTTP_11 {
        b"HTTP/1.1 "
    } else {
        b"HTTP/1.0 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    // A reason phrase is always written: some parsers require one.
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One field line. Names and values were validated by the `http` types.
pub(crate) fn field(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line.
pub(crate) fn chunk_size(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with the trailer fields when there are any to pass on.
pub(crate) fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        field(name.as_str().as_bytes(), value.as_bytes(), out);
    }
    out.extend_from_slice(b"\r\n");
}

fn decimal(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A `Content-Length` value: one decimal, or a list of one decimal
/// repeated (RFC 9110 §8.6).
fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for item in list_items(value) {
        let n = super::decimal(item)?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// The `Date` value of the current second, formatted once per second per
/// thread.
struct DateCache {
    second: u64,
    value: [u8; 29],
}

impl DateCache {
    fn extend(&mut self, out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == self.value.len() {
                self.value.copy_from_slice(text.as_bytes());
                self.second = second;
            }
        }
        out.extend_from_slice(&self.value);
    }
}

thread_local! {
    static DATE_CACHE: RefCell<DateCache> = const {
        RefCell::new(DateCache {
            second: 0,
            value: *b"Thu, 01 Jan 1970 00:00:00 GMT",
        })
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(
        status: u16,
        fields: &[(&str, &str)],
        size: SizeHint,
        to: Answering,
        close: bool,
    ) -> (String, Framing, bool) {
        let mut resp = http::Response::new(());
        *resp.status_mut() = StatusCode::from_u16(status).expect("status");
        for (k, v) in fields {
            resp.headers_mut().append(
                http::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        let mut close = close;
        let framing = encode_head(
            &parts,
            None,
            &HeaderValue::from_static("id-1"),
            size,
            to,
            &mut close,
            &mut out,
        );
        (String::from_utf8(out).expect("ascii"), framing, close)
    }

    const GET11: Answering = Answering {
        head: false,
        version: Version::HTTP_11,
        trailers: false,
    };
    const DATED: (&str, &str) = ("date", "Sun, 06 Dec 2026 10:00:00 GMT");

    #[test]
    fn lengths_known_or_not() {
        let (text, framing, close) = head(200, &[DATED], SizeHint::with_exact(2), GET11, false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 10:00:00 GMT\r\nx-request-id: id-1\r\n\
             content-length: 2\r\n\r\n"
        );
        assert_eq!((framing, close), (Framing::Length(2), false));
        let (text, framing, _) = head(
            200,
            &[DATED, ("content-length", "7, 7")],
            SizeHint::default(),
            GET11,
            false,
        );
        assert!(text.contains("content-length: 7\r\n"), "{text}");
        assert_eq!(framing, Framing::Length(7));
        let (text, framing, _) = head(201, &[DATED], SizeHint::default(), GET11, false);
        assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(framing, Framing::Chunked { trailers: false });
        let old = Answering {
            version: Version::HTTP_10,
            ..GET11
        };
        let (text, framing, close) = head(200, &[DATED], SizeHint::default(), old, false);
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!((framing, close), (Framing::Close, true));
        let (text, _, _) = head(200, &[DATED], SizeHint::with_exact(0), old, false);
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
    }

    #[test]
    fn bodiless_answers() {
        let to_head = Answering {
            head: true,
            ..GET11
        };
        let (text, framing, _) = head(
            200,
            &[DATED, ("content-length", "100")],
            SizeHint::with_exact(0),
            to_head,
            false,
        );
        assert!(text.contains("content-length: 100\r\n"), "{text}");
        assert_eq!(framing, Framing::None);
        let (text, framing, _) = head(
            204,
            &[DATED, ("content-length", "0")],
            SizeHint::default(),
            GET11,
            false,
        );
        assert!(!text.contains("content-length"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn weir_owns_the_connection_field_and_dates_every_answer() {
        let (text, _, close) = head(
            413,
            &[
                ("connection", "close"),
                ("transfer-encoding", "chunked"),
                ("x-request-id", "upstream-id"),
            ],
            SizeHint::with_exact(2),
            GET11,
            false,
        );
        assert!(close);
        assert_eq!(text.matches("connection").count(), 1, "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(
            text.contains("x-request-id: id-1\r\n") && !text.contains("upstream-id"),
            "weir's id replaces the upstream's: {text}"
        );
        let (text, framing, close) = head(
            101,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            SizeHint::default(),
            GET11,
            false,
        );
        assert!(
            text.contains("connection: upgrade\r\nupgrade: websocket\r\n"),
            "{text}"
        );
        assert_eq!((framing, close), (Framing::None, false));
    }

    #[test]
    fn an_upstreams_fields_go_out_as_they_came_less_what_weir_owns() {
        let head = bytes::Bytes::from_static(
            b"Server: up\r\nContent-Length: 5, 5\r\nX-Request-Id: theirs\r\nDate: Sun, 06 Dec 2026 10:00:00 GMT\r\n",
        );
        let mut raw = RawFields::new(head, 4);
        raw.push((0, 6), (8, 2), Known::Other);
        raw.push((12, 14), (28, 4), Known::ContentLength);
        raw.push((34, 12), (48, 6), Known::RequestId);
        raw.push((56, 4), (62, 29), Known::Date);
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts
            .headers
            .insert("x-ratelimit-remaining", HeaderValue::from_static("9"));
        let mut out = Vec::new();
        let mut close = false;
        let framing = encode_head(
            &parts,
            Some(&raw),
            &HeaderValue::from_static("ours"),
            SizeHint::with_exact(5),
            GET11,
            &mut close,
            &mut out,
        );
        assert_eq!(framing, Framing::Length(5));
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 200 OK\r\nServer: up\r\ncontent-length: 5\r\n\
             Date: Sun, 06 Dec 2026 10:00:00 GMT\r\nx-ratelimit-remaining: 9\r\n\
             x-request-id: ours\r\n\r\n"
        );
    }

    #[test]
    fn chunk_lines() {
        let mut out = Vec::new();
        chunk_size(0x1a2b, &mut out);
        chunk_size(0, &mut out);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        last_chunk(Some(&trailers), &mut out);
        assert_eq!(out, b"1a2b\r\n0\r\n0\r\ngrpc-status: 0\r\n\r\n");
    }
}
