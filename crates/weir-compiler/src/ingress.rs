//! Turns Ingresses into virtual hosts and routes.
//!
//! Ingresses are processed oldest first (`creationTimestamp`, then
//! namespace/name), so when two claim the same host and path the older one
//! keeps it and the newer one gets a `PathConflict` error on that path; its
//! other paths are still served. This is the tie-break the Ingress API and
//! Gateway API both recommend, and it is stable: creating a new Ingress never
//! steals traffic from one that already works.
//!
//! Precedence inside a host: Exact paths, then Prefix paths longest first
//! (element-wise, trailing slash ignored). Between hosts: exact names, then
//! `*.` wildcards, then rules without a host.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress};
use weir_snapshot::{HostMatch, PathMatch, Route, RouteAction, VirtualHost, WeightedBackend};

use crate::Inputs;
use crate::annotations::{IngressSettings, ingress_settings};
use crate::backend::Resolver;
use crate::class::Classes;
use crate::diagnostics::{Diagnostic, ObjectRef, Reporter};
use crate::policy::{Policies, RouteSite};
use crate::tls::Certificates;
use crate::validate::{validate_host, validate_path};

/// Our Ingresses, oldest first.
pub(crate) fn ours_oldest_first<'a>(inputs: &'a Inputs, classes: &Classes<'_>) -> Vec<&'a Ingress> {
    let mut ours: Vec<&Ingress> = inputs
        .ingresses
        .values()
        .map(|i| i.as_ref())
        .filter(|i| classes.is_ours(i))
        .collect();
    ours.sort_by(|a, b| {
        let key = |i: &'a Ingress| {
            (
                i.metadata.creation_timestamp.as_ref(),
                i.metadata.namespace.as_deref().unwrap_or(""),
                i.metadata.name.as_deref().unwrap_or(""),
            )
        };
        key(a).cmp(&key(b))
    });
    ours
}

#[derive(Default)]
struct HostBuilder {
    /// Routes by path match, each with the Ingress that owns it and its
    /// redirect setting (resolved once every certificate is known).
    routes: BTreeMap<PathMatch, (Route, ObjectRef, Redirect)>,
    fallback: Option<(RouteAction, ObjectRef, Redirect)>,
}

/// When plain HTTP is redirected to HTTPS.
#[derive(Clone, Copy)]
enum Redirect {
    /// `ssl-redirect: "false"`.
    Off,
    /// The default: when the host has a certificate.
    IfTls,
    /// `force-ssl-redirect: "true"`.
    Always,
}

impl Redirect {
    fn of(settings: &IngressSettings) -> Redirect {
        if settings.force_ssl_redirect {
            Redirect::Always
        } else if settings.ssl_redirect {
            Redirect::IfTls
        } else {
            Redirect::Off
        }
    }

    fn applies(self, host_has_tls: bool) -> bool {
        match self {
            Redirect::Off => false,
            Redirect::IfTls => host_has_tls,
            Redirect::Always => true,
        }
    }
}

/// Accumulates routes from Ingresses, oldest first.
#[derive(Default)]
pub(crate) struct Builder {
    hosts: BTreeMap<HostMatch, HostBuilder>,
    accepted: BTreeSet<ObjectRef>,
}

