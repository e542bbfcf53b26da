//! The binary's command line, run as a user runs it.
//!
//! Having an integration test here also makes `cargo test --workspace` build
//! the `weir` binary with the test build's features, so the end-to-end tests
//! in `weir-tests` find it without a second build of the dependency graph.

use std::process::Command;

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

#[test]
fn version_names_the_package_version() {
    let out = weir()
        .arg("--version")
        .output()
        .expect("run weir --version");
    assert!(out.status.success(), "weir --version failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), concat!("weir ", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_missing_manifest_folder_is_a_clear_error_not_a_panic() {
    let out = weir()
        .args(["serve", "--manifests", "/nonexistent/weir-manifests"])
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run weir serve");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read manifest folder /nonexistent/weir-manifests"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_flags_are_rejected_with_usage() {
    let out = weir()
        .args(["serve", "--no-such-flag"])
        .output()
        .expect("run weir serve");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    assert!(stderr.contains("Usage:"), "{stderr}");
}
