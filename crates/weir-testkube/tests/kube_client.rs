//! The real kube-rs client and runtime against weir-testkube: CRUD with
//! compare-and-swap, status subresource and generation rules, reflectors,
//! paging, 410 recovery, bookmarks, selector transitions, scope, patches,
//! concurrency and error shapes. Every wait has a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use weir_testkube::{Options, TestApiServer};

const DEADLINE: Duration = Duration::from_secs(10);

async fn server() -> TestApiServer {
    TestApiServer::start(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Options::default()
    })
    .await
    .expect("start test API server")
}

fn ingress(name: &str, host: &str) -> Ingress {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"ingressClassName": "weir", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    }))
    .unwrap()
}

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn crud_with_compare_and_swap() {
    let s = server().await;
    let api: Api<Ingress> = Api::namespaced(s.client().unwrap(), "default");
    let created = api
        .create(&PostParams::default(), &ingress("web", "a.example.com"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.generation, Some(1));
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    let again = api
        .create(&PostParams::default(), &ingress("web", "a.example.com"))
        .await
        .unwrap_err();
    assert!(api_status(again).is_already_exists());

    // Replace with the current rv: accepted, new rv, spec change bumps generation.
    let mut changed = created.clone();
    changed.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].host = Some("b.example.com".into());
    let replaced = api
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(replaced.metadata.generation, Some(2));

    // The same stale object again: 409 Conflict.
    let stale = api
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(api_status(stale).is_conflict());

    // A label-only change does not bump generation; a no-op keeps the rv.
    let labelled = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    let noop = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        noop.metadata.resource_version,
        labelled.metadata.resource_version
    );

    api.delete("web", &DeleteParams::default()).await.unwrap();
    let gone = api.get("web").await.unwrap_err();
    assert!(api_status(gone).is_not_found());
}

#[tokio::test]
async fn status_subresource_changes_only_status() {
    let s = server().await;
    let api: Api<Ingress> = Api::namespaced(s.client().unwrap(), "default");
    api.create(&PostParams::default(), &ingress("web", "a.example.com"))
        .await
        .unwrap();
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
                        "spec": {"ingressClassName": "other"}});
    let after = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(
        after.spec.as_ref().unwrap().ingress_class_name.as_deref(),
        Some("weir"),
        "status write changed spec"
    );
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "status write bumped generation"
    );
    let lb = after
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .unwrap();
    assert_eq!(lb[0].ip.as_deref(), Some("192.0.2.10"));

    // A main-resource write cannot change status.
    let mut spec_write = after.clone();
    spec_write.status = None;
    let kept = api
        .replace("web", &PostParams::default(), &spec_write)
        .await
        .unwrap();
    assert!(
        kept.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .is_some(),
        "main write dropped status"
    );

    // Apply patches work on status too (what a controller sends).
    let applied = api
        .patch_status(
            "web",
            &PatchParams::apply("weir").force(),
            &Patch::Apply(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.11"}]}}}),
            ),
        )
        .await
        .unwrap();
    let ip = applied
        .status
        .clone()
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap()[0]
        .ip
        .clone();
    assert_eq!(ip.as_deref(), Some("192.0.2.11"));
    // replace_status takes only .status from the body.
    let mut whole = applied.clone();
    whole.spec.as_mut().unwrap().ingress_class_name = Some("ignored".into());
    whole
        .status
        .as_mut()
        .unwrap()
        .load_balancer
        .as_mut()
        .unwrap()
        .ingress
        .as_mut()
        .unwrap()[0]
        .ip = Some("192.0.2.12".into());
    let replaced = api
        .replace_status("web", &PostParams::default(), &whole)
        .await
        .unwrap();
    assert_eq!(
        replaced.spec.unwrap().ingress_class_name.as_deref(),
        Some("weir")
    );
    assert_eq!(
        replaced
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.12")
    );
    assert_eq!(replaced.metadata.generation, Some(1));
}

