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
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use weir_snapshot::{
    RouteAction, Upstream, UpstreamName, UpstreamProtocol, UpstreamTls, VirtualHost,
};

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
    /// CA Secrets read so far, each parsed once per compile.
    cas: BTreeMap<ObjectKey, Result<Arc<CaRoots>, String>>,
}

/// CA certificates from a Secret's `ca.crt`.
pub(crate) struct CaRoots {
    source: String,
    fingerprint: String,
    roots: Vec<CertificateDer<'static>>,
}

/// What an Ingress asks of the connections to its backends.
#[derive(Clone, Default)]
pub(crate) struct BackendOptions {
    /// `backend-protocol`; `None` lets the Service decide.
    pub(crate) protocol: Option<UpstreamProtocol>,
    /// Verify TLS backends with these CAs, for this name (default
    /// `<service>.<namespace>.svc`).
    pub(crate) verify: Option<(Arc<CaRoots>, Option<String>)>,
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
            cas: BTreeMap::new(),
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
    /// may have no endpoints otherwise. `options` come from the Ingress's
    /// annotations; its `backend-protocol` overrides the Service's.
    pub(crate) fn resolve(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
        field: &str,
        options: &BackendOptions,
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
        let (name, unresolved) = match self.upstream(namespace, &service.name, &port, options) {
            Ok(done) => done,
            Err(why) => {
                report.error(
                    Some(format!("{field}.service")),
                    "BackendVerifyWithoutTLS",
                    why,
                );
                return None;
            }
        };
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
        let options = BackendOptions::default();
        // Without verification options nothing can be refused.
        let Ok((name, unresolved)) =
            self.upstream(&target.namespace, &target.name, &target.port, &options)
        else {
            return None;
        };
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
            connect_timeout_ms: None,
            send_timeout_ms: None,
            next_upstream: None,
            max_body_bytes: None,
            access_log_off: false,
            policy: None,
            https_redirect: false,
            hsts: false,
        })
    }

    /// The upstream of a Service port spoken to with the Ingress's protocol,
    /// or with what the Service asks for. Its name is
    /// `<namespace>/<service>:<port>`, with `/<protocol>` appended unless it
    /// is plain HTTP and `/verify=<name>@<ca secret>` when verified, so
    /// Ingresses speaking to one Service differently get separate upstreams.
    /// `Err` when verification is asked of a backend that is not TLS.
    fn upstream(
        &mut self,
        namespace: &str,
        service: &str,
        port: &PortRef,
        options: &BackendOptions,
    ) -> Result<(UpstreamName, Option<Unresolved>), String> {
        let (endpoints, service_protocol, unresolved) =
            match self.endpoints(namespace, service, port) {
                Ok((endpoints, p)) => (endpoints, p, None),
                Err(u) => (Vec::new(), UpstreamProtocol::Http, Some(u)),
            };
        let protocol = options.protocol.unwrap_or(service_protocol);
        let mut name = match protocol {
            UpstreamProtocol::Http => format!("{namespace}/{service}:{port}"),
            p => format!("{namespace}/{service}:{port}/{}", p.as_str()),
        };
        let verify = match &options.verify {
            None => None,
            Some(_) if !protocol.is_tls() => {
                return Err(format!(
                    "{} asks to verify the certificate of service {namespace}/{service}, which is spoken to over {}; set backend-protocol to https or h2",
                    crate::annotations::WEIR_BACKEND_CA_SECRET,
                    protocol.as_str()
                ));
            }
            Some((ca, server_name)) => {
                let server_name = server_name
                    .clone()
                    .unwrap_or_else(|| format!("{service}.{namespace}.svc"));
                name.push_str(&format!("/verify={server_name}@{}", ca.source));
                Some(Arc::new(UpstreamTls {
                    ca_source: ca.source.clone(),
                    ca_fingerprint: ca.fingerprint.clone(),
                    server_name,
                    roots: ca.roots.clone(),
                }))
            }
        };
        let name = UpstreamName(name);
        self.upstreams.entry(name.clone()).or_insert(Upstream {
            endpoints,
            protocol,
            verify,
        });
        Ok((name, unresolved))
    }

    /// The CA certificates in `ca.crt` of the Secret `namespace/name`.
    pub(crate) fn load_ca(&mut self, namespace: &str, name: &str) -> Result<Arc<CaRoots>, String> {
        let key = ObjectKey::new(namespace, name);
        if let Some(done) = self.cas.get(&key) {
            return done.clone();
        }
        let outcome = match self.inputs.secrets.get(&key) {
            None => Err(format!("Secret {namespace}/{name} not found")),
            Some(secret) => parse_ca(secret, &format!("{namespace}/{name}")).map(Arc::new),
        };
        self.cas.insert(key, outcome.clone());
        outcome
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

/// Reads `ca.crt` (from `data`, or `stringData` in a manifest file): PEM
/// certificates that must each be usable as a trust anchor.
fn parse_ca(secret: &k8s_openapi::api::core::v1::Secret, source: &str) -> Result<CaRoots, String> {
    let pem = crate::secret::value(secret, "ca.crt")
        .ok_or_else(|| format!("Secret {source} has no ca.crt"))?;
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("Secret {source}: ca.crt is not PEM certificates: {e}"))?;
    if roots.is_empty() {
        return Err(format!("Secret {source}: ca.crt holds no certificate"));
    }
    for (i, root) in roots.iter().enumerate() {
        webpki::anchor_from_trusted_cert(root).map_err(|e| {
            format!("Secret {source}: certificate {i} of ca.crt is not a usable CA: {e}")
        })?;
    }
    let fingerprint = crate::secret::fingerprint(roots.iter().map(|r| r.as_ref()));
    Ok(CaRoots {
        source: source.to_owned(),
        fingerprint,
        roots,
    })
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
