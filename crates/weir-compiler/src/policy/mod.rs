//! Attaches `GatewayPolicy` objects to routes.
//!
//! Specificity, most specific first: an Ingress path, an Ingress, a Service
//! (every route whose backend it is), the Namespace. Each section
//! (authentication, authorization) of a route's effective policy comes from
//! the most specific policy that sets it, so a namespace-wide JWT
//! requirement still holds on a route whose own policy only adds claims.
//! Two policies of equal specificity setting the same section on one target
//! conflict: the older (`creationTimestamp`, then name) wins and the newer
//! gets a `Conflicted` error.
//!
//! An invalid policy fails closed: the routes it targets answer 503 until it
//! is fixed, rather than passing traffic its author meant to protect.

mod spec;

pub use spec::{API_KEY_FORMAT, SHA256_HEX, hash_consumer_secret};

use std::collections::{BTreeMap, BTreeSet};

use weir_crd::{GatewayPolicy, TargetKind};
use weir_snapshot::{PathMatch, Policy};

use crate::diagnostics::{Diagnostic, ObjectRef, Reporter};
use crate::{Inputs, ObjectKey};

/// What the compile made of one policy, for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyOutcome {
    /// `metadata.generation` of the compiled object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Targets as `Kind/name[path]`, comma-separated.
    pub targets: String,
    /// At least one route enforces it.
    pub programmed: bool,
}

/// One policy as compiled.
struct Entry {
    object: ObjectRef,
    /// Sort key for conflicts: oldest first.
    age: (Option<String>, String),
    invalid: Option<String>,
    sections: spec::Sections,
}

/// Where a route sits, for attachment.
pub(crate) struct RouteSite<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) ingress: &'a str,
    /// The rule path; `None` for a defaultBackend.
    pub(crate) path: Option<&'a PathMatch>,
    /// The backend Service name, when the backend is a Service.
    pub(crate) service: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    IngressPath(String, String),
    Ingress(String),
    Service(String),
    Namespace,
}

/// Every policy of the compile, indexed by target.
pub(crate) struct Policies {
    entries: BTreeMap<ObjectKey, Entry>,
    /// (namespace, level) -> policies, oldest first.
    by_target: BTreeMap<(String, Level), Vec<ObjectKey>>,
    outcomes: BTreeMap<ObjectKey, PolicyOutcome>,
    /// Effective policies handed out, by name.
    effective: BTreeMap<String, Policy>,
    /// Conflicts already reported, (loser, target).
    conflicts: BTreeSet<(ObjectKey, String)>,
    /// (namespace, ingress, path) targets that matched a route.
    matched_paths: BTreeSet<(String, String, String)>,
    path_targets: Vec<(ObjectKey, usize, String, String, String)>,
    diagnostics: Vec<Diagnostic>,
}

impl Policies {
    pub(crate) fn new(inputs: &Inputs, diagnostics: &mut Vec<Diagnostic>) -> Self {
        let mut p = Policies {
            entries: BTreeMap::new(),
            by_target: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            effective: BTreeMap::new(),
            conflicts: BTreeSet::new(),
            matched_paths: BTreeSet::new(),
            path_targets: Vec::new(),
            diagnostics: Vec::new(),
        };
        for (key, policy) in &inputs.policies {
            p.add(key, policy, inputs, diagnostics);
        }
        for list in p.by_target.values_mut() {
            list.sort_by(|a, b| {
                let age = |k: &ObjectKey| p.entries.get(k).map(|e| &e.age);
                age(a).cmp(&age(b))
            });
            list.dedup();
        }
        p
    }

