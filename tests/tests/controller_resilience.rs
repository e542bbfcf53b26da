//! `weir run` under churn and API-server trouble: route changes under load
//! fail nothing, watch expiry and dropped watches are recovered, and traffic
//! outlives the API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use weir_testkube::{Options, TestApiServer};
use weir_tests::client::{get, http1};
use weir_tests::eventually;
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;

async fn backend(kube: &kube::Client, up: &Upstream) {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"}, "spec": {"ports": [{"name": "http", "port": 80}]}});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "app-1", "labels": {"kubernetes.io/service-name": "app"}}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": up.addr.port()}], "endpoints": [{"addresses": [up.addr.ip().to_string()]}]});
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(kube.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(svc).unwrap(),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(kube.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(slice).unwrap(),
        )
        .await
        .unwrap();
}

fn ingress(name: &str) -> Ingress {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"ingressClassName": "weir", "rules": [{"host": format!("{name}.test"), "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}}))
    .unwrap()
}

async fn serves(addr: std::net::SocketAddr, host: &str, want: u16) {
    let client = http1();
    let host = host.to_owned();
    eventually(Duration::from_secs(10), &format!("{host} to answer {want}"), || {
        let client = client.clone();
        let host = host.clone();
        async move { (get(&client, addr, &host, "/", &[]).await.ok()?.status == want).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_churn_under_load_fails_nothing() {
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let kube = server.client().unwrap();
    let up = Upstream::start("app").await;
    backend(&kube, &up).await;
    let ingresses: Api<Ingress> = Api::namespaced(kube.clone(), "default");
    ingresses
        .create(&PostParams::default(), &ingress("stable"))
        .await
        .unwrap();
    let weir = Weir::run(server.kubeconfig_path(), &["--leader-elect", "false"]).await;
    serves(weir.http, "stable.test", 200).await;

    // A bounded load loop on the stable route while 200 other route changes
    // (create, then delete) land.
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (failures, done, addr) = (failures.clone(), done.clone(), weir.http);
        load.push(tokio::spawn(async move {
            let client = http1();
            for _ in 0..1000 {
                match get(&client, addr, "stable.test", "/", &[]).await {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..100 {
        let name = format!("churn-{i}");
        ingresses
            .create(&PostParams::default(), &ingress(&name))
            .await
            .unwrap();
        if i % 2 == 1 {
            ingresses
                .delete(&format!("churn-{}", i - 1), &DeleteParams::default())
                .await
                .unwrap();
        }
    }
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), 2000);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests to a stable route failed during route churn"
    );
    // The churn landed: the last created route serves, a deleted one does not.
    serves(weir.http, "churn-99.test", 200).await;
    serves(weir.http, "churn-0.test", 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_expiry_and_api_outage() {
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let kube = server.client().unwrap();
    let up = Upstream::start("app").await;
    backend(&kube, &up).await;
    let ingresses: Api<Ingress> = Api::namespaced(kube.clone(), "default");
    ingresses
        .create(&PostParams::default(), &ingress("before"))
        .await
        .unwrap();
    let weir = Weir::run(server.kubeconfig_path(), &["--leader-elect", "false"]).await;
    serves(weir.http, "before.test", 200).await;

    // History expires and every watch drops; a change made in the gap and
    // one made after are both picked up (410 -> relist -> watch).
    server.compact();
    server.drop_watches();
    ingresses
        .create(&PostParams::default(), &ingress("in-the-gap"))
        .await
        .unwrap();
    ingresses
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    serves(weir.http, "in-the-gap.test", 200).await;
    serves(weir.http, "before.test", 404).await;
    ingresses
        .create(&PostParams::default(), &ingress("after"))
        .await
        .unwrap();
    serves(weir.http, "after.test", 200).await;

    // The API server goes away: traffic keeps flowing on the last snapshot.
    drop(server);
    let client = http1();
    for _ in 0..200 {
        let r = get(&client, weir.http, "after.test", "/", &[])
            .await
            .unwrap();
        assert_eq!(
            r.status, 200,
            "a request failed while the API server was down"
        );
    }
    let admin = get(&client, weir.admin, "x", "/readyz", &[]).await.unwrap();
    assert_eq!(
        admin.status, 200,
        "losing the API server must not make serving replicas unready"
    );
}
