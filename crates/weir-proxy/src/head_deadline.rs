//! How long an HTTP/1 client connection may wait for its next request: the
//! keep-alive idle timeout (`--keepalive-timeout`) and the request-head
//! deadline (`--header-read-timeout`, the slowloris guard).
//!
//! - Between requests, an idle connection (no byte of a next request) is
//!   closed `keepalive` after its previous response was sent. Load
//!   balancers in front of an ingress pool their connections to it and
//!   expect them to stay open for about a minute (nginx's
//!   `keepalive_timeout` is 75 s, an AWS ALB's idle timeout 60 s); closing
//!   sooner races their next request and shows as sporadic 502s there.
//! - Once the first byte of a head has arrived, the whole head must follow
//!   within `head`. The first request of a connection must arrive whole
//!   within `head` of the connection opening.
//! - A request in flight (a slow backend, a slow upload or download) is
//!   never cut by either.
//!
//! hyper's own header-read timeout covered neither need: it starts only
//! after hyper-util has told HTTP/1 from HTTP/2, a detection that waits for
//! the client's first bytes without a limit, so a connection that sent
//! nothing stayed open for good; and it made idle keep-alive connections
//! wait no longer than a head may take. It also armed a fresh boxed timer
//! for every request head. Here a connection keeps one timer, re-armed only
//! when it fires, as nginx's lazy timers are; a request costs a few counter
//! updates and two clock reads. When the timer fires, the deadline is
//! worked out from the counters, and the timer is set no later than the
//! earliest deadline a wait starting now could have, so it is never late.
//!
//! HTTP/2 connections have neither, as under hyper: their idle connections
//! (a gRPC channel between calls) are hyper's keep-alive pings' business.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// The two limits on a connection's wait for its next request.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// From the first byte of a request head (or the connection opening,
    /// for its first request) to the end of that head.
    pub head: Duration,
    /// From the end of a response to the first byte of the next request.
    pub keepalive: Duration,
}

impl Waits {
    /// No wait that starts now can end before now plus this.
    fn shortest(&self) -> Duration {
        self.head.min(self.keepalive)
    }
}

/// What a connection's requests and its framing guard report to its
/// deadline.
#[derive(Debug)]
pub struct HeadClock {
    opened: Instant,
    /// Requests handed to the handler.
    started: AtomicU64,
    /// Requests whose response has been sent, or abandoned.
    ended: AtomicU64,
    /// When the last response ended, in nanoseconds since `opened`.
    idle_since: AtomicU64,
    /// Request heads whose first byte has arrived (framing.rs).
    begun: AtomicU64,
    /// When the last of them began, in nanoseconds since `opened`.
    begun_at: AtomicU64,
    /// The framing guard no longer sees where heads begin (after a request
    /// it cannot follow): every wait is then held to the head deadline.
    blind: AtomicBool,
    /// The connection speaks HTTP/2: no deadline.
    http2: AtomicBool,
}

/// Where a connection stands when its timer fires.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Waiting for a request that must have arrived by then.
    At(Instant),
    /// A request is in flight.
    Busy,
    /// HTTP/2: no deadline.
    Never,
}

impl HeadClock {
    /// A clock for a connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(HeadClock {
            opened: Instant::now(),
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            begun_at: AtomicU64::new(0),
            blind: AtomicBool::new(false),
            http2: AtomicBool::new(false),
        })
    }

    fn nanos_since_open(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a request the handler starts on; the returned token ends it
    /// when dropped, with its response body (or with the handler, if the
    /// request is abandoned).
    pub(crate) fn start(self: &Arc<Self>, version: http::Version) -> InFlight {
        if version == http::Version::HTTP_2 {
            self.http2();
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The first bytes of request heads arrived: `total` heads have begun
    /// on this connection so far.
    pub(crate) fn heads_begun(&self, total: u64) {
        self.begun_at
            .store(self.nanos_since_open(), Ordering::Relaxed);
        self.begun.store(total, Ordering::Release);
    }

    /// The framing guard stopped following this connection's requests.
    pub(crate) fn blind(&self) {
        self.blind.store(true, Ordering::Relaxed);
    }

    /// The connection speaks HTTP/2: its preface arrived (framing.rs), or
    /// a request came over it.
    pub(crate) fn http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    fn due(&self, waits: Waits) -> Due {
        if self.http2.load(Ordering::Relaxed) {
            return Due::Never;
        }
        // Times are written before their counts: a count read here comes
        // with the time of the event that made it.
        let ended = self.ended.load(Ordering::Acquire);
        if self.started.load(Ordering::Relaxed) != ended {
            return Due::Busy;
        }
        let at =
            |nanos: &AtomicU64| self.opened + Duration::from_nanos(nanos.load(Ordering::Relaxed));
        let idle_since = at(&self.idle_since);
        if ended == 0 {
            // The first request: whole within `head` of the opening.
            return Due::At(self.opened + waits.head);
        }
        if self.blind.load(Ordering::Relaxed) {
            return Due::At(idle_since + waits.head);
        }
        if self.begun.load(Ordering::Acquire) > ended {
            Due::At(at(&self.begun_at) + waits.head)
        } else {
            Due::At(idle_since + waits.keepalive)
        }
    }
}

/// A request in flight on its connection; see [`HeadClock::start`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<HeadClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        clock
            .idle_since
            .store(clock.nanos_since_open(), Ordering::Relaxed);
        clock.ended.fetch_add(1, Ordering::Release);
    }
}

