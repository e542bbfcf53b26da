//! Secret watches scoped to what policies and TLS use.
//!
//! weir never caches every Secret in the cluster: it watches only the
//! Secrets a GatewayPolicy names or an Ingress's `spec.tls` names (and
//! `--default-ssl-certificate`), one watch per Secret by `metadata.name`
//! field selector, and those API-key `secretSelector`s select (one watch
//! per namespace and selector). The set of watches follows
//! the policies: new ones start (and are waited for, briefly, so a new
//! policy does not compile against Secrets not listed yet) and unused ones
//! stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;
use weir_compiler::ObjectKey;
use weir_crd::GatewayPolicy;

use crate::ControllerMetrics;

/// How long a new watch's initial list may delay a compile.
const INITIAL_LIST_WAIT: Duration = Duration::from_secs(2);

/// What one watch covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// One Secret by namespace and name.
    Named(String, String),
    /// Secrets in a namespace matching a label selector (`k=v,k2=v2`).
    Selected(String, String),
}

struct Watch {
    store: Store<Secret>,
    task: tokio::task::JoinHandle<()>,
}

/// The running Secret watches.
#[derive(Default)]
pub(crate) struct SecretWatches {
    watches: BTreeMap<Scope, Watch>,
}

impl Drop for SecretWatches {
    fn drop(&mut self) {
        for w in self.watches.values() {
            w.task.abort();
        }
    }
}

/// The TLS Secrets (namespace, name) the Ingresses name (`spec.tls`, and
/// the `weir.dev/backend-ca-secret` that verifies their TLS backends), and
/// `--default-ssl-certificate`.
pub(crate) fn tls_secrets<'a>(
    ingresses: impl Iterator<Item = &'a Ingress>,
    default: Option<&(String, String)>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = default.into_iter().cloned().collect();
    for ing in ingresses {
        let ns = ing.metadata.namespace.as_deref().unwrap_or_default();
        for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            if let Some(name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) {
                out.push((ns.to_owned(), name.to_owned()));
            }
        }
        // The CA that verifies the Ingress's TLS backends.
        if let Some(name) = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(weir_compiler::WEIR_BACKEND_CA_SECRET))
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
        {
            out.push((ns.to_owned(), name.to_owned()));
        }
    }
    out
}

/// The scopes the policies need.
fn scopes<'a>(policies: impl Iterator<Item = &'a GatewayPolicy>) -> BTreeSet<Scope> {
    let mut out = BTreeSet::new();
    for p in policies {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let Some(authn) = &p.spec.authentication else {
            continue;
        };
        for provider in authn.jwt.iter().flat_map(|j| j.providers.iter()) {
            let refs = [
                provider.jwks.as_ref().and_then(|j| j.secret_ref.as_ref()),
                provider.public_key.as_ref(),
                provider.hmac_secret.as_ref(),
            ];
            for r in refs.into_iter().flatten() {
                out.insert(Scope::Named(ns.clone(), r.name.clone()));
            }
        }
        if let Some(keys) = &authn.api_keys
            && !keys.secret_selector.match_labels.is_empty()
        {
            let selector = keys
                .secret_selector
                .match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            out.insert(Scope::Selected(ns.clone(), selector));
        }
    }
    out
}

impl SecretWatches {
    /// Starts and stops watches so they cover exactly what `policies` use;
    /// waits (up to [`INITIAL_LIST_WAIT`]) for new watches' initial lists.
    pub(crate) async fn reconcile<'a>(
        &mut self,
        client: &Client,
        policies: impl Iterator<Item = &'a GatewayPolicy>,
        named: impl Iterator<Item = (String, String)>,
        changed: &Arc<Notify>,
        metrics: &ControllerMetrics,
    ) {
        let mut wanted = scopes(policies);
        wanted.extend(named.map(|(ns, name)| Scope::Named(ns, name)));
        self.watches.retain(|scope, w| {
            let keep = wanted.contains(scope);
            if !keep {
                w.task.abort();
            }
            keep
        });
        let mut new = Vec::new();
        for scope in wanted {
            if self.watches.contains_key(&scope) {
                continue;
            }
            // Consumer Secrets are cached as digests only (their other data
            // is dropped), so the controller's memory never holds an API
            // key in the clear. Named Secrets hold key material the data
            // plane needs as is (HMAC secrets, public keys).
            let (api, config, transform) = match &scope {
                Scope::Named(ns, name) => (
                    Api::<Secret>::namespaced(client.clone(), ns),
                    watcher::Config::default().fields(&format!("metadata.name={name}")),
                    None,
                ),
                Scope::Selected(ns, selector) => (
                    Api::<Secret>::namespaced(client.clone(), ns),
                    watcher::Config::default().labels(selector),
                    Some(weir_compiler::hash_consumer_secret as fn(&mut Secret)),
                ),
            };
            let (store, task) =
                crate::cluster::reflect_with_task(api, config, transform, changed.clone(), metrics);
            new.push(store.clone());
            self.watches.insert(scope, Watch { store, task });
        }
        for store in new {
            if tokio::time::timeout(INITIAL_LIST_WAIT, store.wait_until_ready())
                .await
                .is_err()
            {
                tracing::warn!(
                    "A Secret watch has no initial list yet; compiling without it (its policies fail closed until it arrives)."
                );
            }
        }
    }

    /// Every watched Secret, by namespace/name.
    /// A Secret both named and selected comes from its name watch, which
    /// holds it unmodified.
    pub(crate) fn secrets(&self) -> BTreeMap<ObjectKey, Arc<Secret>> {
        self.watches
            .values()
            .rev()
            .flat_map(|w| w.store.state())
            .map(|s| {
                (
                    ObjectKey::new(
                        s.metadata.namespace.clone().unwrap_or_default(),
                        s.metadata.name.clone().unwrap_or_default(),
                    ),
                    s,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(json: serde_json::Value) -> Ingress {
        serde_json::from_value(json).expect("ingress")
    }

    #[test]
    fn tls_secrets_are_the_certificates_and_backend_cas_ingresses_name() {
        let a = ingress(serde_json::json!({
            "metadata": {"name": "a", "namespace": "shop",
                         "annotations": {"weir.dev/backend-ca-secret": " shop-ca "}},
            "spec": {"tls": [{"secretName": "shop-tls"}, {"secretName": ""}]},
        }));
        let b = ingress(
            serde_json::json!({"metadata": {"name": "b", "namespace": "other"}, "spec": {}}),
        );
        let default = ("weir".to_owned(), "fallback".to_owned());
        let got = tls_secrets([&a, &b].into_iter(), Some(&default));
        let want = [
            ("weir", "fallback"),
            ("shop", "shop-tls"),
            ("shop", "shop-ca"),
        ]
        .map(|(n, s)| (n.to_owned(), s.to_owned()));
        assert_eq!(got, want);
    }
}
