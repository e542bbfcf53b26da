//! The client's request body on its way upstream, counted against the
//! route's size limit (`proxy-body-size`) as it streams, and watched for
//! the route's timeout.
//!
//! A body that declares its length is refused before it is read (413, see
//! `lib.rs`); this catches the ones that do not (chunked HTTP/1.1, HTTP/2
//! without `content-length`) at the first frame past the limit, so no more
//! than the limit ever reaches the upstream.
//!
//! weir streams bodies instead of buffering them as ingress-nginx does, so
//! the route's timeout cannot simply run from the start of the exchange: a
//! large upload over a slow link would be cut while it is still moving.
//! [`Progress`] records when the body last moved and when it ended; the
//! timeout ([`within_timeout`]) then runs from the body's end, and before
//! that limits each pause in it, as nginx's `client_body_timeout` and
//! `proxy_send_timeout` limit the time between two reads or writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use crate::http1::body::{BodyError, H1Body};

/// A client's request body as it arrives: from weir's HTTP/1 server, from
/// hyper's HTTP/2 server, or none at all.
#[derive(Debug)]
pub enum ClientBody {
    /// No body (most requests): nothing is allocated for it.
    Empty,
    /// Read from an HTTP/1 connection (http1/body.rs).
    H1(H1Body),
    /// An HTTP/2 stream's data.
    H2(Incoming),
}

