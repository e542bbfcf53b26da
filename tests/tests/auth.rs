//! Authentication end to end: the real `weir serve` binary, a real JWKS
//! server, real upstreams, policies and Secrets from manifest files.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use weir_tests::client::{self, Reply};
use weir_tests::jwt::{JwksServer, fixture_yaml_block, now, rsa_jwk, sign, signing_key};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{TempDir, api_routes, eventually, route_yaml};

const HMAC: &str = "an-hmac-secret-of-at-least-32-bytes!";

fn claims(iss: &str) -> Value {
    json!({
        "iss": iss,
        "aud": "api",
        "sub": format!("user-of-{iss}"),
        "exp": now() + 600,
        "roles": ["admin", "dev"],
        "jti": format!("{}", rand_u64()),
    })
}

fn rand_u64() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    (N.fetch_add(1, Ordering::Relaxed) as u64) ^ (now() << 20)
}

fn policy_yaml(jwks_uri: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {{name: api-auth}}
spec:
  targetRefs: [{{kind: Ingress, name: api}}]
  authentication:
    jwt:
      providers:
      - name: rs
        issuer: https://rs.test/
        audiences: [api]
        jwks: {{uri: \"{jwks_uri}\"}}
        claimToHeaders: [{{claim: sub, header: X-User-Id}}, {{claim: roles, header: X-Roles}}]
      - name: es
        issuer: https://es.test/
        audiences: [api]
        publicKey: {{name: es-key}}
        claimToHeaders: [{{claim: sub, header: X-User-Id}}]
      - name: ed
        issuer: https://ed.test/
        audiences: [api]
        publicKey: {{name: ed-key}}
        claimToHeaders: [{{claim: sub, header: X-User-Id}}]
      - name: hs
        issuer: https://hs.test/
        audiences: [api]
        hmacSecret: {{name: hs-key}}
        claimToHeaders: [{{claim: sub, header: X-User-Id}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: es-key}}
stringData:
  key.pem: |
{}---
apiVersion: v1
kind: Secret
metadata: {{name: ed-key}}
stringData:
  key.pem: |
{}---
apiVersion: v1
kind: Secret
metadata: {{name: hs-key}}
stringData: {{secret: \"{HMAC}\"}}
",
        fixture_yaml_block("ec256.pub.pem", 4),
        fixture_yaml_block("ed25519.pub.pem", 4),
    )
}

async fn call(weir: &Weir, token: Option<&str>, extra: &[(&str, &str)]) -> Reply {
    let c = client::http1();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    client::get(&c, weir.http, "api.test", "/", &headers)
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_providers_and_attacks() {
    let jwks = JwksServer::start(vec![rsa_jwk("rsa1", "k1")]).await;
    let up = Upstream::start("api").await;
    let dir = api_routes("auth-jwt", up.addr);
    dir.write("policy.yaml", &policy_yaml(&jwks.uri()));
    // The identity provider is down at start: weir stays unready (it has
    // tried, and failed, at least twice) until the JWKS can be fetched.
    jwks.set_available(false);
    let weir = Weir::serve_unready(&dir.0, &[]);
    eventually(
        Duration::from_secs(10),
        "two failed JWKS fetches",
        || async { (jwks.hits.load(Ordering::Relaxed) >= 2).then_some(()) },
    )
    .await;
    assert_eq!(weir.readyz().await, Some(503), "not ready without the JWKS");
    jwks.set_available(true);
    weir.await_ready().await;

    let rs = signing_key("rsa1");
    let valid = [
        (
            "RS256",
            sign(
                Algorithm::RS256,
                &rs,
                Some("k1"),
                &claims("https://rs.test/"),
            ),
        ),
        (
            "ES256",
            sign(
                Algorithm::ES256,
                &signing_key("ec256"),
                None,
                &claims("https://es.test/"),
            ),
        ),
        (
            "EdDSA",
            sign(
                Algorithm::EdDSA,
                &signing_key("ed25519"),
                None,
                &claims("https://ed.test/"),
            ),
        ),
        (
            "HS256",
            sign(
                Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(HMAC.as_bytes()),
                None,
                &claims("https://hs.test/"),
            ),
        ),
    ];
    for (name, token) in &valid {
        let r = call(&weir, Some(token), &[("x-user-id", "spoofed")]).await;
        assert_eq!(r.status, 200, "{name}: {:?}", r.body);
        let echo = r.json();
        let user = echo["headers"]["x-user-id"].as_str().unwrap_or_default();
        assert!(
            user.starts_with("user-of-https://"),
            "{name}: the claim replaces the client's header: {user:?}"
        );
        assert!(!user.contains("spoofed"), "{name}");
    }
    let r = call(&weir, Some(&valid[0].1), &[]).await;
    assert_eq!(
        r.json()["headers"]["x-roles"],
        "admin,dev",
        "array claims joined with commas"
    );

    let hits_before = up.hits.load(Ordering::Relaxed);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("https://rs.test/");
        f(&mut c);
        sign(Algorithm::RS256, &rs, Some("k1"), &c)
    };
    let rsa_pub = weir_tests::jwt::fixture("rsa1.pub.pem");
    let attacks: Vec<(&str, String)> = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 60))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 600))),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.test/")),
        ),
        ("wrong audience", with(&|c| c["aud"] = json!("other"))),
        (
            "bad signature",
            sign(
                Algorithm::RS256,
                &signing_key("rsa2"),
                Some("k1"),
                &claims("https://rs.test/"),
            ),
        ),
        ("alg none", {
            use base64::Engine;
            let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
            format!(
                "{}.{}.",
                b(br#"{"alg":"none"}"#),
                b(claims("https://rs.test/").to_string().as_bytes())
            )
        }),
        (
            "HS256 signed with the RSA public key",
            sign(
                Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(&rsa_pub),
                Some("k1"),
                &claims("https://rs.test/"),
            ),
        ),
        (
            "unknown kid",
            sign(
                Algorithm::RS256,
                &signing_key("rsa2"),
                Some("nope"),
                &claims("https://rs.test/"),
            ),
        ),
        ("malformed base64", "eyJhbGciOiJSUzI1NiJ9.%%%.***".into()),
        (
            "oversized",
            format!("{}.{}.x", "a".repeat(6000), "b".repeat(6000)),
        ),
    ];
    for (name, token) in &attacks {
        let r = call(&weir, Some(token), &[]).await;
        assert!(
            r.status == 401 || r.status == 431,
            "{name}: {} {:?}",
            r.status,
            r.body
        );
        if r.status == 401 {
            assert_eq!(r.error_code(), "invalid_token", "{name}");
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{name}: {challenge}"
            );
        }
    }
    let r = call(&weir, None, &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (401, "missing_credentials".into())
    );
    assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="weir""#));
    assert_eq!(
        up.hits.load(Ordering::Relaxed),
        hits_before,
        "no refused request reached the upstream"
    );

    // Decisions are counted per policy.
    let text = weir.metrics().await.expect("metrics");
    assert!(
        text.contains(
            r#"weir_auth_decisions_total{policy="default/api-auth",result="unauthenticated"}"#
        ),
        "{text}"
    );
}

