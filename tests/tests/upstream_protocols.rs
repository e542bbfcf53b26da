//! How weir talks to upstreams: pooled HTTP/1.1 keep-alive connections that
//! outlive snapshot swaps, and the protocols a Service or Ingress asks for
//! (`backend-protocol`): h2c with gRPC trailers, HTTPS, HTTP/2 over TLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use weir_tests::client::{get, h2c, http1};
use weir_tests::pki::Ca;
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, ingress_yaml, route_yaml, service_yaml};

/// An Ingress `name` routing host `<name>.test` to Service `service`, with
/// `annotations` (flow-style map entries).
fn ingress(name: &str, annotations: &str, service: &str) -> String {
    ingress_yaml(
        name,
        annotations,
        &format!("{name}.test"),
        "/",
        "Prefix",
        service,
    )
}

/// [`ingress`] plus its Service, whose endpoint is `upstream`.
fn route(
    name: &str,
    annotations: &str,
    service: &str,
    upstream: SocketAddr,
    service_annotations: &str,
) -> String {
    weir_tests::route_yaml_with(
        name,
        annotations,
        &format!("{name}.test"),
        service,
        &upstream.to_string(),
        service_annotations,
    )
}

#[tokio::test]
async fn http1_connections_are_reused_across_requests_and_swaps() {
    let up = Upstream::start("pooled").await;
    let dir = TempDir::new("pool-reuse");
    dir.write(
        "a.yaml",
        &route_yaml("a", "a.test", "/", "Prefix", "a", &up.addr.to_string()),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    // Sequential requests, small answers and streamed (chunked) ones, and
    // HEAD (no body): each connection goes back to the pool when its
    // response ends, so one upstream connection serves them all.
    for i in 0..60 {
        let headers: &[(&str, &str)] = if i % 3 == 1 {
            &[("x-test-download", "200000")]
        } else {
            &[]
        };
        let r = get(&client, weir.http, "a.test", &format!("/{i}"), headers)
            .await
            .expect("request");
        assert_eq!(r.status, 200, "request {i}");
        if i % 3 == 1 {
            assert_eq!(r.body.len(), 200_000, "request {i}");
        }
        if i % 10 == 0 {
            let head = Request::head(format!("http://{}/head", weir.http))
                .header("host", "a.test")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let r = weir_tests::client::send(&client, head).await.expect("HEAD");
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        1,
        "sequential requests share one upstream connection"
    );
    // A new snapshot (another Ingress) keeps the endpoint, and its pool.
    dir.write(
        "b.yaml",
        &route_yaml("b", "b.test", "/", "Prefix", "b", &up.addr.to_string()),
    );
    weir_tests::await_status(weir.http, "b.test", 200, "the second route").await;
    for i in 0..10 {
        let r = get(&client, weir.http, "a.test", &format!("/after/{i}"), &[])
            .await
            .expect("request");
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        1,
        "the pool survived the snapshot swap"
    );
}

#[tokio::test]
async fn h2c_backend_multiplexes_on_one_upstream_connection() {
    let up = Upstream::start("h2c").await;
    let dir = TempDir::new("h2c-backend");
    dir.write(
        "grpc.yaml",
        &route(
            "grpc",
            "nginx.ingress.kubernetes.io/backend-protocol: GRPC",
            "api",
            up.addr,
            "",
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    // 50 HTTP/1.1 clients at once, each on its own connection to weir,
    // every request held 200 ms by the upstream: weir opens one HTTP/2
    // connection and multiplexes them.
    let mut calls = Vec::new();
    for i in 0..50 {
        let addr = weir.http;
        calls.push(tokio::spawn(async move {
            let client = http1();
            get(
                &client,
                addr,
                "grpc.test",
                &format!("/s/{i}"),
                &[("x-test-delay-ms", "200")],
            )
            .await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.expect("task").expect("request");
        assert_eq!(r.status, 200, "request {i}");
        let echo = r.json();
        assert_eq!(echo["version"], "HTTP/2.0", "request {i}");
        assert_eq!(
            echo["uri"],
            format!("http://grpc.test/s/{i}"),
            "request {i}"
        );
        assert!(
            echo["headers"].get("host").is_none(),
            ":authority, not Host"
        );
        assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    }
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        1,
        "one multiplexed upstream connection"
    );
}

/// A gRPC server as far as the wire goes: HTTP/2 prior knowledge, a
/// length-prefixed message in, a length-prefixed message out, and the status
/// in trailers. It refuses calls without `te: trailers` the way gRPC servers
/// do, and echoes what it saw of the request in response headers.
async fn grpc_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let te = req.headers().get("te").cloned();
                    let authority = req.uri().authority().map(|a| a.to_string());
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.expect("request body");
                    let message = body.to_bytes();
                    // 1 byte compressed flag + 4 bytes length, then the message.
                    let name = String::from_utf8_lossy(message.get(5..).unwrap_or_default());
                    let mut trailers = HeaderMap::new();
                    let mut frames = Vec::new();
                    if te.as_ref().is_none_or(|v| v != "trailers") {
                        trailers.insert("grpc-status", HeaderValue::from_static("3"));
                        trailers.insert("grpc-message", HeaderValue::from_static("missing te"));
                    } else {
                        let reply = format!("hello {name}");
                        let mut framed = BytesMut::new();
                        framed.put_u8(0);
                        framed.put_u32(reply.len() as u32);
                        framed.put_slice(reply.as_bytes());
                        frames.push(Ok::<_, Infallible>(Frame::data(framed.freeze())));
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                    }
                    frames.push(Ok(Frame::trailers(trailers)));
                    let stream = frames_stream(frames);
                    let resp = Response::builder()
                        .header("content-type", "application/grpc")
                        .header("x-seen-authority", authority.unwrap_or_default())
                        .header("x-seen-path", path)
                        .body(StreamBody::new(stream))
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, connections)
}

/// Frames as a stream, without pulling in a stream utility crate.
fn frames_stream<T: Unpin>(items: Vec<T>) -> impl futures_core::Stream<Item = T> {
    struct Iter<T>(std::collections::VecDeque<T>);
    impl<T: Unpin> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.pop_front())
        }
    }
    Iter(items.into())
}

#[tokio::test]
async fn grpc_unary_call_through_weir_keeps_trailers() {
    let (grpc, connections) = grpc_server().await;
    let dir = TempDir::new("grpc");
    dir.write(
        "grpc.yaml",
        // The Service says it speaks h2c; the Ingress says nothing.
        &route(
            "greeter",
            "",
            "greeter",
            grpc,
            "weir.dev/backend-protocol: h2c",
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let mut sender = h2c(weir.http).await;
    for name in ["weir", "again"] {
        let mut framed = BytesMut::new();
        framed.put_u8(0);
        framed.put_u32(name.len() as u32);
        framed.put_slice(name.as_bytes());
        let req = Request::post("http://greeter.test/helloworld.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(framed.freeze()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("call");
        assert_eq!(resp.status(), StatusCode::OK);
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["x-seen-authority"], "greeter.test");
        assert_eq!(headers["x-seen-path"], "/helloworld.Greeter/SayHello");
        let body = resp.into_body().collect().await.expect("body");
        let trailers = body.trailers().cloned().expect("trailers reach the client");
        assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
        assert_eq!(trailers["grpc-message"], "ok");
        let message = body.to_bytes();
        assert_eq!(&message[5..], format!("hello {name}").as_bytes());
        assert_eq!(
            u32::from_be_bytes(message[1..5].try_into().expect("length")) as usize,
            message.len() - 5
        );
    }
    assert_eq!(connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn tls_backends_speak_https_and_h2() {
    let up = Upstream::start_tls("tls").await;
    let plain = Upstream::start("plain").await;
    let dir = TempDir::new("tls-backends");
    dir.write(
        "https.yaml",
        &route(
            "https",
            "",
            "secure",
            up.addr,
            "weir.dev/backend-protocol: https",
        ),
    );
    dir.write(
        "h2.yaml",
        &route(
            "h2",
            "nginx.ingress.kubernetes.io/backend-protocol: GRPCS",
            "secure-h2",
            up.addr,
            "",
        ),
    );
    // A plain-HTTP upstream declared as HTTPS: the handshake fails.
    dir.write(
        "wrong.yaml",
        &route(
            "wrong",
            "weir.dev/backend-protocol: https",
            "plain",
            plain.addr,
            "",
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    for i in 0..5 {
        let r = get(&client, weir.http, "https.test", &format!("/one/{i}"), &[])
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["version"], "HTTP/1.1");
        assert_eq!(r.json()["uri"], format!("/one/{i}"));
        assert_eq!(r.json()["headers"]["host"], "https.test");
    }
    let r = get(&client, weir.http, "h2.test", "/two", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["uri"], "https://h2.test/two");
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        2,
        "one kept-alive HTTPS connection and one HTTP/2 connection"
    );
    let r = get(&client, weir.http, "wrong.test", "/", &[])
        .await
        .expect("request");
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (502, "upstream_connect_failed".to_owned())
    );
}

#[tokio::test]
async fn verified_tls_backends_check_the_certificate_and_its_name() {
    let ca = Ca::new("backend CA");
    let other = Ca::new("someone else");
    let leaf = ca.leaf(&["secure.default.svc"]);
    let up = Upstream::start_tls_with("verified", &leaf).await;
    let dir = TempDir::new("verified-backends");
    dir.write(
        "cas.yaml",
        &format!(
            "{}---\n{}",
            ca.ca_secret_yaml("backend-ca"),
            other.ca_secret_yaml("other-ca")
        ),
    );
    dir.write(
        "service.yaml",
        &service_yaml("secure", &up.addr.to_string()),
    );
    let ingress = |name: &str, annotations: &str| ingress(name, annotations, "secure");
    dir.write(
        "ingresses.yaml",
        &[
            ingress("good", "weir.dev/backend-protocol: https, weir.dev/backend-ca-secret: backend-ca"),
            ingress("good-h2", "weir.dev/backend-protocol: h2, weir.dev/backend-ca-secret: backend-ca"),
            ingress("wrong-ca", "weir.dev/backend-protocol: https, weir.dev/backend-ca-secret: other-ca"),
            ingress(
                "wrong-name",
                "weir.dev/backend-protocol: https, weir.dev/backend-ca-secret: backend-ca, weir.dev/backend-server-name: billing.default.svc",
            ),
        ]
        .join("---\n"),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    let r = get(&client, weir.http, "good.test", "/v", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], "HTTP/1.1");
    let r = get(&client, weir.http, "good-h2.test", "/v", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], "HTTP/2.0");
    for host in ["wrong-ca.test", "wrong-name.test"] {
        let r = get(&client, weir.http, host, "/v", &[])
            .await
            .expect("request");
        assert_eq!(
            (r.status.as_u16(), r.error_code()),
            (502, "upstream_connect_failed".to_owned()),
            "{host}: a certificate that does not verify is refused"
        );
    }
    assert_eq!(
        up.hits.load(Ordering::Relaxed),
        2,
        "refused handshakes sent no request"
    );
}

/// An HTTP/1.1 upstream written byte by byte, for what well-behaved
/// servers never do. Each connection logs `(connection, method path)`;
/// `/race` is answered only as a connection's first request (later ones see
/// the connection close unanswered, as when a server's keep-alive timeout
/// fires just as a request arrives); `/ambiguous` answers with both
/// `Transfer-Encoding` and `Content-Length`, with a forged response behind
/// the chunked end; anything else gets `ok`.
async fn scripted_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<(usize, String)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log: Arc<std::sync::Mutex<Vec<(usize, String)>>> = Arc::default();
    let logged = log.clone();
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let log = logged.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                for served in 0.. {
                    head.clear();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let line = String::from_utf8_lossy(&head);
                    let request: Vec<&str> = line.split(' ').take(2).collect();
                    let request = request.join(" ");
                    log.lock().expect("log").push((conn, request.clone()));
                    let answer: &[u8] = if request.ends_with("/race") && served > 0 {
                        return;
                    } else if request.ends_with("/ambiguous") {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 45\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

#[tokio::test]
async fn keep_alive_races_are_retried_when_safe_and_ambiguous_answers_refused() {
    let (addr, log) = scripted_upstream().await;
    let dir = TempDir::new("scripted");
    dir.write(
        "a.yaml",
        &route_yaml("a", "a.test", "/", "Prefix", "a", &addr.to_string()),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    let take = || std::mem::take(&mut *log.lock().expect("log"));

    // A GET on a pooled connection the upstream closes unanswered goes
    // again on a new connection: the client sees only the answer.
    for _ in 0..2 {
        let r = get(&client, weir.http, "a.test", "/race", &[])
            .await
            .expect("GET");
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body, "ok");
    }
    assert_eq!(
        take(),
        [
            (0, "GET /race".to_owned()),
            (0, "GET /race".to_owned()),
            (1, "GET /race".to_owned())
        ]
    );

    // A POST may have been processed: it is not sent twice.
    let post = Request::post(format!("http://{}/race", weir.http))
        .header("host", "a.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = weir_tests::client::send(&client, post).await.expect("POST");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_protocol_error");
    assert_eq!(take(), [(1, "POST /race".to_owned())], "sent once");

    // Both framings at once is refused, not passed on, and the connection
    // is not reused: the next request must not get the forged response
    // queued behind it.
    let r = get(&client, weir.http, "a.test", "/ambiguous", &[])
        .await
        .expect("GET");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_protocol_error");
    let r = get(&client, weir.http, "a.test", "/after", &[])
        .await
        .expect("GET");
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
    let seen = take();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(
        seen[0].0, seen[1].0,
        "a new connection after the refused answer: {seen:?}"
    );
}
