//! Routing over real HTTP: the Ingress path and host rules, normalization,
//! forwarding headers, and the 404/502/503/504 answers.

use std::time::Duration;

use weir_tests::client::{get, h2c, http1};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, ingress_yaml, metric_value, route_yaml, route_yaml_with, service_yaml};

fn ingress(name: &str, host: Option<&str>, paths: &[(&str, &str, &str)]) -> String {
    let host = host
        .map(|h| format!("host: \"{h}\"\n    "))
        .unwrap_or_default();
    let paths: String = paths
        .iter()
        .map(|(p, t, svc)| {
            format!("      - {{path: \"{p}\", pathType: {t}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n")
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  ingressClassName: weir\n  rules:\n  - {host}http:\n      paths:\n{paths}---\n"
    )
}

struct Setup {
    weir: Weir,
    _dir: TempDir,
    _upstreams: Vec<Upstream>,
}

async fn setup() -> Setup {
    let names = ["exact", "prefix", "deep", "root", "wild", "any", "admin"];
    let mut upstreams = Vec::new();
    let mut yaml = String::new();
    for n in names {
        let u = Upstream::start(n).await;
        yaml.push_str(&service_yaml(n, &u.addr.to_string()));
        yaml.push_str("---\n");
        upstreams.push(u);
    }
    yaml.push_str(&ingress(
        "shop",
        Some("shop.example.com"),
        &[
            ("/foo", "Exact", "exact"),
            ("/foo", "Prefix", "prefix"),
            ("/foo/bar/", "Prefix", "deep"),
            ("/", "Prefix", "root"),
            ("/api/admin", "Prefix", "admin"),
        ],
    ));
    yaml.push_str(&ingress(
        "wild",
        Some("*.example.com"),
        &[("/", "Prefix", "wild")],
    ));
    yaml.push_str(&ingress("any", None, &[("/any", "Prefix", "any")]));
    // A Service with no endpoints (503) and one whose endpoint refuses (502).
    yaml.push_str(&ingress(
        "broken",
        Some("broken.test"),
        &[("/none", "Prefix", "empty"), ("/down", "Prefix", "down")],
    ));
    yaml.push_str("apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {ports: [{port: 80}]}\n---\n");
    // Port 9 (discard) on loopback is closed on these machines: connect fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    yaml.push_str(&service_yaml("down", &closed.to_string()));
    let dir = TempDir::new("routing");
    dir.write("all.yaml", &yaml);
    let weir = Weir::serve(&dir.0, &["--upstream-timeout", "5s"]).await;
    Setup {
        weir,
        _dir: dir,
        _upstreams: upstreams,
    }
}

async fn upstream_of(s: &Setup, host: &str, path: &str) -> String {
    let r = get(&http1(), s.weir.http, host, path, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{host}{path}: {:?}", r.body);
    r.json()["upstream"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn ingress_path_semantics() {
    let s = setup().await;
    let h = "shop.example.com";
    for (path, want) in [
        ("/foo", "exact"),
        ("/foo/", "prefix"),
        ("/foo/x", "prefix"),
        ("/foobar", "root"),
        ("/foo/bar", "deep"),
        ("/foo/bar/", "deep"),
        ("/foo/bar/baz", "deep"),
        ("/foo/barista", "prefix"),
        ("/", "root"),
        ("/anything/else?x=1", "root"),
    ] {
        assert_eq!(upstream_of(&s, h, path).await, want, "path {path}");
    }
}

#[tokio::test]
async fn host_semantics() {
    let s = setup().await;
    // Case-insensitive, port stripped.
    assert_eq!(
        upstream_of(&s, "SHOP.Example.COM:8080", "/foo").await,
        "exact"
    );
    // Wildcard: one label only.
    assert_eq!(upstream_of(&s, "api.example.com", "/x").await, "wild");
    assert_eq!(upstream_of(&s, "a.b.example.com", "/any").await, "any");
    // Host-less rule catches unknown hosts.
    assert_eq!(upstream_of(&s, "unknown.test", "/any/thing").await, "any");
    let r = get(&http1(), s.weir.http, "unknown.test", "/nope", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "no_route");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(r.json()["request_id"].as_str(), r.header("x-request-id"));
}

#[tokio::test]
async fn normalized_path_is_routed_and_forwarded() {
    let s = setup().await;
    let client = http1();
    for (sent, forwarded) in [
        ("/api/users/../admin/x", "/api/admin/x"),
        ("/api/users/%2e%2e/admin/x", "/api/admin/x"),
        ("/api//admin/./x?q=%2e", "/api/admin/x?q=%2e"),
    ] {
        let r = get(&client, s.weir.http, "shop.example.com", sent, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{sent}");
        let echo = r.json();
        assert_eq!(echo["upstream"], "admin", "{sent} routed elsewhere");
        assert_eq!(
            echo["uri"], forwarded,
            "{sent} forwarded differently than routed"
        );
    }
    // An encoded slash is data: it neither splits nor climbs.
    let r = get(
        &client,
        s.weir.http,
        "shop.example.com",
        "/api/users/..%2fadmin",
        &[],
    )
    .await
    .unwrap();
    let echo = r.json();
    assert_eq!(echo["upstream"], "root");
    assert_eq!(echo["uri"], "/api/users/..%2Fadmin");
}

#[tokio::test]
async fn forwarding_headers() {
    let s = setup().await;
    let r = get(
        &http1(),
        s.weir.http,
        "shop.example.com",
        "/foo",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-request-id", "trace-abc-123"),
            ("connection", "keep-alive, x-drop-me, x-forwarded-for"),
            ("x-drop-me", "1"),
            ("proxy-authorization", "Basic c2VjcmV0"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["host"], "shop.example.com");
    // The client made its X-Forwarded-For hop-by-hop (named in Connection):
    // it is dropped, and weir's own is still set.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-request-id"], "trace-abc-123");
    assert!(
        h.get("x-drop-me").is_none(),
        "Connection-named header forwarded"
    );
    assert!(
        h.get("proxy-authorization").is_none(),
        "proxy credentials forwarded"
    );
    assert!(h.get("keep-alive").is_none());
    // The id comes back; the upstream's hop-by-hop `keep-alive` does not.
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    assert!(r.header("keep-alive").is_none());

    // A prior X-Forwarded-For is appended to.
    let r = get(
        &http1(),
        s.weir.http,
        "shop.example.com",
        "/foo",
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await
    .unwrap();
    assert_eq!(
        r.json()["headers"]["x-forwarded-for"],
        "203.0.113.7, 127.0.0.1"
    );

    // Without a (valid) id, one is generated and sent both ways.
    let r = get(
        &http1(),
        s.weir.http,
        "shop.example.com",
        "/foo",
        &[("x-request-id", "has spaces")],
    )
    .await
    .unwrap();
    let id = r.header("x-request-id").unwrap().to_owned();
    assert_ne!(id, "has spaces");
    assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());
}

#[tokio::test]
async fn upstream_failures_have_json_answers() {
    let s = setup().await;
    let client = http1();
    let r = get(&client, s.weir.http, "broken.test", "/none", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (503, "no_endpoints")
    );
    let r = get(&client, s.weir.http, "broken.test", "/down", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (502, "upstream_connect_failed")
    );
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let up = Upstream::start("slow").await;
    let dir = TempDir::new("timeout");
    let timeout = "weir.dev/request-timeout: 300ms";
    let yaml = format!(
        "{}---\n{}",
        ingress_yaml("slow", timeout, "slow.test", "/", "Prefix", "slow"),
        service_yaml("slow", &up.addr.to_string())
    );
    dir.write("slow.yaml", &yaml);
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    let r = get(
        &client,
        weir.http,
        "slow.test",
        "/",
        &[("x-test-delay-ms", "3000")],
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    let r = get(
        &client,
        weir.http,
        "slow.test",
        "/",
        &[("x-test-delay-ms", "10")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

/// GETs `host`, checks the answer is `504 upstream_connect_timeout`, and
/// returns how long it took.
async fn connect_timed_out(
    client: &weir_tests::client::Http1,
    weir: &Weir,
    host: &str,
) -> Duration {
    let start = std::time::Instant::now();
    let r = get(client, weir.http, host, "/", &[]).await.unwrap();
    let took = start.elapsed();
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (504, "upstream_connect_timeout")
    );
    took
}

/// An address whose connections never complete: a listener with backlog 0
/// and one queued connection that is never accepted, so the kernel drops
/// further SYNs. Both stay open while the returned pair lives.
async fn silent_backend() -> (
    std::net::SocketAddr,
    (tokio::net::TcpListener, tokio::net::TcpStream),
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = tokio::net::TcpStream::connect(addr).await.unwrap();
    (addr, (listener, filler))
}

/// Whether a socket on this machine is in SYN-SENT toward `addr` (IPv4),
/// from `/proc/net/tcp`.
fn connecting_to(addr: std::net::SocketAddr) -> bool {
    let std::net::SocketAddr::V4(v4) = addr else {
        return false;
    };
    // The kernel prints the address as the little-endian u32 of its bytes.
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // rem_address, then st; 02 is SYN_SENT.
        fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"02")
    })
}

/// Requests toward an HTTP/2 backend share one connection, and wait for the
/// one being made. That wait counts against each request's own connect
/// timeout: a route with a short one (1 s) does not wait out another
/// route's longer attempt (30 s, given up after its 8 s request timeout).
#[tokio::test]
async fn an_http2_connect_in_progress_does_not_stretch_a_shorter_connect_timeout() {
    let (addr, _silent) = silent_backend().await;
    let dir = TempDir::new("h2-connect");
    let route = |name: &str, annotations: &str| {
        let annotations = format!("weir.dev/backend-protocol: h2c, {annotations}");
        let host = format!("{name}.test");
        route_yaml_with(name, &annotations, &host, name, &addr.to_string(), "")
    };
    let yaml = [
        route(
            "slow",
            "weir.dev/connect-timeout: 30s, weir.dev/request-timeout: 8s",
        ),
        route("quick", "weir.dev/connect-timeout: 1s"),
    ]
    .join("---\n");
    dir.write("r.yaml", &yaml);
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    let slow = tokio::spawn({
        let (client, http) = (client.clone(), weir.http);
        async move { get(&client, http, "slow.test", "/", &[]).await }
    });
    // The slow route's attempt is under way (its SYN goes unanswered), so
    // it holds the connection being made when the quick route asks.
    weir_tests::eventually(
        Duration::from_secs(10),
        "weir to be connecting to the silent backend",
        || async { connecting_to(addr).then_some(()) },
    )
    .await;
    let took = connect_timed_out(&client, &weir, "quick.test").await;
    assert!(
        took < Duration::from_secs(4),
        "answered after {took:?}: the quick route waited for the slow route's attempt"
    );
    slow.abort();
}

/// A backend that never completes the TCP handshake (its accept queue is
/// full, so the kernel drops the SYN) is given up on after the route's
/// `proxy-connect-timeout`, not the 30 s default, with a 504 as nginx
/// answers.
#[tokio::test]
async fn connect_timeout_is_504() {
    let (addr, _silent) = silent_backend().await;
    let dir = TempDir::new("connect-timeout");
    let yaml = route_yaml_with(
        "hang",
        r#"nginx.ingress.kubernetes.io/proxy-connect-timeout: "1""#,
        "hang.test",
        "hang",
        &addr.to_string(),
        "",
    );
    dir.write("hang.yaml", &yaml);
    let weir = Weir::serve(&dir.0, &["--connect-timeout", "30s"]).await;
    let took = connect_timed_out(&http1(), &weir, "hang.test").await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(15),
        "answered after {took:?}: the route's 1 s, not the flag's 30 s"
    );
    let metrics = weir.metrics().await.unwrap();
    assert!(
        metrics.contains(r#"weir_upstream_errors_total{kind="connect",route="default/hang"} 1"#),
        "{metrics}"
    );
}

/// A request that cannot get a connection goes to another endpoint: one of
/// two endpoints refuses connections (a stopped pod its EndpointSlice still
/// lists) or never completes the handshake, and every GET and POST, body
/// included, is answered by the other, as ingress-nginx's default
/// `proxy-next-upstream: error timeout` does. Each failed attempt is
/// counted. A backend whose only endpoint refuses still answers 502, and so
/// does a route with `proxy-next-upstream: off`.
#[tokio::test]
async fn requests_that_get_no_connection_go_to_another_endpoint() {
    let up = Upstream::start("alive").await;
    let refusing = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (silent_addr, _silent) = silent_backend().await;
    let dir = TempDir::new("next-upstream");
    let yaml = [
        route_yaml_with(
            "refused",
            "",
            "refused.test",
            "refused",
            &format!("{refusing},{}", up.addr),
            "",
        ),
        route_yaml_with(
            "silent",
            r#"nginx.ingress.kubernetes.io/proxy-connect-timeout: "1""#,
            "silent.test",
            "silent",
            &format!("{silent_addr},{}", up.addr),
            "",
        ),
        route_yaml_with("dead", "", "dead.test", "dead", &refusing.to_string(), ""),
        route_yaml_with(
            "off",
            r#"nginx.ingress.kubernetes.io/proxy-next-upstream: "off""#,
            "off.test",
            "off",
            &format!("{refusing},{}", up.addr),
            "",
        ),
    ]
    .join("---\n");
    dir.write("r.yaml", &yaml);
    let weir = Weir::serve(&dir.0, &["--connect-timeout", "30s"]).await;
    let client = http1();
    for i in 0..6 {
        let r = get(
            &client,
            weir.http,
            "refused.test",
            &format!("/get/{i}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "GET {i}: {:?}", r.body);
        assert_eq!(r.json()["upstream"], "alive");
        let req = http::Request::post(format!("http://{}/post/{i}", weir.http))
            .header("host", "refused.test")
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                b'p';
                100_000
            ])))
            .unwrap();
        let r = weir_tests::client::send(&client, req).await.unwrap();
        assert_eq!(r.status, 200, "POST {i}: {:?}", r.body);
        assert_eq!(r.json()["body_bytes"], 100_000, "POST {i}");
    }
    for i in 0..2 {
        let r = get(&client, weir.http, "silent.test", &format!("/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "silent endpoint, request {i}: {:?}", r.body);
    }
    let r = get(&client, weir.http, "dead.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (502, "upstream_connect_failed")
    );
    // proxy-next-upstream: off: round robin sends every other request to
    // the refusing endpoint, and it stays there.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = get(&client, weir.http, "off.test", &format!("/{i}"), &[])
            .await
            .unwrap();
        statuses.push(r.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502]);
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst),
        16,
        "every request answered once"
    );
    let metrics = weir.metrics().await.unwrap();
    let failed = |route: &str| -> u64 {
        let series =
            format!(r#"weir_upstream_errors_total{{kind="connect",route="default/{route}"}}"#);
        metric_value(&metrics, &series).map_or(0, |n| n.parse().unwrap())
    };
    assert!(
        failed("refused") >= 1,
        "refused attempts counted: {metrics}"
    );
    assert!(
        failed("silent") >= 1,
        "timed-out attempts counted: {metrics}"
    );
    assert_eq!(failed("dead"), 1, "{metrics}");
    assert_eq!(failed("off"), 2, "{metrics}");
}

#[tokio::test]
async fn round_robin_across_endpoints() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = TempDir::new("rr");
    dir.write(
        "rr.yaml",
        &route_yaml(
            "rr",
            "rr.test",
            "/",
            "Prefix",
            "rr",
            &format!("{},{}", a.addr, b.addr),
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    for _ in 0..20 {
        let r = get(&client, weir.http, "rr.test", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let (ha, hb) = (
        a.hits.load(std::sync::atomic::Ordering::Relaxed),
        b.hits.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(
        (ha, hb),
        (10, 10),
        "round robin should split 20 requests evenly"
    );
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let s = setup().await;
    let mut sender = h2c(s.weir.http).await;
    let mut handles = Vec::new();
    for i in 0..20 {
        // HTTP/2 clients may send one cookie per field.
        let req = http::Request::get(format!("http://shop.example.com/foo/{i}"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        sender.ready().await.unwrap();
        handles.push(sender.send_request(req));
    }
    for h in handles {
        let resp = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["upstream"], "prefix");
        assert_eq!(
            echo["headers"]["host"], "shop.example.com",
            "Host must be set from :authority"
        );
        assert_eq!(
            echo["headers"]["cookie"], "a=1; b=2",
            "an HTTP/1.1 upstream gets one Cookie field (RFC 9113 8.2.3)"
        );
    }
}
