//! The enforcer against real tokens signed with the test keys in
//! `tests/fixtures/jwt`: every algorithm family passes, every attack and
//! malformed token is refused with the right status and code.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use weir_auth::{AuthMetrics, AuthRuntime, Rejection};
use weir_snapshot::{
    ApiKeys, Authentication, Authorization, ClaimHeader, ClaimRule, ClaimTest, Consumer,
    JwtAlgorithm, JwtKeys, JwtProvider, Policy, Redacted, Snapshot, TokenSource,
};

const HMAC: &[u8] = b"0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn provider(keys: JwtKeys, algorithms: Vec<JwtAlgorithm>) -> JwtProvider {
    JwtProvider {
        name: "t/p/main".into(),
        issuer: "https://issuer.test/".into(),
        audiences: vec!["api".into()],
        algorithms,
        keys,
        leeway_secs: 0,
        token: TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        claim_headers: vec![
            ClaimHeader {
                claim: vec!["sub".into()],
                header: "x-user-id".into(),
            },
            ClaimHeader {
                claim: vec!["realm".into(), "roles".into()],
                header: "x-roles".into(),
            },
        ],
        forward_token: true,
    }
}

fn policy(authentication: Authentication, authorization: Option<Authorization>) -> Snapshot {
    let mut policies = BTreeMap::new();
    policies.insert(
        "t/p".to_owned(),
        Policy {
            name: "t/p".into(),
            invalid: None,
            authentication: Some(authentication),
            authorization,
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

fn jwt_only(p: JwtProvider) -> Snapshot {
    policy(
        Authentication {
            optional: false,
            jwt: vec![p],
            api_keys: None,
        },
        None,
    )
}

fn claims() -> Value {
    json!({
        "iss": "https://issuer.test/",
        "aud": "api",
        "sub": "user-1",
        "exp": now() + 600,
        "realm": {"roles": ["admin", "dev"]},
    })
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("sign")
}

struct Run {
    runtime: AuthRuntime,
}

impl Run {
    fn new() -> Self {
        let registry = prometheus::Registry::new();
        Run {
            runtime: AuthRuntime::new(AuthMetrics::register(&registry).expect("metrics")),
        }
    }

    async fn call(
        &self,
        snapshot: &Snapshot,
        headers: &[(&str, &str)],
        uri: &str,
    ) -> Result<(HeaderMap, Uri), Rejection> {
        let policies = self.runtime.build(snapshot);
        let enforcer = policies.get("t/p").expect("policy built");
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut uri: Uri = uri.parse().unwrap();
        enforcer.enforce(&mut h, &mut uri).await.map(|_| (h, uri))
    }

    async fn bearer(&self, snapshot: &Snapshot, token: &str) -> Result<HeaderMap, Rejection> {
        let auth = format!("Bearer {token}");
        self.call(
            snapshot,
            &[("authorization", &auth), ("x-user-id", "spoofed")],
            "/",
        )
        .await
        .map(|(h, _)| h)
    }
}

fn refused(r: Result<HeaderMap, Rejection>, why: &str) -> Rejection {
    match r {
        Ok(_) => panic!("{why}: accepted"),
        Err(r) => {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: {r:?}");
            r
        }
    }
}

#[tokio::test]
async fn every_algorithm_family_verifies() {
    let run = Run::new();
    let cases: Vec<(&str, Algorithm, EncodingKey, JwtKeys, Vec<JwtAlgorithm>)> = vec![
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&fixture("rsa1.key.pem")).unwrap(),
            JwtKeys::Pem(String::from_utf8(fixture("rsa1.pub.pem")).unwrap()),
            vec![JwtAlgorithm::RS256, JwtAlgorithm::PS256],
        ),
        (
            "PS256",
            Algorithm::PS256,
            EncodingKey::from_rsa_pem(&fixture("rsa1.key.pem")).unwrap(),
            JwtKeys::Pem(String::from_utf8(fixture("rsa1.pub.pem")).unwrap()),
            vec![JwtAlgorithm::RS256, JwtAlgorithm::PS256],
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&fixture("ec256.key.pem")).unwrap(),
            JwtKeys::Pem(String::from_utf8(fixture("ec256.pub.pem")).unwrap()),
            vec![JwtAlgorithm::ES256],
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture("ed25519.key.pem")).unwrap(),
            JwtKeys::Pem(String::from_utf8(fixture("ed25519.pub.pem")).unwrap()),
            vec![JwtAlgorithm::EdDSA],
        ),
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(HMAC),
            JwtKeys::Hmac(Redacted(HMAC.to_vec())),
            vec![JwtAlgorithm::HS256],
        ),
    ];
    for (name, alg, key, keys, algs) in cases {
        let snap = jwt_only(provider(keys, algs));
        let token = sign(alg, &key, None, &claims());
        let headers = run
            .bearer(&snap, &token)
            .await
            .unwrap_or_else(|r| panic!("{name}: {r:?}"));
        assert_eq!(
            headers["x-user-id"], "user-1",
            "{name}: claim header replaces the client's"
        );
        assert_eq!(headers.get_all("x-user-id").iter().count(), 1, "{name}");
        assert_eq!(headers["x-roles"], "admin,dev", "{name}: arrays joined");
        // Cached path: the same token again.
        assert!(run.bearer(&snap, &token).await.is_ok(), "{name}: cached");
    }
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let run = Run::new();
    let rsa_pub = fixture("rsa1.pub.pem");
    let snap = jwt_only(provider(
        JwtKeys::Pem(String::from_utf8(rsa_pub.clone()).unwrap()),
        vec![JwtAlgorithm::RS256],
    ));
    let key = EncodingKey::from_rsa_pem(&fixture("rsa1.key.pem")).unwrap();
    let other = EncodingKey::from_rsa_pem(&fixture("rsa2.key.pem")).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(Algorithm::RS256, &key, None, &c)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 10)),
            "expired",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 600)),
            "not valid yet",
        ),
        (
            "nbf as a string (CVE-2026-25537)",
            with(&|c| c["nbf"] = json!("99999999999")),
            "",
        ),
        ("exp as a string", with(&|c| c["exp"] = json!("never")), ""),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "required claim",
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.test/")),
            "issuer",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("other")),
            "audience",
        ),
        (
            "bad signature",
            sign(Algorithm::RS256, &other, None, &claims()),
            "signature",
        ),
        (
            "alg none",
            {
                let h = base64url(br#"{"alg":"none","typ":"JWT"}"#);
                let p = base64url(claims().to_string().as_bytes());
                format!("{h}.{p}.")
            },
            "",
        ),
        // Algorithm confusion: HS256 keyed with the RSA public key's bytes.
        (
            "HS256 with the RSA public key",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&rsa_pub),
                None,
                &claims(),
            ),
            "algorithm",
        ),
        (
            "malformed base64",
            "eyJhbGciOiJSUzI1NiJ9.@@@.###".to_owned(),
            "malformed",
        ),
        ("garbage", "not-a-token".to_owned(), "malformed"),
        (
            "oversized",
            format!("{}.{}.sig", "a".repeat(5000), "b".repeat(5000)),
            "too large",
        ),
    ];
    for (name, token, fragment) in cases {
        let r = refused(run.bearer(&snap, &token).await, name);
        assert_eq!(r.code, "invalid_token", "{name}");
        assert!(
            r.message.contains(fragment),
            "{name}: {:?} lacks {fragment:?}",
            r.message
        );
        let challenge = r
            .www_authenticate
            .expect("challenge")
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
            "{name}: {challenge}"
        );
    }
    let r = refused(
        run.call(&snap, &[("x-user-id", "spoofed")], "/")
            .await
            .map(|(h, _)| h),
        "no token",
    );
    assert_eq!(r.code, "missing_credentials");
}

