//! A client's HTTP/1 connection, from its first byte to its close: weir's
//! own server half of HTTP/1.1.
//!
//! ```text
//!  ┌─▶ head      read until a whole head is buffered (request.rs parses it
//!  │              and judges its framing); the keep-alive or head deadline,
//!  │              the drain, an HTTP/2 preface (handed back to the caller)
//!  │   exchange  Proxy::handle runs while the request body is read into
//!  │              its slot (body.rs) and, once the answer comes, the
//!  │              response is written (response.rs) as its body arrives;
//!  │              a client that closes while waiting aborts the request
//!  └── next      keep-alive unless the client, the answer, the drain or an
//!                 unread body says otherwise; a 101 hands the connection
//!                 to the upgrade relay
//! ```
//!
//! Why not hyper's server: hyper resolves ambiguous framing the way RFC
//! 9112 permits instead of refusing it, so weir had to follow every byte
//! hyper read with a second parser to catch it (the framing guard), and to
//! bolt its deadlines, drain and lingering close on from the outside. Here
//! the head is parsed once, framing is judged where it is parsed, and the
//! deadlines are plain states of one loop. The common exchange (a request
//! without a body, an answer that arrives whole) costs one read, one
//! parse, one write and no task hand-over; measured with
//! `bench/cpu-split.sh`, see the commit that introduced this module.
//!
//! Deadlines, as nginx's `client_header_timeout` and `keepalive_timeout`:
//! - between requests, an idle connection is closed `keepalive` after its
//!   last response was written (load balancers in front pool connections
//!   for about a minute: nginx's default is 75 s, an AWS ALB's 60 s);
//! - a head that has begun must be whole within `head` of its first
//!   byte, and a connection's first head within `head` of the opening (a
//!   connection that sends nothing is the cheapest slowloris);
//! - a request in flight is never cut by either (the route's own timeouts
//!   apply to it);
//! - while a response is written, a client that takes no byte of it for
//!   `send` (nginx's `send_timeout`) has its connection closed: a client
//!   that stops reading would hold it, and its upstream, for ever. Pauses
//!   of the upstream's body are the body's own to time (pool.rs).
//!
//! One timer per connection, re-armed only when it fires early, as nginx's
//! lazy timers are: a request costs one clock read (when its response
//! ends), unless its head arrives in pieces.
//!
//! Lingering close, as nginx's `lingering_close`: when weir closes a
//! connection whose client may still be sending (a request body left
//! unread after an early answer such as 413 or 401, a refused head), it
//! sends its FIN, then reads and drops what arrives until the client
//! closes, pauses for [`LINGER_IDLE`], or [`LINGER`] passes; closing with
//! unread bytes would make the kernel reset the connection, and a reset
//! can destroy the answer before the client reads it.

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{StatusCode, Version};
use hyper::body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::body::{self, Room, Sender};
use super::decode::{Decoded, Decoder};
use super::request::{self, Head, Refusal};
use super::response::{self, Answering, Framing};
use crate::drain::{Registration, Signal};
use crate::headers::Present;
use crate::metrics::ClientTimeout;
use crate::pause::Pauses;
use crate::request_body::ClientBody;
use crate::upgrade::{ClientUpgrade, Upgraded};
use crate::{ConnInfo, Proxy};
use http::Request;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest weir reads and drops a client's bytes after its FIN (nginx's
/// `lingering_time`).
pub const LINGER: Duration = Duration::from_secs(30);
/// Longest it waits for more of them (nginx's `lingering_timeout`).
pub const LINGER_IDLE: Duration = Duration::from_secs(5);
/// The read buffer's first size, and what is added when it runs low.
const READ_CHUNK: usize = 8 * 1024;
/// Read room while a request body streams: fewer, larger reads.
const BODY_READ_CHUNK: usize = 64 * 1024;
/// The write buffer's first size: a response head and a small body.
const OUT_START: usize = 512;
/// Request field slots made at first: a browser sends about 16.
const FIELDS_START: usize = 16;
/// Response bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;
/// Data frames at least this large are written from their own memory
/// instead of being copied into the write buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// Body bytes read and dropped, without waiting, to keep a connection
/// whose request body the answer left unread.
const DRAIN_UNREAD: usize = 64 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The limits of an HTTP/1 connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// From a head's first byte (or the connection's opening, for its
    /// first head) to the head's end.
    pub(crate) head: Duration,
    /// From the end of a response to the first byte of the next request.
    pub(crate) keepalive: Duration,
    /// The longest a response's writing waits on a client that takes no
    /// bytes (nginx's `send_timeout`).
    pub(crate) send: Duration,
    /// The longest head buffered before it is refused (431/414): a
    /// backstop above the handler's own, exact limits.
    pub(crate) max_head: usize,
    /// The longest request line (414 beyond, when the head is too long).
    pub(crate) max_line: usize,
    /// Most header fields (431 beyond).
    pub(crate) max_fields: usize,
    /// Look for the HTTP/2 preface first (plain-text listeners: h2c with
    /// prior knowledge).
    pub(crate) detect_http2: bool,
}