/// Why a client's body failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// On HTTP/1.
    #[error(transparent)]
    H1(#[from] BodyError),
    /// On HTTP/2.
    #[error(transparent)]
    H2(#[from] hyper::Error),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(ClientBodyError::from),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(ClientBodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// A request body with an optional byte limit.
#[derive(Debug)]
pub struct RequestBody {
    inner: ClientBody,
    /// Most bytes allowed; `None` for no limit.
    limit: Option<u64>,
    /// Bytes passed on so far.
    seen: u64,
    /// Kept for bodies that are not empty from the start.
    progress: Option<Arc<Progress>>,
}

/// How far a request body has got on its way upstream. Written by the body
/// (polled in the upstream connection's task), read by the request's
/// timeout.
#[derive(Debug)]
pub(crate) struct Progress {
    origin: Instant,
    /// When a frame last passed, in nanoseconds since `origin`.
    moved: AtomicU64,
    /// The whole body has passed.
    ended: AtomicBool,
    /// The last poll found nothing from the client: a pause now is the
    /// client's, not the upstream's.
    awaiting_client: AtomicBool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            origin: Instant::now(),
            moved: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            awaiting_client: AtomicBool::new(false),
        }
    }

    /// Records that the body moved: a frame passed, or it ended.
    fn moved(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.moved.store(nanos, Ordering::Release);
        self.awaiting_client.store(false, Ordering::Relaxed);
    }

    /// Test hook: the body's poll found nothing from the client.
    #[cfg(test)]
    fn paused_by_client(&self) {
        self.awaiting_client.store(true, Ordering::Relaxed);
    }

    /// Test hook: a frame passed, and whether it was the last.
    #[cfg(test)]
    fn frame(&self, last: bool) {
        self.moved();
        self.ended.store(last, Ordering::Relaxed);
    }

    /// When the body last moved (or was created), or when it ended.
    pub(crate) fn last_moved(&self) -> Instant {
        self.origin + Duration::from_nanos(self.moved.load(Ordering::Acquire))
    }

    /// Whether the whole body has passed.
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Whether the body is paused because the client sends nothing (rather
    /// than because the upstream takes nothing).
    pub(crate) fn awaiting_client(&self) -> bool {
        !self.ended() && self.awaiting_client.load(Ordering::Relaxed)
    }
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client's stream failed (cut short, malformed chunk).
    #[error(transparent)]
    Client(#[from] ClientBodyError),
    /// More than the route accepts.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
}

impl RequestBody {
    /// Wraps `inner`, allowing at most `limit` bytes when given.
    pub(crate) fn new(inner: ClientBody, limit: Option<u64>) -> Self {
        let progress = (!inner.is_end_stream()).then(|| Arc::new(Progress::new()));
        RequestBody {
            inner,
            limit,
            seen: 0,
            progress,
        }
    }

    /// How far the body has got; `None` for a body empty from the start.
    pub(crate) fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(progress) = &self.progress {
            match &polled {
                Poll::Pending => progress.awaiting_client.store(true, Ordering::Relaxed),
                Poll::Ready(Some(Ok(_))) => {
                    progress.moved();
                    // The upstream connection stops polling once the body
                    // says it has ended.
                    if self.inner.is_end_stream() {
                        progress.ended.store(true, Ordering::Relaxed);
                    }
                }
                Poll::Ready(None) => {
                    progress.moved();
                    progress.ended.store(true, Ordering::Relaxed);
                }
                // The exchange fails with the body.
                Poll::Ready(Some(Err(_))) => {}
            }
        }
        let frame = ready!(polled);
        if let Some(limit) = self.limit
            && let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            self.seen += data.len() as u64;
            if self.seen > limit {
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge(limit))));
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(RequestBodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error`, or anything that caused it, is a body over its limit.
pub(crate) fn is_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if matches!(
            e.downcast_ref::<RequestBodyError>(),
            Some(RequestBodyError::TooLarge(_))
        ) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// When a request arrived, and the timer its route timeout runs on.
pub(crate) struct Timing<'a> {
    pub(crate) arrived: Instant,
    pub(crate) timer: Pin<&'a mut tokio::time::Sleep>,
}

/// Why [`within_timeout`] gave up.
pub(crate) enum Expired {
    /// The upstream did not answer in time, or stopped taking the body.
    Upstream,
    /// The client paused its request body for longer than the timeout.
    Client,
}

/// Waits for `sent` (the upstream's response head) within the route's
/// `timeout`, counted from the end of the request body ([`Progress`]):
/// an upload that keeps moving is never cut, however long it takes. Each
/// pause in it gets `timeout` when the client sends nothing (nginx's
/// `client_body_timeout`), `send` when the upstream takes nothing
/// (`proxy_send_timeout`). Without a body (`progress` is `None`), from
/// `arrived`, the request's arrival (read once per request, by the
/// caller). One timer, re-armed only when it fires.
///
/// `sent` is pinned by the caller: taken by value, the exchange's future
/// (kilobytes) would be stored twice in this one and copied each time, on
/// every request (see `Proxy::handle`). The timer is lent by the caller
/// too (`timing`): an HTTP/1 connection lends its own, idle while a
/// request is in flight, so a request arms no timer of its own.
pub(crate) async fn within_timeout<F: Future>(
    mut sent: Pin<&mut F>,
    timing: Timing<'_>,
    timeout: Duration,
    send: Duration,
    progress: Option<&Progress>,
) -> Result<F::Output, Expired> {
    // No pause can end sooner than this after it starts.
    let shortest = timeout.min(send);
    let first = if progress.is_some() {
        shortest
    } else {
        timeout
    };
    let mut timer = timing.timer;
    timer.as_mut().reset(timing.arrived + first);
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(out) = sent.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some(progress) = progress else {
                return Poll::Ready(Err(Expired::Upstream));
            };
            let limit = if progress.ended() || progress.awaiting_client() {
                timeout
            } else {
                send
            };
            let due = progress.last_moved() + limit;
            let now = Instant::now();
            if due > now {
                // Who the pause is waiting on can change before `due`
                // without the body moving.
                timer.as_mut().reset(due.min(now + shortest));
                continue;
            }
            return Poll::Ready(Err(if progress.awaiting_client() {
                Expired::Client
            } else {
                Expired::Upstream
            }));
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    /// A request arriving now, on `timer`.
    fn now(timer: Pin<&mut tokio::time::Sleep>) -> Timing<'_> {
        Timing {
            arrived: Instant::now(),
            timer,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_runs_from_the_body_end_and_limits_each_pause() {
        use tokio::time::{advance, sleep};
        const S: Duration = Duration::from_secs(1);
        let answer_at = |secs: u64| async move {
            sleep(Duration::from_secs(secs)).await;
        };
        let timed = |progress: Option<Arc<Progress>>, answer: u64| async move {
            let start = Instant::now();
            let timer = pin!(sleep(S));
            let timing = Timing {
                arrived: Instant::now(),
                timer,
            };
            let out = within_timeout(
                pin!(answer_at(answer)),
                timing,
                10 * S,
                10 * S,
                progress.as_deref(),
            )
            .await;
            (
                out.map_err(|e| matches!(e, Expired::Client)),
                start.elapsed().as_secs(),
            )
        };
        // No body: from the start.
        assert_eq!(timed(None, 9).await, (Ok(()), 9));
        assert_eq!(timed(None, 11).await, (Err(false), 10));

        // A body moving every 5 s for 30 s, then the answer 9 s later.
        let p = Arc::new(Progress::new());
        let feed = {
            let p = p.clone();
            async move {
                for i in 1..=6 {
                    sleep(5 * S).await;
                    p.frame(i == 6);
                }
            }
        };
        let (out, ()) = tokio::join!(timed(Some(p), 39), feed);
        assert_eq!(out, (Ok(()), 39));

        // A pause after a frame, by the client or by the upstream, with a
        // 10 s timeout and a 3 s send timeout: whose, and how long it lasted.
        let paused = |by_client: bool| async move {
            let p = Arc::new(Progress::new());
            p.frame(false);
            if by_client {
                p.paused_by_client();
            }
            let out = within_timeout(
                pin!(answer_at(100)),
                now(pin!(sleep(S))),
                10 * S,
                3 * S,
                Some(&p),
            )
            .await;
            (
                matches!(out, Err(Expired::Client)),
                p.last_moved().elapsed().as_secs(),
            )
        };
        // The client pauses: 408, 10 s after its last frame.
        advance(2 * S).await;
        assert_eq!(paused(true).await, (true, 10));
        // The upstream stops taking the body: 504, after the send timeout.
        assert_eq!(paused(false).await, (false, 3));
    }
}
