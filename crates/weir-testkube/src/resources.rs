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
    /// +1 when anything outside `metadata` changes (EndpointSlice, custom
    /// resources without a status subresource).
    NonMetadata,
    /// +1 when anything outside `metadata` and `status` changes (CRDs and
    /// custom resources with a status subresource).
    NonMetadataStatus,
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
    /// Built into the server (true) or defined by a CRD (false).
    pub builtin: bool,
    /// What a CRD says about its objects beyond storage: the schema
    /// `kubectl explain` reads and the columns `kubectl get` prints.
    pub custom: Option<&'static Custom>,
}

/// The parts of a CRD version the server presents to clients.
#[derive(Debug)]
pub struct Custom {
    /// `schema.openAPIV3Schema`, served in the OpenAPI v3 document.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns`, rendered when a client asks for a Table.
    pub columns: Vec<PrinterColumn>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub kind: String,
    /// Display hint (`name`, …).
    pub format: String,
    /// Shown on hover/wide output.
    pub description: String,
    /// 0 is shown by default; higher only with `-o wide`.
    pub priority: i64,
    /// The simple JSONPath the value comes from.
    pub json_path: String,
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

    /// Whether two entries name the same stored type (all versions of a CRD
    /// share storage).
    pub fn same_storage(&self, other: &ResourceType) -> bool {
        self.group == other.group && self.plural == other.plural
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
    },
    ResourceType {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        status: true,
        short_names: &["crd", "crds"],
        generation: Generation::NonMetadataStatus,
        validate: check::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
        builtin: true,
        custom: None,
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
        builtin: true,
        custom: None,
    },
];

/// Custom resources are validated by nothing but JSON shape (no schema
/// pruning or validation: a documented deviation).
pub fn no_validation(_: &Value) -> Result<(), String> {
    Ok(())
}

/// Leaks a string for a CRD-defined type; CRDs are few and the server is
/// for tests.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The types a CRD object defines (one per served version).
pub fn from_crd(crd: &Value) -> Vec<&'static ResourceType> {
    let spec = &crd["spec"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        spec.pointer("/names/plural").and_then(Value::as_str),
        spec.pointer("/names/kind").and_then(Value::as_str),
    ) else {
        return Vec::new();
    };
    let singular = spec
        .pointer("/names/singular")
        .and_then(Value::as_str)
        .map_or_else(|| kind.to_lowercase(), str::to_owned);
    let shorts: Vec<&'static str> = spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(leak).collect())
        .unwrap_or_default();
    let shorts: &'static [&'static str] = Box::leak(shorts.into_boxed_slice());
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let status = v.pointer("/subresources/status").is_some();
            let rt = ResourceType {
                group: leak(group),
                version: leak(v["name"].as_str()?),
                plural: leak(plural),
                singular: leak(&singular),
                kind: leak(kind),
                namespaced,
                status,
                short_names: shorts,
                generation: if status {
                    Generation::NonMetadataStatus
                } else {
                    Generation::NonMetadata
                },
                validate: no_validation,
                builtin: false,
                custom: Some(Box::leak(Box::new(custom(v)))),
            };
            Some(&*Box::leak(Box::new(rt)))
        })
        .collect()
}

/// The schema and printer columns of one CRD version. A CRD without
/// columns gets `Age`, as the API server does.
fn custom(version: &Value) -> Custom {
    let mut columns: Vec<PrinterColumn> = version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or("").to_owned();
            Some(PrinterColumn {
                name: c["name"].as_str()?.to_owned(),
                kind: text("type"),
                format: text("format"),
                description: text("description"),
                priority: c["priority"].as_i64().unwrap_or(0),
                json_path: c["jsonPath"].as_str()?.to_owned(),
            })
        })
        .collect();
    if version.get("additionalPrinterColumns").is_none() {
        columns.push(PrinterColumn {
            name: "Age".into(),
            kind: "date".into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        });
    }
    Custom {
        schema: version.pointer("/schema/openAPIV3Schema").cloned(),
        columns,
    }
}