/// How a connection ended.
pub(crate) enum Ended<IO> {
    /// Closed, or handed over to an upgrade relay.
    Done,
    /// It opened with the HTTP/2 preface: the stream and the bytes read
    /// from it so far, for an HTTP/2 server.
    Http2(IO, Bytes),
}

/// Serves one client connection.
pub(crate) async fn serve<IO>(
    io: IO,
    proxy: &Proxy,
    info: &ConnInfo,
    drain: &Registration,
    limits: Limits,
) -> Ended<IO>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let opened = Instant::now();
    let mut conn = Conn {
        io,
        rbuf: BytesMut::new(),
        // Room for a usual response head and a browser's request fields
        // from the start: grown from empty, they cost several
        // reallocations per connection.
        out: Out {
            buf: Vec::with_capacity(OUT_START),
            ..Out::default()
        },
        scratch: Vec::with_capacity(FIELDS_START),
    };
    let mut signal = drain.signal();
    let mut timer = pin!(tokio::time::sleep_until(opened + limits.head));
    // When the last response was written; `None` before the first.
    let mut idle_since = None;
    loop {
        let waited = Wait {
            limits: &limits,
            opened,
            idle_since,
        };
        let head = match conn.next_head(&waited, timer.as_mut(), &mut signal).await {
            Next::Head(head) => head,
            Next::Http2 => return Ended::Http2(conn.io, conn.rbuf.freeze()),
            Next::Closed => return conn.close(false).await,
            Next::TimedOut(kind) => {
                proxy.metrics.client_timed_out(kind);
                tracing::debug!(peer = %info.peer, ?kind, "No request in time; connection closed.");
                return conn.close(false).await;
            }
            Next::Refused(refusal) => {
                tracing::debug!(peer = %info.peer, status = refusal.status.as_u16(), code = refusal.code, "Request head refused; connection closed.");
                let answer = proxy.refuse(refusal.status, refusal.code, refusal.message);
                let to = Answering {
                    head: false,
                    version: Version::HTTP_11,
                    trailers: false,
                };
                let _ = conn.answer_only(answer, to).await;
                return conn.close(true).await;
            }
        };
        let (mut exchange, req, present) = Exchange::begin(head, limits.send);
        // The connection's timer has nothing to time while a request is in
        // flight: the route timeout runs on it.
        let mut handling = pin!(proxy.handle(req, present, info, timer.as_mut()));
        let mut writer = None;
        let answered =
            poll_fn(|cx| exchange.poll(cx, &mut conn, handling.as_mut(), &mut writer, &signal))
                .await;
        // The answer's body (its access-log line) is done with before the
        // next request.
        drop(writer);
        if exchange.send_timed_out {
            proxy.metrics.client_timed_out(ClientTimeout::ResponseSend);
            tracing::debug!(peer = %info.peer, "The client stopped taking its response; connection closed.");
        }
        match exchange.finish(&mut conn, answered) {
            Exchanged::KeepAlive => idle_since = Some(Instant::now()),
            Exchanged::Close { linger } => return conn.close(linger).await,
            Exchanged::Switched(upgrade) => {
                let Conn { io, rbuf, .. } = conn;
                // The relay takes the connection with what the client sent
                // after its head (its first frames, perhaps); if the relay
                // is gone, the connection just closes.
                let _ = upgrade.send(crate::upgrade::upgraded(io, rbuf.freeze()));
                return Ended::Done;
            }
            Exchanged::Aborted => return Ended::Done,
        }
    }
}

