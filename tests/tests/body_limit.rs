//! Request body limits through the real weir binary: ingress-nginx's
//! `proxy-body-size` and `weir.dev/max-body-size` per Ingress,
//! `--max-body-size` (default 1m, as ingress-nginx) for the rest. A declared
//! length over the limit is refused before the body is read; a body without
//! one is cut at the limit while it streams. Either way the client reads a
//! JSON 413 (weir lingers instead of resetting the connection under it).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weir_tests::client::{Reply, h2c, http1, send};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, ingress_yaml, service_yaml};

const MIB: usize = 1 << 20;

fn manifests(upstream: &str) -> String {
    [
        ingress_yaml("default", "", "default.test", "/", "Prefix", "up"),
        ingress_yaml(
            "big",
            "nginx.ingress.kubernetes.io/proxy-body-size: \"4m\"",
            "big.test",
            "/",
            "Prefix",
            "up",
        ),
        ingress_yaml(
            "small",
            "weir.dev/max-body-size: \"1k\", nginx.ingress.kubernetes.io/proxy-body-size: \"4m\"",
            "small.test",
            "/",
            "Prefix",
            "up",
        ),
        ingress_yaml(
            "any",
            "nginx.ingress.kubernetes.io/proxy-body-size: \"0\"",
            "any.test",
            "/",
            "Prefix",
            "up",
        ),
        service_yaml("up", upstream),
    ]
    .join("---\n")
}

/// POSTs `size` bytes with a `Content-Length`.
async fn post(weir: &Weir, host: &str, size: usize) -> Reply {
    let req = http::Request::post(format!("http://{}/upload", weir.http))
        .header("host", host)
        .body(Full::new(Bytes::from(vec![b'x'; size])))
        .expect("request");
    send(&http1(), req).await.expect("POST")
}

/// POSTs `size` bytes chunked: no length is declared.
async fn post_chunked(weir: &Weir, host: &str, size: usize) -> (u16, serde_json::Value) {
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..size.div_ceil(65536))
        .map(|i| {
            Ok(Frame::data(Bytes::from(vec![
                b'c';
                65536.min(size - i * 65536)
            ])))
        })
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{}/upload", weir.http))
        .header("host", host)
        .body(body)
        .expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .expect("answer within 30 s")
        .expect("chunked POST");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

/// An upstream, the manifests routing to it, and weir serving them with
/// the default flags.
async fn serve(upstream: &str, dir: &str) -> (Upstream, TempDir, Weir) {
    let up = Upstream::start(upstream).await;
    let dir = TempDir::new(dir);
    dir.write("r.yaml", &manifests(&up.addr.to_string()));
    let weir = Weir::serve(&dir.0, &[]).await;
    (up, dir, weir)
}

#[tokio::test]
async fn declared_lengths_over_the_limit_are_refused_before_the_body_is_read() {
    let (up, _dir, weir) = serve("limits", "body-limit").await;

    for (host, size, want) in [
        // No annotation: --max-body-size's default, 1m, up to the byte.
        ("default.test", MIB, 200),
        ("default.test", MIB + 1, 413),
        ("big.test", 3 * MIB, 200),
        ("big.test", 4 * MIB + 1, 413),
        // weir.dev/max-body-size wins over proxy-body-size.
        ("small.test", 1024, 200),
        ("small.test", 1025, 413),
        // "0": no limit.
        ("any.test", 6 * MIB, 200),
    ] {
        let hits = up.hits.load(Ordering::SeqCst);
        let r = post(&weir, host, size).await;
        assert_eq!(r.status, want, "{host} with {size} bytes: {:?}", r.body);
        if want == 200 {
            assert_eq!(r.json()["body_bytes"], size, "{host}");
        } else {
            assert_eq!(r.error_code(), "body_too_large", "{host}");
            assert_eq!(r.header("connection"), Some("close"), "{host}");
            assert_eq!(
                up.hits.load(Ordering::SeqCst),
                hits,
                "{host}: a refused request reached the upstream"
            );
        }
    }
}

#[tokio::test]
async fn bodies_without_a_length_are_cut_at_the_limit_while_they_stream() {
    let (_up, dir, weir) = serve("chunked", "body-limit-chunked").await;

    let (status, body) = post_chunked(&weir, "default.test", MIB / 2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body_bytes"], MIB / 2);
    let (status, body) = post_chunked(&weir, "default.test", 3 * MIB).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "body_too_large");
    let (status, body) = post_chunked(&weir, "any.test", 6 * MIB).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body_bytes"], 6 * MIB);

    // The flag sets the default for Ingresses without an annotation.
    let flagged = Weir::serve(&dir.0, &["--max-body-size", "2m"]).await;
    let (status, _) = post_chunked(&flagged, "default.test", MIB + MIB / 2).await;
    assert_eq!(status, 200);
    let (status, _) = post_chunked(&flagged, "default.test", 3 * MIB).await;
    assert_eq!(status, 413);
}

