//! Rate limits end to end: the real `weir serve` binary, real upstreams and
//! real `redis-server` processes started (and killed) by the tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weir_tests::client::{self, Reply};
use weir_tests::redis::{Redis, RedisCluster, TlsRedis};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, api_routes, eventually, metric_value, route_yaml};

fn policy(name: &str, ingress: &str, extra: &str, rules: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{kind: Ingress, name: {ingress}}}]
{extra}  rateLimits:
{rules}"
    )
}

async fn get(weir: &Weir, host: &str, headers: &[(&str, &str)]) -> Reply {
    client::get(&client::http1(), weir.http, host, "/", headers)
        .await
        .expect("request")
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers))
}

async fn metrics(weir: &Weir) -> String {
    weir.metrics().await.expect("metrics")
}

/// The statuses of `n` requests to `api.test`, one after another.
async fn statuses(weir: &Weir, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(weir, "api.test", &[]).await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn local_limits_with_exact_headers_and_shadow_mode() {
    let up = Upstream::start("up").await;
    let dir = TempDir::new("rl-local");
    let upstream = up.addr.to_string();
    dir.write(
        "routes.yaml",
        &format!(
            "{}---\n{}",
            route_yaml("api", "api.test", "/", "Prefix", "api", &upstream),
            route_yaml("tried", "tried.test", "/", "Prefix", "tried", &upstream)
        ),
    );
    // The per-tenant policy, and the trial policy with `trial` as its rule.
    let limits = |trial: &str| {
        format!(
            "{}---\n{}",
            policy(
                "per-tenant",
                "api",
                "  rateLimitHeaders: Both\n",
                "  - {name: per-tenant, key: {header: X-Tenant}, requests: 3, per: 1m, scope: Local}\n"
            ),
            policy("trial", "tried", "", &format!("  - {trial}\n"))
        )
    };
    dir.write(
        "limits.yaml",
        &limits("{name: trial, requests: 1, per: 1m, scope: Local, mode: Shadow}"),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let acme = [("x-tenant", "acme")];

    // GCRA, 3 per minute, burst 3: one token every 20 s.
    let first = get(&weir, "api.test", &acme).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"per-tenant\";q=3;w=60"
    );
    assert_eq!(header(&first, "ratelimit"), "\"per-tenant\";r=2;t=20");
    assert_eq!(header(&first, "x-ratelimit-limit"), "3");
    assert_eq!(header(&first, "x-ratelimit-remaining"), "2");
    assert_eq!(header(&first, "x-ratelimit-reset"), "20");
    let second = get(&weir, "api.test", &acme).await;
    assert_eq!(header(&second, "ratelimit"), "\"per-tenant\";r=1;t=40");
    let third = get(&weir, "api.test", &acme).await;
    assert_eq!(header(&third, "ratelimit"), "\"per-tenant\";r=0;t=60");
    let hits = up.hits.load(Ordering::SeqCst);

    let refused = get(&weir, "api.test", &acme).await;
    assert_eq!(refused.status, 429);
    assert_eq!(header(&refused, "retry-after"), "20");
    assert_eq!(header(&refused, "ratelimit"), "\"per-tenant\";r=0;t=60");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&refused, "content-type"), "application/json");
    assert_eq!(refused.json()["error"], "rate_limited");
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "refused requests never reach the upstream"
    );

    // Another tenant has its own budget; so does a request without one.
    assert_eq!(
        get(&weir, "api.test", &[("x-tenant", "globex")])
            .await
            .status,
        200
    );
    assert_eq!(get(&weir, "api.test", &[]).await.status, 200);

    // Shadow mode: nothing refused, no headers, every would-be refusal counted.
    for _ in 0..5 {
        let r = get(&weir, "tried.test", &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.headers.get("ratelimit").is_none());
    }
    let text = metrics(&weir).await;
    for line in [
        "weir_ratelimit_decisions_total{policy=\"default/trial\",result=\"shadow_rejected\",rule=\"trial\"} 4",
        "weir_ratelimit_decisions_total{policy=\"default/trial\",result=\"allowed\",rule=\"trial\"} 1",
        "weir_ratelimit_decisions_total{policy=\"default/per-tenant\",result=\"rejected\",rule=\"per-tenant\"} 1",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }

    // Limit state survives a snapshot swap that edits another policy.
    dir.write(
        "limits.yaml",
        &limits("{name: trial, requests: 1000, per: 1m, scope: Local}"),
    );
    eventually(
        Duration::from_secs(10),
        "the edited trial policy",
        || async {
            let r = get(&weir, "tried.test", &[]).await;
            r.headers
                .get("ratelimit-policy")
                .is_some_and(|v| v == "\"trial\";q=1000;w=60")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        get(&weir, "api.test", &acme).await.status,
        429,
        "acme's bucket was kept"
    );

    // A renamed rule's decision series leave /metrics; the others stay.
    dir.write(
        "limits.yaml",
        &limits("{name: trial-v2, requests: 1000, per: 1m, scope: Local}"),
    );
    eventually(
        Duration::from_secs(10),
        "the old rule's series dropped",
        || async {
            let r = get(&weir, "tried.test", &[]).await;
            let text = metrics(&weir).await;
            (r.headers
                .get("ratelimit-policy")
                .is_some_and(|v| v == "\"trial-v2\";q=1000;w=60")
                && !text.contains("rule=\"trial\"}"))
            .then_some(text)
        },
    )
    .await;
    let text = metrics(&weir).await;
    assert!(
        text.contains("weir_ratelimit_decisions_total{policy=\"default/per-tenant\",result=\"rejected\",rule=\"per-tenant\"} 2"),
        "the per-tenant series stays:\n{text}"
    );
}