/// The connection's state between and during requests.
struct Conn<IO> {
    io: IO,
    /// Bytes read and not yet parsed or decoded.
    rbuf: BytesMut,
    out: Out,
    scratch: request::Scratch,
}

/// What the head phase found. Returned once per request, never stored:
/// boxing the head would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(Head),
    Refused(Refusal),
    Http2,
    Closed,
    TimedOut(ClientTimeout),
}

/// Which wait the connection is in before a head.
struct Wait<'a> {
    limits: &'a Limits,
    opened: Instant,
    idle_since: Option<Instant>,
}

impl Wait<'_> {
    /// When the wait ends, and what it is called if it times out, given
    /// when the head began (if it has).
    fn due(&self, begun: Option<Instant>) -> (Instant, ClientTimeout) {
        match (begun, self.idle_since) {
            (Some(t), _) => (t + self.limits.head, ClientTimeout::RequestHead),
            (None, None) => (self.opened + self.limits.head, ClientTimeout::RequestHead),
            (None, Some(t)) => (t + self.limits.keepalive, ClientTimeout::KeepAlive),
        }
    }
}

/// How an exchange ended.
enum Exchanged {
    KeepAlive,
    Close {
        linger: bool,
    },
    /// The upstream switched protocols: the connection goes to the relay.
    Switched(tokio::sync::oneshot::Sender<Upgraded>),
    /// The client went away; nothing more to do.
    Aborted,
}

impl<IO> Conn<IO>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn poll_fill(&mut self, cx: &mut Context<'_>, chunk: usize) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < chunk / 8 {
            self.rbuf.reserve(chunk);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }

    /// Reads until a whole head is buffered, within the wait's deadline.
    async fn next_head(
        &mut self,
        wait: &Wait<'_>,
        mut timer: Pin<&mut Sleep>,
        signal: &mut Signal<'_>,
    ) -> Next {
        let first = wait.idle_since.is_none();
        // When the head's first bytes arrived, if they did not bring the
        // whole head.
        let mut begun: Option<Instant> = None;
        // The timer may be late for this wait: the last request's route
        // timeout ran on it.
        let (due, _) = wait.due(None);
        if timer.deadline() > due {
            timer.as_mut().reset(due);
        }
        poll_fn(|cx| {
            loop {
                if !self.rbuf.is_empty() {
                    if first
                        && wait.limits.detect_http2
                        && PREFACE.starts_with(&self.rbuf[..PREFACE.len().min(self.rbuf.len())])
                    {
                        if self.rbuf.len() >= PREFACE.len() {
                            return Poll::Ready(Next::Http2);
                        }
                    } else {
                        match request::parse(
                            &mut self.rbuf,
                            wait.limits.max_fields,
                            &mut self.scratch,
                        ) {
                            Ok(Some(head)) => return Poll::Ready(Next::Head(head)),
                            Err(refusal) => return Poll::Ready(Next::Refused(refusal)),
                            Ok(None) if self.rbuf.len() > wait.limits.max_head => {
                                return Poll::Ready(Next::Refused(too_large(
                                    &self.rbuf,
                                    wait.limits,
                                )));
                            }
                            Ok(None) => {}
                        }
                    }
                    if begun.is_none() {
                        let now = Instant::now();
                        begun = Some(now);
                        let (due, _) = wait.due(begun);
                        if timer.deadline() > due {
                            timer.as_mut().reset(due);
                        }
                    }
                } else if signal.started(cx) {
                    // Draining: an idle connection closes at once.
                    return Poll::Ready(Next::Closed);
                }
                match self.poll_fill(cx, READ_CHUNK) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Next::Closed),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => {}
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let (due, kind) = wait.due(begun);
                if Instant::now() >= due {
                    return Poll::Ready(Next::TimedOut(kind));
                }
                // Fired early (armed for a wait that has since moved on).
                timer.as_mut().reset(due);
            }
        })
        .await
    }

    /// Writes a response of weir's own that answers no parsed request.
    async fn answer_only(&mut self, answer: crate::Answer, to: Answering) -> io::Result<()> {
        let (parts, body) = answer.response.into_parts();
        let mut close = true;
        let framing = response::encode_head(
            &parts,
            answer.fields.as_ref(),
            &answer.request_id,
            body.size_hint(),
            to,
            &mut close,
            &mut self.out.buf,
        );
        let mut writer = Writer::new(body, framing, close, false);
        poll_fn(|cx| writer.poll_write(cx, self)).await.map(|_| ())
    }

    /// Ends the connection: the FIN, then, if the client may still be
    /// sending, the lingering close.
    async fn close(mut self, linger: bool) -> Ended<IO> {
        let _ = self.io.shutdown().await;
        if linger {
            lingering(&mut self.io).await;
        }
        Ended::Done
    }

    /// Writes what is in the output buffer.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.out.poll_write(&mut self.io, cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// Too large a head: 414 when its request line alone is beyond the limit.
