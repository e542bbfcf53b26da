//! HTTP/1.1 exchanges with plain-text upstreams, run in the request's own
//! task.
//!
//! hyper's client gives every upstream connection a task of its own: a
//! request is handed to it over a channel, the response head comes back over
//! another, and each body chunk over a third, with a task wakeup at every
//! hand-over. For the common proxied request (no body, a small response)
//! that machinery costs more CPU than parsing the response. Here the
//! request's task writes the request head and parses the response itself on
//! a connection it checked out of the pool; a response whose body has
//! already arrived whole goes back to the client without any body
//! streaming, and its connection is back in the pool before the response
//! leaves.
//!
//! Only requests without a body take this path (pool.rs decides): a request
//! body must be streamed while the response is read (an upstream may answer
//! early or echo), which hyper's client does and this module does not.
//!
//! Parsing is strict, as at the client edge (RFC 9112): `httparse` with its
//! strict response settings (no obs-fold, no extra spaces), exactly one
//! framing: `Transfer-Encoding: chunked` alone, or one `Content-Length`
//! value (repeated identically at most), or the body runs to the close.
//! A response with both, or with another transfer coding, is refused rather
//! than passed on in a form the client could frame differently. Bodies are
//! decoded by decode.rs, the same strict decoder as client request bodies.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version, request, response};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::decimal;
use super::decode::{Decoded, Decoder};
use super::fields::RawFields;
use crate::headers::{CONNECTION_AT, Forwarded, Known, TRANSFER_ENCODING_AT, list_items};

/// Response heads larger than this are refused (hyper's client allows
/// about 400 KB; nginx's default `proxy_buffer_size` is 4–8 KB).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Header fields in a response head.
const MAX_FIELDS: usize = 128;
/// Interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 8;
/// Space made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the request failed; nothing was answered.
    #[error("writing the request: {0}")]
    Write(io::Error),
    /// The connection closed or failed before a byte of response arrived.
    #[error("connection closed before a response: {}", .0.as_ref().map_or("end of stream".to_owned(), |e| e.to_string()))]
    Unanswered(Option<io::Error>),
    /// Reading failed after the response had begun.
    #[error("reading the response: {0}")]
    Read(io::Error),
    /// The connection closed in the middle of a response.
    #[error("connection closed in the middle of the response")]
    Truncated,
    /// The response is not valid HTTP/1.1 or its framing is ambiguous.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// Nothing of a response arrived: on a connection reused from the pool
    /// the upstream most likely closed it while idle, and an idempotent
    /// request may be sent again elsewhere (RFC 9110 §9.2.2).
    pub(crate) fn is_unanswered(&self) -> bool {
        matches!(self, Error::Write(_) | Error::Unanswered(_))
    }

    /// The request itself cannot have been processed.
    pub(crate) fn is_unsent(&self) -> bool {
        matches!(self, Error::Write(_))
    }
}

