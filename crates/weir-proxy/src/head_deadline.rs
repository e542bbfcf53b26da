//! The request-head deadline of HTTP/1 client connections (slowloris
//! guard, `--header-read-timeout`).
//!
//! A connection must deliver each request head within the timeout of when
//! weir starts waiting for it: when the connection opens, and when the
//! previous response has been sent. Idle keep-alive connections are closed
//! by the same rule. A request in flight (a slow backend, a long download or
//! upload) is never cut by it.
//!
//! hyper's own header-read timeout left a hole: it starts once hyper has
//! told HTTP/1 from HTTP/2, and that detection waits for the client's first
//! bytes without a limit, so a connection that sends nothing stayed open
//! for good (a slowloris that costs the attacker nothing). Here the wait
//! starts when the connection opens.
//!
//! hyper also arms a fresh boxed timer for every request head and takes it
//! out of tokio's timer wheel once the head has arrived. Here a connection
//! keeps one timer, re-armed only when it fires, as nginx's lazy timers
//! are; a request costs two counter updates and a clock read. When the
//! timer fires, the deadline is worked out from the counters; it is never
//! late, because a wait that began later ends later.
//!
//! HTTP/2 connections have no head deadline, as under hyper: their idle
//! connections (a gRPC channel between calls) are hyper's keep-alive
//! pings' business.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// What a connection's requests report to its deadline.
#[derive(Debug)]
pub struct HeadClock {
    opened: Instant,
    /// Requests handed to the handler.
    started: AtomicU64,
    /// Requests whose response has been sent, or abandoned.
    ended: AtomicU64,
    /// When the last response ended, in nanoseconds since `opened`.
    idle_since: AtomicU64,
    /// The connection speaks HTTP/2: its streams have no head deadline.
    http2: AtomicBool,
}

/// Where a connection stands when its timer fires.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Waiting for a request head that must arrive by then.
    At(Instant),
    /// A request is in flight.
    Busy,
    /// HTTP/2: no head deadline.
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
            http2: AtomicBool::new(false),
        })
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

    /// The connection speaks HTTP/2: its preface arrived (framing.rs), or
    /// a request came over it.
    pub(crate) fn http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    fn due(&self, timeout: Duration) -> Due {
        if self.http2.load(Ordering::Relaxed) {
            return Due::Never;
        }
        // `idle_since` is written before `ended`: a count read here comes
        // with the time of the response that made it.
        let ended = self.ended.load(Ordering::Acquire);
        if self.started.load(Ordering::Relaxed) != ended {
            return Due::Busy;
        }
        let since = Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        Due::At(self.opened + since + timeout)
    }
}

/// A request in flight on its connection; see [`HeadClock::start`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<HeadClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        let since = clock.opened.elapsed().as_nanos();
        clock
            .idle_since
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        clock.ended.fetch_add(1, Ordering::Release);
    }
}

/// Runs `conn` (a client connection) until it ends, or until it has been
/// waiting longer than `timeout` for a request head; `None` then, and the
/// connection is dropped (closed).
pub async fn serve_within<F: Future>(
    conn: F,
    clock: &HeadClock,
    timeout: Duration,
) -> Option<F::Output> {
    let mut conn = pin!(conn);
    let mut timer = pin!(tokio::time::sleep_until(clock.opened + timeout));
    let mut armed = true;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while armed && timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match clock.due(timeout) {
                Due::At(due) if due <= now => return Poll::Ready(None),
                Due::At(due) => timer.as_mut().reset(due),
                // Any wait for a head starts after now, so it cannot end
                // before now + timeout.
                Due::Busy => timer.as_mut().reset(now + timeout),
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

    const T: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn the_wait_starts_at_open_and_after_each_response() {
        let clock = HeadClock::new();
        assert_eq!(clock.due(T), Due::At(clock.opened + T));
        let req = clock.start(http::Version::HTTP_11);
        assert_eq!(clock.due(T), Due::Busy);
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(req);
        assert_eq!(
            clock.due(T),
            Due::At(clock.opened + Duration::from_secs(30) + T)
        );
        // Pipelined: the next head came before the previous response ended.
        let a = clock.start(http::Version::HTTP_11);
        let b = clock.start(http::Version::HTTP_11);
        drop(a);
        assert_eq!(clock.due(T), Due::Busy);
        drop(b);
        assert!(matches!(clock.due(T), Due::At(_)));
        let _h2 = clock.start(http::Version::HTTP_2);
        assert_eq!(clock.due(T), Due::Never);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_at_the_deadline_and_a_busy_one_is_not() {
        let clock = HeadClock::new();
        let started = Instant::now();
        let out = serve_within(std::future::pending::<()>(), &clock, T).await;
        assert_eq!(out, None);
        assert_eq!(started.elapsed(), T);

        // A request that takes three timeouts, then an idle connection.
        let clock = HeadClock::new();
        let started = Instant::now();
        let req = clock.start(http::Version::HTTP_11);
        let busy = async {
            tokio::time::sleep(3 * T).await;
            drop(req);
            std::future::pending::<()>().await
        };
        assert_eq!(serve_within(busy, &clock, T).await, None);
        assert_eq!(started.elapsed(), 4 * T);

        // A connection that ends by itself.
        let clock = HeadClock::new();
        assert_eq!(serve_within(async { 7 }, &clock, T).await, Some(7));
    }
}
