//! Access logs end to end: the real binary writing JSON lines to a file,
//! one per request, after the response body was sent.

use std::time::Duration;

use serde_json::Value;
use weir_tests::client;
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, eventually, ingress_yaml, route_yaml};

#[tokio::test]
async fn one_json_line_per_request_with_every_field() {
    let up = Upstream::start("up").await;
    let dir = TempDir::new("access-log");
    let upstream = up.addr.to_string();
    let mut yaml = route_yaml("api", "api.test", "/", "Prefix", "up", &upstream);
    yaml.push_str("---\n");
    for (name, annotations) in [
        ("quiet", "weir.dev/access-log: \"false\""),
        ("partners", ""),
    ] {
        let host = format!("{name}.test");
        yaml.push_str(&ingress_yaml(name, annotations, &host, "/", "Prefix", "up"));
        yaml.push_str("---\n");
    }
    yaml.push_str(
        "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: partners}
spec:
  targetRefs: [{kind: Ingress, name: partners}]
  authentication:
    apiKeys: {header: X-API-Key, secretSelector: {matchLabels: {weir.dev/consumer: \"true\"}}}
  rateLimits:
  - {name: per-consumer, key: {consumer: true}, requests: 1, per: 1m, scope: Local}
---
apiVersion: v1
kind: Secret
metadata: {name: acme, labels: {weir.dev/consumer: \"true\"}}
stringData: {consumer: acme, key: acme-key-0123456789}
",
    );
    dir.write("routes.yaml", &yaml);
    let log_path = dir.0.join("access.log");
    let log_arg = log_path.display().to_string();
    let weir = Weir::serve(&dir.0, &["--access-log", &log_arg]).await;
    let http = client::http1();
    let get =
        |host: &'static str, path: &'static str, headers: Vec<(&'static str, &'static str)>| {
            let http = http.clone();
            let addr = weir.http;
            async move {
                client::get(&http, addr, host, path, &headers)
                    .await
                    .expect("request")
            }
        };
    let api = get("api.test", "/users/7?token=secret-in-query", vec![]).await;
    assert_eq!(api.status, 200);
    assert_eq!(get("quiet.test", "/", vec![]).await.status, 200);
    assert_eq!(get("nowhere.test", "/x", vec![]).await.status, 404);
    let key = vec![("x-api-key", "acme-key-0123456789")];
    assert_eq!(
        get("partners.test", "/orders", key.clone()).await.status,
        200
    );
    assert_eq!(get("partners.test", "/orders", key).await.status, 429);

    let lines: Vec<Value> = eventually(Duration::from_secs(10), "four access-log lines", || {
        let path = log_path.clone();
        async move {
            let text = std::fs::read_to_string(path).ok()?;
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            (lines.len() >= 4).then_some(lines)
        }
    })
    .await;
    assert_eq!(lines.len(), 4, "the quiet route is not logged: {lines:#?}");

    let first = &lines[0];
    for field in [
        "time",
        "request_id",
        "method",
        "host",
        "path",
        "route",
        "upstream",
        "status",
        "bytes",
        "latency_ms",
        "client",
        "user",
        "ratelimit",
        "completed",
    ] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
    assert_eq!(first["request_id"], api.header("x-request-id").expect("id"));
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "api.test");
    assert_eq!(first["path"], "/users/7", "never the query string");
    assert_eq!(first["route"], "default/api");
    assert_eq!(first["upstream"], upstream.as_str());
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], api.body.len() as u64);
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["completed"], true);
    assert!(first["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(
        first["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24)
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.to_string().contains("secret-in-query"))
    );
    assert!(!lines.iter().any(|l| l.to_string().contains("acme-key")));

    let unrouted = &lines[1];
    assert_eq!(unrouted["status"], 404);
    assert_eq!(unrouted["route"], Value::Null);
    assert_eq!(unrouted["upstream"], Value::Null);

    let (admitted, refused) = (&lines[2], &lines[3]);
    assert_eq!(admitted["user"], "acme");
    assert_eq!(admitted["ratelimit"], "allowed");
    assert_eq!(refused["status"], 429);
    assert_eq!(refused["ratelimit"], "rejected");
    assert_eq!(
        refused["upstream"],
        Value::Null,
        "a refused request reaches no upstream"
    );
}
