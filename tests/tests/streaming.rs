//! Bodies stream through weir in both directions; nothing buffers a whole
//! body. Measured as weir's resident memory while 50 MB go each way.

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, route_yaml_with};

const SIZE: usize = 50 * 1024 * 1024;
/// RSS growth allowed while 50 MB pass: far below the body size.
const MAX_GROWTH_KIB: u64 = 20 * 1024;

#[tokio::test]
async fn fifty_megabytes_each_way_in_bounded_memory() {
    let up = Upstream::start("bulk").await;
    // "0": no body limit (the default is ingress-nginx's 1m).
    let annotations = "nginx.ingress.kubernetes.io/proxy-body-size: \"0\"";
    let (weir, _dir) = serve("bulk", annotations, &up.addr.to_string()).await;
    let base = weir.rss_kib();

    // Download: the upstream streams 50 MB; count it as it arrives.
    let client = weir_tests::client::http1();
    let req = http::Request::get(format!("http://{}/download", weir.http))
        .header("host", "bulk.test")
        .header("x-test-download", SIZE.to_string())
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0usize;
    let mut peak = base;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, Bytes::len);
        if got % (8 * 1024 * 1024) < 65536 {
            peak = peak.max(weir.rss_kib());
        }
    }
    assert_eq!(got, SIZE, "download truncated");

    // Upload: 50 MB produced lazily by the client; the upstream counts it.
    let chunks = (0..SIZE / 65536)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'u'; 65536]))));
    let stream = tokio_stream_iter(chunks);
    let upload_client: Client<_, StreamBody<_>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{}/upload", weir.http))
        .header("host", "bulk.test")
        .body(StreamBody::new(stream))
        .unwrap();
    let rss_probe = {
        let pid = weir.pid();
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..2000 {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))
                {
                    peak = peak.max(
                        v.trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<u64>()
                            .unwrap_or(0),
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let resp = upload_client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        echo["body_bytes"].as_u64(),
        Some(SIZE as u64),
        "upload truncated"
    );
    rss_probe.abort();
    peak = peak.max(weir.rss_kib());
    let growth = peak.saturating_sub(base);
    eprintln!("weir RSS: base {base} KiB, peak {peak} KiB, growth {growth} KiB");
    assert!(
        growth < MAX_GROWTH_KIB,
        "weir RSS grew by {growth} KiB moving 50 MB each way"
    );
}

/// The route's timeout (1 s here) runs from the end of the request body:
/// an upload that keeps moving is never cut however long it takes, a pause
/// in it longer than the timeout is (408 when the client paused), and the
/// backend still has the timeout to answer once the body is in.
#[tokio::test]
async fn uploads_are_timed_by_their_pauses_not_their_length() {
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use futures_util::StreamExt;
    use http_body_util::Full;
    use http_body_util::combinators::BoxBody;

    let up = Upstream::start("upload").await;
    let annotations = "weir.dev/request-timeout: 1s";
    let (weir, _dir) = serve("upload", annotations, &up.addr.to_string()).await;
    let post = |body: BoxBody<Bytes, Infallible>, delay_ms: &str| {
        let req = http::Request::post("/upload")
            .header("host", "upload.test")
            .header("x-test-delay-ms", delay_ms)
            .body(body)
            .unwrap();
        let addr = weir.http;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let started = Instant::now();
            let resp = sender.send_request(req).await.expect("an answer");
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, json, started.elapsed())
        }
    };
    fn chunk() -> Result<Frame<Bytes>, Infallible> {
        Ok(Frame::data(Bytes::from(vec![b'u'; 1000])))
    }

    // Ten chunks 250 ms apart: 2.5 timeouts long, never paused for one.
    let moving = futures_util::stream::iter(0..10).then(|_| async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        chunk()
    });
    let (status, json, took) = post(BoxBody::new(StreamBody::new(moving)), "0").await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["body_bytes"], 10_000);
    assert!(took >= Duration::from_millis(2400), "took {took:?}");

    // One chunk, then the client pauses for good.
    let stalled = futures_util::stream::iter([chunk()]).chain(futures_util::stream::pending());
    let (status, json, took) = post(BoxBody::new(StreamBody::new(stalled)), "0").await;
    assert_eq!(status, 408, "{json}");
    assert_eq!(json["error"], "request_body_timeout");
    let text = weir.metrics().await.expect("metrics");
    let series = "weir_client_timeouts_total{kind=\"request_body\"}";
    assert_eq!(weir_tests::metric_value(&text, series), Some("1"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(15),
        "answered after {took:?}"
    );

    // The whole body at once; the backend answers 3 s later.
    let whole = BoxBody::new(Full::new(Bytes::from(vec![b'u'; 1000])).map_err(|e| match e {}));
    let (status, json, took) = post(whole, "3000").await;
    assert_eq!(status, 504, "{json}");
    assert_eq!(json["error"], "upstream_timeout");
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
}

