//! `weir run` against weir-testkube: objects applied through the Kubernetes
//! API (kubectl and kube) become routes, endpoint changes rebalance, and
//! deletions and class changes remove routes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use weir_testkube::{Options, TestApiServer};
use weir_tests::client::{get, http1};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{await_status, eventually, metric_value};

fn kubectl_apply(server: &TestApiServer, cache: &std::path::Path, yaml: &str) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.kubeconfig_path())
        .args(["apply", "-f", "-"])
        .env("KUBECACHEDIR", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be installed for the controller tests");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn objects(name: &str, host: &str, endpoints: &[std::net::SocketAddr]) -> String {
    let port = endpoints.first().map_or(80, |a| a.port());
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{addresses: [\"{}\"]}}", a.ip()))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
  ingressClassName: weir
  rules: [{{host: {host}, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}]}}}}]
",
        eps.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)] // kubectl calls block a thread
async fn kubectl_apply_becomes_traffic() {
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let cache = std::env::temp_dir().join(format!("weir-ctl-cache-{}", std::process::id()));
    let weir = Weir::run(server.kubeconfig_path(), &[]).await;
    let client = http1();
    let addr = weir.http;

    // Nothing yet: 404 with weir's JSON body.
    let r = get(&client, addr, "app-0.test", "/", &[]).await.unwrap();
    assert_eq!(r.status, 404);

    // Each apply is served quickly after kubectl returns; report the spread.
    let mut latencies = Vec::new();
    let mut upstreams = Vec::new();
    for i in 0..10 {
        let up = Upstream::start(&format!("app-{i}")).await;
        let host = format!("app-{i}.test");
        kubectl_apply(
            &server,
            &cache,
            &objects(&format!("app-{i}"), &host, &[up.addr]),
        );
        let applied = tokio::time::Instant::now();
        eventually(
            Duration::from_secs(10),
            "the applied Ingress to serve",
            || {
                let client = client.clone();
                let host = host.clone();
                async move {
                    let r = get(&client, addr, &host, "/", &[]).await.ok()?;
                    (r.status == 200).then_some(())
                }
            },
        )
        .await;
        latencies.push(applied.elapsed());
        upstreams.push(up);
    }
    latencies.sort();
    eprintln!(
        "kubectl apply exit -> first 200 through weir: p50 {:?}, max {:?}",
        latencies[5], latencies[9]
    );
    let r = get(&client, addr, "app-3.test", "/x", &[]).await.unwrap();
    assert_eq!(r.json()["upstream"], "app-3");

    // A second endpoint joins: traffic is balanced across both.
    let extra = Upstream::start("app-0-b").await;
    let kube = server.client().unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(kube.clone(), "default");
    let second: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "app-0-2", "labels": {"kubernetes.io/service-name": "app-0"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": extra.addr.port()}],
        "endpoints": [{"addresses": [extra.addr.ip().to_string()]}]}))
    .unwrap();
    // The Service port maps by name; the new slice's port differs, which is
    // exactly what named ports allow.
    slices
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the new endpoint to get traffic",
        || {
            let client = client.clone();
            async move {
                let r = get(&client, addr, "app-0.test", "/", &[]).await.ok()?;
                (r.json()["upstream"] == "app-0-b").then_some(())
            }
        },
    )
    .await;

    // Deleting an Ingress removes its routes; the others keep serving.
    let ingresses: Api<Ingress> = Api::namespaced(kube, "default");
    ingresses
        .delete("app-1", &DeleteParams::default())
        .await
        .unwrap();
    await_status(addr, "app-1.test", 404, "the deleted Ingress to 404").await;
    assert_eq!(
        get(&client, addr, "app-2.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );

    // Moving an Ingress to another class removes it from weir.
    ingresses
        .patch(
            "app-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingressClassName": "nginx"}})),
        )
        .await
        .unwrap();
    await_status(addr, "app-2.test", 404, "the re-classed Ingress to 404").await;
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test]
async fn not_ready_until_the_api_answers() {
    // An unreachable API server: weir starts, serves its admin port, and
    // stays not-ready instead of serving an empty configuration as real.
    let dir = weir_tests::TempDir::new("unreachable");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://{dead}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\nusers: [{{name: u, user: {{token: t}}}}]\n"),
    )
    .unwrap();
    let mut child = Command::new(weir_tests::weir::binary())
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let admin = {
        use std::io::BufRead;
        let mut admin = None;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "Listening."
            {
                admin = v["admin"]
                    .as_str()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
                break;
            }
        }
        admin.expect("weir never logged its listeners")
    };
    let client = http1();
    assert_eq!(
        get(&client, admin, "x", "/healthz", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&client, admin, "x", "/readyz", &[])
            .await
            .unwrap()
            .status,
        503
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_ingress_gets_an_event_once() {
    use k8s_openapi::api::events::v1::Event;
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let kube = server.client().unwrap();
    let weir = Weir::run(server.kubeconfig_path(), &["--leader-elect", "false"]).await;
    let ingresses: Api<Ingress> = Api::namespaced(kube.clone(), "default");
    let bad: Ingress = serde_json::from_value(json!({"metadata": {"name": "evil",
        "annotations": {"nginx.ingress.kubernetes.io/server-snippet": "return 200;"}},
        "spec": {"ingressClassName": "weir", "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}))
    .unwrap();
    ingresses
        .create(&PostParams::default(), &bad)
        .await
        .unwrap();
    let good: Ingress = serde_json::from_value(json!({"metadata": {"name": "good"},
        "spec": {"ingressClassName": "weir", "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}))
    .unwrap();
    ingresses
        .create(&PostParams::default(), &good)
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(kube.clone(), "default");
    let refused = || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("evil")
                    && e.reason.as_deref() == Some("AnnotationRefused")
            })
            .collect::<Vec<_>>()
            .into()
    };
    let found: Vec<Event> = eventually(
        Duration::from_secs(10),
        "an Event on the rejected Ingress",
        || async {
            let v: Option<Vec<Event>> = refused().await;
            v.filter(|v| !v.is_empty())
        },
    )
    .await;
    assert_eq!(found[0].type_.as_deref(), Some("Warning"));
    assert!(
        found[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("server-snippet"),
        "{:?}",
        found[0].note
    );
    // More recompiles do not repeat it; the valid Ingress gets no warning.
    for i in 0..3 {
        ingresses.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": format!("more-{i}")},
            "spec": {"ingressClassName": "weir", "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}})).unwrap())
            .await
            .unwrap();
    }
    let addr = weir.admin;
    let client = http1();
    // Each extra Ingress loses the catch-all fallback to the older "good":
    // three such findings means all three were compiled.
    eventually(Duration::from_secs(10), "the recompiles to include all three", || {
        let client = client.clone();
        async move {
            let m = get(&client, addr, "x", "/metrics", &[]).await.ok()?;
            String::from_utf8_lossy(&m.body)
                .contains(r#"weir_config_diagnostics{reason="DefaultBackendConflict",severity="warning"} 3"#)
                .then_some(())
        }
    })
    .await;
    let all = events.list(&Default::default()).await.unwrap().items;
    let about_evil = all
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("evil"))
        .count();
    assert_eq!(
        about_evil, 1,
        "the same finding was reported more than once"
    );
    // "good" is served (its missing Service is a Normal-type finding), so it
    // gets no Warning.
    assert!(
        !all.iter().any(
            |e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("good")
                && e.type_.as_deref() == Some("Warning")
        ),
        "a served Ingress got a Warning Event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_publish_service_and_metrics() {
    use k8s_openapi::api::core::v1::{Namespace, Service};
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let kube = server.client().unwrap();
    let up = Upstream::start("app").await;
    for ns in ["team-a", "team-b", "weir"] {
        Api::<Namespace>::all(kube.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let cache = std::env::temp_dir().join(format!("weir-ctl-cache-ns-{}", std::process::id()));
    for ns in ["team-a", "team-b"] {
        let yaml = objects("app", &format!("{ns}.test"), &[up.addr])
            .replace("namespace: default", &format!("namespace: {ns}"));
        kubectl_apply(&server, &cache, &yaml);
    }
    // The load balancer Service in front of weir, with an address.
    let lb: Service = serde_json::from_value(json!({"metadata": {"name": "weir"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})).unwrap();
    let services: Api<Service> = Api::namespaced(kube.clone(), "weir");
    services.create(&PostParams::default(), &lb).await.unwrap();
    services
        .patch_status(
            "weir",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}),
            ),
        )
        .await
        .unwrap();

    // Three weir pods behind it, one not ready: two live replicas share
    // LocalShare limits, although the namespace is not a watched one.
    let peers = |ready_c: bool| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "weir-abc", "labels": {"kubernetes.io/service-name": "weir"}},
            "addressType": "IPv4",
            "ports": [{"port": 8080}],
            "endpoints": [
                {"addresses": ["10.9.0.1"], "targetRef": {"kind": "Pod", "name": "weir-a"}},
                {"addresses": ["10.9.0.2"], "targetRef": {"kind": "Pod", "name": "weir-b"}},
                {"addresses": ["10.9.0.3"], "conditions": {"ready": ready_c},
                 "targetRef": {"kind": "Pod", "name": "weir-c"}},
            ],
        }))
        .unwrap()
    };
    let slices: Api<EndpointSlice> = Api::namespaced(kube.clone(), "weir");
    slices
        .create(&PostParams::default(), &peers(false))
        .await
        .unwrap();

    let weir = Weir::run(
        server.kubeconfig_path(),
        &[
            "--watch-namespace",
            "team-a",
            "--publish-service",
            "weir/weir",
            "--leader-elect",
            "false",
        ],
    )
    .await;
    let client = http1();
    assert_eq!(
        get(&client, weir.http, "team-a.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&client, weir.http, "team-b.test", "/", &[])
            .await
            .unwrap()
            .status,
        404,
        "an unwatched namespace was served"
    );

    let team_a: Api<Ingress> = Api::namespaced(kube.clone(), "team-a");
    let ip = |i: Ingress| i.status?.load_balancer?.ingress?.first()?.ip.clone();
    eventually(
        Duration::from_secs(10),
        "the publish Service's address in status",
        || async {
            (ip(team_a.get("app").await.ok()?).as_deref() == Some("203.0.113.9")).then_some(())
        },
    )
    .await;
    // The load balancer's address changes: status follows.
    services
        .patch_status(
            "weir",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}),
            ),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "status to follow the new address",
        || async {
            (ip(team_a.get("app").await.ok()?).as_deref() == Some("203.0.113.10")).then_some(())
        },
    )
    .await;
    let replicas = || async {
        let text = weir.metrics().await?;
        metric_value(&text, "weir_ratelimit_replicas").map(str::to_owned)
    };
    eventually(Duration::from_secs(10), "2 replicas", || async {
        (replicas().await.as_deref() == Some("2")).then_some(())
    })
    .await;
    // The third pod becomes ready.
    slices
        .replace("weir-abc", &PostParams::default(), &{
            let mut s = peers(true);
            s.metadata.resource_version = slices
                .get("weir-abc")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "3 replicas", || async {
        (replicas().await.as_deref() == Some("3")).then_some(())
    })
    .await;
    // team-b is not ours to write.
    let team_b: Api<Ingress> = Api::namespaced(kube, "team-b");
    assert!(ip(team_b.get("app").await.unwrap()).is_none());

    let m = get(&client, weir.admin, "x", "/metrics", &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&m.body);
    for line in [
        "weir_objects{kind=\"Ingress\"} 1",
        "weir_objects{kind=\"EndpointSlice\"} 1",
        "weir_leader 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{text}"
        );
    }
    assert!(
        text.contains("weir_watch_events_total{kind=\"Ingress\"}"),
        "{text}"
    );
    assert!(
        text.contains("weir_change_to_publish_seconds_count"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_keeps_the_last_good_routes() {
    use k8s_openapi::api::events::v1::Event;
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let kube = server.client().unwrap();
    let up = Upstream::start("app").await;
    let cache =
        std::env::temp_dir().join(format!("weir-ctl-cache-lastgood-{}", std::process::id()));
    kubectl_apply(&server, &cache, &objects("app", "app.test", &[up.addr]));
    let weir = Weir::run(server.kubeconfig_path(), &["--leader-elect", "false"]).await;
    let client = http1();
    assert_eq!(
        get(&client, weir.http, "app.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );

    // An edit weir must refuse (a snippet) that also moves the host.
    let ingresses: Api<Ingress> = Api::namespaced(kube.clone(), "default");
    ingresses
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/configuration-snippet": "deny all;"}},
                "spec": {"rules": [{"host": "moved.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}})),
        )
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(kube.clone(), "default");
    let reasons = || async {
        let list = events.list(&Default::default()).await.ok()?;
        Some(
            list.items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect::<Vec<_>>(),
        )
    };
    eventually(
        Duration::from_secs(10),
        "ServingLastGood and the refusal to be reported",
        || async {
            let r = reasons().await?;
            (r.iter().any(|x| x == "ServingLastGood") && r.iter().any(|x| x == "AnnotationRefused"))
                .then_some(())
        },
    )
    .await;
    // The last good version is what serves: the old host, not the new one.
    assert_eq!(
        get(&client, weir.http, "app.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&client, weir.http, "moved.test", "/", &[])
            .await
            .unwrap()
            .status,
        404
    );

    // Fixing the edit serves the new version.
    ingresses
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": null}})),
        )
        .await
        .unwrap();
    await_status(weir.http, "moved.test", 200, "the fixed version to serve").await;
    assert_eq!(
        get(&client, weir.http, "app.test", "/", &[])
            .await
            .unwrap()
            .status,
        404
    );

    // Deleting it removes it: last-good never outlives the object.
    ingresses
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    await_status(weir.http, "moved.test", 404, "the deleted Ingress to 404").await;
    let _ = std::fs::remove_dir_all(&cache);
}
