//! Request-framing guard for HTTP/1 connections.
//!
//! hyper resolves a request that carries both `Transfer-Encoding` and
//! `Content-Length` the way RFC 9112 §6.1 allows (chunked wins, the length is
//! dropped, the connection closes after the response), and silently collapses
//! repeated identical `Content-Length` lines. The request handler never sees
//! either. A security boundary must refuse such requests instead: a device in
//! front of weir may have framed the same bytes differently, which is how
//! request smuggling works.
//!
//! [`FramingGuard`] wraps the client stream and follows the HTTP/1 framing of
//! every byte hyper reads: it parses each request head with `httparse` (the
//! parser hyper uses, so both agree on where heads start) and skips bodies by
//! `Content-Length` or by chunk sizes, so body bytes are never mistaken for a
//! head. When a head is ambiguous it marks the connection; the handler then
//! answers 400 and the connection closes. A pipelining client that sends an
//! ambiguous request may see the request before it refused too: the whole
//! connection is untrusted from that point.
//!
//! The guard also closes connections the way nginx's `lingering_close`
//! does. When weir answers before reading a whole request body (413, 401,
//! a refused request) and then closes, the client may still be sending;
//! closing a socket with unread bytes makes the kernel send a reset, and a
//! reset can destroy the answer before the client has read it. So after
//! sending its FIN the guard reads and drops what the client still sends,
//! until the client closes too, sends nothing for [`LINGER_IDLE`], or
//! [`LINGER`] passes: nginx's `lingering_timeout` and `lingering_time`,
//! with their defaults. A client that writes its whole body before reading
//! (Python's `requests`, for one) has that long to finish its upload and
//! read the answer.
//!
//! When the tracker meets something it cannot follow (an HTTP/2 preface, a
//! head hyper will itself reject, an upgrade) it stops tracking and marks
//! nothing: hyper refuses malformed input on its own.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::head_deadline::HeadClock;

/// Shared between the guard (writer) and the request handler (reader).
#[derive(Debug, Default)]
pub struct ConnFraming {
    ambiguous: AtomicBool,
}

impl ConnFraming {
    /// Whether a request head on this connection had ambiguous framing.
    pub fn is_ambiguous(&self) -> bool {
        self.ambiguous.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data.
    ChunkData(u64),
    /// Reading the CRLF after chunk data.
    ChunkEnd,
    /// Reading trailer lines until an empty one.
    Trailers,
    /// No longer tracking.
    Off,
}

/// Longest the guard reads and drops a client's bytes after weir's last
/// response, before closing the socket (nginx's `lingering_time`).
pub const LINGER: Duration = Duration::from_secs(30);
/// Longest it waits for more of them (nginx's `lingering_timeout`).
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// Largest head the tracker buffers; hyper refuses larger ones anyway.
const MAX_HEAD: usize = 256 * 1024;

/// The framing state machine, separate from I/O so it can be tested on bytes.
#[derive(Debug)]
pub(crate) struct Tracker {
    state: State,
    buf: Vec<u8>,
    /// The connection opened with the HTTP/2 preface.
    http2: bool,
    /// Request heads whose first byte has been seen.
    begun: u64,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Tracker {
            state: State::Head,
            buf: Vec::new(),
            http2: false,
            begun: 0,
        }
    }

