//! The manifests in deploy/examples/ compile without errors and serve what
//! the README says they do (the echo upstream address is swapped for a test
//! upstream, since tests run in parallel).

use std::net::SocketAddr;

use weir_tests::TempDir;
use weir_tests::client::{Http1, get, http1};
use weir_tests::jwt;
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;

#[tokio::test]
async fn examples_serve_the_readme_curl() {
    let up = Upstream::start("example").await;
    let dir = TempDir::new("examples");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("127.0.0.1:9000", &up.addr.to_string());
            dir.write(path.file_name().unwrap().to_str().unwrap(), &text);
            count += 1;
        }
    }
    assert!(count >= 4, "examples missing");
    let weir = Weir::serve(&dir.0, &[]).await;
    let client = http1();
    let r = get(&client, weir.http, "shop.example.com", "/api/users/42", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/api/users/42");
    let r = get(&client, weir.http, "127.0.0.1", "/hello", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // The partners API wants an API key (deploy/examples/partners.yaml).
    let r = get(&client, weir.http, "partners.example.com", "/orders", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = get(
        &client,
        weir.http,
        "partners.example.com",
        "/orders",
        &[("x-api-key", "demo-partner-key-change-me")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-consumer"], "acme");
    assert_eq!(
        r.headers.get("ratelimit").map(|v| v.to_str().unwrap_or("")),
        Some("\"per-consumer\";r=9;t=1"),
        "the example's rate limit reports itself"
    );
    jwt_example(&client, weir.http).await;
    let logs = weir.logs().join("\n");
    assert!(
        !logs.contains("Rejected"),
        "an example was rejected:\n{logs}"
    );
    assert!(
        !logs.contains("Served with a warning"),
        "an example has a warning:\n{logs}"
    );
}

/// The JWT API of deploy/examples/orders.yaml: the demo token printed in its
/// comment works (so the curl there stays true), a token minted with the
/// example key's private half (tests/fixtures/jwt/ec256-example.key.pem)
/// passes /admin only with the admin role, and tokens for another audience
/// or none at all are refused.
async fn jwt_example(client: &Http1, http: SocketAddr) {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/orders.yaml"),
    )
    .unwrap();
    let demo = example
        .lines()
        .find_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("TOKEN="))
        .expect("orders.yaml prints a demo token");
    // GET `path` on the orders host, with `token` as a bearer token.
    let call = async |path: &str, token: Option<&str>| {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        get(client, http, "orders.example.com", path, &headers)
            .await
            .unwrap()
    };

    let r = call("/orders", None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (401, "missing_credentials".into())
    );

    let r = call("/orders", Some(demo)).await;
    assert_eq!(
        r.status,
        200,
        "the example's demo token: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["headers"]["x-user-id"], "demo-user");
    assert_eq!(r.json()["headers"]["x-roles"], "reader");
    assert!(
        r.header("ratelimit")
            .is_some_and(|v| v.starts_with("\"per-user\";r=99;")),
        "the per-user limit reports itself: {:?}",
        r.header("ratelimit")
    );
    let r = call("/admin", Some(demo)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (403, "forbidden".into())
    );

    let key = jwt::signing_key("ec256-example");
    let mint = |aud: &str, roles: &[&str]| {
        jwt::sign(
            jsonwebtoken::Algorithm::ES256,
            &key,
            None,
            &serde_json::json!({
                "iss": "https://auth.example.com/", "aud": aud, "sub": "alice",
                "roles": roles, "exp": jwt::now() + 300,
            }),
        )
    };
    let admin = mint("orders-api", &["admin", "reader"]);
    let r = call("/admin/users", Some(&admin)).await;
    assert_eq!(
        r.status,
        200,
        "an admin token opens /admin: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["headers"]["x-user-id"], "alice");
    assert_eq!(r.json()["headers"]["x-roles"], "admin,reader");
    let elsewhere = mint("billing-api", &["admin"]);
    let r = call("/orders", Some(&elsewhere)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (401, "invalid_token".into())
    );
}
