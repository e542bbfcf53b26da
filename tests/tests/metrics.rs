//! The metric series budget: a route costs a fixed number of series however
//! much traffic it gets and whatever paths and clients hit it (the peers'
//! series counts grow with paths and pods). 100 routes under traffic, half
//! of them with a dead upstream so error series appear too. The same
//! scrape checks the README's metrics catalogue and the naming conventions.

use std::collections::HashMap;

use weir_tests::TempDir;
use weir_tests::client;
use weir_tests::route_yaml;
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;

/// The series budget per route.
const BUDGET: usize = 30;

#[tokio::test]
async fn a_route_costs_a_fixed_number_of_series() {
    let up = Upstream::start("up").await;
    // A port nothing listens on: connections are refused (502).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let dir = TempDir::new("metrics-budget");
    let mut yaml = String::new();
    for i in 0..100 {
        let upstream = if i % 2 == 0 { up.addr } else { dead };
        yaml.push_str(&route_yaml(
            &format!("r{i}"),
            &format!("r{i}.test"),
            "/",
            "Prefix",
            &format!("s{i}"),
            &upstream.to_string(),
        ));
        yaml.push_str("---\n");
    }
    dir.write("routes.yaml", &yaml);
    let weir = Weir::serve(&dir.0, &[]).await;
    let http = client::http1();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for i in 0..100 {
        // Different paths and query strings per request: none may become a
        // label value.
        for path in [
            format!("/users/{i}"),
            format!("/orders/{i}?page=2"),
            "/".into(),
        ] {
            let r = client::get(&http, weir.http, &format!("r{i}.test"), &path, &[])
                .await
                .expect("request");
            *statuses.entry(r.status.as_u16()).or_default() += 1;
        }
    }
    // Unrouted traffic counts too, under one fixed route label.
    client::get(&http, weir.http, "nowhere.test", "/x", &[])
        .await
        .expect("request");
    assert_eq!(statuses.get(&200), Some(&150), "{statuses:?}");
    assert_eq!(statuses.get(&502), Some(&150), "{statuses:?}");

    let text = weir.metrics().await.expect("metrics");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let mut per_route: HashMap<String, usize> = HashMap::new();
    for line in &series {
        if let Some(rest) = line.split("route=\"").nth(1) {
            let route = rest.split('"').next().unwrap_or_default();
            *per_route.entry(route.to_string()).or_default() += 1;
        }
        for leak in ["/users", "/orders", "page=2", "127.0.0.1", "r1.test"] {
            assert!(!line.contains(leak), "{leak:?} in a series: {line}");
        }
    }
    let ours: Vec<(&String, &usize)> = per_route
        .iter()
        .filter(|(r, _)| r.starts_with("default/r"))
        .collect();
    assert_eq!(ours.len(), 100, "every route has series: {per_route:?}");
    let worst = ours.iter().map(|(_, n)| **n).max().unwrap_or(0);
    println!(
        "{} series in all; at most {worst} per route (budget {BUDGET})",
        series.len()
    );
    assert!(
        worst <= BUDGET,
        "{worst} series for one route: {per_route:?}"
    );
    assert!(
        series.len() <= 100 * BUDGET + 200,
        "{} series for 100 routes",
        series.len()
    );
    catalogue_documents(&text);
}

/// The README's metrics table: name → type.
fn catalogue(readme: &str) -> HashMap<&str, &str> {
    readme
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `")?.split('|');
            let name = cells.next()?.trim().trim_end_matches('`');
            Some((name, cells.next()?.trim()))
        })
        .collect()
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md")
}

/// Every metric family weir exposes is in the README's catalogue, with the
/// same type.
fn catalogue_documents(text: &str) {
    let readme = readme();
    let documented = catalogue(&readme);
    let mut families = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        if !name.starts_with("weir_") {
            continue;
        }
        families += 1;
        assert_eq!(
            documented.get(name),
            Some(&kind),
            "{name} ({kind}) in the README's metrics table"
        );
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} without _total");
        }
        if kind == "histogram" {
            assert!(
                name.ends_with("_seconds"),
                "histogram {name} not in seconds"
            );
        }
    }
    assert!(families >= 15, "only {families} weir_ families exposed");
}

/// The Grafana dashboard in deploy/ queries only metrics weir has (by the
/// README's catalogue, which the test above ties to /metrics), histogram
/// series by their real suffixes, through the datasource variable.
#[test]
fn the_dashboard_queries_real_metrics() {
    let readme = readme();
    let documented = catalogue(&readme);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/weir-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = std::collections::HashSet::new();
    let mut used = std::collections::HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                let (family, kind) = match name.rsplit_once('_') {
                    Some((f, "bucket" | "sum" | "count")) => (f, Some("histogram")),
                    _ => (name, None),
                };
                let documented_kind = documented.get(family);
                assert!(
                    documented_kind.is_some(),
                    "{title}: {name} is not a weir metric"
                );
                if let Some(kind) = kind {
                    assert_eq!(documented_kind, Some(&kind), "{title}: {name}");
                }
                used.insert(family.to_string());
            }
        }
    }
    // The main families are on it.
    for family in [
        "weir_requests_total",
        "weir_request_duration_seconds",
        "weir_upstream_errors_total",
        "weir_auth_decisions_total",
        "weir_ratelimit_decisions_total",
        "weir_ratelimit_store_duration_seconds",
    ] {
        assert!(used.contains(family), "{family} is not on the dashboard");
    }
}

/// The `weir_…` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("weir_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(&tail[..end]);
        rest = &tail[end..];
    }
    out
}