/// A plain-text connection to an upstream.
pub(crate) struct Conn {
    tcp: TcpStream,
    /// Bytes read and not yet consumed; empty between exchanges.
    buf: BytesMut,
    /// The next request head, written by [`Conn::encode`]; its memory is
    /// reused by every request on the connection.
    head: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Conn {
            tcp,
            buf: BytesMut::new(),
            head: Vec::new(),
        }
    }

    /// Writes the head of the request to send next, with the fields weir
    /// sets on every forwarded request.
    pub(crate) fn encode(&mut self, parts: &request::Parts, forwarded: &Forwarded) {
        self.head.clear();
        encode_request(parts, &mut self.head);
        // The head's end, where weir's fields go.
        self.head.truncate(self.head.len() - 2);
        forwarded.encode(&mut self.head);
        self.head.extend_from_slice(b"\r\n");
    }

    /// Whether an idle connection can carry a request: the upstream has
    /// neither closed it nor sent anything unasked. `try_read` asks the
    /// reactor's readiness first and makes no system call (and registers
    /// no waker) unless the socket turned readable: a close, stray bytes,
    /// or readiness left over from a read that filled the buffer. Only the
    /// last is harmless, and the read then finds nothing.
    pub(crate) fn is_quiet(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// The request head as written on the wire: origin-form target, HTTP/1.1,
/// header fields as they are (weir's server and the http crate have
/// already validated every name and value).
pub(crate) fn encode_request(parts: &request::Parts, head: &mut Vec<u8>) {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let fields: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    head.reserve(parts.method.as_str().len() + target.len() + fields + 16);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

/// A response's body, as far as the exchange got.
pub(crate) enum Answer {
    /// The body arrived with the head (or there is none); the connection is
    /// returned when it may carry another request.
    Whole(Bytes, Option<Conn>),
    /// The body is still coming.
    Streaming(Reader),
}

/// Writes the head encoded on `conn` and reads the response head, skipping
/// interim (1xx) responses. `method` decides whether a body follows (HEAD).
/// The response's fields come as they arrived, not in its parts' map.
pub(crate) async fn exchange(
    mut conn: Conn,
    method: &Method,
) -> Result<(response::Parts, RawFields, Answer), Error> {
    conn.tcp.write_all(&conn.head).await.map_err(Error::Write)?;
    let mut interim = 0;
    let mut answered = false;
    let parsed = loop {
        if !conn.buf.is_empty() {
            answered = true;
            match parse_head(&mut conn.buf, method)? {
                // Nothing asked to switch protocols (upgrades do not come
                // this way).
                Some(h) if h.parts.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(Error::Invalid("unexpected 101 Switching Protocols"));
                }
                Some(h) if h.parts.status.is_informational() => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(Error::Invalid("too many interim responses"));
                    }
                    continue;
                }
                Some(h) => break h,
                None if conn.buf.len() > MAX_HEAD => {
                    return Err(Error::Invalid("response head too large"));
                }
                None => {}
            }
        }
        match conn.fill().await {
            Ok(0) if answered => return Err(Error::Truncated),
            Ok(0) => return Err(Error::Unanswered(None)),
            Ok(_) => {}
            Err(e) if answered => return Err(Error::Read(e)),
            Err(e) => return Err(Error::Unanswered(Some(e))),
        }
    };
    let Head {
        parts,
        fields,
        framing,
        keep_alive,
        body,
    } = parsed;
    let answer = match (framing, body) {
        (_, Some(body)) => Answer::Whole(body, reusable(conn, keep_alive)),
        (framing, None) => Answer::Streaming(Reader {
            conn,
            decoder: match framing {
                Framing::Length(n) => Decoder::length(n),
                Framing::Chunked => Decoder::chunked(),
                Framing::Close => Decoder::Close,
            },
            keep_alive,
        }),
    };
    Ok((parts, fields, answer))
}

/// `conn` if the response left it able to carry another request: keep-alive
/// and nothing read beyond the response.
fn reusable(conn: Conn, keep_alive: bool) -> Option<Conn> {
    if keep_alive && !conn.buf.is_empty() {
        // Bytes nobody asked for: the upstream's framing is not what it
        // said, so nothing more is read from this connection.
        tracing::debug!(
            extra = conn.buf.len(),
            "Upstream sent bytes after the response; closing the connection."
        );
        return None;
    }
    keep_alive.then_some(conn)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

pub(crate) struct Head {
    /// Status and version; the fields are in `fields`.
    parts: response::Parts,
    fields: RawFields,
    framing: Framing,
    keep_alive: bool,
    /// The whole body, when it arrived with the head.
    body: Option<Bytes>,
}

/// Parses a response head at the start of `buf` and consumes it; `None`
/// while it is incomplete. A body that arrived whole with the head is
/// consumed too, and shares the head's memory. The fields come as they
/// arrived (fields.rs), without hop-by-hop fields (RFC 9110 §7.6.1) or the
/// fields `Connection` names; the head's map is empty.
pub(crate) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(Error::Invalid("response head too large"));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("too many header fields"));
        }
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Invalid("malformed status code"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut facts = Fields::default();
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    // Offsets into `buf` are offsets into the split below.
    let mut raw = RawFields::new(Bytes::new(), response.headers.len());
    for field in response.headers.iter() {
        let known = Known::of(field.name.as_bytes());
        facts.note(known, field.value);
        if !matches!(known, Known::HopByHop(_)) {
            raw.push(at(field.name.as_bytes()), at(field.value), known);
        }
    }
    let framing = facts.framing(status, method)?;
    let keep_alive = version == Version::HTTP_11 && framing != Framing::Close && !facts.close;
    if facts.names_fields {
        // `Connection: x-foo` makes x-foo hop-by-hop too (never Host).
        let named = connection_named(response.headers);
        raw.retain(&buf[..len], |name| {
            !named.iter().any(|n| n.eq_ignore_ascii_case(name))
        });
    }
    // The head (and a body that came whole with it) is split off the read
    // buffer, not copied: fields share its memory, and the buffer gets the
    // memory back at a later read, once the response has been written and
    // let go (Bytes counts the references).
    let body_len = match framing {
        Framing::Length(n) if (buf.len() - len) as u64 >= n => Some(n as usize),
        _ => None,
    };
    let split = buf.split_to(len + body_len.unwrap_or(0)).freeze();
    let raw = raw.with_head(split.slice(..len));
    let body = body_len.map(|_| split.slice(len..));
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    Ok(Some(Head {
        parts,
        fields: raw,
        framing,
        keep_alive,
        body,
    }))
}