/// A flood of distinct client addresses (as spoofed `X-Forwarded-For`
/// values from a trusted proxy would be) against a local per-IP limit: the
/// store stays within its capacity, every new address is admitted, and the
/// newest address is still limited.
#[tokio::test]
async fn a_flood_of_client_keys_stays_within_the_local_capacity() {
    let up = Upstream::start("up").await;
    let dir = api_routes("rl-flood", up.addr);
    dir.write(
        "limits.yaml",
        &policy(
            "per-ip",
            "api",
            "",
            "  - {name: per-ip, key: {clientIP: true}, requests: 1, per: 1h, scope: Local}\n",
        ),
    );
    let weir = Weir::serve(
        &dir.0,
        &[
            "--trusted-proxies",
            "127.0.0.1/32",
            "--ratelimit-local-capacity",
            "1024",
        ],
    )
    .await;
    let client = client::http1();
    let rss_before = weir.rss_kib();
    let mut last = String::new();
    for n in 0..3000u32 {
        last = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
        let r = client::get(
            &client,
            weir.http,
            "api.test",
            "/",
            &[("x-forwarded-for", &last)],
        )
        .await
        .expect("request");
        assert_eq!(r.status, 200, "new address {last}");
    }
    let r = client::get(
        &client,
        weir.http,
        "api.test",
        "/",
        &[("x-forwarded-for", &last)],
    )
    .await
    .expect("request");
    assert_eq!(r.status, 429, "the newest address keeps its bucket");
    let text = metrics(&weir).await;
    let keys: i64 = metric_value(&text, "weir_ratelimit_local_keys")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no weir_ratelimit_local_keys in {text}"));
    assert!((900..=1024).contains(&keys), "{keys} keys held");
    println!(
        "3000 addresses: {keys} buckets held, RSS {rss_before} -> {} KiB",
        weir.rss_kib()
    );
}

fn global_rules(name: &str, ingress: &str, rule: &str) -> String {
    policy(name, ingress, "", &format!("  - {rule}\n"))
}

/// `api.test` routed to `upstream` under policy `name` with one `rule`.
fn limited_api(tag: &str, upstream: std::net::SocketAddr, name: &str, rule: &str) -> TempDir {
    let dir = api_routes(tag, upstream);
    dir.write("limits.yaml", &global_rules(name, "api", rule));
    dir
}

/// Three replicas serving `dir`, each with `flags`. A busy test machine
/// can hold a Redis decision past the 100 ms default timeout, and a failed
/// decision applies the rule's onStoreFailure instead of the shared limit,
/// which is not what these tests measure: the replicas wait up to 2 s, and
/// [`assert_no_store_failures`] checks that none failed.
async fn three_replicas(dir: &TempDir, flags: &[&str]) -> Vec<Weir> {
    let flags = [flags, &["--redis-timeout", "2s"]].concat();
    let mut replicas = Vec::with_capacity(3);
    for _ in 0..3 {
        replicas.push(Weir::serve(&dir.0, &flags).await);
    }
    replicas
}

