//! weir's HTTP/1 server half, over raw TCP: pipelining, `Expect:
//! 100-continue`, HTTP/1.0 clients, trailers, request bodies an answer
//! leaves unread, and the form of the answers weir writes itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, route_yaml_with};

/// One response read off a connection.
struct Resp {
    /// Status line and fields, as sent.
    head: String,
    body: Vec<u8>,
    /// Trailer section of a chunked body, as sent.
    trailers: String,
}

impl Resp {
    fn status(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// A field's value, by case-insensitive name.
    fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A client connection that reads responses one at a time, whatever the
/// read sizes: bytes beyond a response stay for the next.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            tcp: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// Reads until `pred` holds for the buffer; false if the connection
    /// closed first. Within 10 s.
    async fn fill_until(&mut self, pred: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 16 * 1024];
        while !pred(&self.buf) {
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return false;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        true
    }

    /// Takes `n` bytes off the front of the buffer, reading as needed.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        assert!(
            self.fill_until(|b| b.len() >= n).await,
            "closed before {n} bytes"
        );
        self.buf.drain(..n).collect()
    }

    /// Takes a CRLF-ended line.
    async fn line(&mut self) -> String {
        assert!(
            self.fill_until(|b| b.windows(2).any(|w| w == b"\r\n"))
                .await,
            "closed in a line"
        );
        let at = self
            .buf
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("line");
        let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
        self.buf.drain(..at + 2);
        line
    }

    /// Reads the next response; `close_delimited`: the body runs to the
    /// close when it has no length.
    async fn response(&mut self, close_delimited: bool) -> Resp {
        assert!(
            self.fill_until(|b| b.windows(4).any(|w| w == b"\r\n\r\n"))
                .await,
            "closed before a response head: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let end = self
            .buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head");
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut resp = Resp {
            head,
            body: Vec::new(),
            trailers: String::new(),
        };
        if resp.status().starts_with('1') {
            return resp;
        }
        if let Some(len) = resp.field("content-length") {
            let len: usize = len.parse().expect("length");
            resp.body = self.take(len).await;
        } else if resp
            .field("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size = usize::from_str_radix(self.line().await.trim(), 16).expect("size");
                if size == 0 {
                    break;
                }
                let data = self.take(size).await;
                resp.body.extend_from_slice(&data);
                assert_eq!(self.take(2).await, b"\r\n");
            }
            loop {
                let line = self.line().await;
                if line.is_empty() {
                    break;
                }
                resp.trailers.push_str(&line);
                resp.trailers.push('\n');
            }
        } else if close_delimited {
            self.fill_until(|_| false).await;
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    /// Whether the server closes the connection (within 10 s) without
    /// sending anything more.
    async fn closes(&mut self) -> bool {
        !self.fill_until(|b| !b.is_empty()).await
    }
}

async fn setup(annotations: &str) -> (Weir, Upstream, TempDir) {
    let up = Upstream::start("h1").await;
    let dir = TempDir::new("http1");
    dir.write(
        "r.yaml",
        &route_yaml_with("h1", annotations, "h1.test", "h1", &up.addr.to_string(), ""),
    );
    let weir = Weir::serve(&dir.0, &["--keepalive-timeout", "30s"]).await;
    (weir, up, dir)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (w, up, _d) = setup("").await;
    let mut c = Conn::open(w.http).await;
    c.send(
        b"GET /first HTTP/1.1\r\nHost: h1.test\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 3\r\n\r\nabc\
          GET /third HTTP/1.1\r\nHost: h1.test\r\n\r\n",
    )
    .await;
    for (path, bytes) in [("/first", 0), ("/second", 3), ("/third", 0)] {
        let r = c.response(false).await;
        assert_eq!(r.status(), "200", "{path}: {}", r.head);
        let echo = r.json();
        assert_eq!(echo["uri"], path);
        assert_eq!(echo["body_bytes"], bytes, "{path}");
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

/// `Expect: 100-continue`: the client is told to go on when the body is
/// wanted, and not at all when the answer comes first (a declared length
/// over the route's limit); then the connection closes, since the client
/// may or may not send the body it announced.
#[tokio::test]
async fn expect_continue_is_answered_only_when_the_body_is_wanted() {
    let (w, _up, _d) = setup(r#"nginx.ingress.kubernetes.io/proxy-body-size: "1k""#).await;
    let mut c = Conn::open(w.http).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: h1.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    let interim = c.response(false).await;
    assert_eq!(interim.head, "HTTP/1.1 100 Continue");
    c.send(b"hello").await;
    let r = c.response(false).await;
    assert_eq!(r.status(), "200", "{}", r.head);
    assert_eq!(r.json()["body_bytes"], 5);

    c.send(b"POST /upload HTTP/1.1\r\nHost: h1.test\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), "413", "no 100 Continue first: {}", r.head);
    assert_eq!(r.json()["error"], "body_too_large");
    assert!(c.closes().await, "the connection closes after the refusal");
}

/// HTTP/1.0 clients are answered in HTTP/1.0: the connection closes after
/// the response unless they asked to keep it, and a body of unknown length
/// runs to the close instead of being chunked.
#[tokio::test]
async fn http_1_0_clients_get_http_1_0_answers() {
    let (w, _up, _d) = setup("").await;
    let mut c = Conn::open(w.http).await;
    c.send(b"GET /a HTTP/1.0\r\nHost: h1.test\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.0 200 OK\r\n"), "{}", r.head);
    assert_eq!(r.field("connection"), Some("close"), "{}", r.head);
    assert_eq!(r.json()["version"], "HTTP/1.1", "weir speaks 1.1 upstream");
    assert!(c.closes().await);

    let mut c = Conn::open(w.http).await;
    for path in ["/b", "/c"] {
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: h1.test\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let r = c.response(false).await;
        assert_eq!(r.field("connection"), Some("keep-alive"), "{}", r.head);
        assert_eq!(r.json()["uri"], path);
    }

    let mut c = Conn::open(w.http).await;
    c.send(b"GET /download HTTP/1.0\r\nHost: h1.test\r\nX-Test-Download: 200000\r\n\r\n")
        .await;
    let r = c.response(true).await;
    assert_eq!(r.status(), "200", "{}", r.head);
    assert_eq!(r.field("transfer-encoding"), None, "{}", r.head);
    assert_eq!(r.field("content-length"), None, "{}", r.head);
    assert_eq!(r.body.len(), 200_000, "the whole body, ended by the close");
}

/// An upstream that answers every request on its connections with a
/// chunked body and a trailer field.
async fn trailer_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
                    buf.drain(..end + 4);
                    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n5\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n";
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn trailers_reach_only_clients_that_take_them() {
    let addr = trailer_upstream().await;
    let dir = TempDir::new("http1-trailers");
    dir.write(
        "r.yaml",
        &route_yaml_with("t", "", "t.test", "t", &addr.to_string(), ""),
    );
    let w = Weir::serve(&dir.0, &[]).await;
    let mut c = Conn::open(w.http).await;
    c.send(b"GET / HTTP/1.1\r\nHost: t.test\r\nTE: trailers\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.field("transfer-encoding"), Some("chunked"), "{}", r.head);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.trailers, "grpc-status: 0\n");
    c.send(b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.body, b"hello");
    assert_eq!(r.trailers, "", "no TE: trailers, no trailers");
}

/// weir's own answers, even to a head it could not parse, are JSON with a
/// request id and carry a `Date`, as every HTTP response must.
#[tokio::test]
async fn answers_weir_writes_itself_are_json_and_dated() {
    let (w, _up, _d) = setup("").await;
    for (req, status, code) in [
        (
            &b"GET / HTTP/1.1\r\nHost: h1.test\r\nX-A: a\r\n b\r\n\r\n"[..],
            "400",
            "invalid_request",
        ),
        (
            b"GET / HTTP/2.0\r\nHost: h1.test\r\n\r\n",
            "505",
            "http_version_not_supported",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n",
            "404",
            "no_route",
        ),
    ] {
        let mut c = Conn::open(w.http).await;
        c.send(req).await;
        let r = c.response(false).await;
        assert_eq!(r.status(), status, "{}", r.head);
        let body = r.json();
        assert_eq!(body["error"], code, "{}", r.head);
        assert!(body["request_id"].as_str().is_some_and(|id| id.len() == 32));
        assert_eq!(r.field("x-request-id"), body["request_id"].as_str());
        let date = r.field("date").expect("a Date field");
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        assert_eq!(r.field("content-type"), Some("application/json"));
    }
}

/// A body the answer did not read (no route for it): when all of it has
/// arrived it is dropped and the connection serves on; when more is still
/// coming, the connection closes after the answer.
#[tokio::test]
async fn bodies_an_answer_leaves_unread_are_drained_or_end_the_connection() {
    let (w, up, _d) = setup("").await;
    let mut c = Conn::open(w.http).await;
    c.send(b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 10\r\n\r\n0123456789")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), "404", "{}", r.head);
    c.send(b"GET /after HTTP/1.1\r\nHost: h1.test\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), "200", "the connection serves on: {}", r.head);
    assert_eq!(r.json()["uri"], "/after");

    let mut c = Conn::open(w.http).await;
    c.send(
        b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 1000000\r\n\r\nonly the start",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), "404", "{}", r.head);
    assert!(c.closes().await, "the rest of the body is never read");
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}
