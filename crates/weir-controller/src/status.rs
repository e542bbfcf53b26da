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

/// The `loadBalancer` of the `--publish-service` Service (empty while it has
/// none).
pub fn service_load_balancer(store: &Store<k8s_openapi::api::core::v1::Service>) -> Value {
    let lb = store.state().first().and_then(|s| {
        let lb = s.status.as_ref()?.load_balancer.as_ref()?;
        serde_json::to_value(lb).ok()
    });
    match lb {
        Some(v) if v.get("ingress").is_some() => v,
        _ => json!({"ingress": []}),
    }
}

/// Writes the status of every accepted Ingress whose stored status differs.
/// Returns how many were written.
pub async fn sync(
    client: &Client,
    ingresses: &[Store<Ingress>],
    accepted: &BTreeSet<ObjectRef>,
    desired: &Value,
) -> usize {
    let mut written = 0;
    // Index the caches once: a lookup per accepted Ingress must not scan
    // (and copy) every store, or thousands of Ingresses cost seconds.
    let current: std::collections::HashMap<(String, String), std::sync::Arc<Ingress>> = ingresses
        .iter()
        .flat_map(Store::state)
        .map(|i| {
            let key = (
                i.metadata.namespace.clone().unwrap_or_default(),
                i.metadata.name.clone().unwrap_or_default(),
            );
            (key, i)
        })
        .collect();
    for object in accepted {
        let Some(current) = current.get(&(object.namespace.clone(), object.name.clone())) else {
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

/// Publishes a Kubernetes Event for each rejected field or object that is
/// new since the last compile, so `kubectl describe ingress` says why a
/// route is not served. Leader only; the same finding is not repeated on
/// every recompile.
pub async fn report(
    recorder: &kube::runtime::events::Recorder,
    previous: &BTreeSet<weir_compiler::Diagnostic>,
    current: &[weir_compiler::Diagnostic],
) -> usize {
    use kube::runtime::events::{Event, EventType};
    let mut published = 0;
    for d in current.iter().filter(|d| !previous.contains(*d)) {
        let (api_version, kind) = match d.object.kind {
            "Ingress" => ("networking.k8s.io/v1", "Ingress"),
            "Service" => ("v1", "Service"),
            _ => continue,
        };
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            namespace: Some(d.object.namespace.clone()),
            name: Some(d.object.name.clone()),
            ..Default::default()
        };
        let note = match &d.field {
            Some(f) => format!("{f}: {}", d.message),
            None => d.message.clone(),
        };
        let event = Event {
            type_: match d.severity {
                weir_compiler::Severity::Error => EventType::Warning,
                weir_compiler::Severity::Warning => EventType::Normal,
            },
            reason: d.reason.to_owned(),
            // The API limits notes to 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: "Compile".into(),
            secondary: None,
        };
        match recorder.publish(&event, &reference).await {
            Ok(()) => published += 1,
            Err(e) => tracing::warn!(object = %d.object, error = %e, "Publishing an Event failed."),
        }
    }
    published
}