#[tokio::test]
async fn jwks_with_kids_picks_the_named_key() {
    let run = Run::new();
    let key1 = EncodingKey::from_rsa_pem(&fixture("rsa1.key.pem")).unwrap();
    let key2 = EncodingKey::from_rsa_pem(&fixture("rsa2.key.pem")).unwrap();
    let jwk = |key: &EncodingKey, kid: &str| {
        let mut j = jsonwebtoken::jwk::Jwk::from_encoding_key(key, Algorithm::RS256).unwrap();
        j.common.key_id = Some(kid.into());
        j
    };
    let set = jsonwebtoken::jwk::JwkSet {
        keys: vec![jwk(&key1, "one"), jwk(&key2, "two")],
    };
    let snap = jwt_only(provider(
        JwtKeys::Jwks(serde_json::to_string(&set).unwrap()),
        JwtAlgorithm::ASYMMETRIC.to_vec(),
    ));
    assert!(
        run.bearer(
            &snap,
            &sign(Algorithm::RS256, &key2, Some("two"), &claims())
        )
        .await
        .is_ok()
    );
    let r = refused(
        run.bearer(
            &snap,
            &sign(Algorithm::RS256, &key2, Some("one"), &claims()),
        )
        .await,
        "kid of another key",
    );
    assert!(r.message.contains("signature"), "{r:?}");
    let r = refused(
        run.bearer(
            &snap,
            &sign(Algorithm::RS256, &key1, Some("three"), &claims()),
        )
        .await,
        "unknown kid",
    );
    assert!(r.message.contains("key id"), "{r:?}");
}

