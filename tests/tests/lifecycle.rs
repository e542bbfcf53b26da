//! Process lifecycle: admin endpoints, readiness and graceful shutdown.

use std::time::Duration;

use weir_tests::client::{get, http1};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, route_yaml};

#[tokio::test]
async fn admin_endpoints() {
    let up = Upstream::start("a").await;
    let dir = TempDir::new("admin");
    dir.write(
        "a.yaml",
        &route_yaml("a", "a.test", "/", "Prefix", "a", &up.addr.to_string()),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    assert_eq!(
        get(&client, weir.admin, "x", "/healthz", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&client, weir.admin, "x", "/readyz", &[])
            .await
            .unwrap()
            .status,
        200
    );
    for _ in 0..3 {
        get(&client, weir.http, "a.test", "/", &[]).await.unwrap();
    }
    get(&client, weir.http, "nothing.test", "/", &[])
        .await
        .unwrap();
    let m = get(&client, weir.admin, "x", "/metrics", &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&m.body);
    for line in [
        "weir_requests_total{route=\"default/a\",status_class=\"2xx\"} 3",
        "weir_requests_total{route=\"none\",status_class=\"4xx\"} 1",
        "weir_request_duration_seconds_count{route=\"default/a\"} 3",
        "weir_snapshot_generation 1",
        "weir_snapshot_routes 1",
        "weir_snapshot_compile_seconds_count",
    ] {
        assert!(text.contains(line), "metrics lack {line:?}:\n{text}");
    }
    // The admin port never routes.
    assert_eq!(
        get(&client, weir.admin, "a.test", "/", &[])
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let up = Upstream::start("slow").await;
    let dir = TempDir::new("drain");
    dir.write(
        "a.yaml",
        &route_yaml("a", "a.test", "/", "Prefix", "a", &up.addr.to_string()),
    );
    // A drain deadline far beyond the test's waits: weir must exit because
    // every connection closed, the idle keep-alive ones included (the
    // client's pool keeps them), not because the deadline passed.
    let mut weir = Weir::serve(&dir.0, &["--drain-timeout", "120s"]).await;
    let client = http1();
    let addr = weir.http;
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                get(&client, addr, "a.test", "/", &[("x-test-delay-ms", "1500")]).await
            })
        })
        .collect();
    weir_tests::eventually(
        Duration::from_secs(5),
        "requests to reach the upstream",
        || {
            let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
            async move { (hits == 5).then_some(()) }
        },
    )
    .await;
    weir.terminate();
    for r in in_flight {
        let r = r
            .await
            .unwrap()
            .expect("in-flight request failed during shutdown");
        assert_eq!(r.status, 200);
    }
    assert_eq!(weir.wait_exit(Duration::from_secs(10)).await, Some(0));
    // New connections are refused once it has stopped.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn missing_manifest_folder_fails_fast() {
    let out = std::process::Command::new(weir_tests::weir::binary())
        .args([
            "serve",
            "--manifests",
            "/nonexistent/weir",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/weir"),
        "error does not name the folder: {err}"
    );
}
