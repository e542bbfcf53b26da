//! The shutdown drain of a listener's client connections: counts them,
//! tells each one to finish what it has in flight and close, and lets the
//! listener wait until all have.
//!
//! hyper-util's `GracefulShutdown` does the same, but hides the connection
//! it wraps, and weir's HTTP/2 driver (`http2_idle::serve_within`) needs it
//! to end idle connections with a GOAWAY; HTTP/1 connections are weir's
//! own (http1/server.rs) and look at the drain between requests. hyper-util's
//! also polls a `watch` receiver (a mutex and a waiter list) on every
//! wake-up of every connection. Here a wake-up costs one atomic load: a
//! connection registers its task with the drain's `Notify` once, and looks
//! at the flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};

use tokio::sync::{Notify, futures::Notified};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// One listener's drain.
#[derive(Debug, Default)]
pub struct Drain {
    started: AtomicBool,
    notify: Notify,
    connections: TaskTracker,
}

impl Drain {
    /// A drain with no connections, not started.
    pub fn new() -> Arc<Self> {
        Arc::new(Drain::default())
    }

    /// Counts a connection (from its accept, so a TLS handshake counts)
    /// until the returned registration is dropped.
    pub fn register(self: &Arc<Self>) -> Registration {
        Registration {
            _token: self.connections.token(),
            drain: self.clone(),
        }
    }

    /// Tells every connection, open now or registered later, to finish
    /// its requests in flight and close.
    pub fn start(&self) {
        // The flag before the wake-up: a connection that registers after
        // `notify_waiters` sees the flag.
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.connections.close();
    }

    /// Connections registered and not yet closed.
    pub fn open(&self) -> usize {
        self.connections.len()
    }

    /// Resolves once the drain has started and every connection has
    /// closed.
    pub async fn closed(&self) {
        self.connections.wait().await;
    }
}

/// A connection counted by its [`Drain`].
#[derive(Debug)]
pub struct Registration {
    drain: Arc<Drain>,
    /// Counts the connection in `drain.connections` until dropped.
    _token: TaskTrackerToken,
}

impl Registration {
    /// What the connection's driver polls to learn that the drain has
    /// started.
    pub(crate) fn signal(&self) -> Signal<'_> {
        Signal {
            drain: &self.drain,
            notified: Box::pin(self.drain.notify.notified()),
            registered: None,
        }
    }
}

/// The drain as one connection sees it.
pub(crate) struct Signal<'a> {
    drain: &'a Drain,
    /// Holds this connection's place in the drain's wake-up list.
    notified: Pin<Box<Notified<'a>>>,
    /// The waker `notified` was last polled with.
    registered: Option<Waker>,
}

impl Signal<'_> {
    /// Whether the drain has started, without registering for the
    /// wake-up.
    pub(crate) fn is_started(&self) -> bool {
        self.drain.started.load(Ordering::Acquire)
    }

    /// Whether the drain has started. Registers the task in `cx` for the
    /// wake-up the first time it sees it (tasks keep their waker, so that
    /// is once per connection in practice).
    pub(crate) fn started(&mut self, cx: &mut Context<'_>) -> bool {
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            // Ready or not, the flag below is what counts; polling only
            // files the waker.
            let _ = self.notified.as_mut().poll(cx);
            self.registered = Some(cx.waker().clone());
        }
        self.drain.started.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn connections_are_told_and_counted_until_they_close() {
        let drain = Drain::new();
        let reg = drain.register();
        assert_eq!(drain.open(), 1);
        let conn = tokio::spawn(async move {
            let mut signal = reg.signal();
            std::future::poll_fn(|cx| {
                if signal.started(cx) {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
            drop(signal);
            drop(reg);
        });
        // Not closed before the drain starts, though nothing else is open.
        let late = drain.register();
        drop(late);
        let mut closed = std::pin::pin!(drain.closed());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            closed.as_mut().poll(&mut cx).is_pending(),
            "closed() must wait for start()"
        );
        drain.start();
        tokio::time::timeout(Duration::from_secs(5), drain.closed())
            .await
            .expect("the connection saw the drain and closed");
        conn.await.unwrap();
        assert_eq!(drain.open(), 0);
        // A connection registered after the start sees it at once.
        let reg = drain.register();
        let mut signal = reg.signal();
        assert!(signal.started(&mut cx));
    }
}
