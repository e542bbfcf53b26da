//! A client's request body on an HTTP/1 connection, handed from the
//! connection's task (which reads and decodes it, server.rs) to whoever
//! forwards it: the request's own task, or the task of an upstream
//! connection (hyper's client runs its own).
//!
//! One frame at a time passes through a shared slot: the connection reads
//! no more of the body until the last frame has been taken, so a slow
//! upstream slows the client down (TCP back-pressure) instead of weir
//! buffering the body. The slot also tells the connection when the body is
//! first wanted, which is when an `Expect: 100-continue` client is told to
//! go on, and when nobody wants it any more.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// Why a client's body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body's framing was invalid (a malformed chunk).
    #[error("malformed request body: {0}")]
    Malformed(&'static str),
    /// The client closed the connection, or it failed, before the end.
    #[error("the client's connection ended in the middle of the request body")]
    Truncated,
}

/// The request body as the handler sees it.
#[derive(Debug)]
pub struct H1Body {
    shared: Arc<Shared>,
}

/// The connection's end of a body: puts frames in the slot.
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared(Mutex<Slot>);

#[derive(Debug)]
struct Slot {
    /// A frame the receiver has not taken yet.
    frame: Option<Frame<Bytes>>,
    /// The body's end, once the connection has decoded it.
    end: Option<Result<(), BodyError>>,
    /// Bytes of the body not yet put in the slot, when its length is known.
    remaining: Option<u64>,
    /// The receiver has asked for a frame.
    wanted: bool,
    /// The receiver is gone: nothing more will be taken.
    dropped: bool,
    receiver: Option<Waker>,
    sender: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Every update is a few field writes that cannot panic midway.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A body and its sender; `length` is the declared length, if any.
pub(crate) fn channel(length: Option<u64>) -> (Sender, H1Body) {
    let shared = Arc::new(Shared(Mutex::new(Slot {
        frame: None,
        end: None,
        remaining: length,
        wanted: false,
        dropped: false,
        receiver: None,
        sender: None,
    })));
    (
        Sender {
            shared: shared.clone(),
        },
        H1Body { shared },
    )
}

/// What the connection may do next with a body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// The slot is empty: a frame can be put in.
    Free {
        /// The receiver has asked for one.
        wanted: bool,
    },
    /// The last frame has not been taken; the task is woken when it is.
    Full,
    /// Nobody takes the body any more.
    Gone,
}

impl Sender {
    /// Whether a frame can be put in now; registers the task to hear when
    /// one can, or when the receiver first asks.
    pub(crate) fn room(&self, cx: &mut Context<'_>) -> Room {
        let mut slot = self.shared.lock();
        if slot.dropped {
            return Room::Gone;
        }
        let wanted = slot.wanted;
        if (slot.frame.is_some() || !wanted)
            && !slot
                .sender
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            slot.sender = Some(cx.waker().clone());
        }
        if slot.frame.is_some() {
            Room::Full
        } else {
            Room::Free { wanted }
        }
    }

    /// Puts a frame in the (free) slot.
    pub(crate) fn send(&self, frame: Frame<Bytes>) {
        let mut slot = self.shared.lock();
        if let (Some(data), Some(left)) = (frame.data_ref(), slot.remaining.as_mut()) {
            *left = left.saturating_sub(data.len() as u64);
        }
        slot.frame = Some(frame);
        if let Some(w) = slot.receiver.take() {
            w.wake();
        }
    }

    /// The body ended, whole or not.
    pub(crate) fn finish(&self, end: Result<(), BodyError>) {
        let mut slot = self.shared.lock();
        if slot.end.is_none() {
            slot.end = Some(end);
        }
        if let Some(w) = slot.receiver.take() {
            w.wake();
        }
    }
}

impl Drop for Sender {
    /// A connection that goes away before the body's end cut it short.
    fn drop(&mut self) {
        self.finish(Err(BodyError::Truncated));
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        let mut slot = self.shared.lock();
        slot.dropped = true;
        slot.frame = None;
        if let Some(w) = slot.sender.take() {
            w.wake();
        }
    }
}

impl hyper::body::Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut slot = self.shared.lock();
        if let Some(frame) = slot.frame.take() {
            if let Some(w) = slot.sender.take() {
                w.wake();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match slot.end {
            Some(Ok(())) => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => {}
        }
        if !slot.wanted {
            slot.wanted = true;
            if let Some(w) = slot.sender.take() {
                w.wake();
            }
        }
        if !slot
            .receiver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            slot.receiver = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let slot = self.shared.lock();
        slot.frame.is_none() && matches!(slot.end, Some(Ok(())))
    }

    fn size_hint(&self) -> SizeHint {
        let slot = self.shared.lock();
        let pending = slot
            .frame
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        match (slot.remaining, slot.end) {
            (_, Some(Ok(()))) => SizeHint::with_exact(pending),
            (Some(left), _) => SizeHint::with_exact(left + pending),
            (None, _) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body;

    fn poll(body: &mut H1Body) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body).poll_frame(&mut cx)
    }

    #[test]
    fn frames_pass_one_at_a_time() {
        let mut cx = Context::from_waker(Waker::noop());
        let (tx, mut rx) = channel(Some(5));
        assert_eq!(rx.size_hint().exact(), Some(5));
        assert_eq!(tx.room(&mut cx), Room::Free { wanted: false });
        assert!(poll(&mut rx).is_pending());
        assert_eq!(tx.room(&mut cx), Room::Free { wanted: true });
        tx.send(Frame::data(Bytes::from_static(b"hel")));
        assert_eq!(tx.room(&mut cx), Room::Full);
        assert_eq!(rx.size_hint().exact(), Some(5), "3 in the slot, 2 to come");
        let Poll::Ready(Some(Ok(f))) = poll(&mut rx) else {
            panic!("a frame")
        };
        assert_eq!(f.into_data().expect("data"), "hel");
        tx.send(Frame::data(Bytes::from_static(b"lo")));
        tx.finish(Ok(()));
        assert!(!rx.is_end_stream(), "a frame is still in the slot");
        assert!(matches!(poll(&mut rx), Poll::Ready(Some(Ok(_)))));
        assert!(rx.is_end_stream());
        assert!(matches!(poll(&mut rx), Poll::Ready(None)));
    }

    #[test]
    fn ends_cut_short_and_receivers_that_leave() {
        let mut cx = Context::from_waker(Waker::noop());
        let (tx, mut rx) = channel(None);
        drop(tx);
        assert!(matches!(
            poll(&mut rx),
            Poll::Ready(Some(Err(BodyError::Truncated)))
        ));
        let (tx, rx) = channel(None);
        drop(rx);
        assert_eq!(tx.room(&mut cx), Room::Gone);
    }
}
