//! How long a client connection may wait for its next request: the
//! keep-alive idle timeout (`--keepalive-timeout`) and the request-head
//! deadline (`--header-read-timeout`, the slowloris guard); and the
//! connection's driver, which also carries the shutdown drain to it.
//!
//! - Between requests, an idle HTTP/1 connection (no byte of a next
//!   request) is closed `keepalive` after its previous response was sent.
//!   Load balancers in front of an ingress pool their connections to it
//!   and expect them to stay open for about a minute (nginx's
//!   `keepalive_timeout` is 75 s, an AWS ALB's idle timeout 60 s); closing
//!   sooner races their next request and shows as sporadic 502s there.
//! - Once the first byte of a head has arrived, the whole head must follow
//!   within `head`. The first request of a connection must arrive whole
//!   within `head` of the connection opening.
//! - An HTTP/2 connection with no request in flight (a gRPC channel
//!   between calls, or one that sent its preface and nothing else) is
//!   asked to close with a GOAWAY `keepalive` after its last stream ended
//!   (or after it opened), as nginx (`keepalive_timeout`) and Envoy
//!   (`idle_timeout`) do; if it is still open `head` later, it is dropped.
//!   Without this a client could hold HTTP/2 connections open for good by
//!   answering hyper's keep-alive pings.
//! - A request in flight (a slow backend, a slow upload or download) is
//!   never cut by any of them.
//!
//! hyper's own header-read timeout covered none of these: it starts only
//! after hyper-util has told HTTP/1 from HTTP/2, a detection that waits for
//! the client's first bytes without a limit, so a connection that sent
//! nothing stayed open for good; and it made idle keep-alive connections
//! wait no longer than a head may take. It also armed a fresh boxed timer
//! for every request head. Here a connection keeps one timer, re-armed only
//! when it fires, as nginx's lazy timers are; a request costs a few counter
//! updates and two clock reads. When the timer fires, the deadline is
//! worked out from the counters, and the timer is set no later than the
//! earliest deadline a wait starting now could have, so it is never late.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use crate::drain::Registration;
use crate::metrics::ClientTimeout;

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
    /// The connection speaks HTTP/2: only the idle deadline, and a GOAWAY
    /// instead of a plain close.
    http2: AtomicBool,
    /// The framing guard is lingering over the closed connection, within
    /// limits of its own: no deadline here.
    lingering: AtomicBool,
}

