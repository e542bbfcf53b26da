//! Local decisions: what a request with a per-client local limit pays.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_ratelimit::local::LocalStore;
use weir_ratelimit::{Algorithm, Bucket, Limit};

fn bench(c: &mut Criterion) {
    let store = LocalStore::new(
        1_000_000,
        prometheus::IntGauge::new("k", "k").expect("gauge"),
    );
    let buckets: Vec<Bucket> = (0..10_000u32)
        .map(|n| Bucket::new(&[b"policy", b"rule", &n.to_be_bytes()]))
        .collect();
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let limit = Limit {
            algorithm,
            requests: 1_000_000,
            period: Duration::from_secs(1),
            burst: 1_000_000,
        };
        let mut i = 0;
        c.bench_function(&format!("local {algorithm:?}, 10k keys"), |b| {
            b.iter(|| {
                i = (i + 1) % buckets.len();
                store.decide(&[(buckets[i], limit)])
            })
        });
    }
    c.bench_function("bucket id (sha-256 of policy, rule, key)", |b| {
        b.iter(|| Bucket::new(&[b"default/api", b"per-user", b"user-1234567"]))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