#[tokio::test]
async fn reflector_follows_writes() {
    let s = server().await;
    let client = s.client().unwrap();
    let api: Api<Ingress> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    let ns: Api<Ingress> = Api::namespaced(client, "default");
    let mut latencies = Vec::new();
    for i in 0..20 {
        let name = format!("web-{i}");
        let start = tokio::time::Instant::now();
        ns.create(&PostParams::default(), &ingress(&name, "a.example.com"))
            .await
            .unwrap();
        let r = reader.clone();
        until("the reflector to see the new Ingress", || {
            let r = r.clone();
            let name = name.clone();
            async move {
                r.state()
                    .iter()
                    .any(|i| i.metadata.name.as_deref() == Some(name.as_str()))
            }
        })
        .await;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    eprintln!(
        "create -> reflector store: p50 {:?}, p95 {:?}",
        latencies[10], latencies[18]
    );
    ns.delete("web-3", &DeleteParams::default()).await.unwrap();
    until("the delete to reach the store", || {
        let r = reader.clone();
        async move { r.state().len() == 19 }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn paging_gives_one_consistent_snapshot() {
    let s = server().await;
    let client = s.client().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..1200 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("cm-{i:04}")}, "data": {"i": i.to_string()}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(500)).await.unwrap();
    assert_eq!(first.items.len(), 500);
    let token = first.metadata.continue_.clone().expect("continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(700));
    // Writes between pages do not show up in later pages of the snapshot.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cm-9999"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let second = api
        .list(&ListParams::default().limit(500).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let third = api
        .list(
            &ListParams::default()
                .limit(500)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(third.items.len(), 200);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());

    // A reflector pages the same way and ends with everything.
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(Api::<ConfigMap>::all(client), watcher::Config::default()),
    )
    .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 1201);
    let lists = s
        .request_log()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path_and_query.starts_with("/api/v1/configmaps?")
                && !r.path_and_query.contains("watch=true")
        })
        .count();
    assert_eq!(lists, 3, "1,201 objects at 500 a page is 3 list calls");
    task.abort();

    // An expired token is 410, which the watcher answers with a fresh list.
    s.compact();
    let expired = api
        .list(&ListParams::default().limit(500).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_status(expired).code, 410);
}

#[tokio::test]
async fn watch_expiry_is_recovered_with_a_correct_store() {
    let s = server().await;
    let client = s.client().unwrap();
    let api: Api<Ingress> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &ingress(&format!("web-{i}"), "a.example.com"),
        )
        .await
        .unwrap();
    }
    let (reader, writer) = reflector::store();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let errs = errors.clone();
    let stream = reflector(
        writer,
        watcher(Api::<Ingress>::all(client), watcher::Config::default()),
    );
    let task = tokio::spawn(stream.for_each(move |e| {
        if e.is_err() {
            errs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        async {}
    }));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    // History is gone and watches drop; meanwhile an object is deleted and
    // another created. The watcher must get 410, relist and converge.
    s.compact();
    s.drop_watches();
    api.delete("web-2", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &ingress("web-new", "b.example.com"))
        .await
        .unwrap();
    until("the store to converge after 410", || {
        let r = reader.clone();
        async move {
            let mut names: Vec<String> = r
                .state()
                .iter()
                .filter_map(|i| i.metadata.name.clone())
                .collect();
            names.sort();
            names == ["web-0", "web-1", "web-3", "web-4", "web-new"]
        }
    })
    .await;
    assert!(
        errors.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the 410 never surfaced as a watcher error"
    );
    task.abort();
}

