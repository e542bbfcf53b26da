//! TLS termination end to end: certificates from `kubernetes.io/tls`
//! Secrets chosen by SNI (exact, wildcard, default), rotation under load
//! without a failed request, HTTP→HTTPS 308 redirects, HSTS, HTTP/2 over
//! TLS with 100 concurrent streams on one connection, and a malformed
//! Secret that costs only its own hosts their HTTPS. Certificates come from
//! a test CA made with rcgen; clients are rustls with that CA as the only
//! root.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weir_tests::client::http1;
use weir_tests::pki::{Ca, Leaf, tls_secret_yaml as secret_yaml};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, eventually, service_yaml};

/// An Ingress routing `hosts` to Service `app`, with a TLS section for
/// `tls_hosts` from `secret` (none when `secret` is empty).
fn tls_ingress(name: &str, annotations: &str, hosts: &[&str], secret: &str) -> String {
    let rules: String = hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: \"{h}\"\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}\n"
            )
        })
        .collect();
    let tls = if secret.is_empty() {
        String::new()
    } else {
        format!(
            "  tls:\n  - hosts: [{}]\n    secretName: {secret}\n",
            hosts
                .iter()
                .map(|h| format!("\"{h}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: weir\n{tls}  rules:\n{rules}"
    )
}

fn connector(ca: &Ca, alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` with SNI `sni`, verified against the test CA.
async fn tls(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    connector.connect(name, tcp).await
}

/// The leaf certificate the server presented for `sni`, without verifying
/// it (to see the default certificate too).
async fn presented(addr: SocketAddr, sni: &str) -> CertificateDer<'static> {
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .clone()
        .into_owned()
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn h1_over(stream: TlsStream<TcpStream>) -> H1 {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

async fn get_on(sender: &mut H1, host: &str, path: &str) -> Result<http::Response<Bytes>, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

struct Setup {
    ca: Ca,
    dir: TempDir,
    _up: Upstream,
}

fn setup(tag: &str, up: Upstream) -> Setup {
    let dir = TempDir::new(tag);
    dir.write("app.yaml", &service_yaml("app", &up.addr.to_string()));
    Setup {
        ca: Ca::new("weir test CA"),
        dir,
        _up: up,
    }
}

async fn https_weir(dir: &TempDir) -> Weir {
    Weir::serve(&dir.0, &["--https-addr", "127.0.0.1:0"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_then_wildcard_then_default() {
    let s = setup("tls-sni", Upstream::start("app").await);
    let a = s.ca.leaf(&["a.test"]);
    let b = s.ca.leaf(&["b.test"]);
    let wild = s.ca.leaf(&["*.wild.test"]);
    for (name, leaf) in [("a", &a), ("b", &b), ("wild", &wild)] {
        s.dir.write(
            &format!("{name}-secret.yaml"),
            &secret_yaml(&format!("{name}-tls"), &leaf.cert_pem, &leaf.key_pem),
        );
    }
    s.dir
        .write("a.yaml", &tls_ingress("a", "", &["a.test"], "a-tls"));
    s.dir
        .write("b.yaml", &tls_ingress("b", "", &["b.test"], "b-tls"));
    s.dir.write(
        "wild.yaml",
        &tls_ingress("wild", "", &["*.wild.test"], "wild-tls"),
    );
    let weir = https_weir(&s.dir).await;
    let https = weir.https.expect("HTTPS listener");

    assert!(
        presented(https, "a.test").await == a.der,
        "a.test gets its certificate"
    );
    assert!(
        presented(https, "b.test").await == b.der,
        "b.test gets its certificate"
    );
    assert!(
        presented(https, "x.wild.test").await == wild.der,
        "x.wild.test gets the wildcard"
    );
    let default = presented(https, "unknown.test").await;
    assert!(
        default != a.der && default != b.der && default != wild.der,
        "an unknown name gets the default certificate"
    );
    // A client that trusts only the test CA refuses the default.
    let connector = connector(&s.ca, &[b"http/1.1"]);
    assert!(tls(&connector, https, "unknown.test").await.is_err());

    // Verified end to end: routed, X-Forwarded-Proto https, HSTS.
    for host in ["a.test", "x.wild.test"] {
        let mut sender = h1_over(
            tls(&connector, https, host)
                .await
                .expect("verified handshake"),
        )
        .await;
        let resp = get_on(&mut sender, host, "/hello").await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
        let echo: serde_json::Value = serde_json::from_slice(resp.body()).expect("echo");
        assert_eq!(
            echo["headers"]["x-forwarded-proto"], "https",
            "{host}: {echo}"
        );
        assert_eq!(
            resp.headers()
                .get("strict-transport-security")
                .and_then(|v| v.to_str().ok()),
            Some("max-age=31536000; includeSubDomains"),
            "{host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_with_308_unless_switched_off() {
    let s = setup("tls-redirect", Upstream::start("app").await);
    let a = s.ca.leaf(&["a.test", "opt-out.test"]);
    s.dir.write(
        "a-secret.yaml",
        &secret_yaml("a-tls", &a.cert_pem, &a.key_pem),
    );
    s.dir
        .write("a.yaml", &tls_ingress("a", "", &["a.test"], "a-tls"));
    s.dir.write(
        "opt-out.yaml",
        &tls_ingress(
            "opt-out",
            "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
            &["opt-out.test"],
            "a-tls",
        ),
    );
    s.dir
        .write("plain.yaml", &tls_ingress("plain", "", &["plain.test"], ""));
    s.dir.write(
        "forced.yaml",
        &tls_ingress(
            "forced",
            "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"",
            &["forced.test"],
            "",
        ),
    );
    let weir = https_weir(&s.dir).await;
    let client = http1();

    let r = weir_tests::client::get(&client, weir.http, "a.test", "/orders/7?page=2", &[])
        .await
        .expect("response");
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("https://a.test/orders/7?page=2"));
    assert_eq!(r.error_code(), "https_required");
    assert!(
        r.header("strict-transport-security").is_none(),
        "HSTS is only sent over HTTPS"
    );
    let forced = weir_tests::client::get(&client, weir.http, "forced.test", "/", &[])
        .await
        .expect("response");
    assert_eq!(forced.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(forced.header("location"), Some("https://forced.test/"));
    for host in ["opt-out.test", "plain.test"] {
        let r = weir_tests::client::get(&client, weir.http, host, "/", &[])
            .await
            .expect("response");
        assert_eq!(r.status, StatusCode::OK, "{host} is served over HTTP");
    }
}

/// cert-manager renews: the Secret changes while clients keep sending on
/// established connections. Not one request fails, and new handshakes get
/// the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_secret_under_load_fails_no_request() {
    let s = setup("tls-rotate", Upstream::start("app").await);
    let old = s.ca.leaf(&["a.test"]);
    let new = s.ca.leaf(&["a.test"]);
    s.dir.write(
        "a-secret.yaml",
        &secret_yaml("a-tls", &old.cert_pem, &old.key_pem),
    );
    s.dir
        .write("a.yaml", &tls_ingress("a", "", &["a.test"], "a-tls"));
    let weir = https_weir(&s.dir).await;
    let https = weir.https.expect("HTTPS listener");
    assert!(presented(https, "a.test").await == old.der);

    let connector = connector(&s.ca, &[b"http/1.1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let mut sender = h1_over(tls(&connector, https, "a.test").await.expect("handshake")).await;
        let (stop, ok) = (stop.clone(), ok.clone());
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            // Bounded: stops when told, or after 20,000 requests.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match get_on(&mut sender, "a.test", "/").await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => {
                        failures.push(e);
                        break;
                    }
                }
            }
            failures
        }));
    }
    // Some traffic before the rotation, then rotate.
    eventually(
        Duration::from_secs(10),
        "traffic before the rotation",
        || async { (ok.load(Ordering::Relaxed) >= 50).then_some(()) },
    )
    .await;
    s.dir.write(
        "a-secret.yaml",
        &secret_yaml("a-tls", &new.cert_pem, &new.key_pem),
    );
    eventually(
        Duration::from_secs(10),
        "new handshakes to see the renewed certificate",
        || async { (presented(https, "a.test").await == new.der).then_some(()) },
    )
    .await;
    // New verified handshakes keep working with the new certificate.
    let mut fresh = h1_over(tls(&connector, https, "a.test").await.expect("handshake")).await;
    assert_eq!(
        get_on(&mut fresh, "a.test", "/")
            .await
            .expect("response")
            .status(),
        StatusCode::OK
    );
    let before_stop = ok.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(10),
        "traffic after the rotation",
        || async { (ok.load(Ordering::Relaxed) >= before_stop + 50).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for l in loops {
        failures.extend(l.await.expect("loop"));
    }
    assert!(
        failures.is_empty(),
        "{} requests failed across the rotation: {failures:?}",
        failures.len()
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_multiplexes_100_streams_on_one_connection() {
    let up = Upstream::start("app").await;
    let connections = up.connections.clone();
    let s = setup("tls-h2", up);
    let a = s.ca.leaf(&["a.test"]);
    s.dir.write(
        "a-secret.yaml",
        &secret_yaml("a-tls", &a.cert_pem, &a.key_pem),
    );
    s.dir
        .write("a.yaml", &tls_ingress("a", "", &["a.test"], "a-tls"));
    let weir = https_weir(&s.dir).await;
    let https = weir.https.expect("HTTPS listener");
    let connector = connector(&s.ca, &[b"h2", b"http/1.1"]);
    let stream = tls(&connector, https, "a.test").await.expect("handshake");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN picks h2"
    );
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for i in 0..100 {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let req = Request::get(format!("https://a.test/stream/{i}"))
                .header("x-test-delay-ms", "200")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = sender.send_request(req).await.expect("response");
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let echo: serde_json::Value = serde_json::from_slice(&body).expect("echo");
            (status, echo["uri"].as_str().map(str::to_owned))
        }));
    }
    for (i, s) in streams.into_iter().enumerate() {
        let Ok((status, path)) = s.await else {
            panic!("stream {i} failed; weir logs:\n{}", weir.logs().join("\n"));
        };
        assert_eq!(status, StatusCode::OK, "stream {i}");
        assert_eq!(path.as_deref(), Some(format!("/stream/{i}").as_str()));
    }
    // The 200 ms delay held every stream open at once: the upstream needed
    // many connections, the client one.
    assert!(connections.load(Ordering::Relaxed) > 1);
    drop(weir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_secret_leaves_other_hosts_serving() {
    let s = setup("tls-bad", Upstream::start("app").await);
    let good = s.ca.leaf(&["good.test"]);
    let other = s.ca.leaf(&["bad.test"]);
    s.dir.write(
        "good-secret.yaml",
        &secret_yaml("good-tls", &good.cert_pem, &good.key_pem),
    );
    // A key that is not the certificate's.
    s.dir.write(
        "bad-secret.yaml",
        &secret_yaml("bad-tls", &other.cert_pem, &good.key_pem),
    );
    s.dir.write(
        "good.yaml",
        &tls_ingress("good", "", &["good.test"], "good-tls"),
    );
    s.dir.write(
        "bad.yaml",
        &tls_ingress("bad", "", &["bad.test"], "bad-tls"),
    );
    s.dir.write(
        "missing.yaml",
        &tls_ingress("missing", "", &["missing.test"], "no-such-secret"),
    );
    let weir = https_weir(&s.dir).await;
    let https = weir.https.expect("HTTPS listener");
    let connector = connector(&s.ca, &[b"http/1.1"]);

    let mut sender = h1_over(
        tls(&connector, https, "good.test")
            .await
            .expect("handshake"),
    )
    .await;
    let resp = get_on(&mut sender, "good.test", "/")
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    // The broken hosts are still routed over HTTP, without a redirect to an
    // HTTPS that would present the wrong certificate.
    let client = http1();
    for host in ["bad.test", "missing.test"] {
        let r = weir_tests::client::get(&client, weir.http, host, "/", &[])
            .await
            .expect("response");
        assert_eq!(r.status, StatusCode::OK, "{host}");
        assert!(presented(https, host).await != other.der, "{host}");
    }
    let logs = weir.logs().join("\n");
    assert!(
        logs.contains("InvalidTLSSecret") && logs.contains("does not match the certificate"),
        "the bad Secret is reported: {logs}"
    );
    assert!(
        logs.contains("TLSSecretNotFound"),
        "the missing Secret is reported"
    );
}

/// `weir run`: the TLS Secret comes from the API server (watched by name,
/// because an Ingress names it), and replacing it rotates the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_api_server_rotate_with_the_secret() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::networking::v1::Ingress;
    use kube::api::{Api, Patch, PatchParams, PostParams};

    let server = weir_testkube::TestApiServer::start(weir_testkube::Options::default())
        .await
        .expect("test API server");
    let kube = server.client().expect("client");
    let up = Upstream::start("app").await;
    weir_tests::cluster::backend(&kube, &up).await;
    let ca = Ca::new("weir test CA");
    let first = ca.leaf(&["api.test"]);
    let second = ca.leaf(&["api.test"]);
    let secret = |leaf: &Leaf| -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-tls"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}}))
        .expect("secret")
    };
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "default");
    secrets
        .create(&PostParams::default(), &secret(&first))
        .await
        .expect("create Secret");
    let mut ingress = weir_tests::cluster::ingress("api");
    ingress.spec.as_mut().expect("spec").tls = Some(vec![
        serde_json::from_value(serde_json::json!({"hosts": ["api.test"], "secretName": "api-tls"}))
            .expect("tls"),
    ]);
    Api::<Ingress>::namespaced(kube.clone(), "default")
        .create(&PostParams::default(), &ingress)
        .await
        .expect("create Ingress");

    let weir = Weir::run(server.kubeconfig_path(), &["--https-addr", "127.0.0.1:0"]).await;
    let https = weir.https.expect("HTTPS listener");
    eventually(
        Duration::from_secs(10),
        "the Secret's certificate",
        || async { (presented(https, "api.test").await == first.der).then_some(()) },
    )
    .await;
    let connector = connector(&ca, &[b"http/1.1"]);
    let mut sender = h1_over(tls(&connector, https, "api.test").await.expect("handshake")).await;
    assert_eq!(
        get_on(&mut sender, "api.test", "/")
            .await
            .expect("response")
            .status(),
        StatusCode::OK
    );
    secrets
        .patch(
            "api-tls",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {
                "tls.crt": base64_encode(&second.cert_pem),
                "tls.key": base64_encode(&second.key_pem)}})),
        )
        .await
        .expect("rotate Secret");
    eventually(
        Duration::from_secs(10),
        "the rotated certificate",
        || async { (presented(https, "api.test").await == second.der).then_some(()) },
    )
    .await;
    // The connection made before the rotation still serves.
    assert_eq!(
        get_on(&mut sender, "api.test", "/")
            .await
            .expect("response")
            .status(),
        StatusCode::OK
    );
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `--client-send-timeout` over TLS: a client that stops reading a large
/// download has its connection closed and counted, whether the bytes wait
/// in weir's buffer or in the TLS stream's.
#[tokio::test]
async fn a_tls_client_that_stops_reading_meets_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let s = setup("tls-send", Upstream::start("app").await);
    let leaf = s.ca.leaf(&["a.test"]);
    s.dir.write(
        "a-secret.yaml",
        &secret_yaml("a-tls", &leaf.cert_pem, &leaf.key_pem),
    );
    s.dir
        .write("a.yaml", &tls_ingress("a", "", &["a.test"], "a-tls"));
    let weir = Weir::serve(
        &s.dir.0,
        &["--https-addr", "127.0.0.1:0", "--client-send-timeout", "2s"],
    )
    .await;
    let https = weir.https.expect("HTTPS listener");
    let connector = connector(&s.ca, &[b"http/1.1"]);
    let mut stream = tls(&connector, https, "a.test").await.expect("handshake");
    stream
        .write_all(b"GET /download HTTP/1.1\r\nHost: a.test\r\nX-Test-Download: 268435456\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    assert!(stream.read(&mut buf).await.unwrap() > 0, "the head arrives");
    // Then nothing is read.
    let series = "weir_client_timeouts_total{kind=\"response_send\"}";
    eventually(Duration::from_secs(20), "the send timeout", || async {
        let text = weir.metrics().await?;
        (weir_tests::metric_value(&text, series) == Some("1")).then_some(())
    })
    .await;
    let open = eventually(Duration::from_secs(10), "the connection closed", || async {
        let text = weir.metrics().await?;
        (weir_tests::metric_value(&text, "weir_open_connections") == Some("0")).then_some(())
    })
    .await;
    assert_eq!(open, ());
}

/// Records a TLS stream could not hand to a full socket are flushed when
/// the socket drains, not left until the body's next frame: a slow client
/// gets every byte the backend has sent while the backend still holds the
/// rest of its body (as an event stream would between two events).
#[tokio::test]
async fn tls_records_flush_when_the_client_catches_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SENT: usize = 8 * 1024 * 1024;
    let backend_addr = weir_tests::upstream::scripted(|_, mut conn| async move {
        // One byte more than is ever sent: the body stays open.
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", SENT + 1);
        let _ = conn.write_all(head.as_bytes()).await;
        let _ = conn.write_all(&vec![b'x'; SENT]).await;
        let _ = conn.read(&mut [0u8; 64]).await;
    })
    .await;
    let dir = TempDir::new("tls-flush");
    dir.write("app.yaml", &service_yaml("app", &backend_addr.to_string()));
    let ca = Ca::new("weir test CA");
    let leaf = ca.leaf(&["a.test"]);
    dir.write(
        "a-secret.yaml",
        &secret_yaml("a-tls", &leaf.cert_pem, &leaf.key_pem),
    );
    dir.write("a.yaml", &tls_ingress("a", "", &["a.test"], "a-tls"));
    let weir = https_weir(&dir).await;
    let https = weir.https.expect("HTTPS listener");
    let mut stream = tls(&connector(&ca, &[b"http/1.1"]), https, "a.test")
        .await
        .expect("handshake");
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    // The client reads slower than weir writes, so weir's socket is full
    // whenever it hands the stream more: the stream keeps records back.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let body = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "weir closed the connection");
            got.extend_from_slice(&buf[..n]);
            tokio::time::sleep(Duration::from_millis(2)).await;
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() - end - 4 == SENT
            {
                return;
            }
        }
    })
    .await;
    assert!(
        body.is_ok(),
        "{} of {SENT} body bytes arrived while the backend held the rest",
        got.len()
    );
}
