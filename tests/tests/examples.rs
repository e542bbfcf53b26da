//! The manifests in deploy/examples/ compile without errors and serve what
//! the README says they do (the echo upstream address is swapped for a test
//! upstream, since tests run in parallel).

use weir_tests::TempDir;
use weir_tests::client::{get, http1};
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
    assert!(count >= 2, "examples missing");
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
