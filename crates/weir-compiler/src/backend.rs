//! Resolves Ingress backends (Service + port) to upstreams of ready pod
//! endpoints, read from EndpointSlices.
//!
//! weir balances across pods itself, so it never proxies to a Service's
//! cluster IP: a backend becomes the set of ready addresses of the
//! EndpointSlices labelled with the Service's name, on the slice port whose
//! name matches the Service port's name. A Service that does not exist (yet)
//! or has no ready endpoints is not a compile error: its routes exist and
//! answer 503, and they start working as soon as endpoints appear.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::networking::v1::IngressBackend;
use weir_snapshot::{RouteAction, Upstream, UpstreamName, UpstreamProtocol, VirtualHost};

use crate::annotations::{WEIR_BACKEND_PROTOCOL, WEIR_UPSTREAM};
use crate::diagnostics::{Diagnostic, ObjectRef, Reporter};
use crate::{CompileOptions, Inputs, ObjectKey, PortRef, ServiceRef};

/// The label EndpointSlice controllers put on a slice to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub(crate) struct Resolver<'a> {
    inputs: &'a Inputs,
    options: &'a CompileOptions,
    /// Slices by (namespace, service name), built once per compile.
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    upstreams: BTreeMap<UpstreamName, Upstream>,
}

/// Why a backend resolved to no endpoints, reported as a warning.
struct Unresolved {
    reason: &'static str,
    message: String,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(inputs: &'a Inputs, options: &'a CompileOptions) -> Self {
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for (key, slice) in &inputs.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                slices
                    .entry((key.namespace.as_str(), service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        Resolver {
            inputs,
            options,
            slices,
            upstreams: BTreeMap::new(),
        }
    }

    /// How many distinct ready pods back the Service `namespace/name`, over
    /// all its EndpointSlices and ports (a dual-stack pod appears in an IPv4
    /// and an IPv6 slice and counts once).
    pub(crate) fn ready_pods(&self, namespace: &str, name: &str) -> u32 {
        // A pod by its name, or by its address when the slice names none
        // (the two kinds apart: a pod may be named like an address).
        let mut pods: BTreeSet<(bool, &str)> = BTreeSet::new();
        let slices = self.slices.get(&(namespace, name)).into_iter().flatten();
        for endpoint in slices.flat_map(|s| &s.endpoints).filter(|e| is_ready(e)) {
            let pod = match &endpoint.target_ref {
                Some(r) => r.name.as_deref().map(|n| (true, n)),
                None => endpoint.addresses.first().map(|a| (false, a.as_str())),
            };
            pods.extend(pod);
        }
        u32::try_from(pods.len()).unwrap_or(u32::MAX)
    }

    /// Resolves an Ingress backend in `namespace`. `None` (with an error
    /// reported) when the backend itself is invalid; a name whose upstream
    /// may have no endpoints otherwise. `protocol` is the Ingress's
    /// `backend-protocol`, which overrides the Service's.
    pub(crate) fn resolve(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
        field: &str,
        protocol: Option<UpstreamProtocol>,
        report: &mut Reporter<'_>,
    ) -> Option<UpstreamName> {
        if backend.resource.is_some() {
            report.error(
                Some(format!("{field}.resource")),
                "UnsupportedBackend",
                "resource backends are not supported; use a service backend".into(),
            );
            return None;
        }
        let Some(service) = &backend.service else {
            report.error(
                Some(field.to_owned()),
                "InvalidBackend",
                "backend must name a service".into(),
            );
            return None;
        };
        let port = service.port.as_ref();
        let port = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(n), None) if (1..=65535).contains(&n) => PortRef::Number(n),
            (None, Some(name)) if !name.is_empty() => PortRef::Name(name.to_owned()),
            _ => {
                report.error(
                    Some(format!("{field}.service.port")),
                    "InvalidBackend",
                    "service port must have exactly one of number (1-65535) or name".into(),
                );
                return None;
            }
        };
        let (name, unresolved) = self.upstream(namespace, &service.name, &port, protocol);
        if let Some(u) = unresolved {
            report.warn(Some(format!("{field}.service")), u.reason, u.message);
        }
        Some(name)
    }

