//! Access logs: one JSON line per request, written when its response body
//! has been sent (or abandoned), so `bytes` and `latency_ms` cover the whole
//! exchange, not just the headers.
//!
//! Lines are formatted on the request's task and handed to one writer
//! thread through a bounded queue; the thread batches them into a buffered
//! writer and flushes whenever the queue runs dry. A request never waits
//! for the disk or for a slow log collector: when the queue is full the
//! line is dropped and counted in `weir_access_log_dropped_total`.
//!
//! What is logged: the normalized path without its query string (query
//! parameters can carry credentials, such as an API key), the route name,
//! the upstream address, the consumer or JWT subject, and the rate-limit
//! decision. Never a credential.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::http2_idle::InFlight;

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 8192;

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// No access log.
    Off,
    /// Standard output (diagnostic logs go to standard error).
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

/// The access log: off, or a writer thread with its queue and sampling.
/// Cloning it (once per logged request) is one reference count.
#[derive(Clone, Default)]
pub struct AccessLog(Option<Arc<Writer>>);

struct Writer {
    tx: SyncSender<String>,
    /// Log one request in `every` (5xx answers always).
    every: u64,
    seen: AtomicU64,
    dropped: prometheus::IntCounter,
}

impl AccessLog {
    /// Starts the writer thread for `destination`, logging a `sample`
    /// fraction (0 < sample ≤ 1) of requests and every 5xx; lines the
    /// writer cannot take in time are counted in `dropped`.
    pub fn start(
        destination: &Destination,
        sample: f64,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match destination {
            Destination::Off => return Ok(AccessLog(None)),
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_lines(rx, out))?;
        // 1 / sample, rounded: 0.01 logs one request in 100.
        let every = if sample > 0.0 {
            (1.0 / sample.min(1.0)).round().max(1.0) as u64
        } else {
            u64::MAX
        };
        Ok(AccessLog(Some(Arc::new(Writer {
            tx,
            every,
            seen: AtomicU64::new(0),
            dropped,
        }))))
    }

    /// Whether any line can be written (skips collecting fields when not).
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }
}

impl Writer {
    /// Whether this request's line is kept by sampling (5xx always are).
    fn sampled(&self, status: u16) -> bool {
        if status >= 500 || self.every == 1 {
            return true;
        }
        self.seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.every)
    }

    fn send(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

/// Writes lines as they come, flushing whenever none are waiting.
fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(line) = rx.recv() {
        let mut result = writeln!(out, "{line}");
        while let Ok(line) = rx.try_recv() {
            result = result.and_then(|()| writeln!(out, "{line}"));
        }
        // A closed stdout or a full disk: say so once per failing streak
        // and keep draining, so requests never notice.
        match result.and_then(|()| out.flush()) {
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "Access log cannot be written; lines are lost until it can.");
            }
            Ok(()) if failing => {
                failing = false;
                tracing::info!("Access log written again.");
            }
            _ => {}
        }
    }
}

/// What is known of a request when it arrives, kept only when there is an
/// access log.
pub(crate) struct Arrival {
    started: Instant,
    time: SystemTime,
    method: http::Method,
    host: String,
    /// Without the query string: query parameters can carry credentials.
    path: String,
    client: SocketAddr,
}

impl Arrival {
    pub(crate) fn of<B>(req: &http::Request<B>, client: SocketAddr, started: Instant) -> Arrival {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or_default();
        Arrival {
            started,
            time: SystemTime::now(),
            method: req.method().clone(),
            host: host.to_owned(),
            path: req.uri().path().to_owned(),
            client,
        }
    }
}

/// What the pipeline learned about a request, for its log line.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub(crate) route: Option<Arc<str>>,
    pub(crate) upstream: Option<SocketAddr>,
    /// The API-key consumer or the JWT `sub`.
    pub(crate) user: Option<String>,
    /// `allowed` or `rejected` when a rate limit was consulted.
    pub(crate) ratelimit: Option<&'static str>,
    /// The route turned access logging off.
    pub(crate) off: bool,
}

/// One request's line, finished when its body ends.
pub(crate) struct Record {
    writer: Arc<Writer>,
    arrival: Arrival,
    request_id: http::HeaderValue,
    status: u16,
    facts: Facts,
}

impl Record {
    /// A record for a request answered with `status`, or `None` when the
    /// log is off, the route opted out, or sampling skips it.
    pub(crate) fn new(
        log: &AccessLog,
        arrival: Arrival,
        request_id: &http::HeaderValue,
        status: u16,
        facts: Facts,
    ) -> Option<Box<Record>> {
        let writer = log.0.as_ref()?;
        if facts.off || !writer.sampled(status) {
            return None;
        }
        Some(Box::new(Record {
            writer: writer.clone(),
            arrival,
            request_id: request_id.clone(),
            status,
            facts,
        }))
    }

    fn finish(self, bytes: u64, completed: bool) {
        let a = &self.arrival;
        let line = serde_json::json!({
            "time": humantime_rfc3339(a.time),
            "request_id": self.request_id.to_str().unwrap_or_default(),
            "method": a.method.as_str(),
            "host": a.host,
            "path": a.path,
            "route": self.facts.route.as_deref(),
            "upstream": self.facts.upstream.map(|a| a.to_string()),
            "status": self.status,
            "bytes": bytes,
            "latency_ms": a.started.elapsed().as_secs_f64() * 1000.0,
            "client": a.client.ip().to_string(),
            "user": self.facts.user,
            "ratelimit": self.facts.ratelimit,
            "completed": completed,
        });
        self.writer.send(line.to_string());
    }
}

/// RFC 3339 UTC with milliseconds, from the system clock.
fn humantime_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    )
}

/// A response body that counts the bytes it yields and writes its
/// request's access-log line when it ends (or is dropped unfinished). On
/// HTTP/2 it also carries the stream's place on its connection: the
/// connection's idle spell starts when the body is done (http2_idle.rs).
pub struct Logged<B> {
    inner: B,
    bytes: u64,
    record: Option<Box<Record>>,
    _in_flight: Option<InFlight>,
}

impl<B> Logged<B> {
    pub(crate) fn new(inner: B, record: Option<Box<Record>>, in_flight: Option<InFlight>) -> Self {
        Logged {
            inner,
            bytes: 0,
            record,
            _in_flight: in_flight,
        }
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            r.finish(self.bytes, false);
        }
    }
}

impl<B> HttpBody for Logged<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream()
                    && let Some(r) = this.record.take()
                {
                    r.finish(this.bytes, true);
                }
            }
            Poll::Ready(None) => {
                if let Some(r) = this.record.take() {
                    r.finish(this.bytes, true);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(humantime_rfc3339(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            humantime_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn sampling_keeps_one_in_n_and_every_server_error() {
        let counter = prometheus::IntCounter::new("t", "t").expect("counter");
        let log =
            AccessLog::start(&Destination::File("/dev/null".into()), 0.25, counter).expect("log");
        let writer = log.0.expect("a writer");
        let kept = (0..100).filter(|_| writer.sampled(200)).count();
        assert_eq!(kept, 25);
        assert!((0..10).all(|_| writer.sampled(502)));
    }
}
