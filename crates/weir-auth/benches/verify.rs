//! The cost of a policy on the request path: RS256 / ES256 / HS256 tokens
//! verified in full, the same tokens from the verified-token cache, and an
//! API-key lookup. `cargo bench -p weir-auth --bench verify`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use weir_auth::{AuthMetrics, AuthRuntime, Enforcer};
use weir_snapshot::{
    ApiKeys, Authentication, ClaimHeader, Consumer, JwtAlgorithm, JwtKeys, JwtProvider, Policy,
    Redacted, Snapshot, TokenSource,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn snapshot(auth: Authentication) -> Snapshot {
    let mut policies = BTreeMap::new();
    policies.insert(
        "b/p".to_owned(),
        Policy {
            name: "b/p".into(),
            invalid: None,
            authentication: Some(auth),
            authorization: None,
            rate_limits: None,
        },
    );
    Snapshot {
        replicas: None,
        certificates: Default::default(),
        default_certificate: None,
        policies,
        ..Snapshot::default()
    }
}

fn jwt(keys: JwtKeys, alg: JwtAlgorithm) -> Authentication {
    Authentication {
        optional: false,
        jwt: vec![JwtProvider {
            name: "b/p/main".into(),
            issuer: "https://issuer.test/".into(),
            audiences: vec!["api".into()],
            algorithms: vec![alg],
            keys,
            leeway_secs: 30,
            token: TokenSource::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            claim_headers: vec![ClaimHeader {
                claim: vec!["sub".into()],
                header: "x-user-id".into(),
            }],
            forward_token: true,
        }],
        api_keys: None,
    }
}

fn enforcer(runtime: &AuthRuntime, auth: Authentication) -> std::sync::Arc<Enforcer> {
    runtime
        .build(&snapshot(auth))
        .remove("b/p")
        .expect("enforcer")
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = serde_json::json!({"iss": "https://issuer.test/", "aud": "api", "sub": "u1",
        "exp": jsonwebtoken::get_current_timestamp() + 3600});
    encode(&Header::new(alg), &claims, key).expect("sign")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let registry = prometheus::Registry::new();
    let metrics = AuthMetrics::register(&registry).expect("metrics");
    let cached = AuthRuntime::new(metrics.clone());
    let uncached = AuthRuntime::new(metrics).without_token_cache();
    let hmac = b"0123456789abcdef0123456789abcdef".to_vec();
    let cases = [
        (
            "RS256",
            JwtKeys::Pem(String::from_utf8(fixture("rsa1.pub.pem")).expect("pem")),
            JwtAlgorithm::RS256,
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(&fixture("rsa1.key.pem")).expect("key"),
            ),
        ),
        (
            "ES256",
            JwtKeys::Pem(String::from_utf8(fixture("ec256.pub.pem")).expect("pem")),
            JwtAlgorithm::ES256,
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(&fixture("ec256.key.pem")).expect("key"),
            ),
        ),
        (
            "HS256",
            JwtKeys::Hmac(Redacted(hmac.clone())),
            JwtAlgorithm::HS256,
            token(Algorithm::HS256, &EncodingKey::from_secret(&hmac)),
        ),
    ];
    let run = |e: &Enforcer, auth: &HeaderValue| {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, auth.clone());
        let mut uri = Uri::from_static("/");
        rt.block_on(e.enforce(&mut headers, &mut uri))
            .expect("allowed");
        headers
    };
    for (name, keys, alg, tok) in cases {
        let auth = HeaderValue::from_str(&format!("Bearer {tok}")).expect("header");
        let full = rt.block_on(async { enforcer(&uncached, jwt(keys.clone(), alg)) });
        c.bench_function(&format!("jwt/{name}/verify"), |b| {
            b.iter(|| black_box(run(&full, &auth)))
        });
        let hit = rt.block_on(async { enforcer(&cached, jwt(keys, alg)) });
        c.bench_function(&format!("jwt/{name}/cached"), |b| {
            b.iter(|| black_box(run(&hit, &auth)))
        });
    }
    let digest = |k: &[u8]| -> [u8; 32] {
        ring::digest::digest(&ring::digest::SHA256, k)
            .as_ref()
            .try_into()
            .expect("32 bytes")
    };
    let consumers = (0..1000)
        .map(|i| Consumer {
            name: format!("c{i}"),
            key_hashes: vec![digest(format!("key-{i}").as_bytes())],
        })
        .collect();
    let keys = Authentication {
        optional: false,
        jwt: vec![],
        api_keys: Some(ApiKeys {
            header: Some("x-api-key".into()),
            query_parameter: None,
            consumer_header: "x-consumer".into(),
            consumers,
        }),
    };
    let e = rt.block_on(async { enforcer(&cached, keys) });
    c.bench_function("api_key/1000_consumers", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", HeaderValue::from_static("key-500"));
            let mut uri = Uri::from_static("/");
            rt.block_on(e.enforce(&mut headers, &mut uri))
                .expect("allowed");
            black_box(headers)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