    /// Resolves the `--default-backend` Service; problems are reported on the
    /// Service it names.
    pub(crate) fn resolve_global(
        &mut self,
        target: &ServiceRef,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<RouteAction> {
        let (name, unresolved) = self.upstream(&target.namespace, &target.name, &target.port, None);
        if let Some(u) = unresolved {
            let object = ObjectRef::new("Service", &target.namespace, &target.name);
            let mut report = Reporter::new(object, diagnostics);
            report.warn(None, u.reason, format!("default backend: {}", u.message));
        }
        Some(RouteAction {
            name: "default-backend".into(),
            backends: vec![weir_snapshot::WeightedBackend {
                upstream: name,
                weight: 1,
            }],
            timeout_ms: None,
            access_log_off: false,
            policy: None,
            https_redirect: false,
            hsts: false,
        })
    }

    /// The upstream of a Service port spoken to with `protocol`, or with
    /// what the Service asks for. Its name is `<namespace>/<service>:<port>`,
    /// with `/<protocol>` appended unless it is plain HTTP, so two Ingresses
    /// speaking different protocols to one Service get separate upstreams.
    fn upstream(
        &mut self,
        namespace: &str,
        service: &str,
        port: &PortRef,
        protocol: Option<UpstreamProtocol>,
    ) -> (UpstreamName, Option<Unresolved>) {
        let (endpoints, service_protocol, unresolved) =
            match self.endpoints(namespace, service, port) {
                Ok((endpoints, p)) => (endpoints, p, None),
                Err(u) => (Vec::new(), UpstreamProtocol::Http, Some(u)),
            };
        let protocol = protocol.unwrap_or(service_protocol);
        let name = match protocol {
            UpstreamProtocol::Http => UpstreamName(format!("{namespace}/{service}:{port}")),
            p => UpstreamName(format!("{namespace}/{service}:{port}/{}", p.as_str())),
        };
        self.upstreams.entry(name.clone()).or_insert(Upstream {
            endpoints,
            protocol,
        });
        (name, unresolved)
    }

    /// Ready endpoints of a Service port, and the protocol the Service asks
    /// for: its `weir.dev/backend-protocol` annotation, else the port's
    /// `appProtocol`, else HTTP/1.1.
    fn endpoints(
        &self,
        namespace: &str,
        service_name: &str,
        port: &PortRef,
    ) -> Result<(Vec<SocketAddr>, UpstreamProtocol), Unresolved> {
        let key = ObjectKey::new(namespace, service_name);
        let Some(service) = self.inputs.services.get(&key) else {
            return Err(Unresolved {
                reason: "ServiceNotFound",
                message: format!(
                    "service {namespace}/{service_name} not found; requests get 503 until it exists"
                ),
            });
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(Unresolved {
                reason: "UnsupportedServiceType",
                message: format!(
                    "service {namespace}/{service_name} is ExternalName, which weir does not proxy to yet"
                ),
            });
        }
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let Some(service_port) = ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        }) else {
            return Err(Unresolved {
                reason: "ServicePortNotFound",
                message: format!(
                    "service {namespace}/{service_name} has no port {port}; requests get 503"
                ),
            });
        };
        let protocol = match service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(WEIR_BACKEND_PROTOCOL))
        {
            Some(value) => crate::annotations::parse_backend_protocol(value).map_err(|e| {
                Unresolved {
                    reason: "InvalidBackendProtocol",
                    message: format!(
                        "service {namespace}/{service_name}: {WEIR_BACKEND_PROTOCOL}: {e}; requests get 503"
                    ),
                }
            })?,
            None => service_port
                .app_protocol
                .as_deref()
                .and_then(crate::annotations::app_protocol)
                .unwrap_or_default(),
        };
        if let Some(list) = self.static_upstreams(service)? {
            return Ok((list, protocol));
        }
        let mut found = BTreeSet::new();
        for slice in self
            .slices
            .get(&(namespace, service_name))
            .into_iter()
            .flatten()
        {
            ready_endpoints(slice, service_port, &mut found);
        }
        Ok((found.into_iter().collect(), protocol))
    }

    /// The `weir.dev/upstream` annotation: a comma-separated list of
    /// `ip:port` that replaces EndpointSlices, for the manifest provider.
    fn static_upstreams(&self, service: &Service) -> Result<Option<Vec<SocketAddr>>, Unresolved> {
        let Some(value) = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(WEIR_UPSTREAM))
        else {
            return Ok(None);
        };
        if !self.options.allow_static_upstreams {
            return Err(Unresolved {
                reason: "StaticUpstreamNotAllowed",
                message: format!(
                    "{WEIR_UPSTREAM} is only honored by `weir serve --manifests`; endpoints come from EndpointSlices here"
                ),
            });
        }
        let mut out = BTreeSet::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let addr: SocketAddr = item.parse().map_err(|_| Unresolved {
                reason: "InvalidStaticUpstream",
                message: format!("{WEIR_UPSTREAM}: {item:?} is not an ip:port address"),
            })?;
            out.insert(addr);
        }
        Ok(Some(out.into_iter().collect()))
    }

    /// The upstreams the finished virtual hosts refer to; resolutions that
    /// ended up unused (a path that lost a conflict) are dropped.
    pub(crate) fn into_upstreams(
        mut self,
        hosts: &[VirtualHost],
        default_backend: Option<&RouteAction>,
    ) -> BTreeMap<UpstreamName, Upstream> {
        let mut used = BTreeSet::new();
        let actions = hosts
            .iter()
            .flat_map(|h| {
                h.routes
                    .iter()
                    .map(|r| &r.action)
                    .chain(h.fallback.as_ref())
            })
            .chain(default_backend);
        for action in actions {
            used.extend(action.backends.iter().map(|b| b.upstream.clone()));
        }
        self.upstreams.retain(|name, _| used.contains(name));
        self.upstreams
    }
}

/// Whether an endpoint takes traffic. A nil `ready` means ready: the API
/// says consumers should assume so.
fn is_ready(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.ready)
        .unwrap_or(true)
}

/// Adds the ready endpoints of `slice` for `service_port` to `out`.
fn ready_endpoints(
    slice: &EndpointSlice,
    service_port: &ServicePort,
    out: &mut BTreeSet<SocketAddr>,
) {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return; // FQDN slices are not produced for Services with selectors.
    }
    // Slice ports carry the Service port's name ("" or absent when the
    // Service has a single unnamed port).
    let wanted = service_port.name.as_deref().unwrap_or("");
    let Some(port) = slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == wanted)
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    else {
        return;
    };
    for endpoint in slice.endpoints.iter().filter(|e| is_ready(e)) {
        // All addresses of one endpoint are the same pod; the first suffices.
        if let Some(ip) = endpoint
            .addresses
            .first()
            .and_then(|a| a.parse::<IpAddr>().ok())
        {
            out.insert(SocketAddr::new(ip, port));
        }
    }
}