/// A client that sends its whole body before reading (as simple clients
/// do) still reads the 413: weir reads and drops the rest of the body
/// after answering instead of closing under it, which would reset the
/// connection and could destroy the answer.
#[tokio::test]
async fn a_client_that_keeps_sending_still_reads_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, _dir, weir) = serve("linger", "body-limit-linger").await;
    let size = 32 * MIB;
    let mut tcp = tokio::net::TcpStream::connect(weir.http)
        .await
        .expect("connect");
    tcp.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: default.test\r\nContent-Length: {size}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("head");
    let chunk = vec![b'x'; MIB];
    for i in 0..size / MIB {
        tcp.write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("weir stopped reading after {i} MiB: {e}"));
    }
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("answer within 10 s")
    .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

/// A client that goes on uploading slowly for seconds after weir's 413
/// (and only then reads) still gets it: weir lingers while bytes keep
/// coming, up to nginx's 30 s `lingering_time`, instead of closing under
/// the upload after a moment.
#[tokio::test]
async fn a_client_still_uploading_slowly_after_the_413_reads_it() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, _dir, weir) = serve("linger-slow", "body-limit-linger-slow").await;
    let mut tcp = tokio::net::TcpStream::connect(weir.http)
        .await
        .expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: default.test\r\nContent-Length: {}\r\n\r\n",
        8 * MIB
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    // 3 s of upload, 64 KiB every 100 ms (a slow client, not a
    // synchronisation), then the client closes its side and reads.
    let chunk = vec![b'x'; 64 * 1024];
    for i in 0..30 {
        tcp.write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("weir stopped reading after {i} chunks: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tcp.shutdown().await.expect("FIN");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answer within 10 s")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// HTTP/2 (h2c) clients get the same answers: a declared `content-length`
/// over the limit is refused before the body is read, a body without one
/// is cut at the limit while it streams, and the connection keeps serving
/// its other streams (only the one stream is refused).
#[tokio::test]
async fn http2_bodies_over_the_limit_get_413_on_their_stream() {
    let (up, _dir, weir) = serve("h2-limits", "body-limit-h2").await;
    let json = |body: Bytes| -> serde_json::Value { serde_json::from_slice(&body).expect("JSON") };

    // Declared: hyper's client sends content-length for a full body.
    let mut h2 = h2c(weir.http).await;
    for (size, want) in [(MIB + 1, 413), (MIB, 200)] {
        let hits = up.hits.load(Ordering::SeqCst);
        let req = http::Request::post("http://default.test/upload")
            .body(Full::new(Bytes::from(vec![b'x'; size])))
            .expect("request");
        h2.ready().await.expect("h2 ready");
        let resp = h2.send_request(req).await.expect("h2 POST");
        let status = resp.status().as_u16();
        let body = json(resp.into_body().collect().await.expect("body").to_bytes());
        assert_eq!(status, want, "{size} bytes: {body}");
        if want == 413 {
            assert_eq!(body["error"], "body_too_large");
            assert_eq!(up.hits.load(Ordering::SeqCst), hits, "reached the upstream");
        } else {
            assert_eq!(body["body_bytes"], size);
        }
    }

    // Streamed without a length.
    type Chunks = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;
    let mut h2 = h2c::<Chunks>(weir.http).await;
    for (size, want) in [(3 * MIB, 413), (MIB / 2, 200)] {
        let chunks: Vec<_> = (0..size / 65536)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b'c'; 65536]))))
            .collect();
        let req = http::Request::post("http://default.test/upload")
            .body(StreamBody::new(futures_util::stream::iter(chunks)))
            .expect("request");
        h2.ready().await.expect("h2 ready");
        let resp = tokio::time::timeout(std::time::Duration::from_secs(30), h2.send_request(req))
            .await
            .expect("answer within 30 s")
            .expect("h2 streamed POST");
        let status = resp.status().as_u16();
        let body = json(resp.into_body().collect().await.expect("body").to_bytes());
        assert_eq!(status, want, "{size} bytes streamed: {body}");
        if want == 413 {
            assert_eq!(body["error"], "body_too_large");
        } else {
            assert_eq!(body["body_bytes"], size);
        }
    }
}
