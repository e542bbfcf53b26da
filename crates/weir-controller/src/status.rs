//! Ingress status, written by the leader only: `status.loadBalancer` of
//! every accepted Ingress set to the published addresses. Writes are
//! idempotent (nothing is written when the stored status already says the
//! same) and use merge patches on the status subresource, so they never
//! conflict with spec changes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};
use weir_compiler::ObjectRef;

/// The `loadBalancer.ingress` entries for `--publish-address` values.
pub fn load_balancer(addresses: &[String]) -> Value {
    let entries: Vec<Value> = addresses
        .iter()
        .map(|a| match a.parse::<IpAddr>() {
            Ok(_) => json!({"ip": a}),
            Err(_) => json!({"hostname": a}),
        })
        .collect();
    json!({"ingress": entries})
}

/// Writes the status of every accepted Ingress whose stored status differs.
/// Returns how many were written.
pub async fn sync(
    client: &Client,
    ingresses: &Store<Ingress>,
    accepted: &BTreeSet<ObjectRef>,
    desired: &Value,
) -> usize {
    let mut written = 0;
    for object in accepted {
        let Some(current) = ingresses.state().into_iter().find(|i| {
            i.metadata.namespace.as_deref() == Some(object.namespace.as_str())
                && i.metadata.name.as_deref() == Some(object.name.as_str())
        }) else {
            continue;
        };
        let stored = current
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| serde_json::to_value(lb).ok())
            .unwrap_or(Value::Null);
        let want = if desired["ingress"].as_array().is_some_and(Vec::is_empty) {
            json!({})
        } else {
            desired.clone()
        };
        if stored == want || (stored.is_null() && want == json!({})) {
            continue;
        }
        let api: Api<Ingress> = Api::namespaced(client.clone(), &object.namespace);
        let patch = json!({"status": {"loadBalancer": want}});
        match api
            .patch_status(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => written += 1,
            Err(e) => {
                tracing::warn!(ingress = %object, error = %e, "Writing Ingress status failed; will retry on the next change.")
            }
        }
    }
    written
}