fn too_large(buf: &[u8], limits: &Limits) -> Refusal {
    let line = buf
        .iter()
        .take(limits.max_line + 2)
        .position(|b| *b == b'\n');
    if line.is_none() {
        Refusal {
            status: StatusCode::URI_TOO_LONG,
            code: "uri_too_long",
            message: "request target too long",
        }
    } else {
        Refusal {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "headers_too_large",
            message: "request headers too large",
        }
    }
}

/// One request, from its head to the end of its response, around the
/// handler's future. The caller pins that future in its own frame: it is
/// kilobytes, and every future that held it would be copied whole once
/// per request (`Exchange::begin`, `poll`, `finish` keep it out).
struct Exchange {
    pump: Option<Pump>,
    keep_alive: bool,
    to: Answering,
    /// How the client's connection goes to the relay after a 101.
    upgrade: Option<tokio::sync::oneshot::Sender<Upgraded>>,
    /// Times a client that takes no bytes of the answer ([`Limits::send`]).
    send: Pauses,
    /// The client took nothing for `send`: the exchange was abandoned.
    send_timed_out: bool,
}

/// What became of the answer: written (and whether the connection closes
/// after it, and whether it switched protocols), or not (the client left).
type Answered = Option<(bool, bool)>;

impl Exchange {
    /// Sets up the exchange for `head`: the request for the handler, its
    /// body's pump, its upgrade.
    fn begin(head: Head, send: Duration) -> (Exchange, Request<ClientBody>, Present) {
        let Head {
            request,
            body: framing,
            keep_alive,
            expect_continue,
            trailers,
            present,
        } = head;
        let to = Answering::new(request.method(), request.version(), trailers);
        let (pump, body) = if framing.is_done() {
            (None, ClientBody::Empty)
        } else {
            let (tx, rx) = body::channel(framing.size_hint().exact());
            let pump = Pump {
                tx,
                decoder: framing,
                expect_continue,
                state: PumpState::Reading,
            };
            (Some(pump), ClientBody::H1(rx))
        };
        let mut req = request.map(|()| body);
        // A request that may switch protocols gets the way to take its
        // connection over (upgrade.rs); others pay nothing for it.
        let upgrade = (req.version() == Version::HTTP_11 && pump.is_none() && present.upgrade())
            .then(|| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                req.extensions_mut().insert(ClientUpgrade::new(rx));
                tx
            });
        let exchange = Exchange {
            pump,
            keep_alive,
            to,
            upgrade,
            send: Pauses::new(send),
            send_timed_out: false,
        };
        (exchange, req, present)
    }

    /// Drives the request body, the handler and then the answer's writing,
    /// until the answer is written or the client has gone.
    fn poll<IO, F>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Conn<IO>,
        mut handling: Pin<&mut F>,
        writer: &mut Option<Writer<crate::access_log::Logged<crate::Body>>>,
        signal: &Signal<'_>,
    ) -> Poll<Answered>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        F: std::future::Future<Output = crate::Answer>,
    {
        loop {
            if let Some(p) = self.pump.as_mut() {
                p.poll(cx, conn, writer.is_none());
            }
            let Some(w) = writer.as_mut() else {
                if let Poll::Ready(answer) = handling.as_mut().poll(cx) {
                    let (parts, body) = answer.response.into_parts();
                    let mut close = !self.keep_alive || signal.is_started();
                    let framing = response::encode_head(
                        &parts,
                        answer.fields.as_ref(),
                        &answer.request_id,
                        body.size_hint(),
                        self.to,
                        &mut close,
                        &mut conn.out.buf,
                    );
                    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
                    *writer = Some(Writer::new(body, framing, close, switching));
                    continue;
                }
                // Bytes for the client (a 100 Continue) go now.
                if !conn.out.is_empty()
                    && let Poll::Ready(Err(_)) = conn.poll_flush_out(cx)
                {
                    return Poll::Ready(None);
                }
                // Waiting for the answer: a client that closes (or whose
                // connection fails) abandons the request, as with nginx
                // and hyper; pipelined bytes wait in the buffer.
                if self.pump.is_none() && conn.rbuf.is_empty() {
                    match conn.poll_fill(cx, READ_CHUNK) {
                        Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                        Poll::Ready(Ok(_)) | Poll::Pending => {}
                    }
                }
                return Poll::Pending;
            };
            return match w.poll_write(cx, conn) {
                Poll::Ready(Ok(close)) => Poll::Ready(Some((close, w.switching))),
                Poll::Ready(Err(_)) => Poll::Ready(None),
                // Bytes wait for the client to take them.
                Poll::Pending if w.on_client && self.send_stalled(cx, conn) => {
                    self.send_timed_out = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }

    /// The writing waits on the client: whether it has taken nothing for
    /// [`Limits::send`].
    fn send_stalled<IO>(&mut self, cx: &mut Context<'_>, conn: &mut Conn<IO>) -> bool {
        if std::mem::take(&mut conn.out.moved) {
            self.send.moved();
        }
        self.send.poll_pause(cx).is_ready()
    }

    /// What the connection does next.
    fn finish<IO>(mut self, conn: &mut Conn<IO>, answered: Answered) -> Exchanged
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some((close, switching)) = answered else {
            return Exchanged::Aborted;
        };
        if switching && let Some(upgrade) = self.upgrade {
            return Exchanged::Switched(upgrade);
        }
        // A request body the answer left unread: what has arrived already
        // is dropped; if that was all of it, the connection can go on.
        let unread = match self.pump.as_mut() {
            Some(p) => !p.finish_unread(conn),
            None => false,
        };
        if close || unread || switching {
            Exchanged::Close { linger: unread }
        } else {
            Exchanged::KeepAlive
        }
    }
}

/// Reads a request body into its slot while the request is handled.
struct Pump {
    tx: Sender,
    decoder: Decoder,
    expect_continue: bool,
    state: PumpState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpState {
    Reading,
    /// The whole body was read.
    Done,
    /// It failed (malformed, cut short): where the next request would
    /// begin is unknown.
    Failed,
}

impl Pump {
    /// Moves the body along as far as it can go now. `may_continue`: no
    /// part of the answer has been written, so a `100 Continue` still may.
    fn poll<IO>(&mut self, cx: &mut Context<'_>, conn: &mut Conn<IO>, may_continue: bool)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        while self.state == PumpState::Reading {
            match self.tx.room(cx) {
                // Nobody takes more (an early answer, or an upstream that
                // read the length it was told): what is left is drained
                // after the answer, or the connection closes.
                Room::Gone | Room::Full => return,
                Room::Free { wanted } => {
                    if self.expect_continue {
                        // The client sends the body only once told to, and
                        // it is told only when the body is wanted.
                        if !wanted || !may_continue {
                            return;
                        }
                        conn.out.buf.extend_from_slice(CONTINUE);
                        self.expect_continue = false;
                    }
                }
            }
            match self.decoder.decode(&mut conn.rbuf) {
                Ok(Decoded::Frame(frame)) => self.tx.send(frame),
                Ok(Decoded::End) => {
                    self.tx.finish(Ok(()));
                    self.state = PumpState::Done;
                }
                Ok(Decoded::More) => match conn.poll_fill(cx, BODY_READ_CHUNK) {
                    Poll::Ready(Ok(n)) if n > 0 => {}
                    Poll::Ready(_) => {
                        self.tx.finish(Err(body::BodyError::Truncated));
                        self.state = PumpState::Failed;
                    }
                    Poll::Pending => return,
                },
                Err(why) => {
                    tracing::debug!(reason = why, "Malformed request body.");
                    self.tx.finish(Err(body::BodyError::Malformed(why)));
                    self.state = PumpState::Failed;
                }
            }
        }
    }

    /// After the answer: drops what has already arrived of a body nobody
    /// read, without waiting for more. Whether the body is whole now, so
    /// the connection can carry another request.
    fn finish_unread<IO>(&mut self, conn: &mut Conn<IO>) -> bool
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if self.state != PumpState::Reading || self.expect_continue {
            return self.state == PumpState::Done;
        }
        let mut dropped = 0;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while dropped <= DRAIN_UNREAD {
            match self.decoder.decode(&mut conn.rbuf) {
                Ok(Decoded::Frame(frame)) => {
                    dropped += frame.data_ref().map_or(0, Bytes::len);
                }
                Ok(Decoded::End) => return true,
                Ok(Decoded::More) => match conn.poll_fill(&mut cx, READ_CHUNK) {
                    Poll::Ready(Ok(n)) if n > 0 => {}
                    _ => return false,
                },
                Err(_) => return false,
            }
        }
        false
    }
}

