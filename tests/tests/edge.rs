//! The edge as a security boundary: every request-smuggling and limit class
//! from RFC 9110/9112 and the smuggling literature, sent over raw TCP.
//! Each case asserts both the status and that nothing reached the upstream
//! when the request was refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use weir_tests::client::{raw, raw_status};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, route_yaml};

/// weir with a 1 s head deadline; idle connections close after 1 s too,
/// so that `raw` exchanges end quickly.
async fn setup() -> (Weir, Upstream, TempDir) {
    setup_with_keepalive("1s").await
}

async fn setup_with_keepalive(keepalive: &str) -> (Weir, Upstream, TempDir) {
    let up = Upstream::start("edge").await;
    let dir = TempDir::new("edge");
    dir.write(
        "r.yaml",
        &route_yaml(
            "edge",
            "edge.test",
            "/",
            "Prefix",
            "edge",
            &up.addr.to_string(),
        ),
    );
    let weir = Weir::serve(
        &dir.0,
        &[
            "--header-read-timeout",
            "1s",
            "--keepalive-timeout",
            keepalive,
        ],
    )
    .await;
    (weir, up, dir)
}

/// `weir_client_timeouts_total{kind}`.
async fn client_timeouts(weir: &Weir, kind: &str) -> String {
    let text = weir.metrics().await.expect("metrics");
    let series = format!("weir_client_timeouts_total{{kind=\"{kind}\"}}");
    weir_tests::metric_value(&text, &series)
        .unwrap_or_else(|| panic!("no {series}"))
        .to_owned()
}

/// Sends `req`, checks the first status line and, for refusals, that the
/// upstream saw nothing.
async fn expect(
    weir: &Weir,
    up: &Upstream,
    name: &str,
    req: &str,
    status: u16,
    code: Option<&str>,
) {
    let before = up.hits.load(Ordering::SeqCst);
    let resp = raw(weir.http, req.as_bytes()).await;
    assert_eq!(
        raw_status(&resp),
        status,
        "{name}: unexpected answer:\n{resp}"
    );
    if let Some(code) = code {
        assert!(
            resp.contains(&format!("\"error\":\"{code}\"")),
            "{name}: missing error code {code}:\n{resp}"
        );
    }
    if status >= 400 {
        assert_eq!(
            up.hits.load(Ordering::SeqCst),
            before,
            "{name}: a refused request reached the upstream"
        );
    }
}

#[tokio::test]
async fn ambiguous_framing_is_refused() {
    let (w, up, _d) = setup().await;
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (
            "CL.TE",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "TE.CL",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "two equal CL",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "two different CL",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "CL list",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 1, 2\r\n\r\nxy",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "negative CL",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: -1\r\n\r\n",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "TE not chunked last",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "TE gzip,chunked",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
            Some("unsupported_transfer_encoding"),
        ),
        (
            "TE obfuscated",
            "POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "TE on HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            Some("ambiguous_framing"),
        ),
        (
            "space before colon",
            "GET / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding : chunked\r\n\r\n",
            400,
            Some("invalid_request"),
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: edge.test\r\nX-A: a\r\n b\r\n\r\n",
            400,
            Some("invalid_request"),
        ),
        (
            "bare CR in value",
            "GET / HTTP/1.1\r\nHost: edge.test\r\nX-A: a\rb\r\n\r\n",
            400,
            Some("invalid_request"),
        ),
        (
            "NUL in value",
            "GET / HTTP/1.1\r\nHost: edge.test\r\nX-A: a\0b\r\n\r\n",
            400,
            Some("invalid_request"),
        ),
        (
            "NUL in name",
            "GET / HTTP/1.1\r\nHost: edge.test\r\nX-\0A: b\r\n\r\n",
            400,
            Some("invalid_request"),
        ),
    ];
    for (name, req, status, code) in cases {
        expect(&w, &up, name, req, *status, *code).await;
    }
}

#[tokio::test]
async fn malformed_chunks_never_reach_upstream_as_a_request() {
    let (w, up, _d) = setup().await;
    // The head is valid, so weir starts forwarding; the broken body must end
    // the exchange with an error, never with a second request smuggled in.
    let req = "POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\nHost: edge.test\r\n\r\n";
    let resp = raw(w.http, req.as_bytes()).await;
    let status = raw_status(&resp);
    assert_eq!(status, 400, "malformed chunk answered:\n{resp}");
    assert!(resp.contains("invalid_request_body"), "{resp}");
    assert_eq!(
        resp.matches("HTTP/1.1 ").count(),
        1,
        "more than one answer on the connection:\n{resp}"
    );
    assert!(
        !resp.contains("/smuggled"),
        "smuggled request was answered:\n{resp}"
    );
    assert!(up.hits.load(Ordering::SeqCst) <= 1);
}