impl Builder {
    pub(crate) fn add_ingress(
        &mut self,
        ing: &Ingress,
        backends: &mut Resolver<'_>,
        policies: &mut Policies,
        certificates: &mut Certificates<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let namespace = ing.metadata.namespace.as_deref().unwrap_or("default");
        let name = ing.metadata.name.as_deref().unwrap_or("");
        let object = ObjectRef::new("Ingress", namespace, name);
        let mut report = Reporter::new(object.clone(), diagnostics);
        let route_name = format!("{namespace}/{name}");

        let settings = ingress_settings(ing.metadata.annotations.as_ref(), &mut report);
        if report.errors() > 0 {
            // Refused or invalid annotations reject the whole Ingress: serving
            // it without what the author asked for could fail open.
            return;
        }
        let Some(spec) = &ing.spec else {
            report.error(
                Some("spec".into()),
                "InvalidIngress",
                "spec is missing".into(),
            );
            return;
        };
        let rules = spec.rules.as_deref().unwrap_or_default();
        if rules.is_empty() && spec.default_backend.is_none() {
            report.error(
                Some("spec".into()),
                "InvalidIngress",
                "an Ingress needs rules or a defaultBackend".into(),
            );
            return;
        }
        let mut backend_options = crate::backend::BackendOptions {
            protocol: settings.backend_protocol,
            verify: None,
        };
        if let Some(secret) = &settings.backend_ca_secret {
            match backends.load_ca(namespace, secret) {
                Ok(ca) => {
                    backend_options.verify = Some((ca, settings.backend_server_name.clone()));
                }
                Err(why) => {
                    // Fail closed: proxying without the verification the
                    // author asked for would trust any certificate.
                    report.error(
                        Some(format!(
                            "metadata.annotations[{:?}]",
                            crate::annotations::WEIR_BACKEND_CA_SECRET
                        )),
                        "InvalidBackendCA",
                        why,
                    );
                    return;
                }
            }
        }
        // A bad Secret is reported here and costs only HTTPS for its hosts:
        // the routes are still served.
        certificates.add_ingress(namespace, spec, &mut report);
        let redirect = Redirect::of(&settings);

        let mut contributed = false;
        // Hosts this Ingress names, for its defaultBackend.
        let mut own_hosts = BTreeSet::new();
        for (i, rule) in rules.iter().enumerate() {
            let host = match rule.host.as_deref() {
                None | Some("") => HostMatch::Any,
                Some(h) => match validate_host(h) {
                    Ok(h) => match h.strip_prefix('*') {
                        Some(suffix) => HostMatch::Wildcard(suffix.to_owned()),
                        None => HostMatch::Exact(h),
                    },
                    Err(e) => {
                        report.error(Some(format!("spec.rules[{i}].host")), "InvalidHost", e);
                        continue;
                    }
                },
            };
            own_hosts.insert(host.clone());
            let paths = rule
                .http
                .as_ref()
                .map(|h| h.paths.as_slice())
                .unwrap_or_default();
            for (j, path) in paths.iter().enumerate() {
                let field = format!("spec.rules[{i}].http.paths[{j}]");
                let Some(matcher) = path_match(path, &field, &mut report) else {
                    continue;
                };
                let Some(upstream) = backends.resolve(
                    namespace,
                    &path.backend,
                    &format!("{field}.backend"),
                    &backend_options,
                    &mut report,
                ) else {
                    continue;
                };
                let policy = policies.resolve(&RouteSite {
                    namespace,
                    ingress: name,
                    path: Some(&matcher),
                    service: path.backend.service.as_ref().map(|s| s.name.as_str()),
                });
                let route = Route {
                    name: route_name.clone(),
                    path: matcher.clone(),
                    action: action(&route_name, upstream, &settings, policy),
                };
                let entry = self.hosts.entry(host.clone()).or_default();
                match entry.routes.get(&matcher) {
                    Some((_, owner, _)) if owner != &object => report.error(
                        Some(field),
                        "PathConflict",
                        format!(
                            "host {host} path {} is already served by {owner}, which is older; this path is not served",
                            describe(&matcher)
                        ),
                    ),
                    Some(_) => report.warn(
                        Some(field),
                        "DuplicatePath",
                        format!("path {} is listed twice for host {host}; the first wins", describe(&matcher)),
                    ),
                    None => {
                        entry
                            .routes
                            .insert(matcher, (route, object.clone(), redirect));
                        contributed = true;
                    }
                }
            }
        }

        if let Some(default) = &spec.default_backend
            && let Some(upstream) = backends.resolve(
                namespace,
                default,
                "spec.defaultBackend",
                &backend_options,
                &mut report,
            )
        {
            let policy = policies.resolve(&RouteSite {
                namespace,
                ingress: name,
                path: None,
                service: default.service.as_ref().map(|s| s.name.as_str()),
            });
            let action = action(&route_name, upstream, &settings, policy);
            // The defaultBackend serves unmatched paths of this Ingress's
            // hosts; without host rules it is the catch-all's fallback.
            if own_hosts.is_empty()
                || rules
                    .iter()
                    .any(|r| r.host.as_deref().unwrap_or("").is_empty())
            {
                own_hosts.insert(HostMatch::Any);
            }
            for host in own_hosts {
                let entry = self.hosts.entry(host.clone()).or_default();
                match &entry.fallback {
                    Some((_, owner, _)) => report.warn(
                        Some("spec.defaultBackend".into()),
                        "DefaultBackendConflict",
                        format!("host {host} already falls back to the defaultBackend of {owner}, which is older"),
                    ),
                    None => {
                        entry.fallback = Some((action.clone(), object.clone(), redirect));
                        contributed = true;
                    }
                }
            }
        }

        if contributed {
            self.accepted.insert(report.object().clone());
        } else if report.errors() == 0 {
            report.warn(None, "NoRoutes", "the Ingress contributes no routes".into());
        }
    }