/// The field names `Connection` lists, other than its own options and
/// `Host` (a rare case: only then does this allocate).
fn connection_named(fields: &[httparse::Header<'_>]) -> Vec<Vec<u8>> {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| list_items(f.value))
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"host")
        })
        .map(<[u8]>::to_vec)
        .collect()
}

/// What a response's fields say of its framing and its connection,
/// gathered while its names are recognised.
#[derive(Default)]
struct Fields {
    /// `Connection: close`.
    close: bool,
    /// `Connection` names fields other than its own options.
    names_fields: bool,
    codings: u32,
    chunked: bool,
    lengths: bool,
    length: Option<u64>,
    /// Why the `Content-Length` fields cannot be used, if they cannot:
    /// an error only for a response that has a body.
    bad_length: Option<&'static str>,
}

impl Fields {
    fn note(&mut self, known: Known, value: &[u8]) {
        match known {
            Known::ContentLength => {
                self.lengths = true;
                for item in list_items(value) {
                    let Some(n) = decimal(item) else {
                        self.bad_length = Some("invalid Content-Length");
                        continue;
                    };
                    if self.length.is_some_and(|l| l != n) {
                        self.bad_length = Some("conflicting Content-Length values");
                    }
                    self.length = Some(n);
                }
            }
            Known::HopByHop(TRANSFER_ENCODING_AT) => {
                self.codings += 1;
                self.chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            Known::HopByHop(CONNECTION_AT) => {
                for token in list_items(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        self.names_fields = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// How the body is delimited (RFC 9112 §6.3), refusing ambiguity.
    fn framing(&self, status: StatusCode, method: &Method) -> Result<Framing, Error> {
        Ok(
            if method == Method::HEAD
                || status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                Framing::Length(0)
            } else if self.codings > 0 {
                if self.lengths {
                    return Err(Error::Invalid("both Transfer-Encoding and Content-Length"));
                }
                if self.codings > 1 || !self.chunked {
                    return Err(Error::Invalid("transfer coding other than chunked"));
                }
                Framing::Chunked
            } else if let Some(why) = self.bad_length {
                return Err(Error::Invalid(why));
            } else if let Some(n) = self.length {
                Framing::Length(n)
            } else {
                Framing::Close
            },
        )
    }
}

/// The rest of a response body, read on demand from its connection.
pub(crate) struct Reader {
    conn: Conn,
    decoder: Decoder,
    keep_alive: bool,
}

impl Reader {
    /// The next data or trailers frame; `None` once the body has ended.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match self.decoder.decode(&mut self.conn.buf) {
                Ok(Decoded::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
                Err(why) => return self.fail(Error::Invalid(why)),
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) if self.decoder.closed() => {
                    // Delimited by the close: whole, but not reusable.
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(Error::Truncated),
                Ok(_) => {}
                Err(e) => return self.fail(Error::Read(e)),
            }
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.decoder = Decoder::Done;
        self.keep_alive = false;
        Poll::Ready(Some(Err(e)))
    }

    /// Whether the body has ended.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    /// What is known of the body's remaining length.
    pub(crate) fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }

    /// The connection, if the body ended cleanly and it may carry another
    /// request.
    pub(crate) fn into_reusable(self) -> Option<Conn> {
        if !self.decoder.is_done() {
            return None;
        }
        reusable(self.conn, self.keep_alive)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// One request head read byte by byte (nothing of what follows), or
    /// `None` when the connection closes first. For scripted upstreams.
    pub(crate) async fn read_head(tcp: &mut TcpStream) -> Option<Vec<u8>> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(head)
    }

    /// An upstream that reads one request head, writes `pieces` one by one
    /// (flushed apart, so the client usually reads them separately; no
    /// assertion depends on it), then closes if told to, else waits for the
    /// client to close. Returns the request head.
    async fn upstream(
        pieces: Vec<&'static [u8]>,
        close: bool,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let request = read_head(&mut tcp).await.expect("a request head");
            for piece in pieces {
                tcp.write_all(piece).await.expect("write");
                tcp.flush().await.expect("flush");
                tokio::task::yield_now().await;
            }
            if !close {
                let mut rest = Vec::new();
                let _ = tcp.read_to_end(&mut rest).await;
            }
            request
        });
        (addr, task)
    }