/// Key rotation at the identity provider under load, then the provider
/// going down: not one 401, because an unknown `kid` triggers a refetch and
/// fetched keys outlive the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_and_outage_cost_no_requests() {
    let jwks = JwksServer::start(vec![rsa_jwk("rsa1", "k1")]).await;
    let up = Upstream::start("api").await;
    let dir = api_routes("auth-rotation", up.addr);
    dir.write(
        "policy.yaml",
        &format!(
            "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {{name: rs}}
spec:
  targetRefs: [{{kind: Namespace, name: default}}]
  authentication:
    jwt:
      providers: [{{name: rs, issuer: \"https://rs.test/\", audiences: [api], jwks: {{uri: \"{}\"}}}}]
",
            jwks.uri()
        ),
    );
    let weir = Arc::new(Weir::serve(&dir.0, &[]).await);

    // The signer the "identity provider" currently uses.
    let signer: Arc<Mutex<(&'static str, &'static str)>> = Arc::new(Mutex::new(("rsa1", "k1")));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (weir, signer, stop, ok, failed) = (
            weir.clone(),
            signer.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let c = client::http1();
            while !stop.load(Ordering::Relaxed) {
                // A fresh token each time, so the verified-token cache never
                // hides a key problem.
                let (key, kid) = *signer.lock().unwrap();
                let token = sign(
                    Algorithm::RS256,
                    &signing_key(key),
                    Some(kid),
                    &claims("https://rs.test/"),
                );
                let auth = format!("Bearer {token}");
                match client::get(&c, weir.http, "api.test", "/", &[("authorization", &auth)]).await
                {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!(
                        "{} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(e) => failed.lock().unwrap().push(e),
                }
            }
        }));
    }
    let wait_ok = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            eventually(
                Duration::from_secs(20),
                "requests to keep succeeding",
                || {
                    let ok = ok.clone();
                    async move { (ok.load(Ordering::Relaxed) >= target).then_some(()) }
                },
            )
            .await;
        }
    };
    wait_ok(30).await;
    // Rotation: the provider publishes k2 and signs with it from now on.
    jwks.set_keys(vec![rsa_jwk("rsa1", "k1"), rsa_jwk("rsa2", "k2")]);
    *signer.lock().unwrap() = ("rsa2", "k2");
    wait_ok(60).await;
    // Outage: the provider is down; cached keys keep verifying.
    jwks.stop();
    wait_ok(60).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let failed: Vec<String> = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests, first: {:?}",
        failed.len(),
        failed.first()
    );
    let text = weir.metrics().await.expect("metrics");
    let refetches = format!(
        "weir_jwks_unknown_kid_refetches_total{{source=\"{}\"}} 1",
        jwks.uri()
    );
    assert!(
        text.contains(&refetches),
        "exactly one refetch for the rotation:\n{text}"
    );
    println!(
        "rotation + outage: {} requests, 0 failed",
        ok.load(Ordering::Relaxed)
    );
}

