//! CRDs and custom resources: registration, Established conditions,
//! discovery, CRUD and status on the custom type through kube-rs and
//! kubectl, CR-specific rules, and CRD deletion taking its resources along.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::Condition;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use weir_testkube::{Options, TestApiServer};

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "gatewaypolicies.weir.dev"},
  "spec": {"group": "weir.dev", "scope": "Namespaced",
    "names": {"plural": "gatewaypolicies", "singular": "gatewaypolicy", "kind": "GatewayPolicy", "shortNames": ["gwp"]},
    "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("weir.dev", "v1alpha1", "GatewayPolicy"),
        "gatewaypolicies",
    )
}

fn policy(name: &str, requests: u64) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "weir.dev/v1alpha1", "kind": "GatewayPolicy",
        "metadata": {"name": name}, "spec": {"rateLimits": [{"name": "all", "requests": requests, "per": "1m"}]}}))
    .unwrap()
}

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn custom_resources_through_kube() {
    let s = TestApiServer::start(Options::default()).await.unwrap();
    let client = s.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_str(CRD).unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conditions = created.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        kube::runtime::conditions::is_crd_established()
            .matches_object(Some(&crds.get("gatewaypolicies.weir.dev").await.unwrap()))
    );

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource());
    let writer = reflector::store::Writer::new(resource());
    let reader = writer.as_reader();
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
    let task = tokio::spawn(
        reflector(writer, watcher(all, watcher::Config::default()))
            .applied_objects()
            .for_each(|_| async {}),
    );
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    let p = api
        .create(&PostParams::default(), &policy("strict", 100))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    // Status writes leave generation alone; spec writes bump it.
    let st = api
        .patch_status(
            "strict",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Accepted", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(st.metadata.generation, Some(1));
    assert_eq!(st.data["status"]["conditions"][0]["type"], "Accepted");
    let sp = api
        .patch(
            "strict",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"rateLimits": [{"name": "all", "requests": 50, "per": "1m"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(sp.metadata.generation, Some(2));
    assert_eq!(
        sp.data["status"]["conditions"][0]["type"], "Accepted",
        "a spec write dropped status"
    );
    // Custom resources refuse strategic merge patch and unconditional PUT.
    let smp = api
        .patch(
            "strict",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(smp).code, 415);
    let mut unconditional = sp.clone();
    unconditional.metadata.resource_version = None;
    let put = api
        .replace("strict", &PostParams::default(), &unconditional)
        .await
        .unwrap_err();
    assert_eq!(api_status(put).code, 422);

    // Deleting the CRD deletes its resources; the watcher sees it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reader.state().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector never saw the custom resource"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    crds.delete("gatewaypolicies.weir.dev", &DeleteParams::default())
        .await
        .unwrap();
    while !reader.state().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CR survived its CRD in the watcher's store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gone = api.get("strict").await.unwrap_err();
    assert_eq!(api_status(gone).code, 404);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)] // kubectl calls block a thread
async fn custom_resources_through_kubectl() {
    let s = TestApiServer::start(Options::default()).await.unwrap();
    let cache = std::env::temp_dir().join(format!("weir-kubectl-cache-crd-{}", std::process::id()));
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(s.kubeconfig_path())
            .args(args)
            .env("KUBECACHEDIR", &cache);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c
            .spawn()
            .expect("kubectl must be installed to run these tests");
        {
            use std::io::Write;
            let mut i = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                i.write_all(text.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ok(kubectl(&["apply", "-f", "-"], Some(CRD))).contains("created"));
    ok(kubectl(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=10s",
            "crd/gatewaypolicies.weir.dev",
        ],
        None,
    ));
    let cr = "apiVersion: weir.dev/v1alpha1\nkind: GatewayPolicy\nmetadata: {name: p1, namespace: default}\nspec:\n  rateLimits: [{name: all, requests: 100, per: 1m}]\n  cors: {allowOrigins: ['*']}\n";
    assert!(
        ok(kubectl(&["apply", "-f", "-"], Some(cr))).contains("gatewaypolicy.weir.dev/p1 created")
    );
    // A field dropped from the manifest is removed by the merge patch.
    let cr2 = cr
        .replace("  cors: {allowOrigins: ['*']}\n", "")
        .replace("requests: 100", "requests: 10");
    assert!(ok(kubectl(&["apply", "-f", "-"], Some(&cr2))).contains("configured"));
    let spec = ok(kubectl(
        &["get", "gwp", "p1", "-o", "jsonpath={.spec}"],
        None,
    ));
    assert!(
        spec.contains("\"requests\":10") && !spec.contains("cors"),
        "{spec}"
    );
    let listed = ok(kubectl(&["get", "gwp"], None));
    assert!(listed.contains("p1"), "{listed}");
    // Re-applying the CRD with a new short name configures it; the name works.
    let crd2 = CRD.replace(
        r#""shortNames": ["gwp"]"#,
        r#""shortNames": ["gwp", "gpol"]"#,
    );
    assert!(ok(kubectl(&["apply", "-f", "-"], Some(&crd2))).contains("configured"));
    assert!(ok(kubectl(&["get", "gpol"], None)).contains("p1"));
    let smp = kubectl(
        &[
            "patch",
            "gwp",
            "p1",
            "--type",
            "strategic",
            "-p",
            "{\"spec\":{}}",
        ],
        None,
    );
    assert!(!smp.status.success());
    let _ = std::fs::remove_dir_all(&cache);
}
