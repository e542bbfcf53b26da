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
use weir_tests::cluster::{backend, ingress};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{await_status, eventually};

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
    await_status(weir.http, "stable.test", 200, "the route to answer 200").await;

    // A load loop on the stable route (bounded: at most 20,000 requests)
    // runs for as long as 1,000 other route changes (500 creates, 500
    // deletes) take to land.
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let churning = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (failures, done, churning, addr) =
            (failures.clone(), done.clone(), churning.clone(), weir.http);
        load.push(tokio::spawn(async move {
            let client = http1();
            for _ in 0..10_000 {
                if !churning.load(Ordering::Relaxed) {
                    break;
                }
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
    for i in 0..500 {
        ingresses
            .create(&PostParams::default(), &ingress(&format!("churn-{i}")))
            .await
            .unwrap();
        if i >= 1 {
            ingresses
                .delete(&format!("churn-{}", i - 1), &DeleteParams::default())
                .await
                .unwrap();
        }
    }
    ingresses
        .delete("churn-499", &DeleteParams::default())
        .await
        .unwrap();
    ingresses
        .create(&PostParams::default(), &ingress("churn-final"))
        .await
        .unwrap();
    await_status(
        weir.http,
        "churn-final.test",
        200,
        "the route to answer 200",
    )
    .await;
    churning.store(false, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let requests = done.load(Ordering::Relaxed);
    eprintln!("{requests} requests to the stable route during 1,000 route changes");
    assert!(
        requests > 100,
        "the load loop barely ran ({requests} requests)"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests to a stable route failed during route churn"
    );
    // The churn landed: the last created route serves, a deleted one does not.
    await_status(weir.http, "churn-498.test", 404, "the route to answer 404").await;
    await_status(weir.http, "churn-0.test", 404, "the route to answer 404").await;
}

/// A backend, one Ingress `before` and a `weir run` serving it: the start of
/// the API-trouble tests. The upstream must outlive the test's requests.
async fn serving_before(server: &TestApiServer) -> (Api<Ingress>, Weir, Upstream) {
    let kube = server.client().unwrap();
    let up = Upstream::start("app").await;
    backend(&kube, &up).await;
    let ingresses: Api<Ingress> = Api::namespaced(kube, "default");
    ingresses
        .create(&PostParams::default(), &ingress("before"))
        .await
        .unwrap();
    let weir = Weir::run(server.kubeconfig_path(), &["--leader-elect", "false"]).await;
    await_status(weir.http, "before.test", 200, "the route to answer 200").await;
    (ingresses, weir, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_expiry_and_api_outage() {
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let (ingresses, weir, _up) = serving_before(&server).await;

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
    await_status(weir.http, "in-the-gap.test", 200, "the route to answer 200").await;
    await_status(weir.http, "before.test", 404, "the route to answer 404").await;
    ingresses
        .create(&PostParams::default(), &ingress("after"))
        .await
        .unwrap();
    await_status(weir.http, "after.test", 200, "the route to answer 200").await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_keeps_traffic_and_resumes_watching() {
    let mut server = TestApiServer::start(Options::default()).await.unwrap();
    let (ingresses, weir, _up) = serving_before(&server).await;

    // Down for 3 s (the 30 s behaves the same, only slower to test):
    // every request meanwhile succeeds on the last snapshot.
    server.stop();
    let client = http1();
    let down = tokio::time::Instant::now();
    let mut requests = 0;
    while down.elapsed() < Duration::from_secs(3) {
        let r = get(&client, weir.http, "before.test", "/", &[])
            .await
            .unwrap();
        assert_eq!(
            r.status, 200,
            "a request failed while the API server was down"
        );
        requests += 1;
    }
    assert!(requests > 10);
    // Back, with its state; a change made now is picked up once the
    // watches reconnect (kube-runtime backoff).
    server.restart().await.unwrap();
    ingresses
        .create(&PostParams::default(), &ingress("after"))
        .await
        .unwrap();
    let back = tokio::time::Instant::now();
    let addr = weir.http;
    eventually(
        Duration::from_secs(30),
        "the change after the restart to serve",
        || {
            let client = client.clone();
            async move {
                (get(&client, addr, "after.test", "/", &[])
                    .await
                    .ok()?
                    .status
                    == 200)
                    .then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "API server back -> new route served in {:?}",
        back.elapsed()
    );
    assert_eq!(
        get(&client, weir.http, "before.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_change_does_not_drop_in_flight_requests() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let kube = server.client().unwrap();
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    backend(&kube, &old).await;
    let ingresses: Api<Ingress> = Api::namespaced(kube.clone(), "default");
    ingresses
        .create(&PostParams::default(), &ingress("app"))
        .await
        .unwrap();
    let weir = Weir::run(server.kubeconfig_path(), &["--leader-elect", "false"]).await;
    await_status(weir.http, "app.test", 200, "the route to answer 200").await;

    // Slow requests in flight to the old endpoint...
    let addr = weir.http;
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let client = http1();
                get(
                    &client,
                    addr,
                    "app.test",
                    "/",
                    &[("x-test-delay-ms", "1500")],
                )
                .await
            })
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "the slow requests to reach the old endpoint",
        || {
            let hits = old.hits.load(Ordering::SeqCst);
            async move { (hits >= 6).then_some(()) }
        },
    )
    .await;
    // ...while the Service's endpoints move to the new one.
    let slices: Api<EndpointSlice> = Api::namespaced(kube, "default");
    slices
        .patch(
            "app-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"ports": [{"name": "http", "port": new.addr.port()}],
                "endpoints": [{"addresses": [new.addr.ip().to_string()]}]})),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "new requests to go to the new endpoint",
        || {
            let client = http1();
            async move {
                (get(&client, addr, "app.test", "/", &[]).await.ok()?.json()["upstream"] == "new")
                    .then_some(())
            }
        },
    )
    .await;
    for r in in_flight {
        let r = r
            .await
            .unwrap()
            .expect("an in-flight request failed during the endpoint change");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["upstream"], "old");
    }
}