#[tokio::test]
async fn bookmarks_carry_type_and_rv() {
    let s = server().await;
    let api: Api<Lease> = Api::namespaced(s.client().unwrap(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            },
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    s.bookmark();
    let event = tokio::time::timeout(DEADLINE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match event {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.types.api_version, "coordination.k8s.io/v1");
            assert_eq!(b.types.kind, "Lease");
            assert!(
                b.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse::<u64>().unwrap()
            );
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn selector_transitions_become_adds_and_deletes() {
    let s = server().await;
    let client = s.client().unwrap();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = |name: &str, svc: &str| -> EndpointSlice {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 8080}]}))
        .unwrap()
    };
    api.create(&PostParams::default(), &slice("web-a", "web"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &slice("other-a", "other"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let cfg = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let task = tokio::spawn(reflector(writer, watcher(api.clone(), cfg)).for_each(|_| async {}));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 1);

    let relabel = |svc: &str| {
        Patch::Merge(json!({"metadata": {"labels": {"kubernetes.io/service-name": svc}}}))
    };
    api.patch("other-a", &PatchParams::default(), &relabel("web"))
        .await
        .unwrap();
    until("relabel-in to appear", || {
        let r = reader.clone();
        async move { r.state().len() == 2 }
    })
    .await;
    api.patch("web-a", &PatchParams::default(), &relabel("gone"))
        .await
        .unwrap();
    until("relabel-out to disappear", || {
        let r = reader.clone();
        async move { r.state().len() == 1 && r.state()[0].metadata.name.as_deref() == Some("other-a") }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn namespace_scope_and_cluster_scope() {
    let s = server().await;
    let client = s.client().unwrap();
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap(),
    )
    .await
    .unwrap();
    Api::<Ingress>::namespaced(client.clone(), "team-a")
        .create(&PostParams::default(), &ingress("a", "a.test"))
        .await
        .unwrap();
    Api::<Ingress>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &ingress("d", "d.test"))
        .await
        .unwrap();
    assert_eq!(
        Api::<Ingress>::namespaced(client.clone(), "team-a")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        Api::<Ingress>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // A namespace that does not exist.
    let missing = Api::<Ingress>::namespaced(client.clone(), "nope")
        .create(&PostParams::default(), &ingress("x", "x.test"))
        .await
        .unwrap_err();
    assert!(api_status(missing).is_not_found());
    // Deleting a namespace deletes its contents.
    nss.delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        Api::<Ingress>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn json_patch_test_op_and_finalizers() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().unwrap(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "fin", "finalizers": ["weir.dev/cleanup"]}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    // A failed `test` op is refused.
    let bad: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "other"}]),
    )
    .unwrap();
    assert_eq!(
        api_status(
            api.patch("fin", &PatchParams::default(), &Patch::<()>::Json(bad))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    // Delete with a finalizer only marks the object.
    api.delete("fin", &DeleteParams::default()).await.unwrap();
    let marked = api.get("fin").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    // Removing the finalizer (as kube-runtime's helper does) completes it.
    let remove: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "weir.dev/cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"}]))
    .unwrap();
    api.patch("fin", &PatchParams::default(), &Patch::<()>::Json(remove))
        .await
        .unwrap();
    assert!(api_status(api.get("fin").await.unwrap_err()).is_not_found());
}

