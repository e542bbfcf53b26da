//! Strategic merge patch, as kubectl's client-side apply sends it for
//! built-in types.
//!
//! Maps merge recursively and `null` deletes a key. Lists are replaced,
//! except the lists the API declares as merge lists, which merge by key:
//! `metadata.finalizers` (a set of strings), `metadata.ownerReferences`
//! (`uid`), Service `spec.ports` (`port`) and `status.conditions` (`type`).
//! Directives: `$patch: delete|replace|merge` in maps and list items,
//! `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>` and
//! `$retainKeys`. Every `$` key is stripped from the result.

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Clone, Copy)]
enum ListKind {
    Atomic,
    Primitive,
    Keyed(&'static str),
}

fn list_kind(kind: &str, path: &[&str]) -> ListKind {
    match path {
        ["metadata", "finalizers"] => ListKind::Primitive,
        ["metadata", "ownerReferences"] => ListKind::Keyed("uid"),
        ["spec", "ports"] if kind == "Service" => ListKind::Keyed("port"),
        ["status", "conditions"] => ListKind::Keyed("type"),
        _ => ListKind::Atomic,
    }
}

/// Applies `patch` to `target` for an object of `kind`.
pub fn apply(kind: &str, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    merge_map(kind, &mut Vec::new(), target, patch)
}

fn merge_map(
    kind: &str,
    path: &mut Vec<String>,
    target: &mut Value,
    patch: &Value,
) -> Result<(), ApiError> {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = Value::Object(strip(patch));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown $patch directive {other:?}"
            )));
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(map) = target.as_object_mut() else {
        return Ok(());
    };
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        map.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (map.get_mut(field), value.as_array())
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            map.remove(key);
            continue;
        }
        path.push(key.clone());
        let view: Vec<&str> = path.iter().map(String::as_str).collect();
        let entry = map.entry(key.clone()).or_insert(Value::Null);
        match value {
            Value::Array(items) => merge_list(kind, path, list_kind(kind, &view), entry, items)?,
            Value::Object(_) => {
                merge_map(kind, path, entry, value)?;
                if entry.is_null() {
                    map.remove(key);
                }
            }
            other => *entry = other.clone(),
        }
        path.pop();
    }
    // $setElementOrder/<field> orders a merged list as the patch lists it.
    for (key, order) in patch {
        if let (Some(field), Some(order)) =
            (key.strip_prefix("$setElementOrder/"), order.as_array())
            && let Some(Value::Array(list)) = map.get_mut(field)
        {
            let pos = |item: &Value| {
                order.iter().position(|o| match o {
                    Value::Object(keys) => keys.iter().all(|(k, v)| item.get(k) == Some(v)),
                    prim => prim == item,
                })
            };
            list.sort_by_key(|item| pos(item).unwrap_or(usize::MAX));
        }
    }
    Ok(())
}

fn merge_list(
    kind: &str,
    path: &mut Vec<String>,
    list: ListKind,
    target: &mut Value,
    items: &[Value],
) -> Result<(), ApiError> {
    match list {
        ListKind::Atomic => *target = Value::Array(items.iter().map(strip_value).collect()),
        ListKind::Primitive => {
            let mut current = target.as_array().cloned().unwrap_or_default();
            for item in items {
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
            *target = Value::Array(current);
        }
        ListKind::Keyed(key) => {
            if items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                *target = Value::Array(
                    items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .map(strip_value)
                        .collect(),
                );
                return Ok(());
            }
            let mut current = target.as_array().cloned().unwrap_or_default();
            for item in items {
                let id = item.get(key).ok_or_else(|| {
                    ApiError::bad_request(format!("merge list item lacks its merge key {key:?}"))
                })?;
                let found = current.iter().position(|c| c.get(key) == Some(id));
                match (item.get("$patch").and_then(Value::as_str), found) {
                    (Some("delete"), Some(i)) => {
                        current.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => merge_map(kind, path, &mut current[i], item)?,
                    (_, None) => current.push(strip_value(item)),
                }
            }
            *target = Value::Array(current);
        }
    }
    Ok(())
}

fn strip(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_service_patch() {
        let mut live = json!({"metadata": {"name": "s", "finalizers": ["a.io/x", "b.io/y"], "labels": {"x": "1", "keep": "2"}},
            "spec": {"ports": [{"name": "http", "port": 80}, {"name": "old", "port": 443}], "selector": {"app": "a"}}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/x"], "$setElementOrder/finalizers": ["b.io/y"], "labels": {"x": null}},
            "spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 8443}],
                     "ports": [{"name": "https", "port": 8443, "targetPort": 9443}, {"$patch": "delete", "port": 443}]}});
        apply("Service", &mut live, &patch).unwrap();
        assert_eq!(live["metadata"]["finalizers"], json!(["b.io/y"]));
        assert_eq!(live["metadata"]["labels"], json!({"keep": "2"}));
        assert_eq!(
            live["spec"]["ports"],
            json!([{"name": "http", "port": 80}, {"name": "https", "port": 8443, "targetPort": 9443}])
        );
        assert_eq!(live["spec"]["selector"], json!({"app": "a"}));
    }

    #[test]
    fn ingress_lists_are_atomic() {
        let mut live = json!({"spec": {"rules": [{"host": "a"}, {"host": "b"}]}});
        apply(
            "Ingress",
            &mut live,
            &json!({"spec": {"rules": [{"host": "c"}]}}),
        )
        .unwrap();
        assert_eq!(live["spec"]["rules"], json!([{"host": "c"}]));
    }

    #[test]
    fn patch_directives_on_maps() {
        let mut live = json!({"spec": {"a": {"x": 1, "y": 2}, "b": {"z": 1}}});
        apply(
            "X",
            &mut live,
            &json!({"spec": {"a": {"$patch": "replace", "x": 3}, "b": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert_eq!(live, json!({"spec": {"a": {"x": 3}}}));
    }
}
