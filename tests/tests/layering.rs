//! The dependency direction DESIGN.md sets, checked on the real dependency
//! graph: the compiler stays pure (no async runtime, no HTTP, no client), the
//! data plane never knows Kubernetes, and the workspace has one TLS crypto
//! provider (ring; aws-lc-rs beside it makes kube's client panic).

use std::process::Command;

/// Normal (non-dev) dependencies of `package`, one crate name per line.
fn deps(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn assert_none(package: &str, forbidden: &[&str]) {
    let all = deps(package);
    // A positive control: if the tree could not be read, fail instead of
    // passing vacuously.
    assert!(
        all.iter().any(|d| d == "serde"),
        "cargo tree of {package} lists no serde: {all:?}"
    );
    let found: Vec<String> = all
        .into_iter()
        .filter(|d| forbidden.contains(&d.as_str()))
        .collect();
    assert!(found.is_empty(), "{package} must not depend on {found:?}");
}

#[test]
fn compiler_is_pure() {
    assert_none(
        "weir-compiler",
        &[
            "tokio",
            "hyper",
            "hyper-util",
            // `kube` itself is allowed: weir-crd uses its derive macros only.
            "kube-client",
            "kube-runtime",
            "redis",
        ],
    );
    assert_none("weir-snapshot", &["tokio", "hyper", "k8s-openapi", "kube"]);
}

#[test]
fn data_plane_knows_no_kubernetes() {
    assert_none(
        "weir-proxy",
        &[
            "k8s-openapi",
            "kube",
            "kube-client",
            "kube-runtime",
            "weir-compiler",
            "weir-crd",
        ],
    );
}

#[test]
fn one_crypto_provider() {
    assert_none(
        "weir",
        &["aws-lc-rs", "aws-lc-sys", "openssl", "openssl-sys"],
    );
}
