//! The manifest folder is live: edits swap in without failing a request,
//! and a broken file costs nothing but itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use weir_tests::client::{get, http1};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, eventually, ingress_yaml, route_yaml, service_yaml};

#[tokio::test]
async fn edit_under_load_fails_nothing_and_applies_within_a_second() {
    let stable = Upstream::start("stable").await;
    let fresh = Upstream::start("fresh").await;
    let dir = TempDir::new("reload");
    dir.write(
        "stable.yaml",
        &route_yaml(
            "stable",
            "stable.test",
            "/",
            "Prefix",
            "stable",
            &stable.addr.to_string(),
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;

    // A bounded load loop: 4 workers, 2,000 requests in all, against the route
    // that stays configured while the folder changes under it.
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (failures, done, addr) = (failures.clone(), done.clone(), weir.http);
        workers.push(tokio::spawn(async move {
            let client = http1();
            for _ in 0..500 {
                match get(&client, addr, "stable.test", "/x", &[]).await {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Edit while the load runs: add a route, then change the stable file too.
    eventually(Duration::from_secs(20), "load to start", || {
        let d = done.load(Ordering::Relaxed);
        async move { (d > 100).then_some(()) }
    })
    .await;
    let edited = tokio::time::Instant::now();
    dir.write(
        "fresh.yaml",
        &route_yaml(
            "fresh",
            "fresh.test",
            "/",
            "Prefix",
            "fresh",
            &fresh.addr.to_string(),
        ),
    );
    let client = http1();
    let addr = weir.http;
    eventually(Duration::from_secs(5), "the new route to serve", || {
        let client = client.clone();
        async move {
            let r = get(&client, addr, "fresh.test", "/", &[]).await.ok()?;
            (r.status == 200).then_some(())
        }
    })
    .await;
    let applied = edited.elapsed();
    let timeout = "weir.dev/request-timeout: 20s";
    let stable_yaml = format!(
        "{}---\n{}",
        ingress_yaml("stable", timeout, "stable.test", "/", "Prefix", "stable"),
        service_yaml("stable", &stable.addr.to_string())
    );
    dir.write("stable.yaml", &stable_yaml);

    for w in workers {
        w.await.unwrap();
    }
    eprintln!("new route served {applied:?} after the edit");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert_eq!(done.load(Ordering::Relaxed), 2000);
    assert!(
        applied < Duration::from_secs(1),
        "new route took {applied:?} to be served"
    );
}

#[tokio::test]
async fn broken_file_leaves_other_routes_serving() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = TempDir::new("broken");
    dir.write(
        "a.yaml",
        &route_yaml("a", "a.test", "/", "Prefix", "a", &a.addr.to_string()),
    );
    dir.write(
        "b.yaml",
        &route_yaml("b", "b.test", "/", "Prefix", "b", &b.addr.to_string()),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    assert_eq!(
        get(&client, weir.http, "b.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );

    // b.yaml becomes invalid YAML: b's routes go (its file is skipped), a's stay.
    dir.write(
        "b.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: b\n  oops: [\n",
    );
    let addr = weir.http;
    eventually(Duration::from_secs(5), "b's routes to be dropped", || {
        let client = client.clone();
        async move {
            let r = get(&client, addr, "b.test", "/", &[]).await.ok()?;
            (r.status == 404).then_some(())
        }
    })
    .await;
    assert_eq!(
        get(&client, weir.http, "a.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    let logs = weir.logs().join("\n");
    assert!(
        logs.contains("not valid YAML") && logs.contains("b.yaml") && logs.contains("\"line\""),
        "no log line naming the file and position:\n{logs}"
    );

    // A file that names an invalid object: only that object is left out.
    dir.write("b.yaml", &format!(
        "{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: bad}}\nspec: {{ingressClassName: weir, rules: [{{host: \"Bad_Host\", http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: b, port: {{number: 80}}}}}}}}]}}}}]}}\n",
        route_yaml("b", "b.test", "/", "Prefix", "b", &b.addr.to_string())
    ));
    eventually(Duration::from_secs(5), "b to serve again", || {
        let client = client.clone();
        async move {
            let r = get(&client, addr, "b.test", "/", &[]).await.ok()?;
            (r.status == 200).then_some(())
        }
    })
    .await;
    assert_eq!(
        get(&client, weir.http, "a.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    eventually(
        Duration::from_secs(5),
        "the invalid host to be logged",
        || {
            let logs = weir.logs().join("\n");
            async move {
                (logs.contains("InvalidHost") && logs.contains("Ingress default/bad")).then_some(())
            }
        },
    )
    .await;
}