/// Every decision of `replicas` came from Redis: no store error, so no
/// onStoreFailure fallback decided anything.
async fn assert_no_store_failures(replicas: &[Weir]) {
    for w in replicas {
        let text = metrics(w).await;
        assert!(
            !text.contains("weir_ratelimit_store_errors_total{"),
            "a store failure during the run:\n{text}"
        );
    }
}

/// What the clients saw of one key during [`hammer`].
#[derive(Default)]
struct KeyLoad {
    admitted: AtomicUsize,
    sent: AtomicUsize,
    other: AtomicUsize,
    // Microseconds since the start: every decision on this key happens
    // between the start and its last answer.
    last_sent: AtomicU64,
    /// When the last request refused (429) was sent. Its decision came
    /// later and found the bucket empty: every token made until then had
    /// gone to an admitted request. Tokens made after it may still sit in
    /// the bucket when the load ends, so the lower bound stops here.
    last_refused_sent: AtomicU64,
    first_answer: AtomicU64,
    last_answer: AtomicU64,
    /// Microseconds of decisions the load may have skipped: see [`stall`].
    stalled: AtomicU64,
}

/// How long a stall before one request may have left the key without a
/// decision beyond what the bucket holds (one second of its rate): the
/// request's decision lies between its sending and its answer, and the
/// decision before it no earlier than the request before it was sent. Only
/// a machine that stops the load for over a second makes this non-zero;
/// the bucket then stays full for that long, and its tokens are lost to
/// the idle load, not to weir.
fn stall(send_gap_us: u64, latency_us: u64) -> u64 {
    (send_gap_us + latency_us).saturating_sub(1_000_000)
}

/// The admitted count and its exact bounds for one key.
struct KeyResult {
    admitted: f64,
    sent: usize,
    other: usize,
    lower: f64,
    upper: f64,
}