    /// Consumes bytes as read from the client. Returns `true` when a request
    /// head with ambiguous framing was seen.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut ambiguous = false;
        while !data.is_empty() {
            match self.state {
                State::Off => return ambiguous,
                State::Body(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::ChunkData(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::Head => {
                    // Leading empty lines before a request line are allowed
                    // (RFC 9112 §2.2) and hyper skips them.
                    if self.buf.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            break;
                        }
                        self.begun += 1;
                    }
                    let before = self.buf.len();
                    self.buf.extend_from_slice(data);
                    match self.parse_head() {
                        Some((head_len, verdict)) => {
                            ambiguous |= verdict;
                            let consumed = head_len - before;
                            data = &data[consumed..];
                            self.buf.clear();
                        }
                        None => {
                            if self.buf.len() > MAX_HEAD {
                                self.state = State::Off;
                            }
                            return ambiguous;
                        }
                    }
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > 4096 {
                            self.state = State::Off;
                        }
                        return ambiguous;
                    };
                    self.buf.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    let line = std::mem::take(&mut self.buf);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::ChunkSize => match chunk_size(line) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            None => State::Off,
                        },
                        State::ChunkEnd if line.is_empty() => State::ChunkSize,
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => State::Off,
                    };
                }
            }
        }
        ambiguous
    }

    /// Parses the buffered head. `None` while incomplete (or when tracking
    /// stopped); otherwise the head's length and whether it was ambiguous.
    fn parse_head(&mut self) -> Option<(usize, bool)> {
        if self.buf.starts_with(b"PRI * HTTP/2.0") {
            self.http2 = true;
            self.state = State::Off;
            return None;
        }
        // Uninitialized slots: the parser writes the ones it fills, so no
        // 8 KiB of empty headers is written for every request.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(&self.buf, &mut headers) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                self.state = State::Off;
                return None;
            }
        };
        let mut content_lengths = 0;
        let mut length = None;
        let mut te: Option<&[u8]> = None;
        let mut transfer_encodings = 0;
        let mut upgrade = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                content_lengths += 1;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encodings += 1;
                te = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let ambiguous = (content_lengths > 0 && transfer_encodings > 0) || content_lengths > 1;
        self.state = if ambiguous || upgrade || req.method == Some("CONNECT") {
            // The handler refuses this request and the connection ends.
            State::Off
        } else if transfer_encodings > 0 {
            let chunked_last = te
                .and_then(|v| v.rsplit(|b| *b == b',').next())
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if chunked_last {
                State::ChunkSize
            } else {
                State::Off
            }
        } else {
            match (content_lengths, length) {
                (0, _) | (1, Some(0)) => State::Head,
                (1, Some(n)) => State::Body(n),
                _ => State::Off,
            }
        };
        Some((len, ambiguous))
    }
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|b| *b == b';').next()?.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// A client stream whose reads feed a [`Tracker`].
pub struct FramingGuard<IO> {
    inner: IO,
    tracker: Tracker,
    shared: Arc<ConnFraming>,
    /// Told where request heads begin, and when the connection turns out
    /// to be HTTP/2 (head_deadline.rs).
    clock: Arc<HeadClock>,
    closing: Closing,
}

/// Where the guard is in closing its connection.
enum Closing {
    Open,
    /// The FIN is sent; no byte has come since, or not yet looked for.
    Fin,
    /// The client kept sending after the FIN: read and dropped until
    /// [`LINGER`] from then (`until`), or a pause of [`LINGER_IDLE`].
    Lingering {
        until: tokio::time::Instant,
        /// When bytes last came.
        last: tokio::time::Instant,
        /// Re-armed only when it fires, to the pause's end or `until`.
        timer: Pin<Box<tokio::time::Sleep>>,
    },
}

