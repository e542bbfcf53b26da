//! The GatewayPolicy CRD: the committed YAML matches the Rust types, and it
//! and the example policies pass the API server's structural-schema checks
//! (`k8s-crd-check --strict` from the shared tools).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crds_are_fresh() {
    let generated = weir_crd::crd_yaml().expect("render CRD");
    for path in weir_crd::CRD_PATHS {
        let committed = std::fs::read_to_string(root().join(path)).expect("committed CRD YAML");
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -p weir-crd --bin crdgen` and commit the result"
        );
    }
}

#[test]
fn crd_and_examples_pass_structural_checks() {
    let out = Command::new(weir_tests::k8s_tool("k8s-crd-check"))
        .arg("--strict")
        .arg(root().join("crds"))
        .arg(root().join("deploy/examples"))
        .output()
        .expect("run k8s-crd-check");
    assert!(
        out.status.success(),
        "k8s-crd-check --strict failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl explain` prints these descriptions: every property has one.
#[test]
fn every_field_is_described() {
    let crd = serde_json::to_value(<weir_crd::GatewayPolicy as kube::CustomResourceExt>::crd())
        .expect("CRD as JSON");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut missing = Vec::new();
    walk(schema, "spec", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if schema["description"]
        .as_str()
        .is_none_or(|d| d.trim().is_empty())
    {
        missing.push(path.to_owned());
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), missing);
        }
    }
    if schema["items"].is_object() && schema["items"]["properties"].is_object() {
        for (name, child) in schema["items"]["properties"]
            .as_object()
            .into_iter()
            .flatten()
        {
            walk(child, &format!("{path}[].{name}"), missing);
        }
    }
}