#[tokio::test]
async fn concurrent_writers_and_watchers_agree() {
    let s = server().await;
    let client = s.client().unwrap();
    let api: Api<Lease> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "counter"}, "spec": {"leaseTransitions": 0}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    // 10 watchers record every rv they see.
    let mut watchers = Vec::new();
    for _ in 0..10 {
        let api = api.clone();
        watchers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut stream = api
                .watch(&WatchParams::default().timeout(20), "0")
                .await
                .unwrap()
                .boxed();
            while let Ok(Some(Ok(e))) =
                tokio::time::timeout(Duration::from_secs(3), stream.next()).await
            {
                if let WatchEvent::Added(l) | WatchEvent::Modified(l) = e {
                    let n = l
                        .spec
                        .as_ref()
                        .and_then(|s| s.lease_transitions)
                        .unwrap_or(0);
                    seen.push((
                        l.metadata.resource_version.unwrap().parse::<u64>().unwrap(),
                        n,
                    ));
                    if n == 50 {
                        break;
                    }
                }
            }
            seen
        }));
    }
    // 50 writers each increment once with compare-and-swap and retry.
    let mut writers = Vec::new();
    for _ in 0..50 {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            loop {
                let mut l = api.get("counter").await.unwrap();
                let spec = l.spec.get_or_insert_with(Default::default);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                match api.replace("counter", &PostParams::default(), &l).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let last = api.get("counter").await.unwrap();
    // kubectl reads the same final state (on the blocking pool: this test's
    // runtime thread also serves the API).
    let kubeconfig = s.kubeconfig_path().to_owned();
    let cache = std::env::temp_dir().join(format!("weir-kubectl-cache-cas-{}", std::process::id()));
    let via_kubectl = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "get",
                "lease",
                "counter",
                "-o",
                "jsonpath={.metadata.resourceVersion} {.spec.leaseTransitions}",
            ])
            .env("KUBECACHEDIR", &cache)
            .output()
            .expect("kubectl must be installed for this test")
    })
    .await
    .unwrap();
    assert!(
        via_kubectl.status.success(),
        "{}",
        String::from_utf8_lossy(&via_kubectl.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&via_kubectl.stdout).trim(),
        format!("{} 50", last.metadata.resource_version.as_deref().unwrap()),
        "kubectl and kube disagree on the final state"
    );
    assert_eq!(
        last.spec.unwrap().lease_transitions,
        Some(50),
        "a compare-and-swap increment was lost"
    );
    for w in watchers {
        let seen = w.await.unwrap();
        assert!(
            seen.windows(2).all(|p| p[0].0 < p[1].0),
            "rvs not strictly increasing: {seen:?}"
        );
        assert_eq!(
            seen.last().map(|s| s.1),
            Some(50),
            "watcher missed the last write"
        );
    }
}

#[tokio::test]
async fn secrets_and_error_shapes() {
    let s = server().await;
    let client = s.client().unwrap();
    let api: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &secret).await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert!(created.string_data.is_none());
    assert_eq!(created.data.unwrap()["token"].0, b"s3cret");

    // 400: namespace mismatch; 422: no name; 415: an unknown patch type.
    let other: Secret =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "kube-system"}}))
            .unwrap();
    assert_eq!(
        api_status(
            api.create(&PostParams::default(), &other)
                .await
                .unwrap_err()
        )
        .code,
        400
    );
    let unnamed: Secret = serde_json::from_value(json!({"metadata": {}})).unwrap();
    let e = api_status(
        api.create(&PostParams::default(), &unnamed)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let unknown = client
        .request_text(
            http::Request::patch(format!(
                "{}/api/v1/namespaces/default/secrets/creds",
                s.url()
            ))
            .header("content-type", "application/yaml")
            .body(b"{}".to_vec())
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(unknown).code, 415);
    // Strategic merge patch works on built-ins.
    let labelled = api
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.labels.unwrap()["a"], "b");
    // Invalid objects are refused on write, so they never break a list.
    let raw = client
        .request_text(
            http::Request::post(format!("{}/api/v1/namespaces/default/secrets", s.url()))
                .header("content-type", "application/json")
                .body(br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"bad"},"data":{"k":"not base64!"}}"#.to_vec())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(raw).code, 400);
    let _ = BTreeMap::<String, String>::new();
}

#[tokio::test]
async fn https_with_the_kubeconfig_ca() {
    let s = TestApiServer::start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(s.url().starts_with("https://127.0.0.1:"));
    let kubeconfig = std::fs::read_to_string(s.kubeconfig_path()).unwrap();
    assert!(
        kubeconfig.contains("certificate-authority-data:"),
        "{kubeconfig}"
    );
    let client = s.client().unwrap();
    let api: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(Api::<Ingress>::all(client), watcher::Config::default()),
    )
    .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    api.create(&PostParams::default(), &ingress("tls", "a.example.com"))
        .await
        .unwrap();
    until("the reflector to see the Ingress over HTTPS", || {
        let r = reader.clone();
        async move { r.state().len() == 1 }
    })
    .await;
    // A client that does not trust the CA is refused.
    let mut untrusting = kube::Config::new(s.url().parse().unwrap());
    untrusting.root_cert = None;
    let stranger = kube::Client::try_from(untrusting).unwrap();
    assert!(
        Api::<Ingress>::all(stranger)
            .list(&ListParams::default())
            .await
            .is_err()
    );
    task.abort();
}

