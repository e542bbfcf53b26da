//! WebSocket and other HTTP/1.1 upgrades through the real weir binary: a
//! real WebSocket client (tungstenite) talks through weir to a real
//! WebSocket upstream, over plain and TLS upstream connections; upgrades
//! weir does not relay stay plain HTTP; idle sessions close after the
//! route timeout; a drain waits for open sessions.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, http};
use weir_tests::client::{get, http1, raw, raw_status};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, eventually, metric_value, route_yaml, route_yaml_with};

/// Opens a WebSocket session to `url` (its host is the `Host` weir routes
/// on) over a TCP connection to weir.
async fn open(
    weir: SocketAddr,
    url: &str,
) -> (WebSocketStream<TcpStream>, http::Response<Option<Vec<u8>>>) {
    let tcp = TcpStream::connect(weir).await.expect("connect to weir");
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .expect("handshake within 10 s")
    .expect("WebSocket handshake through weir")
}

/// The next message, which must arrive within 10 s.
async fn next(ws: &mut WebSocketStream<TcpStream>) -> Message {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The upstream's first message: what it saw of the handshake request.
async fn hello(ws: &mut WebSocketStream<TcpStream>) -> serde_json::Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("hello is JSON"),
        other => panic!("expected the upstream's hello, got {other:?}"),
    }
}

async fn upgraded_gauge(weir: &Weir) -> Option<String> {
    let text = weir.metrics().await?;
    metric_value(&text, "weir_upgraded_connections").map(str::to_owned)
}

#[tokio::test]
async fn websocket_sessions_relay_both_ways_to_plain_and_tls_upstreams() {
    let plain = Upstream::start("ws").await;
    let tls = Upstream::start_tls("wss").await;
    let dir = TempDir::new("websocket");
    dir.write(
        "ws.yaml",
        &route_yaml(
            "ws",
            "ws.test",
            "/",
            "Prefix",
            "ws",
            &plain.addr.to_string(),
        ),
    );
    dir.write(
        "wss.yaml",
        &route_yaml_with(
            "wss",
            "",
            "wss.test",
            "wss",
            &tls.addr.to_string(),
            "weir.dev/backend-protocol: https",
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;

    for (host, upstream) in [("ws.test", "ws"), ("wss.test", "wss")] {
        let (mut ws, resp) = open(weir.http, &format!("ws://{host}/chat?room=1")).await;
        assert_eq!(resp.status(), 101, "{host}");
        assert!(
            resp.headers().contains_key("x-request-id"),
            "{host}: {resp:?}"
        );
        // tungstenite checked Sec-WebSocket-Accept: the upstream's answer
        // reached the client unchanged.
        let seen = hello(&mut ws).await;
        assert_eq!(seen["upstream"], upstream);
        assert_eq!(seen["uri"], "/chat?room=1");
        assert_eq!(seen["headers"]["host"], host);
        assert_eq!(seen["headers"]["upgrade"], "websocket");
        assert_eq!(seen["headers"]["connection"], "upgrade");
        assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
        assert!(seen["headers"]["x-request-id"].is_string(), "{seen}");

        eventually(
            Duration::from_secs(5),
            "the gauge to count the session",
            || async { (upgraded_gauge(&weir).await.as_deref() == Some("1")).then_some(()) },
        )
        .await;
        // Plain HTTP keeps working beside the session.
        let r = get(&http1(), weir.http, host, "/plain", &[])
            .await
            .expect("GET");
        assert_eq!(r.status, 200);

        for i in 0..20 {
            ws.send(Message::text(format!("message {i}")))
                .await
                .expect("send");
            assert_eq!(next(&mut ws).await, Message::text(format!("message {i}")));
        }
        // Larger than any one read: the relay streams it in pieces.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone()))
            .await
            .expect("send binary");
        assert_eq!(next(&mut ws).await, Message::binary(big));

        ws.close(None).await.expect("close");
        // The upstream answers the close; the session then ends.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(_))) => continue,
                Err(_) => panic!("{host}: the session did not end after a close"),
            }
        }
        // weir closes both connections once the upstream has closed its
        // own, without waiting for the client to close: the client's side
        // gets the lingering close (framing.rs), which ends after 5 s in
        // which the client sends nothing. A 5 s deadline here raced it.
        eventually(
            Duration::from_secs(10),
            "the gauge to drop the session",
            || async { (upgraded_gauge(&weir).await.as_deref() == Some("0")).then_some(()) },
        )
        .await;
    }
}

