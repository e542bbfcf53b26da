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
        let patch = json!({"status": {"loadBalancer": want}});
        if patch_status::<Ingress>(client, object, &patch).await {
            written += 1;
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
            "GatewayPolicy" => ("weir.dev/v1alpha1", "GatewayPolicy"),
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

/// The status weir wants on a policy: `observedGeneration`, the targets, and
/// `Accepted` / `ResolvedRefs` / `Programmed` conditions from its
/// diagnostics. `lastTransitionTime` is carried over from `current` for
/// conditions whose status did not change.
pub fn policy_status(
    outcome: &weir_compiler::PolicyOutcome,
    diagnostics: &[&weir_compiler::Diagnostic],
    current: Option<&weir_crd::GatewayPolicyStatus>,
    now: &str,
) -> weir_crd::GatewayPolicyStatus {
    use weir_compiler::Severity;
    let error = diagnostics.iter().find(|d| d.severity == Severity::Error);
    let unresolved = diagnostics.iter().find(|d| {
        matches!(
            d.reason,
            "SecretNotFound" | "SecretKeyNotFound" | "TargetNotFound"
        )
    });
    let describe = |d: &weir_compiler::Diagnostic| match &d.field {
        Some(f) => format!("{f}: {}", d.message),
        None => d.message.clone(),
    };
    let (accepted, accepted_reason, accepted_message) = match error {
        Some(d) => ("False", d.reason.to_owned(), describe(d)),
        None => (
            "True",
            "Accepted".to_owned(),
            "The policy is valid.".to_owned(),
        ),
    };
    let (resolved, resolved_reason, resolved_message) = match unresolved {
        Some(d) => ("False", d.reason.to_owned(), describe(d)),
        None => (
            "True",
            "ResolvedRefs".to_owned(),
            "Every target and Secret exists.".to_owned(),
        ),
    };
    let last_good = diagnostics.iter().any(|d| d.reason == "ServingLastGood");
    let (programmed, programmed_reason, programmed_message) = match (error, outcome.programmed) {
        (Some(_), true) if last_good => (
            "True",
            "ServingLastGood",
            "The current version is rejected; its last valid version is still enforced.",
        ),
        (None, true) => ("True", "Programmed", "The data plane enforces the policy."),
        (None, false) => (
            "False",
            "NoRoutes",
            "No weir route matches the targets (or a more specific policy overrides every section).",
        ),
        (Some(_), _) => (
            "False",
            "Invalid",
            "The policy is not accepted; the routes it targets answer 503 until it is fixed.",
        ),
    };
    let condition = |type_: &str, status: &str, reason: String, message: String| {
        let previous = current
            .into_iter()
            .flat_map(|c| c.conditions.iter())
            .find(|c| c.type_ == type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Some(now.to_owned()),
        };
        weir_crd::Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason,
            message: message.chars().take(1000).collect(),
            observed_generation: outcome.generation,
            last_transition_time,
        }
    };
    weir_crd::GatewayPolicyStatus {
        observed_generation: outcome.generation,
        targets: Some(outcome.targets.clone()),
        conditions: vec![
            condition("Accepted", accepted, accepted_reason, accepted_message),
            condition("ResolvedRefs", resolved, resolved_reason, resolved_message),
            condition(
                "Programmed",
                programmed,
                programmed_reason.to_owned(),
                programmed_message.to_owned(),
            ),
        ],
    }
}

/// Writes the status of every policy whose stored status differs from what
/// the last compile says. Returns how many were written.
pub async fn sync_policies(
    client: &Client,
    stores: &[Store<weir_crd::GatewayPolicy>],
    outcomes: &std::collections::BTreeMap<ObjectRef, weir_compiler::PolicyOutcome>,
    diagnostics: &[weir_compiler::Diagnostic],
) -> usize {
    let mut by_object: std::collections::HashMap<&ObjectRef, Vec<&weir_compiler::Diagnostic>> =
        std::collections::HashMap::new();
    for d in diagnostics
        .iter()
        .filter(|d| d.object.kind == "GatewayPolicy")
    {
        by_object.entry(&d.object).or_default().push(d);
    }
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut written = 0;
    for policy in stores.iter().flat_map(Store::state) {
        let object = ObjectRef::new(
            "GatewayPolicy",
            policy.metadata.namespace.as_deref().unwrap_or(""),
            policy.metadata.name.as_deref().unwrap_or(""),
        );
        let Some(outcome) = outcomes.get(&object) else {
            continue;
        };
        let diags = by_object
            .get(&object)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let want = policy_status(outcome, diags, policy.status.as_ref(), &now);
        if policy.status.as_ref() == Some(&want) {
            continue;
        }
        let patch = json!({"status": want});
        if patch_status::<weir_crd::GatewayPolicy>(client, &object, &patch).await {
            written += 1;
        }
    }
    written
}

/// Merge-patches the status subresource of `object`; a failure is logged
/// and retried on the next change. Returns whether it was written.
async fn patch_status<K>(client: &Client, object: &ObjectRef, patch: &Value) -> bool
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace);
    match api
        .patch_status(&object.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(%object, error = %e, "Writing status failed; will retry on the next change.");
            false
        }
    }
}