#[tokio::test]
async fn delete_collection_by_selector() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().unwrap(), "default");
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}}))
                .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn reconnect_resumes_from_the_bookmark_rv() {
    let s = server().await;
    let client = s.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(
        reflector(writer, watcher(cms, watcher::Config::default())).for_each(|_| async {}),
    );
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    // Writes to another type move the global rv; only a bookmark tells the
    // ConfigMap watcher about it.
    let leases: Api<Lease> = Api::namespaced(client, "default");
    for i in 0..5 {
        leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": format!("l{i}")}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let target = s.resource_version();
    let resumed_at = |s: &TestApiServer| -> Option<u64> {
        s.request_log()
            .iter()
            .filter(|r| {
                r.path_and_query
                    .starts_with("/api/v1/namespaces/default/configmaps?")
                    && r.path_and_query.contains("watch=true")
            })
            .filter_map(|r| {
                r.path_and_query
                    .split("resourceVersion=")
                    .nth(1)?
                    .split('&')
                    .next()?
                    .parse()
                    .ok()
            })
            .next_back()
    };
    let end = tokio::time::Instant::now() + DEADLINE;
    while resumed_at(&s).is_none_or(|rv| rv < target) {
        assert!(
            tokio::time::Instant::now() < end,
            "the watcher never resumed from a bookmark rv >= {target}"
        );
        s.bookmark();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.drop_watches();
    }
    task.abort();
}

#[tokio::test]
async fn kube_runtime_finalizer_helper() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Fin, finalizer};
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().unwrap(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "owned"}})).unwrap(),
    )
    .await
    .unwrap();
    let cleaned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reconcile = |obj: ConfigMap| {
        let api = api.clone();
        let cleaned = cleaned.clone();
        async move {
            finalizer(
                &api,
                "weir.dev/cleanup",
                Arc::new(obj),
                |event| async move {
                    if let Fin::Cleanup(_) = event {
                        cleaned.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok::<_, std::convert::Infallible>(Action::await_change())
                },
            )
            .await
        }
    };
    // First pass adds the finalizer (JSON patch with a `test` op).
    reconcile(api.get("owned").await.unwrap()).await.unwrap();
    let with = api.get("owned").await.unwrap();
    assert_eq!(
        with.metadata.finalizers.as_deref(),
        Some(&["weir.dev/cleanup".to_string()][..])
    );
    // Delete marks it; the next pass runs Cleanup and removes the finalizer.
    api.delete("owned", &DeleteParams::default()).await.unwrap();
    reconcile(api.get("owned").await.unwrap()).await.unwrap();
    assert!(
        cleaned.load(std::sync::atomic::Ordering::SeqCst),
        "Cleanup never ran"
    );
    assert!(
        api.get_opt("owned").await.unwrap().is_none(),
        "the object outlived its finalizer"
    );
}

#[tokio::test]
async fn concurrent_paged_lists_of_two_types_keep_their_own_pages() {
    // Two reflectors paging different types at the same rv with the same
    // page size must each get their own continuation.
    let s = server().await;
    let client = s.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    for i in 0..30 {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).unwrap(),
        )
        .await
        .unwrap();
        leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": format!("l{i}")}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let first_cm = cms.list(&ListParams::default().limit(10)).await.unwrap();
    let first_lease = leases.list(&ListParams::default().limit(10)).await.unwrap();
    assert_ne!(first_cm.metadata.continue_, first_lease.metadata.continue_);
    let second_cm = cms
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(first_cm.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert!(
        second_cm
            .items
            .iter()
            .all(|c| c.metadata.name.as_deref().unwrap().starts_with('c'))
    );
    // A token used on another type's list is refused, not served.
    let crossed = leases
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(first_lease.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert!(
        crossed
            .items
            .iter()
            .all(|l| l.metadata.name.as_deref().unwrap().starts_with('l'))
    );
    let wrong = leases
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(second_cm.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(wrong).code, 400);
}
