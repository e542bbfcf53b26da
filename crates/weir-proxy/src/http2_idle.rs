//! How long an HTTP/2 client connection may idle, and its driver, which
//! also carries the shutdown drain to it. (HTTP/1 connections keep their
//! deadlines in their own loop, http1/server.rs.)
//!
//! An HTTP/2 connection with no stream in flight (a gRPC channel between
//! calls, or one that sent its preface and nothing else) is asked to close
//! with a GOAWAY `keepalive` after its last stream ended (or after it
//! opened), as nginx (`keepalive_timeout`) and Envoy (`idle_timeout`) do;
//! if it is still open `grace` later, it is dropped. Without this a client
//! could hold HTTP/2 connections open for good by answering hyper's
//! keep-alive pings. A stream in flight is never cut.
//!
//! A connection keeps one timer, re-armed only when it fires, as nginx's
//! lazy timers are; a stream costs two counter updates and a clock read.
//! When the timer fires, the deadline is worked out from the counters, and
//! the timer is set no later than the earliest deadline an idle spell
//! starting now could have, so it is never late.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use crate::drain::Registration;

/// The limits of an HTTP/2 connection's idle spells.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// From the end of the last stream (or the opening) to the GOAWAY.
    pub keepalive: Duration,
    /// From the GOAWAY to dropping a connection that has not closed.
    pub grace: Duration,
}

/// What a connection's streams report to its deadline.
#[derive(Debug)]
pub struct IdleClock {
    opened: Instant,
    /// Streams handed to the handler.
    started: AtomicU64,
    /// Streams whose response has been sent, or abandoned.
    ended: AtomicU64,
    /// When the last stream ended, in nanoseconds since `opened`.
    idle_since: AtomicU64,
}

impl IdleClock {
    /// A clock for a connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(IdleClock {
            opened: Instant::now(),
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    /// Counts a stream the handler starts on; the returned token ends it
    /// when dropped, with its response body (or with the handler, if the
    /// stream is abandoned).
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// When the connection turns idle for too long, if it is idle now.
    fn due(&self, waits: Waits) -> Option<Instant> {
        // The time is written before the count: a count read here comes
        // with the time of the event that made it.
        let ended = self.ended.load(Ordering::Acquire);
        if self.started.load(Ordering::Relaxed) != ended {
            return None;
        }
        let idle_since =
            self.opened + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        Some(idle_since + waits.keepalive)
    }
}

/// A stream in flight on its connection; see [`IdleClock::start`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<IdleClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        let nanos = u64::try_from(clock.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        clock.idle_since.store(nanos, Ordering::Relaxed);
        clock.ended.fetch_add(1, Ordering::Release);
    }
}

/// A client connection that can be asked to finish what it has in flight
/// and close: hyper's HTTP/2 server connections.
pub trait Graceful: Future {
    /// Sends GOAWAY and closes once the open streams have ended.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// Runs `conn` (an HTTP/2 client connection) until it ends: by itself,
/// after the drain has asked it to close, or after it idled past `waits`
/// (a GOAWAY, then `waits.grace` to close by itself). `None` when it was
/// dropped for not closing. `idled` hears of the GOAWAY for idling (once).
pub async fn serve_within<C: Graceful>(
    conn: C,
    clock: &IdleClock,
    waits: Waits,
    drain: &Registration,
    mut idled: impl FnMut(),
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut drain = drain.signal();
    let mut timer = pin!(tokio::time::sleep_until(clock.opened + waits.keepalive));
    // Asked to close (by the drain, or for idling).
    let mut closing = false;
    // When the GOAWAY for idling was sent.
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
            if let Some(sent) = goaway {
                if now >= sent + waits.grace {
                    return Poll::Ready(None);
                }
                timer.as_mut().reset(sent + waits.grace);
                continue;
            }
            match clock.due(waits) {
                // A stream in flight: no idle spell can end before this.
                None => timer.as_mut().reset(now + waits.keepalive),
                Some(due) if due > now => timer.as_mut().reset(due),
                Some(_) => {
                    idled();
                    goaway = Some(now);
                    // Unless the drain has asked already; the loop polls
                    // the connection again, which writes the GOAWAY.
                    if !std::mem::replace(&mut closing, true) {
                        conn.as_mut().graceful_shutdown();
                    }
                    timer.as_mut().reset(now + waits.grace);
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const W: Waits = Waits {
        keepalive: Duration::from_secs(75),
        grace: Duration::from_secs(10),
    };

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
    /// now: when it was asked to close, when it was dropped (`None` if it
    /// ended by itself), and whether it idled out.
    async fn run(
        clock: &IdleClock,
        obeys: bool,
        drain: &Registration,
        work: impl Future<Output = ()>,
    ) -> (Option<u64>, Option<u64>, bool) {
        let started = Instant::now();
        let asked_at = std::rc::Rc::new(std::cell::Cell::new(None));
        let conn = Conn {
            work: Box::pin(work),
            obeys,
            asked: None,
            asked_at: asked_at.clone(),
        };
        let mut idled = false;
        let record = || {
            assert!(!std::mem::replace(&mut idled, true), "counted twice");
        };
        let dropped = serve_within(conn, clock, W, drain, record).await.is_none();
        let secs = |t: Instant| (t - started).as_secs();
        let asked = asked_at.get().map(secs);
        (asked, dropped.then(|| secs(Instant::now())), idled)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_get_a_goaway_and_then_are_dropped() {
        let drain = crate::drain::Drain::new();
        let reg = drain.register();
        // A stream 200 s long, then idle: GOAWAY `keepalive` after it
        // ended; a client that obeys closes then.
        let clock = IdleClock::new();
        let stream = clock.start();
        let work = async {
            tokio::time::sleep(200 * S).await;
            drop(stream);
            std::future::pending().await
        };
        assert_eq!(run(&clock, true, &reg, work).await, (Some(275), None, true));
        // One that does not is dropped `grace` after the GOAWAY.
        let clock = IdleClock::new();
        let work = std::future::pending();
        assert_eq!(
            run(&clock, false, &reg, work).await,
            (Some(75), Some(85), true)
        );
        // One that ends by itself.
        let clock = IdleClock::new();
        assert_eq!(run(&clock, true, &reg, async {}).await, (None, None, false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_asks_every_connection_to_close() {
        let drain = crate::drain::Drain::new();
        let (busy, idle) = (drain.register(), drain.register());
        let start = async {
            tokio::time::sleep(3 * S).await;
            drain.start();
        };
        let clock = IdleClock::new();
        let stream = clock.start();
        let busy = run(&clock, true, &busy, async move {
            let _stream = stream;
            std::future::pending().await
        });
        let clock2 = IdleClock::new();
        let idle = run(&clock2, true, &idle, std::future::pending());
        // One that ignores the drain's GOAWAY: not asked again when it idles
        // out, dropped `grace` later.
        let deaf = drain.register();
        let clock3 = IdleClock::new();
        let deaf = run(&clock3, false, &deaf, std::future::pending());
        let ((), a, b, c) = tokio::join!(start, busy, idle, deaf);
        assert_eq!(a, (Some(3), None, false));
        assert_eq!(b, (Some(3), None, false));
        assert_eq!(c, (Some(3), Some(85), true));
    }
}