    /// The virtual hosts, with HTTPS redirects and HSTS settled now that
    /// every Ingress's certificates are known (a host's certificate may come
    /// from another Ingress than its paths, as with ingress-nginx).
    pub(crate) fn finish(
        self,
        certificates: &Certificates<'_>,
    ) -> (Vec<VirtualHost>, BTreeSet<ObjectRef>) {
        let hosts = self
            .hosts
            .into_iter()
            .map(|(host, b)| {
                let tls = certificates.covers(&host);
                let settle = |mut a: RouteAction, redirect: Redirect| {
                    a.https_redirect = redirect.applies(tls);
                    a.hsts = tls;
                    a
                };
                let mut routes: Vec<Route> = b
                    .routes
                    .into_values()
                    .map(|(mut r, _, redirect)| {
                        r.action = settle(r.action, redirect);
                        r
                    })
                    .collect();
                routes.sort_by(|a, b| precedence(&a.path).cmp(&precedence(&b.path)));
                VirtualHost {
                    host,
                    routes,
                    fallback: b.fallback.map(|(a, _, redirect)| settle(a, redirect)),
                }
            })
            .collect();
        (hosts, self.accepted)
    }
}

/// Sort key: Exact before Prefix, longer before shorter, then lexical.
fn precedence(p: &PathMatch) -> (u8, std::cmp::Reverse<usize>, &str) {
    match p {
        PathMatch::Exact(s) => (0, std::cmp::Reverse(s.len()), s),
        PathMatch::Prefix(s) => (1, std::cmp::Reverse(s.len()), s),
    }
}

fn describe(m: &PathMatch) -> String {
    match m {
        PathMatch::Exact(p) => format!("{p} (Exact)"),
        PathMatch::Prefix(p) if p.is_empty() => "/ (Prefix)".into(),
        PathMatch::Prefix(p) => format!("{p} (Prefix)"),
    }
}

fn action(
    name: &str,
    upstream: weir_snapshot::UpstreamName,
    settings: &IngressSettings,
    policy: Option<String>,
) -> RouteAction {
    RouteAction {
        name: name.to_owned(),
        backends: vec![WeightedBackend {
            upstream,
            weight: 1,
        }],
        timeout_ms: settings.timeout_ms,
        connect_timeout_ms: settings.connect_timeout_ms,
        send_timeout_ms: settings.send_timeout_ms,
        next_upstream: settings.next_upstream,
        max_body_bytes: settings.max_body_bytes,
        access_log_off: settings.access_log_off,
        policy,
        https_redirect: false,
        hsts: false,
    }
}

fn path_match(path: &HTTPIngressPath, field: &str, report: &mut Reporter<'_>) -> Option<PathMatch> {
    let kind = path.path_type.as_str();
    let value = match (path.path.as_deref(), kind) {
        (Some(p), _) if !p.is_empty() => p,
        // The API defaults an ImplementationSpecific path to "/".
        (_, "ImplementationSpecific") => "/",
        _ => {
            report.error(
                Some(format!("{field}.path")),
                "InvalidPath",
                format!("path is required for pathType {kind}"),
            );
            return None;
        }
    };
    if let Err(e) = validate_path(value) {
        report.error(Some(format!("{field}.path")), "InvalidPath", e);
        return None;
    }
    match kind {
        "Exact" => Some(PathMatch::Exact(value.to_owned())),
        // ImplementationSpecific is a Prefix in weir (regex comes with an
        // explicit annotation).
        "Prefix" | "ImplementationSpecific" => {
            Some(PathMatch::Prefix(value.trim_end_matches('/').to_owned()))
        }
        other => {
            report.error(
                Some(format!("{field}.pathType")),
                "InvalidPathType",
                format!("pathType {other:?} must be Exact, Prefix or ImplementationSpecific"),
            );
            None
        }
    }
}