    fn add(
        &mut self,
        key: &ObjectKey,
        policy: &GatewayPolicy,
        inputs: &Inputs,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let object = ObjectRef::new("GatewayPolicy", &key.namespace, &key.name);
        let mut report = Reporter::new(object.clone(), diagnostics);
        let mut targets = Vec::new();
        for (i, t) in policy.spec.target_refs.iter().enumerate() {
            let field = format!("spec.targetRefs[{i}]");
            let group_ok = matches!(
                (t.kind, t.group.as_deref().unwrap_or("")),
                (TargetKind::Ingress, "" | "networking.k8s.io")
                    | (TargetKind::Service | TargetKind::Namespace, "" | "core")
            );
            if !group_ok {
                report.error(
                    Some(format!("{field}.group")),
                    "InvalidTarget",
                    format!(
                        "group {:?} does not hold kind {:?}",
                        t.group.as_deref().unwrap_or(""),
                        t.kind
                    ),
                );
                continue;
            }
            let level = match (t.kind, &t.path) {
                (TargetKind::Ingress, Some(path)) => {
                    if !path.starts_with('/') {
                        report.error(
                            Some(format!("{field}.path")),
                            "InvalidTarget",
                            format!("{path:?} is not a path"),
                        );
                        continue;
                    }
                    let path = normalize_target_path(path);
                    self.path_targets.push((
                        key.clone(),
                        i,
                        key.namespace.clone(),
                        t.name.clone(),
                        path.clone(),
                    ));
                    targets.push(format!(
                        "Ingress/{}[{}]",
                        t.name,
                        t.path.as_deref().unwrap_or("")
                    ));
                    Level::IngressPath(t.name.clone(), path)
                }
                (_, Some(_)) => {
                    report.error(
                        Some(format!("{field}.path")),
                        "InvalidTarget",
                        "path is only allowed with kind Ingress".into(),
                    );
                    continue;
                }
                (TargetKind::Ingress, None) => {
                    targets.push(format!("Ingress/{}", t.name));
                    Level::Ingress(t.name.clone())
                }
                (TargetKind::Service, None) => {
                    targets.push(format!("Service/{}", t.name));
                    Level::Service(t.name.clone())
                }
                (TargetKind::Namespace, None) => {
                    if t.name != key.namespace {
                        report.error(
                            Some(format!("{field}.name")),
                            "InvalidTarget",
                            format!(
                                "a policy in namespace {} can only target that namespace, not {:?}",
                                key.namespace, t.name
                            ),
                        );
                        continue;
                    }
                    targets.push(format!("Namespace/{}", t.name));
                    Level::Namespace
                }
            };
            let exists = match &level {
                Level::IngressPath(n, _) | Level::Ingress(n) => inputs
                    .ingresses
                    .contains_key(&ObjectKey::new(&key.namespace, n)),
                Level::Service(n) => inputs
                    .services
                    .contains_key(&ObjectKey::new(&key.namespace, n)),
                Level::Namespace => true,
            };
            if !exists {
                report.warn(
                    Some(format!("{field}.name")),
                    "TargetNotFound",
                    format!(
                        "{:?} {}/{} does not exist (yet); the policy applies as soon as it does",
                        t.kind, key.namespace, t.name
                    ),
                );
            }
            self.by_target
                .entry((key.namespace.clone(), level))
                .or_default()
                .push(key.clone());
        }
        let sections =
            spec::compile_sections(&key.namespace, &key.name, &policy.spec, inputs, &mut report);
        if policy.spec.authentication.is_none()
            && policy.spec.authorization.is_none()
            && policy.spec.rate_limits.is_none()
            && report.errors() == 0
        {
            report.warn(
                Some("spec".into()),
                "NoEffect",
                "the policy sets no authentication, authorization or rateLimits".into(),
            );
        }
        let invalid = (report.errors() > 0)
            .then(|| format!("policy {}/{} is invalid", key.namespace, key.name));
        let meta = &policy.metadata;
        self.outcomes.insert(
            key.clone(),
            PolicyOutcome {
                generation: meta.generation,
                targets: targets.join(", "),
                programmed: false,
            },
        );
        self.entries.insert(
            key.clone(),
            Entry {
                object,
                age: (
                    meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                    key.name.clone(),
                ),
                invalid,
                sections,
            },
        );
    }

    /// The effective policy of a route, registered under its name.
    pub(crate) fn resolve(&mut self, site: &RouteSite<'_>) -> Option<String> {
        if self.entries.is_empty() {
            return None;
        }
        let mut levels = Vec::with_capacity(4);
        if let Some(path) = site.path {
            let p = path_text(path);
            let level = Level::IngressPath(site.ingress.to_owned(), p.clone());
            if self
                .by_target
                .contains_key(&(site.namespace.to_owned(), level.clone()))
            {
                self.matched_paths
                    .insert((site.namespace.to_owned(), site.ingress.to_owned(), p));
            }
            levels.push(level);
        }
        levels.push(Level::Ingress(site.ingress.to_owned()));
        if let Some(s) = site.service {
            levels.push(Level::Service(s.to_owned()));
        }
        levels.push(Level::Namespace);

        let lists: Vec<(&Level, &[ObjectKey])> = levels
            .iter()
            .filter_map(|l| {
                let list = self
                    .by_target
                    .get(&(site.namespace.to_owned(), l.clone()))?;
                Some((l, list.as_slice()))
            })
            .collect();
        let mut conflicts = Vec::new();
        let authn = pick(
            &lists,
            &self.entries,
            |s| s.authentication.is_some(),
            "authentication",
            &mut conflicts,
        );
        let authz = pick(
            &lists,
            &self.entries,
            |s| s.authorization.is_some(),
            "authorization",
            &mut conflicts,
        );
        let limits = pick(
            &lists,
            &self.entries,
            |s| s.rate_limits.is_some(),
            "rateLimits",
            &mut conflicts,
        );
        // Contributors in precedence order: the section winners and every
        // invalid policy that reaches the route (which makes it fail closed).
        let mut contributors: Vec<ObjectKey> = Vec::new();
        let mut invalid: Option<String> = None;
        for key in lists.iter().flat_map(|(_, list)| list.iter()) {
            let Some(entry) = self.entries.get(key) else {
                continue;
            };
            if let Some(reason) = &entry.invalid {
                invalid.get_or_insert_with(|| reason.clone());
            } else if Some(key) != authn && Some(key) != authz && Some(key) != limits {
                continue;
            }
            push_unique(&mut contributors, key);
        }
        let (authn, authz, limits) = (authn.cloned(), authz.cloned(), limits.cloned());
        drop(lists);
        for (loser, winner, level, section) in conflicts {
            self.conflict(&loser, &winner, &level, section);
        }
        if contributors.is_empty() {
            return None;
        }
        let name = contributors
            .iter()
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect::<Vec<_>>()
            .join("+");
        for k in &contributors {
            let valid = self.entries.get(k).is_some_and(|e| e.invalid.is_none());
            if let Some(o) = self.outcomes.get_mut(k) {
                o.programmed |= valid;
            }
        }
        // Sections are copied once per effective policy, not once per route.
        if !self.effective.contains_key(&name) {
            let section = |k: &Option<ObjectKey>| k.as_ref().and_then(|k| self.entries.get(k));
            let policy = Policy {
                name: name.clone(),
                invalid,
                authentication: section(&authn).and_then(|e| e.sections.authentication.clone()),
                authorization: section(&authz).and_then(|e| e.sections.authorization.clone()),
                rate_limits: section(&limits).and_then(|e| e.sections.rate_limits.clone()),
            };
            self.effective.insert(name.clone(), policy);
        }
        Some(name)
    }

