//! Request heads from HTTP/1 clients (RFC 9112 §2-§3, §6): parsed once,
//! with `httparse` (the tokenizer hyper uses, fuzzed upstream), into the
//! `http` types the handler works on, and judged for framing in the same
//! pass.
//!
//! This is the edge of a security boundary, so every way a message's body
//! could be framed differently by another HTTP implementation in front of
//! weir or behind it is refused rather than resolved (RFC 9112 §6.1, §6.3
//! and the request-smuggling literature):
//!
//! - `Transfer-Encoding` together with `Content-Length`, or on HTTP/1.0;
//! - more than one `Content-Length` field, or one that is not a plain
//!   decimal (no sign, no list, not even of equal values);
//! - a `Transfer-Encoding` whose last coding is not `chunked`, or which
//!   applies `chunked` twice: the length cannot be known (400); any other
//!   coding before `chunked` is not supported (501);
//! - obs-fold, a space before a field's colon, bare CR, NUL and other
//!   control characters in fields, several spaces between the parts of the
//!   request line (httparse's strict defaults).
//!
//! A head refused for its framing ends the connection after the answer:
//! where the next request would begin is unknown.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

use super::decimal;
use super::decode::Decoder;
use crate::headers::{CONNECTION_AT, Known, Present, TE_AT, TRANSFER_ENCODING_AT, list_items};

/// Request headers a head may carry at most, whatever `--max-headers` says
/// (the parser's slots live on the stack).
pub const MAX_FIELDS: usize = 1024;

/// Fields weir adds before forwarding (`X-Forwarded-*`, `X-Real-IP`,
/// `X-Request-Id`, `Host` for HTTP/2, policy identity headers): room for
/// them from the start, so the map does not grow (and reallocate) per
/// request.
const ADDED_FIELDS: usize = 8;

/// A request head, parsed.
#[derive(Debug)]
pub(crate) struct Head {
    /// Method, target, version and fields; the body is the caller's.
    pub(crate) request: Request<()>,
    /// How the body is framed: [`Decoder::Done`] when there is none.
    pub(crate) body: Decoder,
    /// The client lets the connection carry another request after this one.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a `100` before it sends
    /// the body.
    pub(crate) expect_continue: bool,
    /// `TE: trailers`: the client takes trailer fields in a chunked
    /// response.
    pub(crate) trailers: bool,
    /// Which of the fields weir acts on the request carries.
    pub(crate) present: Present,
}

/// Why a head was refused: the status, the `error` code and the message of
/// the answer. The connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: &'static str,
}

const fn refuse(status: StatusCode, code: &'static str, message: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

const MALFORMED: Refusal = refuse(
    StatusCode::BAD_REQUEST,
    "invalid_request",
    "the request head is malformed",
);

/// A field's name and where its value sits in the head: kept between the
/// parse (which borrows the read buffer) and the header map (which shares
/// the frozen head). The connection keeps one list and reuses it, so a
/// request allocates nothing for it.
pub(crate) type Scratch = Vec<(HeaderName, usize, usize)>;

/// Parses the request head at the start of `buf` and takes it off the
/// front. `None` while it is incomplete (the caller bounds how long `buf`
/// may grow). At most `max_fields` header fields are accepted (431 beyond).
pub(crate) fn parse(
    buf: &mut BytesMut,
    max_fields: usize,
    scratch: &mut Scratch,
) -> Result<Option<Head>, Refusal> {
    // Uninitialized slots: the parser writes the ones it fills, so nothing
    // is zeroed for every request.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let slots = &mut slots[..max_fields.min(MAX_FIELDS)];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "too many request headers",
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(refuse(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "http_version_not_supported",
                "only HTTP/1.0 and HTTP/1.1 are served over this connection",
            ));
        }
        Err(_) => return Err(MALFORMED),
    };
    // httparse filled these on completion.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(MALFORMED);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| MALFORMED)?;
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Field values and the target are slices of one shared copy of the
    // head (the read buffer's own memory, not copied).
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let target_at = offset(target.as_bytes());
    let target_len = target.len();
    let mut fields = Fields::default();
    let n = req.headers.len();
    // Names are looked up while the parser borrows the buffer; values are
    // sliced from the head once it is frozen.
    scratch.clear();
    for field in req.headers.iter() {
        let (name, known) = super::field_name(field.name.as_bytes()).map_err(|_| MALFORMED)?;
        fields.note(known, field.value);
        scratch.push((name, offset(field.value), field.value.len()));
    }
    let head: Bytes = buf.split_to(len).freeze();
    let uri =
        Uri::from_maybe_shared(head.slice(target_at..target_at + target_len)).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request_target",
                "the request target is malformed",
            )
        })?;
    let mut headers = HeaderMap::with_capacity(n + ADDED_FIELDS);
    for (name, at, len) in scratch.drain(..) {
        let value =
            HeaderValue::from_maybe_shared(head.slice(at..at + len)).map_err(|_| MALFORMED)?;
        headers.append(name, value);
    }
    let body = fields.framing(version)?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let keep_alive = match version {
        Version::HTTP_11 => !fields.close,
        _ => fields.keep_alive && !fields.close,
    };
    Ok(Some(Head {
        request,
        body,
        keep_alive,
        expect_continue: fields.expect_continue && !body.is_done() && version == Version::HTTP_11,
        trailers: fields.trailers,
        present: fields.present,
    }))
}

