//! The table of resource types the server serves. One generic engine runs
//! over it; a type differs from another only by the columns below.

use serde_json::Value;

/// When `metadata.generation` increases (the registry strategies of the
/// real API server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// No generation at all (Service, Secret, Lease, ConfigMap, Namespace).
    None,
    /// +1 when `spec` changes (Ingress, IngressClass).
    Spec,
    /// +1 when anything outside `metadata` changes (EndpointSlice).
    NonMetadata,
}

/// One served resource type.
#[derive(Debug)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural name (URL segment).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource.
    pub status: bool,
    /// Short names for discovery.
    pub short_names: &'static [&'static str],
    /// Generation rule.
    pub generation: Generation,
    /// Validates a body by deserializing it into the k8s-openapi type, so a
    /// stored object never breaks a client's list.
    pub validate: fn(&Value) -> Result<(), String>,
}

impl ResourceType {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, as error messages name types.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn check<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(v.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

use k8s_openapi::api::{coordination, core, discovery, events, networking};

/// Every built-in type served.
pub static BUILTIN: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        status: true,
        short_names: &["ns"],
        generation: Generation::None,
        validate: check::<core::v1::Namespace>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        status: true,
        short_names: &["svc"],
        generation: Generation::None,
        validate: check::<core::v1::Service>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        status: false,
        short_names: &[],
        generation: Generation::None,
        validate: check::<core::v1::Secret>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        status: false,
        short_names: &["cm"],
        generation: Generation::None,
        validate: check::<core::v1::ConfigMap>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        status: false,
        short_names: &["ev"],
        generation: Generation::None,
        validate: check::<core::v1::Event>,
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        status: false,
        short_names: &["ev"],
        generation: Generation::None,
        validate: check::<events::v1::Event>,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        kind: "Ingress",
        namespaced: true,
        status: true,
        short_names: &["ing"],
        generation: Generation::Spec,
        validate: check::<networking::v1::Ingress>,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingressclasses",
        singular: "ingressclass",
        kind: "IngressClass",
        namespaced: false,
        status: false,
        short_names: &[],
        generation: Generation::Spec,
        validate: check::<networking::v1::IngressClass>,
    },
    ResourceType {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        status: false,
        short_names: &[],
        generation: Generation::NonMetadata,
        validate: check::<discovery::v1::EndpointSlice>,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        status: false,
        short_names: &[],
        generation: Generation::None,
        validate: check::<coordination::v1::Lease>,
    },
];

/// Finds a type by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    BUILTIN
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}