#[tokio::test]
async fn host_rules() {
    let (w, up, _d) = setup().await;
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (
            "missing Host",
            "GET / HTTP/1.1\r\n\r\n",
            400,
            Some("invalid_host"),
        ),
        (
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: edge.test\r\nHost: evil.test\r\n\r\n",
            400,
            Some("invalid_host"),
        ),
        (
            "invalid Host",
            "GET / HTTP/1.1\r\nHost: edge test\r\n\r\n",
            400,
            Some("invalid_host"),
        ),
        (
            "userinfo Host",
            "GET / HTTP/1.1\r\nHost: a@edge.test\r\n\r\n",
            400,
            Some("invalid_host"),
        ),
        (
            "absolute-form mismatch",
            "GET http://evil.test/ HTTP/1.1\r\nHost: edge.test\r\n\r\n",
            400,
            Some("invalid_host"),
        ),
        (
            "absolute-form match",
            "GET http://edge.test/ok HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
            200,
            None,
        ),
    ];
    for (name, req, status, code) in cases {
        expect(&w, &up, name, req, *status, *code).await;
    }
}

#[tokio::test]
async fn unsafe_paths_are_refused() {
    let (w, up, _d) = setup().await;
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (
            "..;",
            "GET /public/..;/admin HTTP/1.1\r\nHost: edge.test\r\n\r\n",
            400,
            Some("invalid_path_dot_segment"),
        ),
        (
            "encoded NUL",
            "GET /a%00b HTTP/1.1\r\nHost: edge.test\r\n\r\n",
            400,
            Some("invalid_path_nul"),
        ),
        (
            "encoded backslash",
            "GET /a%5c..%5cadmin HTTP/1.1\r\nHost: edge.test\r\n\r\n",
            400,
            Some("invalid_path_backslash"),
        ),
        (
            "raw backslash",
            "GET /a\\..\\admin HTTP/1.1\r\nHost: edge.test\r\n\r\n",
            400,
            Some("invalid_path_backslash"),
        ),
        (
            "bad escape",
            "GET /a%zz HTTP/1.1\r\nHost: edge.test\r\n\r\n",
            400,
            Some("invalid_path_encoding"),
        ),
        (
            "asterisk-form GET",
            "GET * HTTP/1.1\r\nHost: edge.test\r\n\r\n",
            400,
            Some("invalid_path"),
        ),
        (
            "CONNECT",
            "CONNECT edge.test:443 HTTP/1.1\r\nHost: edge.test:443\r\n\r\n",
            405,
            Some("method_not_allowed"),
        ),
    ];
    for (name, req, status, code) in cases {
        expect(&w, &up, name, req, *status, *code).await;
    }
}

#[tokio::test]
async fn size_limits() {
    let (w, up, _d) = setup().await;
    let big_value = "v".repeat(40 * 1024);
    let big = format!("GET / HTTP/1.1\r\nHost: edge.test\r\nX-Big: {big_value}\r\n\r\n");
    expect(
        &w,
        &up,
        "header bytes",
        &big,
        431,
        Some("headers_too_large"),
    )
    .await;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: edge.test\r\n{many}\r\n");
    expect(
        &w,
        &up,
        "header count",
        &many,
        431,
        Some("headers_too_large"),
    )
    .await;
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: edge.test\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    expect(&w, &up, "uri length", &long, 414, Some("uri_too_long")).await;
    // Far beyond any limit: the server's backstop answers before the head
    // ends, still without reaching the upstream.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: edge.test\r\nX-Huge: {}\r\n\r\n",
        "v".repeat(512 * 1024)
    );
    let resp = raw(w.http, huge.as_bytes()).await;
    assert_eq!(
        raw_status(&resp),
        431,
        "huge head answered:\n{}",
        &resp[..resp.len().min(200)]
    );
    assert!(resp.contains("\"error\":\"headers_too_large\""), "{resp}");
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn slowloris_is_cut_off() {
    let (w, _up, _d) = setup().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(w.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: edge.test\r\nX-Slow: ")
        .await
        .unwrap();
    // --header-read-timeout is 1s: the connection must be closed well
    // before this 10 s deadline even though the client keeps it open.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "slow client was not cut off");
}

#[tokio::test]
async fn connection_header_cannot_strip_weir_headers() {
    let (w, _up, _d) = setup().await;
    let req = "GET / HTTP/1.1\r\nHost: edge.test\r\nConnection: close, X-Request-Id, X-Forwarded-Proto, Host\r\n\r\n";
    let resp = raw(w.http, req.as_bytes()).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["headers"]["host"], "edge.test");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert!(
        echo["headers"]["x-request-id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_head_deadline() {
    let (w, up, _d) = setup().await;
    use tokio::io::AsyncReadExt;
    let opened = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(w.http).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent connection was kept open");
    // --header-read-timeout is 1s; nothing is answered, nothing forwarded.
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed before the deadline: {:?}",
        opened.elapsed()
    );
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
    assert_eq!(client_timeouts(&w, "request_head").await, "1");
    assert_eq!(client_timeouts(&w, "keepalive").await, "0");
}

/// Neither deadline cuts a request in flight: a slow backend or a slow
/// upload takes as long as it takes, and the connection goes on serving. An
/// idle connection waits for its next request up to the keep-alive timeout
/// (5 s here), longer than a head may take (1 s), and is closed after it.
#[tokio::test]
async fn requests_in_flight_outlive_the_head_deadline_and_idle_connections_do_not() {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use hyper::body::Frame;
    let (w, up, _d) = setup_with_keepalive("5s").await;
    let stream = tokio::net::TcpStream::connect(w.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = |method: &str, extra: Option<(&str, &str)>, body| {
        let mut req = http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "edge.test");
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.body(body).unwrap()
    };
    let empty = || BoxBody::<Bytes, Infallible>::new(Empty::new());

    // The backend answers 2.5 head deadlines later.
    let resp = sender
        .send_request(request("GET", Some(("x-test-delay-ms", "2500")), empty()))
        .await
        .expect("slow answer");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();

    // An upload the client sends over two seconds: ten 1,000-byte chunks,
    // 200 ms apart (a slow sender, not a synchronisation).
    let chunks = futures_util::stream::unfold(0, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok(Frame::data(Bytes::from(vec![b'u'; 1000]))), i + 1))
    });
    let resp = sender
        .send_request(request("POST", None, BoxBody::new(StreamBody::new(chunks))))
        .await
        .expect("slow upload");
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["body_bytes"], 10_000);

    // The same connection still serves; so it does after idling longer
    // than a head may take (a load balancer's pooled connection between
    // requests).
    for (what, idle) in [("third", 0), ("after 1.5 s idle", 1500)] {
        tokio::time::sleep(Duration::from_millis(idle)).await;
        sender.ready().await.expect(what);
        let resp = sender
            .send_request(request("GET", None, empty()))
            .await
            .expect(what);
        assert_eq!(resp.status(), 200, "{what}");
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 4);

    // Idle now: closed at the keep-alive timeout, well within 20 s.
    let idle = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "an idle keep-alive connection was kept open");
    assert!(
        idle.elapsed() >= Duration::from_millis(4900),
        "closed {:?} into the 5 s keep-alive timeout",
        idle.elapsed()
    );
    assert_eq!(client_timeouts(&w, "keepalive").await, "1");
    assert_eq!(client_timeouts(&w, "request_head").await, "0");
}

