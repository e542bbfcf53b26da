//! The client's request body on its way upstream, counted against the
//! route's size limit (`proxy-body-size`) as it streams.
//!
//! A body that declares its length is refused before it is read (413, see
//! `lib.rs`); this catches the ones that do not (chunked HTTP/1.1, HTTP/2
//! without `content-length`) at the first frame past the limit, so no more
//! than the limit ever reaches the upstream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body with an optional byte limit.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    /// Most bytes allowed; `None` for no limit.
    limit: Option<u64>,
    /// Bytes passed on so far.
    seen: u64,
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client's stream failed (cut short, malformed chunk).
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// More than the route accepts.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
}

impl RequestBody {
    /// Wraps `inner`, allowing at most `limit` bytes when given.
    pub(crate) fn new(inner: Incoming, limit: Option<u64>) -> Self {
        RequestBody {
            inner,
            limit,
            seen: 0,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
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
