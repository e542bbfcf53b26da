//! Reads the YAML a user would `kubectl apply` into compiler [`Inputs`].
//!
//! Pure text-in, objects-out, so the manifest-folder provider and the golden
//! tests share it. A document that is not valid YAML makes the whole file
//! unreadable (its document boundaries cannot be trusted); a valid document
//! of a known kind that does not match that kind's schema is skipped on its
//! own. Both come back as [`ManifestError`]s with a position.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_norway::Value;
use weir_crd::GatewayPolicy;

use crate::{Inputs, ObjectKey};

/// A document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {document}{}: {message}", location.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default())]
pub struct ManifestError {
    /// 1-based index of the document in the file.
    pub document: usize,
    /// Line and column, when the parser knows them.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
    /// Whether the whole file was given up (YAML syntax) or only this document.
    pub fatal: bool,
}

/// What one file contributed.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Objects of kinds the compiler reads.
    pub objects: Vec<Object>,
    /// Documents of kinds the compiler does not read (yet), as `kind ns/name`.
    pub ignored: Vec<String>,
    /// Problems.
    pub errors: Vec<ManifestError>,
}

/// One object the compiler reads.
#[derive(Debug, Clone)]
pub enum Object {
    /// networking.k8s.io/v1 Ingress.
    Ingress(Ingress),
    /// networking.k8s.io/v1 IngressClass.
    IngressClass(IngressClass),
    /// v1 Service.
    Service(Service),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// weir.dev/v1alpha1 GatewayPolicy.
    GatewayPolicy(GatewayPolicy),
    /// v1 Secret.
    Secret(Secret),
}

/// Parses a multi-document YAML text. If any document is not valid YAML the
/// result holds no objects and one fatal error.
pub fn parse(text: &str) -> Parsed {
    let mut values = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(doc) {
            Ok(v) => values.push(v),
            Err(e) => {
                return Parsed {
                    errors: vec![ManifestError {
                        document: i + 1,
                        location: e.location().map(|l| (l.line(), l.column())),
                        message: e.to_string(),
                        fatal: true,
                    }],
                    ..Parsed::default()
                };
            }
        }
    }
    let mut parsed = Parsed::default();
    for (i, value) in values.into_iter().enumerate() {
        parse_value(i + 1, value, &mut parsed);
    }
    parsed
}

fn parse_value(document: usize, value: Value, out: &mut Parsed) {
    if value.is_null() {
        return; // an empty document, e.g. a trailing `---`
    }
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let error = |message: String| ManifestError {
        document,
        location: None,
        message,
        fatal: false,
    };
    if kind == "List" {
        match value.get("items").and_then(Value::as_sequence) {
            Some(items) => {
                for item in items.clone() {
                    parse_value(document, item, out);
                }
            }
            None => out.errors.push(error("List without items".into())),
        }
        return;
    }
    let describe = || {
        let meta = value.get("metadata");
        let get = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        format!("{kind} {}/{}", get("namespace"), get("name"))
    };
    fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_norway::from_value(value).map_err(|e| e.to_string())
    }
    let result = match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => typed(value.clone()).map(Object::Ingress),
        ("networking.k8s.io/v1", "IngressClass") => typed(value.clone()).map(Object::IngressClass),
        ("v1", "Service") => typed(value.clone()).map(Object::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(value.clone()).map(Object::EndpointSlice),
        ("weir.dev/v1alpha1", "GatewayPolicy") => typed(value.clone()).map(Object::GatewayPolicy),
        ("v1", "Secret") => typed(value.clone()).map(Object::Secret),
        ("", _) | (_, "") => {
            out.errors
                .push(error("document has no apiVersion or kind".into()));
            return;
        }
        _ => {
            out.ignored.push(describe());
            return;
        }
    };
    match result {
        Ok(object) => out.objects.push(object),
        Err(e) => out.errors.push(error(format!("{}: {e}", describe()))),
    }
}

impl Inputs {
    /// Adds an object, defaulting an absent namespace to `default` as
    /// kubectl does. A later object with the same key replaces an earlier one.
    pub fn insert(&mut self, object: Object) {
        fn key(meta: &ObjectMeta) -> ObjectKey {
            ObjectKey::new(
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or(""),
            )
        }
        match object {
            Object::Ingress(mut o) => {
                let k = key(&o.metadata);
                o.metadata.namespace = Some(k.namespace.clone());
                self.ingresses.insert(k, Arc::new(o));
            }
            Object::IngressClass(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                self.ingress_classes.insert(name, Arc::new(o));
            }
            Object::Service(mut o) => {
                let k = key(&o.metadata);
                o.metadata.namespace = Some(k.namespace.clone());
                self.services.insert(k, Arc::new(o));
            }
            Object::EndpointSlice(mut o) => {
                let k = key(&o.metadata);
                o.metadata.namespace = Some(k.namespace.clone());
                self.endpoint_slices.insert(k, Arc::new(o));
            }
            Object::GatewayPolicy(mut o) => {
                let k = key(&o.metadata);
                o.metadata.namespace = Some(k.namespace.clone());
                self.policies.insert(k, Arc::new(o));
            }
            Object::Secret(mut o) => {
                let k = key(&o.metadata);
                o.metadata.namespace = Some(k.namespace.clone());
                self.secrets.insert(k, Arc::new(o));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_is_fatal_with_position() {
        let p = parse("apiVersion: v1\nkind: Service\nmetadata: {name: a\n");
        assert!(p.objects.is_empty());
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].fatal);
        assert!(p.errors[0].location.is_some());
    }

    #[test]
    fn bad_document_is_skipped_alone() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: notanumber}]}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n";
        let p = parse(text);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].document, 2);
        assert!(!p.errors[0].fatal);
        assert_eq!(p.ignored, vec!["ConfigMap /c".to_string()]);
    }
}
