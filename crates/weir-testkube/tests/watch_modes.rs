//! Watch modes kube-rs can choose: streaming lists, server-side watch
//! timeouts, single-object watches through a field selector, and scope
//! errors.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use serde_json::json;
use weir_testkube::{Options, TestApiServer};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test]
async fn streaming_list_initial_events_end_with_the_bookmark() {
    let s = TestApiServer::start(Options::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(s.client().unwrap(), "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("cm-{i}")))
            .await
            .unwrap();
    }
    let mut stream =
        watcher::watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut init = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Init => init.push("Init".to_string()),
            Event::InitApply(o) => init.push(o.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(init, ["Init", "cm-0", "cm-1", "cm-2"]);
    api.create(&PostParams::default(), &cm("live"))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("live")),
        other => panic!("expected the live create, got {other:?}"),
    }
    let log = s.request_log();
    assert!(
        log.iter()
            .any(|r| r.path_and_query.contains("sendInitialEvents=true")),
        "no streaming-list request"
    );
    assert!(
        !log.iter()
            .any(|r| r.method == "GET" && !r.path_and_query.contains("watch")),
        "a streaming list must not list"
    );
}

#[tokio::test]
async fn server_timeout_rewatches_without_relisting() {
    let s = TestApiServer::start(Options::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(s.client().unwrap(), "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default().timeout(1)),
    )
    .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    // Writes across several 1 s watch windows all arrive.
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("cm-{i}")))
            .await
            .unwrap();
        let watches_before = s
            .request_log()
            .iter()
            .filter(|r| r.path_and_query.contains("watch=true"))
            .count();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Wait for the next watch to start: the server ended the last one.
        while s
            .request_log()
            .iter()
            .filter(|r| r.path_and_query.contains("watch=true"))
            .count()
            == watches_before
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch was never ended by timeoutSeconds"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reader.state().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes across watch restarts were lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = s.request_log();
    let lists = log
        .iter()
        .filter(|r| r.method == "GET" && !r.path_and_query.contains("watch=true"))
        .count();
    assert_eq!(
        lists, 1,
        "a clean watch end must resume from the last rv, not relist"
    );
    task.abort();
}

#[tokio::test]
async fn single_object_watch_and_scope() {
    let s = TestApiServer::start(Options::default()).await.unwrap();
    let client = s.client().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut one = watcher::watch_object(api.clone(), "target").boxed();
    api.create(&PostParams::default(), &cm("other"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("target"))
        .await
        .unwrap();
    let seen = loop {
        match tokio::time::timeout(Duration::from_secs(10), one.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Some(o) => break o,
            None => continue,
        }
    };
    assert_eq!(seen.metadata.name.as_deref(), Some("target"));
    assert!(s.request_log().iter().any(|r| {
        r.path_and_query
            .contains("fieldSelector=metadata.name%3Dtarget")
    }));

    // A cluster-scoped type under a namespaced URL does not exist.
    let raw = client
        .request_text(
            http::Request::get(format!(
                "{}/apis/networking.k8s.io/v1/namespaces/default/ingressclasses",
                s.url()
            ))
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap_err();
    match raw {
        kube::Error::Api(st) => assert_eq!(st.code, 404),
        other => panic!("{other:?}"),
    }
    let classes: Api<IngressClass> = Api::all(client);
    assert!(
        classes
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