    fn forwarded() -> Forwarded {
        Forwarded::new(
            &mut HeaderMap::new(),
            Default::default(),
            &HeaderValue::from_static("10.0.0.1"),
            "http",
            None,
            HeaderValue::from_static("r-1"),
        )
    }

    fn get(target: &str) -> request::Parts {
        let (mut parts, ()) = http::Request::get(target)
            .header("host", "shop.example")
            .header("x-request-id", "r-1")
            .body(())
            .expect("request")
            .into_parts();
        parts
            .headers
            .append("accept", HeaderValue::from_static("*/*"));
        parts
    }

    /// The whole body, its trailers and whether the connection came back.
    struct Got {
        parts: response::Parts,
        body: Vec<u8>,
        trailers: Option<HeaderMap>,
        reusable: bool,
    }

    async fn call(addr: SocketAddr, method: Method) -> Result<Got, Error> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut parts = get("/p?q=1");
        parts.method = method.clone();
        let mut conn = Conn::new(tcp);
        conn.encode(&parts, &forwarded());
        let (mut parts, fields, answer) = exchange(conn, &method).await?;
        fields.append_to(&mut parts.headers);
        match answer {
            Answer::Whole(body, conn) => Ok(Got {
                parts,
                body: body.to_vec(),
                trailers: None,
                reusable: conn.is_some(),
            }),
            Answer::Streaming(mut reader) => {
                let mut body = Vec::new();
                let mut trailers = None;
                while let Some(frame) = std::future::poll_fn(|cx| reader.poll_frame(cx)).await {
                    match frame?.into_data() {
                        Ok(data) => body.extend_from_slice(&data),
                        Err(frame) => trailers = frame.into_trailers().ok(),
                    }
                }
                assert!(reader.is_end_stream());
                Ok(Got {
                    parts,
                    body,
                    trailers,
                    reusable: reader.into_reusable().is_some(),
                })
            }
        }
    }

    async fn answer(pieces: Vec<&'static [u8]>, close: bool) -> Result<Got, Error> {
        let (addr, _task) = upstream(pieces, close).await;
        call(addr, Method::GET).await
    }

    #[tokio::test]
    async fn writes_the_request_head_and_takes_a_whole_body_at_once() {
        let (addr, task) = upstream(
            vec![b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: b\r\nX-A: c\r\n\r\nhello"],
            false,
        )
        .await;
        let got = call(addr, Method::GET).await.expect("answer");
        assert_eq!(got.parts.status, 201);
        assert_eq!(got.parts.version, Version::HTTP_11);
        let values: Vec<_> = got.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["b", "c"]);
        assert_eq!(got.body, b"hello");
        assert!(got.reusable, "keep-alive connection returned");
        drop(got);
        let request = task.await.expect("upstream");
        assert_eq!(
            String::from_utf8_lossy(&request),
            "GET /p?q=1 HTTP/1.1\r\nhost: shop.example\r\nx-request-id: r-1\r\naccept: */*\r\n\
             x-forwarded-for: 10.0.0.1\r\nx-real-ip: 10.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-request-id: r-1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn streams_a_body_split_across_reads() {
        let got = answer(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhel",
                b"lo wo",
                b"rld",
            ],
            false,
        )
        .await
        .expect("answer");
        assert_eq!(got.body, b"hello world");
        assert!(got.reusable);
    }

    #[tokio::test]
    async fn decodes_chunks_with_extensions_and_trailers() {
        let got = answer(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhel",
                b"lo\r\n6 \r\n world\r\n0\r\nGrpc-Status: 0\r\n",
                b"\r\n",
            ],
            false,
        )
        .await
        .expect("answer");
        assert_eq!(got.body, b"hello world");
        let trailers = got.trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert!(got.reusable);
    }

    #[tokio::test]
    async fn skips_interim_responses() {
        let got = answer(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ],
            false,
        )
        .await
        .expect("answer");
        assert_eq!(got.parts.status, 200);
        assert!(!got.parts.headers.contains_key("link"));
        assert_eq!(got.body, b"ok");
    }

    #[tokio::test]
    async fn a_body_delimited_by_the_close_ends_there_and_is_not_reused() {
        let got = answer(vec![b"HTTP/1.1 200 OK\r\n\r\nabc", b"def"], true)
            .await
            .expect("answer");
        assert_eq!(got.body, b"abcdef");
        assert!(!got.reusable);
    }

    #[tokio::test]
    async fn head_responses_have_no_body() {
        let (addr, _task) = upstream(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"],
            false,
        )
        .await;
        let got = call(addr, Method::HEAD).await.expect("answer");
        assert_eq!(got.parts.headers["content-length"], "100");
        assert!(got.body.is_empty());
        assert!(got.reusable);
        for status in ["204 No Content", "304 Not Modified"] {
            let head: &'static [u8] = format!("HTTP/1.1 {status}\r\nContent-Length: 7\r\n\r\n")
                .leak()
                .as_bytes();
            let got = answer(vec![head], false).await.expect("answer");
            assert!(got.body.is_empty(), "{status}");
            assert!(got.reusable, "{status}");
        }
    }

    #[tokio::test]
    async fn hop_by_hop_fields_and_those_connection_names_stay_behind() {
        let got = answer(
            vec![b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Kept: 2\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            false,
        )
        .await
        .expect("answer");
        let names: Vec<_> = got.parts.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "host"]);
        assert_eq!(got.body, b"ok");
    }

    #[tokio::test]
    async fn connections_that_cannot_carry_another_request_are_not_returned() {
        for response in [
            &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        ] {
            let got = answer(vec![response], false).await.expect("answer");
            assert_eq!(got.body, b"ok");
            assert!(!got.reusable, "{}", String::from_utf8_lossy(response));
        }
        let got = answer(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello"],
            false,
        )
        .await
        .expect("identical repeated lengths are one length");
        assert_eq!(got.body, b"hello");
    }

    #[tokio::test]
    async fn ambiguous_or_malformed_responses_are_refused() {
        for response in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: b\rc\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer: x\r\n\r\n",
        ] {
            let shown = String::from_utf8_lossy(response).into_owned();
            let result = answer(vec![response], false).await;
            let err = match result {
                Err(e) => e,
                Ok(got) => panic!("accepted {shown:?}: body {:?}", got.body),
            };
            assert!(matches!(err, Error::Invalid(_)), "{shown:?}: {err}");
            assert!(!err.is_unanswered(), "{shown:?}");
        }
    }

    #[tokio::test]
    async fn oversized_heads_are_refused() {
        let big: &'static [u8] = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(MAX_HEAD)
        )
        .leak()
        .as_bytes();
        let err = answer(vec![big], false).await.err().expect("refused");
        assert!(
            matches!(err, Error::Invalid("response head too large")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_close_before_or_during_the_response_is_told_apart() {
        let err = answer(vec![], true).await.err().expect("no answer");
        assert!(err.is_unanswered() && !err.is_unsent(), "{err}");
        for (cut, what) in [
            (&b"HTTP/1.1 200 OK\r\nContent"[..], "cut head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel",
                "cut body",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                "cut chunk",
            ),
        ] {
            let err = answer(vec![cut], true).await.err().expect(what);
            assert!(matches!(err, Error::Truncated), "{what}: {err}");
        }
    }

    /// A connection left idle after one exchange with an upstream that
    /// then closes it or keeps it open.
    async fn idle_conn(close: bool) -> Conn {
        let (addr, _task) = upstream(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            close,
        )
        .await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut conn = Conn::new(tcp);
        conn.encode(&get("/"), &forwarded());
        let (_, _, answer) = exchange(conn, &Method::GET).await.expect("answer");
        let Answer::Whole(_, Some(conn)) = answer else {
            panic!("whole body, connection returned");
        };
        conn
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_quiet() {
        let mut open = idle_conn(false).await;
        let mut closed = idle_conn(true).await;
        // The close reaches the reactor on one of its next turns; wait for
        // it with a deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while closed.is_quiet() {
            assert!(tokio::time::Instant::now() < deadline, "close never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The turns that delivered that close left the open one alone.
        assert!(open.is_quiet(), "an open idle connection is quiet");
    }
}