    fn conflict(&mut self, loser: &ObjectKey, winner: &ObjectKey, level: &Level, section: &str) {
        let target = match level {
            Level::IngressPath(i, p) => {
                format!("Ingress/{i}[{}]", if p.is_empty() { "/" } else { p })
            }
            Level::Ingress(i) => format!("Ingress/{i}"),
            Level::Service(s) => format!("Service/{s}"),
            Level::Namespace => format!("Namespace/{}", loser.namespace),
        };
        if !self
            .conflicts
            .insert((loser.clone(), format!("{target} {section}")))
        {
            return;
        }
        if let Some(entry) = self.entries.get(loser) {
            self.diagnostics.push(Diagnostic {
                object: entry.object.clone(),
                severity: crate::Severity::Error,
                field: Some(format!("spec.{section}")),
                reason: "Conflicted",
                message: format!("{target}: {section} is already set by the older GatewayPolicy {}/{}, which wins", winner.namespace, winner.name),
            });
        }
    }

    /// The effective policies, diagnostics found while attaching, and the
    /// outcome of every policy.
    pub(crate) fn finish(
        mut self,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> (BTreeMap<String, Policy>, BTreeMap<ObjectRef, PolicyOutcome>) {
        for (key, i, ns, ingress, path) in std::mem::take(&mut self.path_targets) {
            let matched = self
                .matched_paths
                .contains(&(ns.clone(), ingress.clone(), path.clone()));
            if !matched && let Some(entry) = self.entries.get(&key) {
                self.diagnostics.push(Diagnostic {
                    object: entry.object.clone(),
                    severity: crate::Severity::Warning,
                    field: Some(format!("spec.targetRefs[{i}].path")),
                    reason: "TargetNotFound",
                    message: format!(
                        "Ingress {ns}/{ingress} serves no path {:?}",
                        if path.is_empty() { "/" } else { &path }
                    ),
                });
            }
        }
        diagnostics.append(&mut self.diagnostics);
        let outcomes = self
            .outcomes
            .into_iter()
            .filter_map(|(k, o)| Some((self.entries.get(&k)?.object.clone(), o)))
            .collect();
        (self.effective, outcomes)
    }
}

/// A conflict found while resolving: (loser, winner, where, section).
type Conflict = (ObjectKey, ObjectKey, Level, &'static str);

/// The policy that sets a section for a route: at the most specific level
/// where any valid policy sets it, the oldest of them. The others at that
/// level are conflicts.
fn pick<'a>(
    lists: &[(&Level, &'a [ObjectKey])],
    entries: &BTreeMap<ObjectKey, Entry>,
    sets: impl Fn(&spec::Sections) -> bool,
    section: &'static str,
    conflicts: &mut Vec<Conflict>,
) -> Option<&'a ObjectKey> {
    for (level, list) in lists {
        let mut setters = list.iter().filter(|k| {
            entries
                .get(*k)
                .is_some_and(|e| e.invalid.is_none() && sets(&e.sections))
        });
        if let Some(winner) = setters.next() {
            for loser in setters {
                conflicts.push((loser.clone(), winner.clone(), (*level).clone(), section));
            }
            return Some(winner);
        }
    }
    None
}

fn push_unique(list: &mut Vec<ObjectKey>, key: &ObjectKey) {
    if !list.contains(key) {
        list.push(key.clone());
    }
}

/// A target path compared the way routes store paths: without a trailing
/// slash (`/` becomes the empty string).
fn normalize_target_path(p: &str) -> String {
    p.trim_end_matches('/').to_owned()
}

fn path_text(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(s) | PathMatch::Prefix(s) => s.trim_end_matches('/').to_owned(),
    }
}
