//! Compiles Kubernetes objects into a weir routing [`Snapshot`].
//!
//! ```text
//!  Inputs { Ingress, IngressClass, Service, EndpointSlice, GatewayPolicy, Secret }
//!     │  class.rs     which Ingresses are ours
//!     │  policy/      GatewayPolicy validation, Secrets, attachment to routes
//!     │  ingress.rs   rules, paths, default backends, conflicts
//!     │  backend.rs   Service port -> ready pod endpoints (EndpointSlices)
//!     ▼
//!  Compiled { snapshot, diagnostics, accepted }
//! ```
//!
//! [`compile`] is a pure function: no I/O, no clock, no randomness, and every
//! collection is sorted, so the same inputs always give the same snapshot
//! (the golden files under `tests/golden/` rely on it). It never fails as a
//! whole: a bad object or field is left out and described by a
//! [`Diagnostic`], and every other route is still compiled.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod annotations;
pub use annotations::parse_size;
mod backend;
mod class;
mod diagnostics;
mod duration;
mod ingress;
pub mod manifest;
mod policy;
mod secret;
mod tls;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::Serialize;
use weir_crd::GatewayPolicy;
use weir_snapshot::Snapshot;

pub use annotations::{
    DEFAULT_CLASS, LEGACY_CLASS, WEIR_BACKEND_CA_SECRET, WEIR_REQUEST_TIMEOUT, WEIR_UPSTREAM,
};
pub use diagnostics::{Diagnostic, ObjectRef, Severity};
pub use duration::parse_duration_ms;
pub use policy::{API_KEY_FORMAT, PolicyOutcome, SHA256_HEX, hash_consumer_secret};

/// Namespace and name of a namespaced object: the key of every input map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Everything the compiler reads. Objects are `Arc`s because that is how
/// kube-runtime's reflector stores hand them out: building `Inputs` from a
/// store copies pointers, not objects.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Ingresses by namespace/name.
    pub ingresses: BTreeMap<ObjectKey, Arc<Ingress>>,
    /// IngressClasses by name (cluster-scoped).
    pub ingress_classes: BTreeMap<String, Arc<IngressClass>>,
    /// Services by namespace/name.
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    /// EndpointSlices by namespace/name.
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    /// GatewayPolicies by namespace/name.
    pub policies: BTreeMap<ObjectKey, Arc<GatewayPolicy>>,
    /// Secrets that policies name or select, by namespace/name.
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
}

/// A Service port reference given outside any object (the global default
/// backend flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Port number or name.
    pub port: PortRef,
}

/// A Service port, by number or by name, as an Ingress backend names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// `port.number`.
    Number(i32),
    /// `port.name`.
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

impl std::str::FromStr for ServiceRef {
    type Err = String;

    /// Parses `namespace/name:port`, port by number or name.
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("{s:?} is not namespace/service:port");
        let (namespace, rest) = s.split_once('/').ok_or_else(err)?;
        let (name, port) = rest.rsplit_once(':').ok_or_else(err)?;
        if namespace.is_empty() || name.is_empty() || port.is_empty() {
            return Err(err());
        }
        let port = match port.parse::<i32>() {
            Ok(n) if (1..=65535).contains(&n) => PortRef::Number(n),
            Ok(_) => return Err(format!("{s:?}: port out of range")),
            Err(_) => PortRef::Name(port.to_owned()),
        };
        Ok(ServiceRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port,
        })
    }
}

/// Settings of the compile that do not come from objects.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// The IngressClass name weir answers to when no IngressClass object of
    /// that name exists (`--ingress-class`, default `weir`).
    pub class_name: String,
    /// The `spec.controller` value that marks an IngressClass as weir's.
    pub controller_name: String,
    /// Serve Ingresses that name no class at all, even without a default
    /// IngressClass.
    pub watch_ingress_without_class: bool,
    /// Honor the `weir.dev/upstream` Service annotation (static endpoints).
    /// On for the manifest-folder provider; off against a real cluster,
    /// where endpoints come from EndpointSlices only.
    pub allow_static_upstreams: bool,
    /// Served when nothing else matches.
    pub default_backend: Option<ServiceRef>,
    /// weir's own Service (namespace, name): its ready endpoints are the
    /// live replicas that share `localShare` limits.
    pub replicas_service: Option<(String, String)>,
    /// `--default-ssl-certificate` (namespace, Secret name): presented when
    /// no Ingress certificate matches the SNI name.
    pub default_certificate: Option<(String, String)>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            class_name: "weir".into(),
            controller_name: "weir.dev/ingress-controller".into(),
            watch_ingress_without_class: false,
            allow_static_upstreams: false,
            default_backend: None,
            replicas_service: None,
            default_certificate: None,
        }
    }
}

/// The result of a compile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Compiled {
    /// What the data plane serves.
    pub snapshot: Snapshot,
    /// Every finding, sorted by object.
    pub diagnostics: Vec<Diagnostic>,
    /// Ingresses of our class that contribute at least one route or
    /// fallback (the ones whose status the leader writes).
    pub accepted: BTreeSet<ObjectRef>,
    /// Every GatewayPolicy, with what its status should say (its diagnostics
    /// are in `diagnostics`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<ObjectRef, PolicyOutcome>,
}

impl Compiled {
    /// Diagnostics of error severity, for metrics.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// Compiles `inputs` into a snapshot. Pure and deterministic.
pub fn compile(inputs: &Inputs, options: &CompileOptions) -> Compiled {
    let mut diagnostics = Vec::new();
    let mut backends = backend::Resolver::new(inputs, options);
    let classes = class::Classes::new(inputs, options);
    let mut builder = ingress::Builder::default();
    let mut policies = policy::Policies::new(inputs, &mut diagnostics);
    let mut certificates = tls::Certificates::new(inputs);

    for ing in ingress::ours_oldest_first(inputs, &classes) {
        builder.add_ingress(
            ing,
            &mut backends,
            &mut policies,
            &mut certificates,
            &mut diagnostics,
        );
    }
    let default_certificate = options
        .default_certificate
        .as_ref()
        .and_then(|(ns, name)| certificates.default_certificate(ns, name, &mut diagnostics));
    let default_backend = options
        .default_backend
        .as_ref()
        .and_then(|r| backends.resolve_global(r, &mut diagnostics));
    let (hosts, accepted) = builder.finish(&certificates);
    let replicas = options
        .replicas_service
        .as_ref()
        .map(|(namespace, name)| backends.ready_pods(namespace, name))
        .filter(|&n| n > 0);
    let upstreams = backends.into_upstreams(&hosts, default_backend.as_ref());
    let (effective, outcomes) = policies.finish(&mut diagnostics);
    diagnostics.sort();
    Compiled {
        snapshot: Snapshot {
            hosts,
            default_backend,
            upstreams,
            policies: effective,
            replicas,
            certificates: certificates.into_map(),
            default_certificate,
        },
        diagnostics,
        accepted,
        policies: outcomes,
    }
}