/// The output buffer: bytes to write, and a large data frame written from
/// its own memory after them.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    /// How much of `buf` has been written.
    written: usize,
    big: Option<Bytes>,
    /// Appended to `buf` once `big` is written (a chunk's CRLF).
    after: &'static [u8],
    /// Bytes were written since the send timer last looked.
    moved: bool,
}

impl Out {
    fn is_empty(&self) -> bool {
        self.buf.len() == self.written && self.big.is_none()
    }

    fn poll_write<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let head = &self.buf[self.written..];
            let n = match &self.big {
                None if head.is_empty() => break,
                None => ready!(Pin::new(&mut *io).poll_write(cx, head))?,
                Some(big) if head.is_empty() => ready!(Pin::new(&mut *io).poll_write(cx, big))?,
                Some(big) => {
                    let bufs = [io::IoSlice::new(head), io::IoSlice::new(big)];
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.moved = true;
            let from_buf = n.min(head.len());
            self.written += from_buf;
            if let Some(big) = &mut self.big
                && n > from_buf
            {
                big.advance(n - from_buf);
                if big.is_empty() {
                    // Writes go in order: `buf` went out before it.
                    self.big = None;
                    self.buf.clear();
                    self.written = 0;
                    self.buf.extend_from_slice(self.after);
                }
            }
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// A response body on its way to the client, framed.
struct Writer<B> {
    body: B,
    framing: Framing,
    /// The body has ended (or failed).
    ended: bool,
    /// The connection closes after this response.
    close: bool,
    /// A `101`: the connection goes to the relay after the head.
    switching: bool,
    /// Pending on the client taking bytes (a write or a flush: a TLS
    /// stream holds records until the socket takes them), not on the body.
    on_client: bool,
}

impl<B> Writer<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// A writer for `body` after a head that said `framing`; `close` when
    /// the connection ends after it.
    fn new(body: B, framing: Framing, close: bool, switching: bool) -> Self {
        Writer {
            body,
            framing,
            ended: false,
            close,
            switching,
            on_client: false,
        }
    }

    /// Writes the head already in `conn.out`, then the body as it comes.
    /// `Ok(close)` once all of it is written.
    fn poll_write<IO>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Conn<IO>,
    ) -> Poll<io::Result<bool>>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        loop {
            while !self.ended && conn.out.big.is_none() && conn.out.buf.len() < WRITE_BATCH {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        self.frame(frame, &mut conn.out);
                        if !self.ended && self.body.is_end_stream() {
                            self.end(None, &mut conn.out);
                        }
                    }
                    Poll::Ready(None) => self.end(None, &mut conn.out),
                    Poll::Ready(Some(Err(e))) => {
                        // The head is out: the client can only learn of
                        // the failure from the close (and, when chunked,
                        // from the missing last chunk).
                        tracing::debug!(error = %e, "Response body failed midway.");
                        self.ended = true;
                        self.close = true;
                    }
                    Poll::Pending => break,
                }
            }
            if conn.out.is_empty() {
                // The end, or a flush left pending (TLS records the socket
                // had no room for): flushed before waiting on the body, or
                // they would sit in the stream until its next frame.
                if self.ended || self.on_client {
                    self.on_client = true;
                    ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                    self.on_client = false;
                    if self.ended {
                        return Poll::Ready(Ok(self.close));
                    }
                }
                return Poll::Pending;
            }
            self.on_client = true;
            ready!(conn.poll_flush_out(cx))?;
            self.on_client = false;
        }
    }

    fn frame(&mut self, frame: Frame<Bytes>, out: &mut Out) {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    self.end(Some(&trailers), out);
                }
                return;
            }
        };
        if data.is_empty() {
            return;
        }
        let (data, after): (Bytes, &'static [u8]) = match &mut self.framing {
            Framing::None => return,
            Framing::Close => (data, b""),
            Framing::Length(left) => {
                let mut data = data;
                if data.len() as u64 > *left {
                    // More than the head announced: the rest is not sent.
                    data.truncate(*left as usize);
                    self.close = true;
                }
                *left -= data.len() as u64;
                (data, b"")
            }
            Framing::Chunked { .. } => {
                response::chunk_size(data.len(), &mut out.buf);
                (data, b"\r\n")
            }
        };
        if data.len() >= COPY_LIMIT {
            out.big = Some(data);
            out.after = after;
        } else {
            out.buf.extend_from_slice(&data);
            out.buf.extend_from_slice(after);
        }
    }

    fn end(&mut self, trailers: Option<&http::HeaderMap>, out: &mut Out) {
        self.ended = true;
        match self.framing {
            Framing::Chunked { trailers: wanted } => {
                response::last_chunk(trailers.filter(|_| wanted), &mut out.buf);
            }
            // Shorter than the head announced: the client sees the close.
            Framing::Length(left) if left > 0 => self.close = true,
            _ => {}
        }
    }
}

/// After the FIN: reads and drops the client's bytes until it closes,
/// fails, pauses for [`LINGER_IDLE`], or [`LINGER`] passes.
async fn lingering<IO: AsyncRead + Unpin>(io: &mut IO) {
    use tokio::io::AsyncReadExt;
    let until = Instant::now() + LINGER;
    let mut scratch = vec![0u8; 8192];
    loop {
        let pause = (Instant::now() + LINGER_IDLE).min(until);
        match tokio::time::timeout_at(pause, io.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}