#[tokio::test]
async fn websocket_sessions_survive_snapshot_swaps() {
    let up = Upstream::start("swaps").await;
    let dir = TempDir::new("websocket-swaps");
    let routes = |timeout: &str| {
        route_yaml_with(
            "ws",
            &format!("weir.dev/request-timeout: {timeout}"),
            "ws.test",
            "ws",
            &up.addr.to_string(),
            "",
        )
    };
    dir.write("ws.yaml", &routes("30s"));
    let weir = Weir::serve(&dir.0, &[]).await;
    let (mut ws, _) = open(weir.http, "ws://ws.test/").await;
    hello(&mut ws).await;
    let client = http1();
    for i in 0..10 {
        // Another Ingress comes and goes, and the session's own Ingress
        // changes: each is a new snapshot.
        dir.write(
            "other.yaml",
            &route_yaml(
                "other",
                &format!("other{i}.test"),
                "/",
                "Prefix",
                "other",
                &up.addr.to_string(),
            ),
        );
        dir.write("ws.yaml", &routes(&format!("{}s", 31 + i)));
        weir_tests::await_status(
            weir.http,
            &format!("other{i}.test"),
            200,
            "the new snapshot",
        )
        .await;
        ws.send(Message::text(format!("after swap {i}")))
            .await
            .expect("send");
        assert_eq!(
            next(&mut ws).await,
            Message::text(format!("after swap {i}"))
        );
    }
    // The route the session came in on goes away: the session stays, new
    // handshakes get 404.
    std::fs::remove_file(dir.0.join("ws.yaml")).expect("remove");
    eventually(Duration::from_secs(10), "the route to go", || {
        let client = client.clone();
        let addr = weir.http;
        async move {
            let r = get(&client, addr, "ws.test", "/", &[]).await.ok()?;
            (r.status == 404).then_some(())
        }
    })
    .await;
    ws.send(Message::text("route gone")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("route gone"));
}

#[tokio::test]
async fn upgrades_weir_does_not_relay_stay_plain_http() {
    let up = Upstream::start("plain").await;
    let dir = TempDir::new("no-upgrade");
    dir.write(
        "a.yaml",
        &route_yaml("a", "a.test", "/", "Prefix", "a", &up.addr.to_string()),
    );
    let weir = Weir::serve(&dir.0, &[]).await;

    // h2c is never passed on: an upstream that switched would take every
    // later request on the connection past weir's routing.
    let out = raw(
        weir.http,
        b"GET /h2c HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&out), 200, "{out}");
    let body = &out[out.find("\r\n\r\n").expect("head") + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).expect("echo JSON");
    for gone in ["upgrade", "connection", "http2-settings"] {
        assert!(
            echo["headers"].get(gone).is_none(),
            "{gone} reached the upstream: {echo}"
        );
    }

    // An upgrade the upstream declines (here a plain 200, as a server
    // without WebSocket support answers) is proxied as a normal response,
    // and the client's connection stays HTTP: the pipelined second request
    // gets its own answer.
    let out = raw(
        weir.http,
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains("\"uri\":\"/first\""), "{out}");
    assert!(out.contains("\"uri\":\"/second\""), "{out}");
    assert!(
        out.contains("\"upgrade\":\"websocket\""),
        "the first request's upgrade reached the upstream: {out}"
    );
    assert!(!out.contains("HTTP/1.1 101"), "{out}");

    // No route: the handshake gets weir's 404, as any request.
    let tcp = TcpStream::connect(weir.http).await.expect("connect");
    match tokio_tungstenite::client_async("ws://nowhere.test/", tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected a 404, got {:?}", other.map(|(_, r)| r)),
    }
}

#[tokio::test]
async fn idle_websocket_sessions_close_after_the_route_timeout() {
    let up = Upstream::start("idle").await;
    let dir = TempDir::new("websocket-idle");
    dir.write(
        "idle.yaml",
        &route_yaml_with(
            "idle",
            "weir.dev/request-timeout: 2s",
            "idle.test",
            "idle",
            &up.addr.to_string(),
            "",
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let (mut ws, _) = open(weir.http, "ws://idle.test/").await;
    hello(&mut ws).await;
    // A session that keeps talking outlives the timeout.
    let talking = tokio::time::Instant::now();
    let mut i = 0;
    loop {
        ws.send(Message::text(format!("{i}"))).await.expect("send");
        assert_eq!(next(&mut ws).await, Message::text(format!("{i}")));
        i += 1;
        if talking.elapsed() > Duration::from_secs(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once quiet, weir closes it (no close frame: the relay does not speak
    // WebSocket), and not before the timeout.
    let quiet = tokio::time::Instant::now();
    match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        Ok(None) | Ok(Some(Err(_))) => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    assert!(
        quiet.elapsed() >= Duration::from_millis(1900),
        "closed after {:?} of silence",
        quiet.elapsed()
    );
}

#[tokio::test]
async fn a_drain_waits_for_open_websocket_sessions() {
    let up = Upstream::start("drain").await;
    let dir = TempDir::new("websocket-drain");
    dir.write(
        "a.yaml",
        &route_yaml("a", "a.test", "/", "Prefix", "a", &up.addr.to_string()),
    );
    let mut weir = Weir::serve(&dir.0, &["--drain-timeout", "60s"]).await;
    let (mut ws, _) = open(weir.http, "ws://a.test/").await;
    hello(&mut ws).await;
    weir.terminate();
    // New connections are refused once the listener has closed...
    eventually(Duration::from_secs(10), "the listener to close", || async {
        TcpStream::connect(weir.http).await.is_err().then_some(())
    })
    .await;
    // ...while the open session keeps working.
    ws.send(Message::text("during the drain"))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::text("during the drain"));
    ws.close(None).await.expect("close");
    // weir exits as soon as the session has ended, long before the 60 s
    // drain deadline.
    assert_eq!(weir.wait_exit(Duration::from_secs(15)).await, Some(0));
}