/// `proxy-send-timeout` limits a pause while the backend takes nothing of
/// the body, apart from the (longer) request timeout: a backend that
/// accepts the connection and never reads gets 504 after the send timeout.
#[tokio::test]
async fn a_backend_that_stops_reading_the_body_meets_the_send_timeout() {
    use std::time::{Duration, Instant};

    // Accepts connections and never reads them.
    let deaf = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deaf_addr = deaf.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = deaf.accept().await {
            held.push(conn);
        }
    });
    let annotations = "weir.dev/request-timeout: 60s, nginx.ingress.kubernetes.io/proxy-send-timeout: \"1\", nginx.ingress.kubernetes.io/proxy-body-size: \"0\"";
    let (weir, _dir) = serve("deaf", annotations, &deaf_addr.to_string()).await;
    // 256 MB offered lazily: far more than the socket buffers between
    // weir and the backend hold.
    let chunks = (0..4096)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'u'; 65536]))));
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{}/upload", weir.http))
        .header("host", "deaf.test")
        .body(StreamBody::new(tokio_stream_iter(chunks)))
        .unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("answered before the 60 s request timeout")
        .expect("an answer, not a failed exchange");
    assert_eq!(resp.status(), 504);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "upstream_timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "answered after {:?}",
        started.elapsed()
    );
}

/// weir serving every path of `<tag>.test` from `upstream`, with the
/// Ingress `annotations`.
async fn serve(tag: &str, annotations: &str, upstream: &str) -> (Weir, TempDir) {
    let dir = TempDir::new(tag);
    let host = format!("{tag}.test");
    let routes = route_yaml_with(tag, annotations, &host, tag, upstream, "");
    dir.write("r.yaml", &routes);
    (Weir::serve(&dir.0, &[]).await, dir)
}

/// A stream over an iterator, yielding to the runtime between items so the
/// body is produced as it is sent.
fn tokio_stream_iter<I, T>(iter: I) -> impl futures_core::Stream<Item = T>
where
    I: Iterator<Item = T> + Unpin,
{
    struct S<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for S<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<I::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    S(iter)
}