fn base64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    d.as_ref().try_into().unwrap()
}

#[tokio::test]
async fn api_keys_and_authorization() {
    let run = Run::new();
    let keys = ApiKeys {
        header: Some("x-api-key".into()),
        query_parameter: Some("api_key".into()),
        consumer_header: "x-consumer".into(),
        consumers: vec![
            Consumer {
                name: "acme".into(),
                key_hashes: vec![sha256(b"acme-1"), sha256(b"acme-2")],
            },
            Consumer {
                name: "globex".into(),
                key_hashes: vec![sha256(b"globex-1")],
            },
        ],
    };
    let snap = policy(
        Authentication {
            optional: false,
            jwt: vec![],
            api_keys: Some(keys),
        },
        Some(Authorization {
            require_claims: vec![],
            allowed_consumers: vec!["acme".into()],
        }),
    );
    for key in ["acme-1", "acme-2"] {
        let (h, _) = run
            .call(&snap, &[("x-api-key", key), ("x-consumer", "spoofed")], "/")
            .await
            .unwrap();
        assert_eq!(h["x-consumer"], "acme");
        assert!(h.get("x-api-key").is_none(), "the key is never forwarded");
    }
    let (h, uri) = run.call(&snap, &[], "/p?a=1&api_key=acme-2").await.unwrap();
    assert_eq!(h["x-consumer"], "acme");
    assert_eq!(uri.to_string(), "/p?a=1", "the query key is removed");
    let r = run
        .call(&snap, &[("x-api-key", "globex-1")], "/")
        .await
        .unwrap_err();
    assert_eq!((r.status, r.code), (StatusCode::FORBIDDEN, "forbidden"));
    let r = run
        .call(&snap, &[("x-api-key", "wrong")], "/")
        .await
        .unwrap_err();
    assert_eq!(
        (r.status, r.code),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
    let r = run.call(&snap, &[], "/").await.unwrap_err();
    assert_eq!(
        (r.status, r.code),
        (StatusCode::UNAUTHORIZED, "missing_credentials")
    );
    assert!(
        r.www_authenticate
            .unwrap()
            .to_str()
            .unwrap()
            .contains("x-api-key")
    );

    // Claims: anyOf on a nested array claim.
    let mut p = provider(
        JwtKeys::Hmac(Redacted(HMAC.to_vec())),
        vec![JwtAlgorithm::HS256],
    );
    p.claim_headers.clear();
    let snap = policy(
        Authentication {
            optional: false,
            jwt: vec![p],
            api_keys: None,
        },
        Some(Authorization {
            require_claims: vec![ClaimRule {
                claim: vec!["realm".into(), "roles".into()],
                test: ClaimTest::AnyOf(vec!["ops".into(), "admin".into()]),
            }],
            allowed_consumers: vec![],
        }),
    );
    let key = EncodingKey::from_secret(HMAC);
    assert!(
        run.bearer(&snap, &sign(Algorithm::HS256, &key, None, &claims()))
            .await
            .is_ok()
    );
    let mut c = claims();
    c["realm"]["roles"] = json!(["dev"]);
    let r = run
        .bearer(&snap, &sign(Algorithm::HS256, &key, None, &c))
        .await
        .unwrap_err();
    assert_eq!((r.status, r.code), (StatusCode::FORBIDDEN, "forbidden"));
}
