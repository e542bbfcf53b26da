//! Minimal OpenAPI v3 documents: enough for kubectl's default
//! (`--validate=strict`) path, which looks for a PATCH operation with
//! `x-kubernetes-group-version-kind` and a `fieldValidation` parameter and,
//! when it finds one, leaves validation to the server. Custom resources
//! also get their CRD schema under `components.schemas`, tagged with their
//! group/version/kind as the API server publishes it, which is what
//! `kubectl explain` reads.

use std::hash::Hasher;

use serde_json::{Value, json};

use crate::resources::ResourceType;

fn group_versions(types: &[&'static ResourceType]) -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&str, &str)> = types.iter().map(|r| (r.group, r.version)).collect();
    gvs.sort();
    gvs.dedup();
    gvs
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The document for one group/version.
pub fn group_version_doc(
    types: &[&'static ResourceType],
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in types
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = gv_path(group, version);
        let path = if r.namespaced {
            format!("/{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("/{base}/{}/{{name}}", r.plural)
        };
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}}
            }}),
        );
        if let Some(schema) = r.custom.and_then(|c| c.schema.as_ref()) {
            schemas.insert(schema_name(r), published(schema, r));
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
                "components": {"schemas": schemas}, "paths": paths}),
    )
}

/// `dev.weir.v1alpha1.GatewayPolicy`: the API server's name for a CRD's
/// schema (the group reversed, then version and kind).
fn schema_name(r: &ResourceType) -> String {
    let group: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), r.version, r.kind)
}

/// A CRD schema as the API server publishes it: the GVK extension that
/// lets clients find it, and `apiVersion`, `kind` and `metadata` described
/// even when the CRD leaves them out.
fn published(schema: &Value, r: &ResourceType) -> Value {
    let mut s = schema.clone();
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "apiVersion".into(),
            json!({"type": "string", "description":
            "APIVersion defines the versioned schema of this representation of an object."}),
        );
        props.insert(
            "kind".into(),
            json!({"type": "string", "description":
            "Kind is a string value representing the REST resource this object represents."}),
        );
        props.insert(
            "metadata".into(),
            json!({"type": "object", "description":
            "Standard object's metadata."}),
        );
    }
    s
}

fn hash(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(v.to_string().as_bytes());
    format!("{:016X}", h.finish())
}

/// The `/openapi/v3` root: one hashed URL per group/version. The hash
/// changes whenever that document does (kubectl caches by URL).
pub fn root(types: &[&'static ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions(types) {
        if let Some(doc) = group_version_doc(types, g, v) {
            let p = gv_path(g, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}