/// Six concurrent clients for four seconds, spread over `addrs` and over
/// the `tenants` (an `X-Tenant` header each; none when empty), against a
/// GCRA limit of 50/s with a burst of 50 per key.
async fn hammer(addrs: &[std::net::SocketAddr], tenants: &[&'static str]) -> Vec<KeyResult> {
    let keys = tenants.len().max(1);
    let loads: Arc<Vec<KeyLoad>> = Arc::new(
        (0..keys)
            .map(|_| KeyLoad {
                first_answer: AtomicU64::new(u64::MAX),
                ..KeyLoad::default()
            })
            .collect(),
    );
    let run = Duration::from_secs(4);
    let start = Instant::now();
    let since = move || u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for c in 0..6 {
        let (loads, addrs, tenants) = (loads.clone(), addrs.to_vec(), tenants.to_vec());
        tasks.push(tokio::spawn(async move {
            let client = client::http1();
            let mut i = c;
            while start.elapsed() < run {
                let addr = addrs[i % addrs.len()];
                let k = (i / addrs.len()) % keys;
                i += 1;
                let headers: Vec<(&str, &str)> = tenants
                    .get(k)
                    .map(|t| vec![("x-tenant", *t)])
                    .unwrap_or_default();
                let load = &loads[k];
                let sent_at = since();
                let previous = load.last_sent.fetch_max(sent_at, Ordering::Relaxed);
                let r = client::get(&client, addr, "api.test", "/", &headers).await;
                let answered = since();
                if previous > 0 {
                    let s = stall(sent_at.saturating_sub(previous), answered - sent_at);
                    load.stalled.fetch_add(s, Ordering::Relaxed);
                }
                load.first_answer.fetch_min(answered, Ordering::Relaxed);
                load.last_answer.fetch_max(answered, Ordering::Relaxed);
                load.sent.fetch_add(1, Ordering::Relaxed);
                match r.map(|r| r.status.as_u16()) {
                    Ok(200) => load.admitted.fetch_add(1, Ordering::Relaxed),
                    Ok(429) => {
                        load.last_refused_sent.fetch_max(sent_at, Ordering::Relaxed);
                        0
                    }
                    _ => load.other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
    loads
        .iter()
        .map(|l| {
            let outer = secs(&l.last_answer);
            let inner = secs(&l.last_refused_sent) - secs(&l.first_answer);
            let r = KeyResult {
                admitted: l.admitted.load(Ordering::Relaxed) as f64,
                sent: l.sent.load(Ordering::Relaxed),
                other: l.other.load(Ordering::Relaxed),
                // GCRA, 50/s with a burst of 50: burst + rate × time.
                upper: 50.0 + 50.0 * outer,
                lower: 50.0 + 50.0 * (inner - secs(&l.stalled)),
            };
            println!(
                "admitted {} of {}; {:.4}..{:.4} of burst + rate x time; load stalled {:.3} s",
                r.admitted,
                r.sent,
                r.admitted / r.upper,
                r.admitted / r.lower,
                secs(&l.stalled)
            );
            r
        })
        .collect()
}

/// The accuracy every shared limit must reach, per key.
fn assert_exact(results: &[KeyResult]) {
    for r in results {
        assert_eq!(r.other, 0, "only 200 and 429");
        assert!(
            r.sent as f64 > r.upper * 1.5,
            "the load must exceed the limit: {}",
            r.sent
        );
        // Exact on both sides (one request for the half-open end of the
        // span). The lower bound runs from the first answer to the last
        // refusal (`KeyLoad::last_refused_sent`), and leaves out the time
        // the load itself stalled for over a second (`stall`), which a busy
        // 2-core machine can reach; it is printed.
        assert!(r.admitted <= r.upper + 1.0, "{} > {}", r.admitted, r.upper);
        assert!(r.admitted >= r.lower - 1.0, "{} < {}", r.admitted, r.lower);
    }
}

/// Three replicas share one Redis: admitted requests stay within
/// burst + rate × time however the load is spread, with one script run in
/// Redis per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_across_three_replicas() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let dir = limited_api(
        "rl-global",
        up.addr,
        "shared",
        "{name: shared, requests: 50, per: 1s, burst: 50}",
    );
    let url = redis.url();
    let replicas = three_replicas(&dir, &["--redis-url", &url]).await;
    let addrs: Vec<_> = replicas.iter().map(|w| w.http).collect();
    let results = hammer(&addrs, &[]).await;
    // Store failures first: a decision that fell back to onStoreFailure
    // would break the bounds below and hide why.
    assert_no_store_failures(&replicas).await;
    assert_exact(&results);
    let sent = results[0].sent as u64;
    // One round trip per request: exactly one successful script run per
    // decision. Beside them only NOSCRIPT refusals, at most one per request
    // in flight when a replica first uses the script (6 clients).
    let decided = redis.calls("evalsha") + redis.calls("eval");
    let noscript = redis.command_stat("evalsha", "failed_calls");
    println!("{decided} script runs and {noscript} NOSCRIPT replies for {sent} requests");
    assert!(decided <= sent, "{decided} script runs for {sent} requests");
    assert!(noscript <= 6, "{noscript} NOSCRIPT replies");
}

/// A limit far from exhausted is leased: each replica takes a few tokens
/// per script run and spends them without a round trip, and still never
/// admits a request Redis did not grant. A burst of 6000 that never
/// refills (1 per hour) shared by three replicas: leases of 13 tokens
/// (1/150 of the burst per replica), so exactly the burst is admitted
/// less at most the tokens still leased when the clients stop (1 %), in
/// about one script run per ten requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roomy_limits_are_leased_and_still_exact() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let dir = limited_api(
        "rl-lease",
        up.addr,
        "roomy",
        "{name: roomy, requests: 1, per: 1h, burst: 6000}",
    );
    let url = redis.url();
    let replicas = three_replicas(&dir, &["--redis-url", &url, "--ratelimit-replicas", "3"]).await;
    let addrs: Arc<Vec<_>> = Arc::new(replicas.iter().map(|w| w.http).collect());
    let (admitted, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for c in 0..6 {
        let (addrs, admitted, other) = (addrs.clone(), admitted.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let client = client::http1();
            // Each client stops at its first 429 (or at the deadline, which
            // the assertions below then catch).
            for i in c.. {
                if Instant::now() > deadline {
                    break;
                }
                let addr = addrs[i % addrs.len()];
                match client::get(&client, addr, "api.test", "/", &[]).await {
                    Ok(r) if r.status == 200 => admitted.fetch_add(1, Ordering::Relaxed),
                    Ok(r) if r.status == 429 => break,
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let admitted = admitted.load(Ordering::Relaxed);
    let runs = redis.calls("evalsha") + redis.calls("eval");
    println!("admitted {admitted} of a burst of 6000 in {runs} script runs");
    assert_eq!(other.load(Ordering::Relaxed), 0, "only 200 and 429");
    assert_no_store_failures(&replicas).await;
    assert!(
        admitted <= 6000,
        "{admitted} admitted: more than Redis granted"
    );
    assert!(
        admitted >= 5940,
        "{admitted} admitted: more than 1 % left leased"
    );
    assert!(
        runs * 5 <= admitted as u64,
        "{runs} script runs for {admitted} requests: not leased"
    );
    for w in &replicas {
        let text = metrics(w).await;
        let leased =
            metric_value(&text, "weir_ratelimit_leased_total").and_then(|v| v.parse::<f64>().ok());
        assert!(
            leased.is_some_and(|n| n > 100.0),
            "{leased:?} leased decisions"
        );
    }
}

/// The same accuracy on a Redis Cluster of three masters: each tenant's
/// bucket lives in one slot, the tenants spread over the masters, and every
/// decision is still one script run on the master that owns the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await;
    let up = Upstream::start("up").await;
    let dir = limited_api(
        "rl-cluster",
        up.addr,
        "tenants",
        "{name: per-tenant, key: {header: X-Tenant}, requests: 50, per: 1s, burst: 50}",
    );
    // One seed is enough: the client learns the slot map from it.
    let seed = cluster.nodes[0].url();
    let replicas = three_replicas(&dir, &["--redis-url", &seed, "--redis-cluster"]).await;
    let addrs: Vec<_> = replicas.iter().map(|w| w.http).collect();
    let results = hammer(&addrs, &["acme", "globex", "initech"]).await;
    // Store failures first: a decision that fell back to onStoreFailure
    // would break the bounds below and hide why.
    assert_no_store_failures(&replicas).await;
    assert_exact(&results);
    let sent: u64 = results.iter().map(|r| r.sent as u64).sum();
    let per_node: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.calls("evalsha") + n.calls("eval"))
        .collect();
    let noscript: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.command_stat("evalsha", "failed_calls"))
        .sum();
    println!(
        "script runs per master {per_node:?} and {noscript} NOSCRIPT replies for {sent} requests"
    );
    let decided: u64 = per_node.iter().sum();
    assert!(decided <= sent, "{decided} script runs for {sent} requests");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "the tenants' buckets spread over the masters: {per_node:?}"
    );
    // At most one per request in flight, per master, when a replica first
    // uses the script there.
    assert!(noscript <= 6 * 3, "{noscript} NOSCRIPT replies");
    for r in &replicas {
        let text = metrics(r).await;
        assert!(
            !text.contains("weir_ratelimit_store_errors_total{"),
            "no store errors on a healthy cluster: {text}"
        );
    }
}

/// A Redis that requires a password, given as a mounted Secret key would be
/// (`--redis-password-file`): limits are shared through it, no store error.
#[tokio::test]
async fn a_password_from_a_file_authenticates_to_redis() {
    let redis = Redis::start_with_password("s3cret-from-a-secret").await;
    let up = Upstream::start("up").await;
    let dir = limited_api(
        "rl-auth",
        up.addr,
        "shared",
        "{name: shared, requests: 2, per: 1m, onStoreFailure: Deny}",
    );
    // Mounted Secret files often end with a newline.
    dir.write("redis-password", "s3cret-from-a-secret\n");
    let password = dir.0.join("redis-password");
    let weir = Weir::serve(
        &dir.0,
        &[
            "--redis-url",
            &redis.url(),
            "--redis-password-file",
            password.to_str().expect("utf-8 path"),
            "--redis-timeout",
            "2s",
        ],
    )
    .await;
    assert_eq!(
        statuses(&weir, 3).await,
        [200, 200, 429],
        "decided in Redis, not denied"
    );
    assert!(redis.calls("evalsha") + redis.calls("eval") >= 3);
    let text = metrics(&weir).await;
    assert!(
        !text.contains("weir_ratelimit_store_errors_total{"),
        "{text}"
    );
}

/// `rediss://` to a Redis whose certificate a private CA signed, trusted
/// through `--redis-ca-file`; without it, the system's roots refuse the
/// certificate, and the rule's onStoreFailure answers.
#[tokio::test]
async fn rediss_with_a_private_ca() {
    let tls = TlsRedis::start().await;
    let up = Upstream::start("up").await;
    let dir = limited_api(
        "rl-tls",
        up.addr,
        "shared",
        "{name: shared, requests: 2, per: 1m, onStoreFailure: Deny}",
    );
    let url = tls.url();
    let ca = tls.ca_file.to_str().expect("utf-8 path");
    // A TLS handshake on a busy machine can outlast the 100 ms default.
    let trusted = Weir::serve(
        &dir.0,
        &[
            "--redis-url",
            &url,
            "--redis-ca-file",
            ca,
            "--redis-timeout",
            "2s",
        ],
    )
    .await;
    assert_eq!(
        statuses(&trusted, 3).await,
        [200, 200, 429],
        "decided in Redis over TLS"
    );
    assert!(tls.redis.calls("evalsha") + tls.redis.calls("eval") >= 3);

    let untrusted = Weir::serve(&dir.0, &["--redis-url", &url]).await;
    let r = get(&untrusted, "api.test", &[]).await;
    assert_eq!(r.status, 503, "an unverified Redis is not used");
    assert_eq!(r.json()["error"], "rate_limit_unavailable");
}

/// Redis dies under load: no 5xx except the documented 503 of
/// `onStoreFailure: Deny`; `Allow` admits everything; `LocalShare` enforces
/// the replica's share; Redis back on the same port: limits are global again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failure_applies_on_store_failure_and_recovers() {
    let mut redis = Redis::start().await;
    let port = redis.port;
    let up = Upstream::start("up").await;
    let dir = TempDir::new("rl-failure");
    let upstream = up.addr.to_string();
    dir.write(
        "routes.yaml",
        &[
            route_yaml("open", "open.test", "/", "Prefix", "open", &upstream),
            route_yaml("closed", "closed.test", "/", "Prefix", "closed", &upstream),
            route_yaml("shared", "shared.test", "/", "Prefix", "shared", &upstream),
        ]
        .join("---\n"),
    );
    dir.write(
        "limits.yaml",
        &[
            global_rules(
                "open",
                "open",
                "{name: open, requests: 1000, per: 1m, onStoreFailure: Allow}",
            ),
            global_rules(
                "closed",
                "closed",
                "{name: closed, requests: 1000, per: 1m, onStoreFailure: Deny}",
            ),
            global_rules(
                "shared",
                "shared",
                "{name: shared, requests: 10, per: 1m, onStoreFailure: LocalShare}",
            ),
        ]
        .join("---\n"),
    );
    let weir = Weir::serve(
        &dir.0,
        &["--redis-url", &redis.url(), "--ratelimit-replicas", "2"],
    )
    .await;
    for host in ["open.test", "closed.test", "shared.test"] {
        assert_eq!(get(&weir, host, &[]).await.status, 200, "{host}");
    }

    redis.kill();
    let mut statuses = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for _ in 0..20 {
        for host in ["open.test", "closed.test", "shared.test"] {
            let r = get(&weir, host, &[]).await;
            if r.status == 503 {
                assert_eq!(r.json()["error"], "rate_limit_unavailable");
                assert_eq!(header(&r, "retry-after"), "1");
            }
            *statuses.entry((host, r.status.as_u16())).or_default() += 1;
        }
    }
    assert_eq!(statuses.get(&("open.test", 200)), Some(&20), "{statuses:?}");
    assert_eq!(
        statuses.get(&("closed.test", 503)),
        Some(&20),
        "{statuses:?}"
    );
    // Half of 10 per minute on this replica, fresh local buckets.
    assert_eq!(
        statuses.get(&("shared.test", 200)),
        Some(&5),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get(&("shared.test", 429)),
        Some(&15),
        "{statuses:?}"
    );
    let text = metrics(&weir).await;
    assert!(
        text.contains("weir_ratelimit_store_circuit_open 1"),
        "{text}"
    );
    assert!(
        text.contains("result=\"store_failure_denied\",rule=\"closed\"} 20"),
        "{text}"
    );

    // Back on the same port: no restart of weir needed.
    let _redis = Redis::start_on(port).await;
    eventually(
        Duration::from_secs(20),
        "global limits to resume",
        || async { (get(&weir, "closed.test", &[]).await.status == 200).then_some(()) },
    )
    .await;
    let text = metrics(&weir).await;
    assert!(
        text.contains("weir_ratelimit_store_circuit_open 0"),
        "{text}"
    );
    assert!(_redis.calls("evalsha") + _redis.calls("eval") >= 1);
}