/// After an idle spell, a request head that begins must end within the
/// head deadline of its first byte, not the keep-alive timeout.
#[tokio::test]
async fn a_head_begun_after_idling_gets_the_head_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (w, _up, _d) = setup_with_keepalive("5s").await;
    let mut s = tokio::net::TcpStream::connect(w.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await
        .unwrap();
    // One response, read by its Content-Length.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        let end = text.find("\r\n\r\n")?;
        let len: usize = text[..end].lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().ok())
        })??;
        (got.len() >= end + 4 + len).then_some(())
    };
    while complete(&got).is_none() {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed before the response ended");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(raw_status(&String::from_utf8_lossy(&got)), 200);
    // Idle half a second, then half a head.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: edge").await.unwrap();
    let begun = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an unfinished head was not cut off");
    // The head deadline is 1 s; the keep-alive timeout would end 4.5 s
    // after the half head.
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "cut {took:?} after the head began"
    );
}

/// HTTP/2 connections have no head deadline: a client (a gRPC channel, say)
/// may open one and send its first request later, within the keep-alive
/// timeout.
#[tokio::test]
async fn an_idle_http2_connection_is_not_cut_by_the_head_deadline() {
    use bytes::Bytes;
    use http_body_util::Full;
    let (w, _up, _d) = setup_with_keepalive("5s").await;
    let mut h2 = weir_tests::client::h2c(w.http).await;
    // Idle for longer than the 1 s head deadline: the behaviour under test.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let req = http::Request::get("http://edge.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2
        .send_request(req)
        .await
        .expect("h2c connection still open");
    assert_eq!(resp.status(), 200);
}

/// An HTTP/2 connection with no stream open is sent a GOAWAY after the
/// keep-alive timeout (1 s here) and closes cleanly; a stream that lasts
/// longer than that is not cut.
#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_after_the_keepalive_timeout() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (w, up, _d) = setup().await;
    let stream = tokio::net::TcpStream::connect(w.http).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    // The backend answers 2 keep-alive timeouts later.
    let req = http::Request::get("http://edge.test/")
        .header("x-test-delay-ms", "2000")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.expect("a slow stream completes");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);

    // Idle now: a GOAWAY, and the client's connection ends without error.
    let idle = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("an idle HTTP/2 connection was kept open");
    ended
        .unwrap()
        .expect("the connection ended with a GOAWAY, not an error");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed {:?} into the 1 s keep-alive timeout",
        idle.elapsed()
    );
    assert!(
        h2.ready().await.is_err(),
        "the connection takes no new streams"
    );
    assert_eq!(client_timeouts(&w, "http2_idle").await, "1");
}