impl<IO> FramingGuard<IO> {
    /// Wraps `inner`; `shared` is what the handler checks.
    pub fn new(inner: IO, shared: Arc<ConnFraming>, clock: Arc<HeadClock>) -> Self {
        FramingGuard {
            inner,
            tracker: Tracker::new(),
            shared,
            clock,
            closing: Closing::Open,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let fresh = &buf.filled()[before..];
            if this.tracker.state != State::Off {
                let begun = this.tracker.begun;
                if this.tracker.feed(fresh) {
                    this.shared.ambiguous.store(true, Ordering::Release);
                }
                if this.tracker.begun != begun {
                    this.clock.heads_begun(this.tracker.begun);
                }
                if this.tracker.http2 {
                    this.clock.http2();
                } else if this.tracker.state == State::Off {
                    this.clock.blind();
                }
            }
        }
        poll
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    /// Sends the FIN, then lingers: reads and drops the client's bytes
    /// until it closes, fails, pauses for [`LINGER_IDLE`], or [`LINGER`]
    /// passes. A client that has closed already (the usual end of a
    /// connection) costs one read and no timer.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Closing::Open = this.closing {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.closing = Closing::Fin;
        }
        let mut scratch = [0u8; 8192];
        loop {
            if let Closing::Lingering { until, last, timer } = &mut this.closing
                && timer.as_mut().poll(cx).is_ready()
            {
                let due = (*last + LINGER_IDLE).min(*until);
                if tokio::time::Instant::now() >= due {
                    return Poll::Ready(Ok(()));
                }
                timer.as_mut().reset(due);
                continue;
            }
            let mut buf = ReadBuf::new(&mut scratch);
            let poll = Pin::new(&mut this.inner).poll_read(cx, &mut buf);
            match poll {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) | Poll::Pending => {
                    match &mut this.closing {
                        Closing::Lingering { .. } if poll.is_pending() => return Poll::Pending,
                        Closing::Lingering { last, .. } => {
                            // Bytes came: the pause starts again.
                            *last = tokio::time::Instant::now();
                        }
                        _ => {
                            let now = tokio::time::Instant::now();
                            // The linger has its own limits; the
                            // connection's deadline stays out of it.
                            this.clock.lingering();
                            // Armed now; the loop polls it, which registers
                            // the wakeup before a Pending is returned.
                            this.closing = Closing::Lingering {
                                until: now + LINGER,
                                last: now,
                                timer: Box::pin(tokio::time::sleep_until(now + LINGER_IDLE)),
                            };
                        }
                    }
                }
            }
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the guard's lingering close ends, in seconds, while the client
    /// sends 1,000 bytes every second for `sending` seconds, then pauses
    /// without closing (or closes, with `close`).
    async fn linger_secs(sending: u64, close: bool) -> u64 {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut guard =
            FramingGuard::new(server, Arc::new(ConnFraming::default()), HeadClock::new());
        let start = tokio::time::Instant::now();
        let feeder = tokio::spawn(async move {
            for _ in 0..sending {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(&[b'x'; 1000]).await.is_err() {
                    return;
                }
            }
            if !close {
                std::future::pending::<()>().await;
            }
        });
        guard.shutdown().await.expect("shutdown");
        feeder.abort();
        start.elapsed().as_secs()
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_ends_at_a_pause_the_client_close_or_the_cap() {
        // Bytes for 3 s, then a pause: 5 s after the last of them.
        assert_eq!(linger_secs(3, false).await, 3 + 5);
        // Silent from the start: 5 s.
        assert_eq!(linger_secs(0, false).await, 5);
        // The client closes after 2 s: then.
        assert_eq!(linger_secs(2, true).await, 2);
        // Bytes that never stop: 30 s.
        assert_eq!(linger_secs(100, false).await, 30);
    }

    fn feed_all(chunks: &[&[u8]]) -> bool {
        let mut t = Tracker::new();
        chunks.iter().fold(false, |acc, c| acc | t.feed(c))
    }

    /// Feeds a byte at a time: the verdict must not depend on read sizes.
    fn bytewise(data: &[u8]) -> bool {
        let mut t = Tracker::new();
        data.iter()
            .fold(false, |acc, b| acc | t.feed(std::slice::from_ref(b)))
    }

    /// Where heads begin is what the keep-alive and head deadlines go by
    /// (head_deadline.rs): once per head, whatever the read sizes, never
    /// for body bytes or the empty lines allowed between requests.
    #[test]
    fn counts_the_heads_that_begin() {
        let mut t = Tracker::new();
        t.feed(b"\r\n");
        assert_eq!(t.begun, 0);
        t.feed(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n");
        assert_eq!(t.begun, 1);
        t.feed(b"\r\nGET /");
        assert_eq!(t.begun, 1, "body bytes are not a head");
        t.feed(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\nG");
        assert_eq!(t.begun, 4);
        let mut t = Tracker::new();
        for b in b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /b HTTP/1.1\r\n" {
            t.feed(std::slice::from_ref(b));
        }
        assert_eq!(t.begun, 2);
    }

    #[test]
    fn clean_requests_pass() {
        let s = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(!feed_all(&[s]));
        assert!(!bytewise(s));
    }

    #[test]
    fn body_text_is_not_a_head() {
        let body = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let s = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            body.len()
        );
        assert!(!feed_all(&[s.as_bytes()]));
        assert!(!bytewise(s.as_bytes()));
    }

    #[test]
    fn ambiguous_heads_are_flagged() {
        for s in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(feed_all(&[s]), "{}", String::from_utf8_lossy(s));
            assert!(bytewise(s), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn h2_preface_stops_tracking() {
        let mut t = Tracker::new();
        assert!(!t.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert_eq!(t.state, State::Off);
    }
}