fn consumer_yaml(keys: &[(&str, &str)]) -> String {
    let data: Vec<String> = keys.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: acme, labels: {{weir.dev/consumer: \"true\"}}}}
stringData: {{{}}}
",
        data.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rotate_and_revoke() {
    let up = Upstream::start("partners").await;
    let dir = api_routes("auth-apikeys", up.addr);
    dir.write(
        "policy.yaml",
        "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: partners}
spec:
  targetRefs: [{kind: Service, name: api}]
  authentication:
    apiKeys:
      header: X-API-Key
      queryParameter: api_key
      secretSelector: {matchLabels: {weir.dev/consumer: \"true\"}}
",
    );
    dir.write(
        "consumer.yaml",
        &consumer_yaml(&[("key", "first-key-0123456789")]),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let c = client::http1();
    let status = |key: &'static str| {
        let c = c.clone();
        let addr = weir.http;
        async move {
            client::get(&c, addr, "api.test", "/", &[("x-api-key", key)])
                .await
                .expect("request")
        }
    };
    let r = status("first-key-0123456789").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let echo = r.json();
    assert_eq!(echo["headers"]["x-consumer"], "acme");
    assert!(
        echo["headers"].get("x-api-key").is_none(),
        "the key is not forwarded"
    );
    let r = client::get(
        &c,
        weir.http,
        "api.test",
        "/p?api_key=first-key-0123456789&x=1",
        &[],
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/p?x=1", "the query key is not forwarded");
    assert_eq!(status("wrong").await.status, 401);

    // Rotation: add a second key; both work.
    dir.write(
        "consumer.yaml",
        &consumer_yaml(&[
            ("key", "first-key-0123456789"),
            ("key2", "second-key-0123456789"),
        ]),
    );
    eventually(
        Duration::from_secs(10),
        "the second key to work",
        || async { (status("second-key-0123456789").await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(status("first-key-0123456789").await.status, 200);
    // Revocation: drop the first key; it is refused from the next snapshot.
    dir.write(
        "consumer.yaml",
        &consumer_yaml(&[("key2", "second-key-0123456789")]),
    );
    eventually(
        Duration::from_secs(10),
        "the revoked key to be refused",
        || async { (status("first-key-0123456789").await.status == 401).then_some(()) },
    )
    .await;
    assert_eq!(status("second-key-0123456789").await.status, 200);
    let logs = weir.logs().join("\n");
    assert!(
        !logs.contains("first-key-0123456789"),
        "keys never appear in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_fails_closed_on_its_targets_only() {
    let up = Upstream::start("u").await;
    let dir = TempDir::new("auth-invalid");
    dir.write(
        "a.yaml",
        &route_yaml(
            "locked",
            "locked.test",
            "/",
            "Prefix",
            "a",
            &up.addr.to_string(),
        ),
    );
    dir.write(
        "b.yaml",
        &route_yaml(
            "free",
            "free.test",
            "/",
            "Prefix",
            "b",
            &up.addr.to_string(),
        ),
    );
    dir.write(
        "policy.yaml",
        "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: broken}
spec:
  targetRefs: [{kind: Ingress, name: locked}]
  authentication:
    jwt:
      providers: [{name: a, issuer: x, hmacSecret: {name: missing}}]
",
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let c = client::http1();
    let r = client::get(&c, weir.http, "locked.test", "/", &[])
        .await
        .expect("request");
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (503, "policy_invalid".into())
    );
    let r = client::get(&c, weir.http, "free.test", "/", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let logs = weir.logs().join("\n");
    assert!(
        logs.contains("SecretNotFound"),
        "the diagnostic is logged:\n{logs}"
    );
}

/// OIDC discovery: the JWKS URI comes from the issuer's
/// `.well-known/openid-configuration`; the token is read from a cookie and
/// authentication is optional (no credentials pass anonymously, bad ones
/// do not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_cookie_and_optional_mode() {
    let idp = JwksServer::start(vec![rsa_jwk("rsa1", "k1")]).await;
    let up = Upstream::start("api").await;
    let dir = api_routes("auth-oidc", up.addr);
    dir.write(
        "policy.yaml",
        &format!(
            "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {{name: oidc}}
spec:
  targetRefs: [{{kind: Ingress, name: api}}]
  authentication:
    mode: Optional
    jwt:
      providers:
      - name: idp
        issuer: \"{}\"
        audiences: [api]
        oidcDiscovery: true
        tokenFrom: {{cookie: session}}
        claimToHeaders: [{{claim: sub, header: X-User-Id}}]
",
            idp.issuer()
        ),
    );
    let weir = Weir::serve(&dir.0, &[]).await;
    let c = client::http1();
    let token = sign(
        Algorithm::RS256,
        &signing_key("rsa1"),
        Some("k1"),
        &claims(&idp.issuer()),
    );
    let cookie = format!("theme=dark; session={token}");
    let r = client::get(&c, weir.http, "api.test", "/", &[("cookie", &cookie)])
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["headers"]["x-user-id"],
        format!("user-of-{}", idp.issuer())
    );
    let r = client::get(&c, weir.http, "api.test", "/", &[("x-user-id", "spoofed")])
        .await
        .expect("request");
    assert_eq!(r.status, 200, "anonymous requests pass in Optional mode");
    assert!(
        r.json()["headers"].get("x-user-id").is_none(),
        "and carry no identity"
    );
    let r = client::get(
        &c,
        weir.http,
        "api.test",
        "/",
        &[("cookie", "session=garbage")],
    )
    .await
    .expect("request");
    assert_eq!(
        r.status, 401,
        "a bad token is refused even in Optional mode"
    );
}