/// The route's timeout also limits each pause in a response body, as
/// nginx's `proxy_read_timeout` does: a backend that sends its head and
/// part of its body and then nothing has the client's connection closed
/// after the timeout, without the body's last chunk (so the client sees a
/// cut body, not a whole one), and it is counted as an upstream timeout.
/// A body that keeps trickling for longer than the timeout is not cut.
#[tokio::test]
async fn a_backend_that_pauses_its_response_body_is_cut_after_the_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Answers `/stall` with a head and one chunk, then holds the
    // connection; `/trickle` with ten chunks 300 ms apart.
    let backend_addr = weir_tests::upstream::scripted(|head, mut conn| async move {
        let trickle = head.starts_with(b"GET /trickle");
        let _ = conn
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await;
        if trickle {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = conn.write_all(b"1\r\n.\r\n").await;
            }
            let _ = conn.write_all(b"0\r\n\r\n").await;
        }
        // Held open until weir closes it.
        let _ = conn.read(&mut [0u8; 64]).await;
    })
    .await;
    let annotations = "weir.dev/request-timeout: 1s";
    let (weir, _dir) = serve("pause", annotations, &backend_addr.to_string()).await;
    let mut stream = tokio::net::TcpStream::connect(weir.http).await.unwrap();
    stream
        .write_all(b"GET /stall HTTP/1.1\r\nHost: pause.test\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("weir ended the response within 20 s")
        .expect("a clean close");
    let (stalled, took) = (String::from_utf8_lossy(&out), started.elapsed());
    assert!(stalled.starts_with("HTTP/1.1 200 "), "{stalled}");
    assert!(
        stalled.ends_with("5\r\nfirst\r\n"),
        "cut after the first chunk: {stalled:?}"
    );
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    let text = weir.metrics().await.expect("metrics");
    let series = r#"weir_upstream_errors_total{kind="timeout",route="default/pause"}"#;
    assert_eq!(weir_tests::metric_value(&text, series), Some("1"), "{text}");

    // 3 s of body, no pause as long as the 1 s timeout. The response
    // ends, so read_to_end needs the client to close: ask for that.
    let mut stream = tokio::net::TcpStream::connect(weir.http).await.unwrap();
    stream
        .write_all(b"GET /trickle HTTP/1.1\r\nHost: pause.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("the trickle ended within 20 s")
        .expect("a clean close");
    let text = String::from_utf8_lossy(&out);
    assert!(text.ends_with("0\r\n\r\n"), "the whole body: {text:?}");
    assert_eq!(text.matches("1\r\n.\r\n").count(), 10, "{text:?}");
    let metrics = weir.metrics().await.expect("metrics");
    assert_eq!(weir_tests::metric_value(&metrics, series), Some("1"));
}

/// `--client-send-timeout`: a client that stops reading its response has
/// its connection closed once it has taken nothing for that long (nginx's
/// `send_timeout`), and it is counted; a client that reads in bursts with
/// shorter pauses gets its whole download however long it takes.
#[tokio::test]
async fn a_client_that_stops_reading_meets_the_send_timeout() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let up = Upstream::start("reader").await;
    let dir = TempDir::new("reader");
    let routes = route_yaml_with(
        "reader",
        "",
        "reader.test",
        "reader",
        &up.addr.to_string(),
        "",
    );
    dir.write("r.yaml", &routes);
    let weir = Weir::serve(&dir.0, &["--client-send-timeout", "2s"]).await;
    let get = |size: usize| {
        format!(
            "GET /download HTTP/1.1\r\nHost: reader.test\r\nX-Test-Download: {size}\r\nConnection: close\r\n\r\n"
        )
    };

    // 16 MB read in 1 MB bursts with 400 ms pauses: about 6 s in all,
    // longer than the timeout, and the socket buffers fill in each pause.
    let size = 16 * 1024 * 1024;
    let mut stream = tokio::net::TcpStream::connect(weir.http).await.unwrap();
    stream.write_all(get(size).as_bytes()).await.unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut burst = 0usize;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("bytes within 20 s")
            .expect("no reset");
        if n == 0 {
            break;
        }
        got += n;
        burst += n;
        if burst >= 1024 * 1024 {
            burst = 0;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    assert!(got > size, "the whole download and its head: {got} bytes");
    let series = "weir_client_timeouts_total{kind=\"response_send\"}";
    let text = weir.metrics().await.expect("metrics");
    assert_eq!(weir_tests::metric_value(&text, series), Some("0"));

    // 256 MB asked for, a few bytes read, then nothing.
    let mut stream = tokio::net::TcpStream::connect(weir.http).await.unwrap();
    stream
        .write_all(get(256 * 1024 * 1024).as_bytes())
        .await
        .unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(n > 0);
    weir_tests::eventually(Duration::from_secs(20), "the send timeout", || async {
        let text = weir.metrics().await?;
        (weir_tests::metric_value(&text, series) == Some("1")).then_some(())
    })
    .await;
    // What weir wrote before it gave up is still in the socket; then the
    // connection ends (a close or a reset), far short of 256 MB.
    let mut rest = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rest += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection ended");
    assert!(
        rest < 128 * 1024 * 1024,
        "cut short: {rest} bytes after the first read"
    );
}