/// What the fields say about framing and the connection, gathered in one
/// pass.
#[derive(Debug, Default)]
struct Fields {
    /// `Content-Length` fields, and the last one's value if it parsed.
    lengths: u32,
    length: Option<u64>,
    /// `Transfer-Encoding` fields.
    encodings: u32,
    /// The codings, in order, over every `Transfer-Encoding` field.
    chunked_last: bool,
    chunked_before: bool,
    other_coding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    trailers: bool,
    present: Present,
}

impl Fields {
    fn note(&mut self, known: Known, value: &[u8]) {
        self.present.note(known);
        if known == Known::ContentLength {
            self.lengths += 1;
            self.length = decimal(value);
        } else if known == Known::HopByHop(TRANSFER_ENCODING_AT) {
            self.encodings += 1;
            for coding in list_items(value) {
                if coding.is_empty() {
                    continue;
                }
                if self.chunked_last {
                    self.chunked_before = true;
                }
                self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                if !self.chunked_last {
                    self.other_coding = true;
                }
            }
        } else if known == Known::HopByHop(CONNECTION_AT) {
            for token in list_items(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if known == Known::Expect {
            // The only expectation there is (RFC 9110 §10.1.1); others are
            // passed on and ignored, as hyper and nginx do.
            self.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if known == Known::HopByHop(TE_AT) {
            self.trailers |= list_items(value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        }
    }

    /// How the body is framed, refusing every ambiguity.
    fn framing(&self, version: Version) -> Result<Decoder, Refusal> {
        const AMBIGUOUS: &str = "ambiguous_framing";
        if self.encodings > 0 {
            if self.lengths > 0 {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    AMBIGUOUS,
                    "both Transfer-Encoding and Content-Length",
                ));
            }
            if version != Version::HTTP_11 {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    AMBIGUOUS,
                    "Transfer-Encoding on an HTTP/1.0 request",
                ));
            }
            if !self.chunked_last || self.chunked_before {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    AMBIGUOUS,
                    "Transfer-Encoding does not end in chunked once",
                ));
            }
            if self.other_coding || self.encodings > 1 {
                return Err(refuse(
                    StatusCode::NOT_IMPLEMENTED,
                    "unsupported_transfer_encoding",
                    "only Transfer-Encoding: chunked is accepted",
                ));
            }
            return Ok(Decoder::chunked());
        }
        match (self.lengths, self.length) {
            (0, _) => Ok(Decoder::Done),
            (1, Some(n)) => Ok(Decoder::length(n)),
            (1, None) => Err(refuse(
                StatusCode::BAD_REQUEST,
                AMBIGUOUS,
                "Content-Length is not a decimal number",
            )),
            _ => Err(refuse(
                StatusCode::BAD_REQUEST,
                AMBIGUOUS,
                "more than one Content-Length",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(wire: &str) -> Result<Option<Head>, Refusal> {
        parse(&mut BytesMut::from(wire.as_bytes()), 100, &mut Vec::new())
    }

    fn refused(wire: &str) -> Refusal {
        match head(wire) {
            Err(r) => r,
            Ok(h) => panic!("accepted {wire:?}: {h:?}"),
        }
    }

    #[test]
    fn a_plain_get() {
        let mut buf = BytesMut::from(
            &b"\r\nGET /a/b?q=1 HTTP/1.1\r\nHost: shop.example\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /next"[..],
        );
        let h = parse(&mut buf, 100, &mut Vec::new())
            .expect("valid")
            .expect("complete");
        assert_eq!(h.request.method(), Method::GET);
        assert_eq!(h.request.uri(), "/a/b?q=1");
        assert_eq!(h.request.version(), Version::HTTP_11);
        assert_eq!(h.request.headers()["host"], "shop.example");
        let values: Vec<_> = h.request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(h.body.is_done());
        assert!(h.keep_alive && !h.expect_continue && !h.trailers);
        assert_eq!(&buf[..], b"GET /next", "the next request stays");
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\n")
                .expect("valid")
                .is_none()
        );
        let hundred: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(
            head(&format!("GET / HTTP/1.1\r\n{hundred}\r\n")).is_ok(),
            "the limit itself is accepted"
        );
    }

    #[test]
    fn bodies_and_connections() {
        let h = head("POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.body, Decoder::Length(5));
        assert!(h.expect_continue);
        let h = head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nTE: trailers\r\nConnection: close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.body, Decoder::chunked());
        assert!(h.trailers && !h.keep_alive);
        let h = head("GET / HTTP/1.0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!h.keep_alive, "HTTP/1.0 closes by default");
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!h.expect_continue, "nothing to wait for without a body");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for (wire, status) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
        ] {
            assert_eq!(refused(wire).status, status, "{wire:?}");
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        for wire in [
            "GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nX-\0A: b\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(refused(wire).status, 400, "{wire:?}");
        }
        assert_eq!(refused("GET / HTTP/2.0\r\n\r\n").status, 505);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")).status,
            431
        );
    }

    /// The verdict on a head, comparable across runs.
    fn verdict(
        wire: &[u8],
        step: usize,
    ) -> Result<Option<(String, String, Decoder, usize)>, Refusal> {
        let mut buf = BytesMut::new();
        let mut scratch = Vec::new();
        let mut fed = 0;
        loop {
            let n = step.min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            match parse(&mut buf, 100, &mut scratch)? {
                Some(h) => {
                    let fields: Vec<String> = h
                        .request
                        .headers()
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect();
                    return Ok(Some((
                        format!(
                            "{} {} {:?}",
                            h.request.method(),
                            h.request.uri(),
                            h.request.version()
                        ),
                        fields.join(","),
                        h.body,
                        buf.len() + wire.len() - fed,
                    )));
                }
                None if fed == wire.len() => return Ok(None),
                None => {}
            }
        }
    }

    /// A head's verdict does not depend on how its bytes arrive: whole, a
    /// byte at a time, or in odd pieces; nor does parsing panic on damaged
    /// heads. A small fixed-seed generator damages a corpus of valid and
    /// invalid heads (flipped, dropped and repeated bytes), so the run is
    /// the same every time.
    #[test]
    fn verdicts_do_not_depend_on_read_sizes_and_damage_never_panics() {
        let corpus: &[&[u8]] = &[
            b"GET /a/b?q=1 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET http://a/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\nHost: a\n\n",
            b"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for wire in corpus {
            let whole = verdict(wire, wire.len());
            for step in [1, 2, 3, 7] {
                assert_eq!(
                    verdict(wire, step),
                    whole,
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(wire)
                );
            }
            for _ in 0..300 {
                let mut damaged = wire.to_vec();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % damaged.len();
                    match next() % 3 {
                        0 => damaged[at] ^= 1 << (next() % 8),
                        1 => {
                            damaged.remove(at);
                        }
                        _ => damaged.insert(at, damaged[at]),
                    }
                    if damaged.is_empty() {
                        damaged.push(b'G');
                    }
                }
                let whole = verdict(&damaged, damaged.len());
                let step = 1 + (next() as usize) % 5;
                assert_eq!(
                    verdict(&damaged, step),
                    whole,
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(&damaged)
                );
            }
        }
    }
}