/// Where a connection stands when its timer fires.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Waiting for a request that must have arrived by then; which wait it
    /// is, should it time out.
    At(Instant, ClientTimeout),
    /// A request is in flight, or the connection is lingering.
    Busy,
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
            lingering: AtomicBool::new(false),
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

    /// The connection is closed and lingering (framing.rs).
    pub(crate) fn lingering(&self) {
        self.lingering.store(true, Ordering::Relaxed);
    }

    fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    fn due(&self, waits: Waits) -> Due {
        // Times are written before their counts: a count read here comes
        // with the time of the event that made it.
        let ended = self.ended.load(Ordering::Acquire);
        if self.started.load(Ordering::Relaxed) != ended || self.lingering.load(Ordering::Relaxed) {
            return Due::Busy;
        }
        let at =
            |nanos: &AtomicU64| self.opened + Duration::from_nanos(nanos.load(Ordering::Relaxed));
        // The opening, until a response has ended.
        let idle_since = at(&self.idle_since);
        if self.is_http2() {
            return Due::At(idle_since + waits.keepalive, ClientTimeout::Http2Idle);
        }
        // The first request must arrive whole within `head` of the opening
        // (`idle_since` is the opening until a response has ended); after a
        // request the guard could not follow, every wait is held to `head`.
        if ended == 0 || self.blind.load(Ordering::Relaxed) {
            return Due::At(idle_since + waits.head, ClientTimeout::RequestHead);
        }
        if self.begun.load(Ordering::Acquire) > ended {
            Due::At(at(&self.begun_at) + waits.head, ClientTimeout::RequestHead)
        } else {
            Due::At(idle_since + waits.keepalive, ClientTimeout::KeepAlive)
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

/// A client connection that can be asked to finish what it has in flight
/// and close: hyper's server connections.
pub trait Graceful: Future {
    /// HTTP/1: closes after the response in flight, at once when idle.
    /// HTTP/2: sends GOAWAY and closes once the open streams have ended.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// Runs `conn` (a client connection) until it ends: by itself, after the
/// drain has asked it to close, or when its wait for a request passes
/// `waits`. `None` then: the connection is dropped (closed); an HTTP/2
/// connection gets a GOAWAY first and `waits.head` to close by itself.
/// `timed_out` hears of the wait that passed (once per connection).
pub async fn serve_within<C: Graceful>(
    conn: C,
    clock: &HeadClock,
    waits: Waits,
    drain: &Registration,
    mut timed_out: impl FnMut(ClientTimeout),
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut drain = drain.signal();
    let mut timer = pin!(tokio::time::sleep_until(clock.opened + waits.head));
    // Asked to close (by the drain, or for idling over HTTP/2).
    let mut closing = false;
    // When an idle HTTP/2 connection was sent its GOAWAY.
    let mut goaway: Option<Instant> = None;
    std::future::poll_fn(|cx| {
        loop {
            if !closing && drain.started(cx) {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            if let Poll::Ready(out) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            // A wait that starts after now (a head beginning, a response
            // ending) ends no sooner than now + the shortest wait.
            let soonest = now + waits.shortest();
            match clock.due(waits) {
                Due::Busy => timer.as_mut().reset(soonest),
                Due::At(due, _) if due > now => timer.as_mut().reset(due.min(soonest)),
                Due::At(_, wait) if !clock.is_http2() => {
                    timed_out(wait);
                    return Poll::Ready(None);
                }
                Due::At(_, wait) => match goaway {
                    Some(sent) if now >= sent + waits.head => return Poll::Ready(None),
                    Some(sent) => timer.as_mut().reset(sent + waits.head),
                    None => {
                        timed_out(wait);
                        goaway = Some(now);
                        // Unless the drain has asked already; the loop
                        // polls the connection again, which writes the
                        // GOAWAY.
                        if !std::mem::replace(&mut closing, true) {
                            conn.as_mut().graceful_shutdown();
                        }
                        timer.as_mut().reset(now + waits.head);
                    }
                },
            }
        }
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
        assert_eq!(
            clock.due(W),
            Due::At(o + 10 * S, ClientTimeout::RequestHead)
        );
        clock.heads_begun(1);
        assert_eq!(
            clock.due(W),
            Due::At(o + 10 * S, ClientTimeout::RequestHead)
        );
        let req = clock.start(Version::HTTP_11);
        assert_eq!(clock.due(W), Due::Busy);
        advance(30 * S).await;
        drop(req);
        // Idle: `keepalive` from the end of the response.
        assert_eq!(clock.due(W), Due::At(o + 105 * S, ClientTimeout::KeepAlive));
        advance(40 * S).await;
        // A head has begun: whole within `head` of its first byte.
        clock.heads_begun(2);
        assert_eq!(
            clock.due(W),
            Due::At(o + 80 * S, ClientTimeout::RequestHead)
        );
        // Pipelined: the next head came before the previous response ended.
        let a = clock.start(Version::HTTP_11);
        clock.heads_begun(3);
        let b = clock.start(Version::HTTP_11);
        drop(a);
        assert_eq!(clock.due(W), Due::Busy);
        drop(b);
        assert_eq!(
            clock.due(W),
            Due::At(o + 70 * S + 75 * S, ClientTimeout::KeepAlive)
        );
        // After a request the guard could not follow, every wait is held to
        // the head deadline.
        clock.blind();
        assert_eq!(
            clock.due(W),
            Due::At(o + 70 * S + 10 * S, ClientTimeout::RequestHead)
        );
        // HTTP/2: the keep-alive timeout from the last stream's end.
        let h2 = clock.start(Version::HTTP_2);
        assert_eq!(clock.due(W), Due::Busy);
        advance(S).await;
        drop(h2);
        assert_eq!(
            clock.due(W),
            Due::At(o + 71 * S + 75 * S, ClientTimeout::Http2Idle)
        );
        // Lingering over a closed connection: the guard's own limits.
        let lingering = HeadClock::new();
        lingering.lingering();
        assert_eq!(lingering.due(W), Due::Busy);
        // From the opening when no stream has ended yet.
        let clock = HeadClock::new();
        clock.http2();
        assert_eq!(
            clock.due(W),
            Due::At(clock.opened + 75 * S, ClientTimeout::Http2Idle)
        );
    }

    /// A client connection: runs `work`, and once asked to close
    /// gracefully, ends if `obeys` (else only when dropped).
    struct Conn<F> {
        work: Pin<Box<F>>,
        obeys: bool,
        asked: Option<Instant>,
        asked_at: std::rc::Rc<std::cell::Cell<Option<Instant>>>,
    }

    impl<F: Future<Output = ()>> Future for Conn<F> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
            if self.obeys && self.asked.is_some() {
                return Poll::Ready(());
            }
            self.work.as_mut().poll(cx)
        }
    }

    impl<F: Future<Output = ()>> Graceful for Conn<F> {
        fn graceful_shutdown(mut self: Pin<&mut Self>) {
            assert!(self.asked.is_none(), "asked twice");
            self.asked = Some(Instant::now());
            self.asked_at.set(self.asked);
        }
    }

    /// How `work` on a connection with `clock` ends, in whole seconds from
    /// now: when it was asked to close, and when it was dropped (`None`
    /// if it ended by itself); and which wait timed out.
    async fn run(
        clock: &HeadClock,
        obeys: bool,
        drain: &Registration,
        work: impl Future<Output = ()>,
    ) -> (Option<u64>, Option<u64>, Option<ClientTimeout>) {
        let started = Instant::now();
        let asked_at = std::rc::Rc::new(std::cell::Cell::new(None));
        let conn = Conn {
            work: Box::pin(work),
            obeys,
            asked: None,
            asked_at: asked_at.clone(),
        };
        let mut timed_out = None;
        let record = |kind| {
            assert!(timed_out.replace(kind).is_none(), "counted twice");
        };
        let dropped = serve_within(conn, clock, W, drain, record).await.is_none();
        let secs = |t: Instant| (t - started).as_secs();
        let asked = asked_at.get().map(secs);
        (asked, dropped.then(|| secs(Instant::now())), timed_out)
    }

    /// Closes `conn` at the deadline; returns when, in seconds from now,
    /// and which wait timed out.
    async fn closed_after(
        clock: &HeadClock,
        conn: impl Future<Output = ()>,
    ) -> (Option<u64>, Option<ClientTimeout>) {
        let drain = crate::drain::Drain::new();
        let (asked, dropped, timed_out) = run(clock, true, &drain.register(), conn).await;
        assert_eq!(asked, None, "HTTP/1 connections are dropped, not asked");
        (dropped, timed_out)
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_closes_exactly_at_the_deadline_and_never_cuts_a_request() {
        // Silent from the start.
        let clock = HeadClock::new();
        assert_eq!(
            closed_after(&clock, std::future::pending()).await,
            (Some(10), Some(ClientTimeout::RequestHead))
        );

        // A request three head deadlines long, then idle.
        let clock = HeadClock::new();
        let req = clock.start(Version::HTTP_11);
        let conn = async {
            tokio::time::sleep(30 * S).await;
            drop(req);
            std::future::pending().await
        };
        assert_eq!(
            closed_after(&clock, conn).await,
            (Some(30 + 75), Some(ClientTimeout::KeepAlive))
        );

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
        assert_eq!(
            closed_after(&clock, conn).await,
            (Some(5 + 40 + 10), Some(ClientTimeout::RequestHead))
        );

        // A connection that ends by itself.
        let clock = HeadClock::new();
        let drain = crate::drain::Drain::new();
        let conn = Conn {
            work: Box::pin(async {}),
            obeys: true,
            asked: None,
            asked_at: Default::default(),
        };
        assert_eq!(
            serve_within(conn, &clock, W, &drain.register(), |_| panic!()).await,
            Some(())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_http2_connections_get_a_goaway_and_then_are_dropped() {
        let drain = crate::drain::Drain::new();
        let reg = drain.register();
        // A stream 200 s long, then idle: GOAWAY `keepalive` after it
        // ended; a client that obeys closes then.
        let clock = HeadClock::new();
        clock.http2();
        let stream = clock.start(Version::HTTP_2);
        let work = async {
            tokio::time::sleep(200 * S).await;
            drop(stream);
            std::future::pending().await
        };
        let idle = Some(ClientTimeout::Http2Idle);
        assert_eq!(run(&clock, true, &reg, work).await, (Some(275), None, idle));
        // One that does not is dropped `head` after the GOAWAY.
        let clock = HeadClock::new();
        clock.http2();
        let work = std::future::pending();
        assert_eq!(
            run(&clock, false, &reg, work).await,
            (Some(75), Some(85), idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_asks_every_connection_to_close() {
        let drain = crate::drain::Drain::new();
        let (h1, h2) = (drain.register(), drain.register());
        let start = async {
            tokio::time::sleep(3 * S).await;
            drain.start();
        };
        let clock = HeadClock::new();
        let req = clock.start(Version::HTTP_11);
        let busy_h1 = run(&clock, true, &h1, async move {
            let _req = req;
            std::future::pending().await
        });
        let clock2 = HeadClock::new();
        clock2.http2();
        let idle_h2 = run(&clock2, true, &h2, std::future::pending());
        // One that ignores the drain's GOAWAY: not asked again when it idles
        // out, dropped `head` later.
        let h2_deaf = drain.register();
        let clock3 = HeadClock::new();
        clock3.http2();
        let deaf_h2 = run(&clock3, false, &h2_deaf, std::future::pending());
        let ((), a, b, c) = tokio::join!(start, busy_h1, idle_h2, deaf_h2);
        assert_eq!(a, (Some(3), None, None));
        assert_eq!(b, (Some(3), None, None));
        assert_eq!(c, (Some(3), Some(85), Some(ClientTimeout::Http2Idle)));
    }
}