/// Runs `conn` (a client connection) until it ends, or until its wait for
/// a request passes `waits`; `None` then, and the connection is dropped
/// (closed).
pub async fn serve_within<F: Future>(
    conn: F,
    clock: &HeadClock,
    waits: Waits,
) -> Option<F::Output> {
    let mut conn = pin!(conn);
    let mut timer = pin!(tokio::time::sleep_until(clock.opened + waits.head));
    let mut armed = true;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while armed && timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            // A wait that starts after now (a head beginning, a response
            // ending) ends no sooner than now + the shortest wait.
            let soonest = now + waits.shortest();
            match clock.due(waits) {
                Due::At(due) if due <= now => return Poll::Ready(None),
                Due::At(due) => timer.as_mut().reset(due.min(soonest)),
                Due::Busy => timer.as_mut().reset(soonest),
                Due::Never => armed = false,
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;
    use tokio::time::advance;

    const S: Duration = Duration::from_secs(1);
    const W: Waits = Waits {
        head: Duration::from_secs(10),
        keepalive: Duration::from_secs(75),
    };

    #[tokio::test(start_paused = true)]
    async fn which_wait_applies() {
        let clock = HeadClock::new();
        let o = clock.opened;
        // The first request: whole within `head` of the opening.
        assert_eq!(clock.due(W), Due::At(o + 10 * S));
        clock.heads_begun(1);
        assert_eq!(clock.due(W), Due::At(o + 10 * S));
        let req = clock.start(Version::HTTP_11);
        assert_eq!(clock.due(W), Due::Busy);
        advance(30 * S).await;
        drop(req);
        // Idle: `keepalive` from the end of the response.
        assert_eq!(clock.due(W), Due::At(o + 105 * S));
        advance(40 * S).await;
        // A head has begun: whole within `head` of its first byte.
        clock.heads_begun(2);
        assert_eq!(clock.due(W), Due::At(o + 80 * S));
        // Pipelined: the next head came before the previous response ended.
        let a = clock.start(Version::HTTP_11);
        clock.heads_begun(3);
        let b = clock.start(Version::HTTP_11);
        drop(a);
        assert_eq!(clock.due(W), Due::Busy);
        drop(b);
        assert_eq!(clock.due(W), Due::At(o + 70 * S + 75 * S));
        // After a request the guard could not follow, every wait is held to
        // the head deadline.
        clock.blind();
        assert_eq!(clock.due(W), Due::At(o + 70 * S + 10 * S));
        let _h2 = clock.start(Version::HTTP_2);
        assert_eq!(clock.due(W), Due::Never);
    }

    /// Closes `conn` at the deadline; returns when, in seconds from now.
    async fn closed_after(clock: &HeadClock, conn: impl Future<Output = ()>) -> Option<u64> {
        let started = Instant::now();
        serve_within(conn, clock, W)
            .await
            .is_none()
            .then(|| started.elapsed().as_secs())
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_closes_exactly_at_the_deadline_and_never_cuts_a_request() {
        // Silent from the start.
        let clock = HeadClock::new();
        assert_eq!(closed_after(&clock, std::future::pending()).await, Some(10));

        // A request three head deadlines long, then idle.
        let clock = HeadClock::new();
        let req = clock.start(Version::HTTP_11);
        let conn = async {
            tokio::time::sleep(30 * S).await;
            drop(req);
            std::future::pending().await
        };
        assert_eq!(closed_after(&clock, conn).await, Some(30 + 75));

        // Idle for 40 s, then a head that never ends: cut `head` after its
        // first byte, though the timer was aiming at the keep-alive end.
        let clock = HeadClock::new();
        clock.heads_begun(1);
        let req = clock.start(Version::HTTP_11);
        let conn = async {
            tokio::time::sleep(5 * S).await;
            drop(req);
            tokio::time::sleep(40 * S).await;
            clock.heads_begun(2);
            std::future::pending().await
        };
        assert_eq!(closed_after(&clock, conn).await, Some(5 + 40 + 10));

        // HTTP/2: never.
        let clock = HeadClock::new();
        clock.http2();
        let conn = tokio::time::sleep(1000 * S);
        assert_eq!(closed_after(&clock, conn).await, None);

        // A connection that ends by itself.
        let clock = HeadClock::new();
        assert_eq!(serve_within(async { 7 }, &clock, W).await, Some(7));
    }
}
