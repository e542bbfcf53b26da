//! Route matching and path normalization: the per-request work before the
//! upstream call. 10,000 routes as many hosts, and as one host with many
//! paths.

#![allow(missing_docs)] // criterion_main! generates undocumented items

use std::time::Duration;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_proxy::ProxyMetrics;
use weir_proxy::normalize::normalize_path;
use weir_proxy::pool::Pools;
use weir_proxy::router::RouteTable;
use weir_snapshot::{
    HostMatch, PathMatch, Route, RouteAction, Snapshot, Upstream, UpstreamName, VirtualHost,
    WeightedBackend,
};

fn action(i: usize) -> RouteAction {
    RouteAction {
        name: format!("ns/ing-{i}"),
        backends: vec![WeightedBackend {
            upstream: UpstreamName("u".into()),
            weight: 1,
        }],
        timeout_ms: None,
        connect_timeout_ms: None,
        send_timeout_ms: None,
        next_upstream: None,
        max_body_bytes: None,
        access_log_off: false,
        policy: None,
        https_redirect: false,
        hsts: false,
    }
}

fn snapshot(hosts: usize, paths_per_host: usize) -> Snapshot {
    let hosts = (0..hosts)
        .map(|h| VirtualHost {
            host: HostMatch::Exact(format!("svc-{h}.example.com")),
            routes: (0..paths_per_host)
                .map(|p| Route {
                    name: format!("ns/ing-{h}"),
                    path: PathMatch::Prefix(format!("/api/v1/resource-{p}")),
                    action: action(h),
                })
                .collect(),
            fallback: None,
        })
        .collect();
    Snapshot {
        replicas: None,
        certificates: Default::default(),
        default_certificate: None,
        hosts,
        default_backend: None,
        upstreams: [(
            UpstreamName("u".into()),
            Upstream {
                endpoints: vec!["127.0.0.1:8080".parse().unwrap()],
                protocol: Default::default(),
                verify: None,
            },
        )]
        .into(),
        policies: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let metrics = ProxyMetrics::register(&prometheus::Registry::new()).unwrap();
    let pools = Pools::new(Duration::from_secs(1), Duration::from_secs(1));
    let many_hosts = RouteTable::build(
        &snapshot(1_000, 10),
        &pools,
        &Default::default(),
        &Default::default(),
        &metrics,
        Duration::from_secs(1),
        0,
    );
    let one_host = RouteTable::build(
        &snapshot(1, 10_000),
        &pools,
        &Default::default(),
        &Default::default(),
        &metrics,
        Duration::from_secs(1),
        0,
    );

    c.bench_function("route/10k routes over 1k hosts", |b| {
        b.iter(|| {
            many_hosts.find(
                black_box("svc-517.example.com"),
                black_box("/api/v1/resource-7/items/42"),
            )
        })
    });
    c.bench_function("route/10k paths on one host", |b| {
        b.iter(|| {
            one_host.find(
                black_box("svc-0.example.com"),
                black_box("/api/v1/resource-9876/items/42"),
            )
        })
    });
    c.bench_function("route/miss", |b| {
        b.iter(|| {
            many_hosts.find(
                black_box("unknown.example.org"),
                black_box("/api/v1/resource-7"),
            )
        })
    });
    c.bench_function("normalize/canonical", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/users/42/orders")))
    });
    c.bench_function("normalize/dot segments and escapes", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/users/%2e%2e/admin//x/%7euser")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
