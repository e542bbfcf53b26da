//! A timer for the pauses in something that moves in steps (a response
//! body arriving from an upstream, a response leaving for a client), as
//! nginx's `proxy_read_timeout` and `send_timeout` time the gap between two
//! reads or writes rather than the whole transfer: a download that keeps
//! moving is never cut however long it takes, and one that stops is.
//!
//! Lazy, so the common case pays nothing: the timer is made (boxed: it is
//! rarely needed, and the futures that hold it stay small) at the first
//! pause, and re-armed, with one clock read, only at the first pause after
//! a step; a step itself costs a store.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Times the pauses between steps.
pub(crate) struct Pauses {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A step was taken since the sleep was armed.
    moved: bool,
}

impl Pauses {
    /// Allows pauses of up to `limit`.
    pub(crate) fn new(limit: Duration) -> Self {
        Pauses {
            limit,
            sleep: None,
            moved: false,
        }
    }

    /// The longest pause allowed.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// A step was taken.
    pub(crate) fn moved(&mut self) {
        self.moved = true;
    }

    /// Nothing moves now: ready once this pause has lasted the limit.
    pub(crate) fn poll_pause(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match &mut self.sleep {
            Some(sleep) if !self.moved => sleep,
            Some(sleep) => {
                sleep.as_mut().reset(Instant::now() + self.limit);
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(self.limit))),
        };
        self.moved = false;
        sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the pause is still short of the limit, polled once.
    fn pending(pauses: &mut Pauses) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        pauses.poll_pause(&mut cx).is_pending()
    }

    /// Steps re-arm the timer; a pause as long as the limit ends it.
    #[tokio::test(start_paused = true)]
    async fn a_pause_as_long_as_the_limit_ends_it_and_steps_rearm_it() {
        let mut pauses = Pauses::new(Duration::from_secs(1));
        assert!(pending(&mut pauses), "a pause just begun");
        // Three steps 0.8 s apart: 2.4 s in all, no pause of 1 s.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(800)).await;
            assert!(pending(&mut pauses), "0.8 s into a pause");
            pauses.moved();
            assert!(pending(&mut pauses), "a new pause");
        }
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(pending(&mut pauses), "0.999 s into the pause");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!pending(&mut pauses), "a pause of the whole limit");
        assert_eq!(pauses.limit(), Duration::from_secs(1));
    }
}
