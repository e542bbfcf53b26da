//! Controller scale benchmark (not a test): 5,000 Ingresses with their
//! Services and EndpointSlices in weir-testkube, then the real `weir run`:
//! reports the time to ready (initial lists + full compile), weir's resident
//! memory, the compile time from weir's own metric, and how long one more
//! Ingress takes from its create call to its first 200 through weir.
//! Run with `make bench-controller` (release build).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use serde_json::json;
use weir_testkube::{Options, TestApiServer};
use weir_tests::client::{get, http1};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let server = TestApiServer::start(Options::default())
        .await
        .expect("test API server");
    let kube = server.client().expect("client");
    let up = Upstream::start("app").await;
    let (svcs, slices, ings): (Api<Service>, Api<EndpointSlice>, Api<Ingress>) = (
        Api::namespaced(kube.clone(), "default"),
        Api::namespaced(kube.clone(), "default"),
        Api::namespaced(kube.clone(), "default"),
    );
    let create = |i: usize| {
        let (svcs, slices, ings) = (svcs.clone(), slices.clone(), ings.clone());
        let addr = up.addr;
        async move {
            let pp = PostParams::default();
            let name = format!("app-{i}");
            svcs.create(&pp, &serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 80}]}})).unwrap())
                .await
                .unwrap();
            slices
                .create(&pp, &serde_json::from_value(json!({"metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4", "ports": [{"name": "http", "port": addr.port()}], "endpoints": [{"addresses": [addr.ip().to_string()]}]})).unwrap())
                .await
                .unwrap();
            ings.create(&pp, &serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"ingressClassName": "weir", "rules": [
                {"host": format!("{name}.example.com"), "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]}})).unwrap())
                .await
                .unwrap();
        }
    };
    let t = Instant::now();
    for i in 0..n {
        create(i).await;
    }
    eprintln!(
        "created {n} Ingresses + Services + EndpointSlices in {:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let weir = Weir::run(server.kubeconfig_path(), &["--leader-elect", "false"]).await;
    let ready = t.elapsed();
    let client = http1();
    let metrics = get(&client, weir.admin, "x", "/metrics", &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let metric = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .map(str::to_owned)
            .unwrap_or_default()
    };

    // One more Ingress: create call -> first 200 through weir.
    let t = Instant::now();
    create(n).await;
    let host = format!("app-{n}.example.com");
    loop {
        if get(&client, weir.http, &host, "/", &[])
            .await
            .is_ok_and(|r| r.status == 200)
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the extra Ingress was never served"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let one_more = t.elapsed();
    println!(
        "| Ingresses | time to ready | weir RSS | compile (sum / count) | one more Ingress: create -> first 200 |"
    );
    println!("|---:|---:|---:|---|---:|");
    println!(
        "| {n} | {ready:.2?} | {} MiB | {} / {} | {one_more:.2?} |",
        weir.rss_kib() / 1024,
        metric("weir_snapshot_compile_seconds_sum")
            .rsplit(' ')
            .next()
            .unwrap_or("?"),
        metric("weir_snapshot_compile_seconds_count")
            .rsplit(' ')
            .next()
            .unwrap_or("?"),
    );
}
