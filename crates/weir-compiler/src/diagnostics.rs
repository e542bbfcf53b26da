//! Per-object findings of a compile: what was rejected or degraded, and why.
//!
//! A diagnostic names the object, the field when there is one, a stable
//! CamelCase `reason` (the status condition reason and the metric label) and a
//! human message. Errors mean something was not served; warnings mean it was
//! served with a caveat.

use std::fmt;

use serde::Serialize;

/// The Kubernetes object a diagnostic is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// Kind, e.g. `Ingress`.
    pub kind: &'static str,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to a namespaced object.
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Something the object asked for is not served.
    Error,
    /// Served, but not exactly as written (ignored annotation, missing
    /// Service, lost a conflict on a fallback).
    Warning,
}

/// One finding about one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// The object.
    pub object: ObjectRef,
    /// Error or warning.
    pub severity: Severity,
    /// The field path, e.g. `spec.rules[0].http.paths[1].path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Stable CamelCase reason, usable as a condition reason or metric label.
    pub reason: &'static str,
    /// What happened and what to do, for humans.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {} ({})", self.message, self.reason)
    }
}

/// Collects diagnostics for one object while it is compiled.
pub(crate) struct Reporter<'a> {
    object: ObjectRef,
    out: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(object: ObjectRef, out: &'a mut Vec<Diagnostic>) -> Self {
        Reporter {
            object,
            out,
            errors: 0,
        }
    }

    pub(crate) fn object(&self) -> &ObjectRef {
        &self.object
    }

    pub(crate) fn error(&mut self, field: Option<String>, reason: &'static str, message: String) {
        self.errors += 1;
        self.push(Severity::Error, field, reason, message);
    }

    pub(crate) fn warn(&mut self, field: Option<String>, reason: &'static str, message: String) {
        self.push(Severity::Warning, field, reason, message);
    }

    pub(crate) fn errors(&self) -> usize {
        self.errors
    }

    fn push(
        &mut self,
        severity: Severity,
        field: Option<String>,
        reason: &'static str,
        message: String,
    ) {
        self.out.push(Diagnostic {
            object: self.object.clone(),
            severity,
            field,
            reason,
            message,
        });
    }
}
