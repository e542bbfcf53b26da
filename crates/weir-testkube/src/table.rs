//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`)
//! for custom resources, from the CRD's `additionalPrinterColumns`, as the
//! API server's CRD table converter does: `kubectl get` then shows the
//! columns a CRD author chose (weir's `Accepted`, `Reason`, …) instead of
//! only NAME and AGE. Built-in types keep answering with a plain List, which
//! kubectl also accepts.

use serde_json::{Value, json};

use crate::resources::{Custom, PrinterColumn};

/// Whether the client asked for a Table (kubectl lists the Table media types
/// first and plain JSON last).
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A `meta.k8s.io/v1` Table of `items`.
pub fn render(custom: &Custom, items: &[Value], resource_version: &str, now: i64) -> Value {
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    defs.extend(custom.columns.iter().map(|c| {
        json!({"name": c.name, "type": c.kind, "format": c.format,
               "description": c.description, "priority": c.priority})
    }));
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item["metadata"]["name"].clone()];
            cells.extend(custom.columns.iter().map(|c| cell(c, item, now)));
            json!({"cells": cells, "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": item["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
           "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": defs, "rows": rows})
}

/// One cell: the first value the path finds (the API server supports only
/// simple paths and so only ever prints one), `null` when it finds none.
fn cell(column: &PrinterColumn, item: &Value, now: i64) -> Value {
    let Some(value) = find(item, &column.json_path).into_iter().next() else {
        return Value::Null;
    };
    match column.kind.as_str() {
        "string" => match value {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        },
        "date" => value
            .as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map_or(Value::Null, |t| json!(human_duration(now - t.as_second()))),
        _ => value.clone(),
    }
}

/// kubectl's short ages (`45s`, `3m20s`, `2h5m`, `4d`).
fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Evaluates the JSONPath subset CRD printer columns use: `.field`,
/// `[n]`, `[*]` and `[?(@.a.b=="literal")]`. Unknown syntax finds nothing
/// (the cell prints as `<none>`), never an error.
pub fn find<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![root];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            current = current.iter().filter_map(|v| v.get(field)).collect();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = closing_bracket(after) else {
                return Vec::new();
            };
            let selector = &after[..end];
            current = current
                .into_iter()
                .flat_map(|v| select(v, selector))
                .collect();
            rest = &after[end + 1..];
        } else {
            return Vec::new();
        }
    }
    current
}

/// The index of the `]` that closes a selector, skipping quoted text.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn select<'a>(v: &'a Value, selector: &str) -> Vec<&'a Value> {
    let Some(items) = v.as_array() else {
        return Vec::new();
    };
    if selector == "*" {
        return items.iter().collect();
    }
    if let Ok(i) = selector.parse::<usize>() {
        return items.get(i).into_iter().collect();
    }
    let Some(expr) = selector
        .strip_prefix("?(")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.strip_prefix('@'))
    else {
        return Vec::new();
    };
    let Some((path, literal)) = expr.split_once("==") else {
        return Vec::new();
    };
    let literal = literal.trim().trim_matches(|c| c == '"' || c == '\'');
    items
        .iter()
        .filter(|item| {
            find(item, path.trim())
                .first()
                .is_some_and(|found| match found {
                    Value::String(s) => s == literal,
                    Value::Number(n) => n.to_string() == literal,
                    Value::Bool(b) => b.to_string() == literal,
                    _ => false,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_printer_columns_use() {
        let obj = json!({"status": {"targets": "Ingress/web", "conditions": [
            {"type": "ResolvedRefs", "status": "True"},
            {"type": "Accepted", "status": "False", "reason": "Invalid"}]}});
        assert_eq!(find(&obj, ".status.targets"), vec![&json!("Ingress/web")]);
        assert_eq!(
            find(&obj, r#".status.conditions[?(@.type=="Accepted")].reason"#),
            vec![&json!("Invalid")]
        );
        assert_eq!(
            find(&obj, ".status.conditions[0].status"),
            vec![&json!("True")]
        );
        assert_eq!(find(&obj, ".status.conditions[*].type").len(), 2);
        assert!(find(&obj, ".status.missing").is_empty());
        assert!(find(&obj, "status").is_empty());
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(7200 + 300), "125m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn only_table_first_accept_headers_get_tables() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
        assert!(!wanted("application/json, application/json;as=Table"));
    }
}
