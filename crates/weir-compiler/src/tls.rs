//! Certificates from Ingress `spec.tls`, by the SNI names they serve.
//!
//! A Secret is read once per compile however many Ingresses name it. It
//! must hold `tls.crt` (PEM chain, leaf first) and `tls.key` (PKCS#8,
//! PKCS#1 or SEC1 PEM) whose key matches the leaf; anything else is an
//! error on the Ingress field that names it, and those hosts are served
//! over plain HTTP only (no redirect to an HTTPS that would present the
//! wrong certificate) while every other host keeps its certificate. Hosts
//! the certificate does not cover get a warning and are still served with
//! it, as ingress-nginx does. When two Ingresses give the same host
//! different certificates, the older Ingress wins.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::IngressSpec;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use weir_snapshot::{Certificate, HostMatch};

use crate::diagnostics::{Diagnostic, ObjectRef, Reporter};
use crate::validate::validate_host;
use crate::{Inputs, ObjectKey};

/// The Secret type Kubernetes gives TLS Secrets.
const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Certificates collected from Ingresses, oldest first.
pub(crate) struct Certificates<'a> {
    inputs: &'a Inputs,
    /// Each Secret's outcome, parsed once.
    loaded: BTreeMap<ObjectKey, Result<Arc<Certificate>, (&'static str, String)>>,
    /// SNI name (exact or `*.suffix`) → certificate and the Ingress that set it.
    by_host: BTreeMap<String, (Arc<Certificate>, ObjectRef)>,
}

impl<'a> Certificates<'a> {
    pub(crate) fn new(inputs: &'a Inputs) -> Self {
        Certificates {
            inputs,
            loaded: BTreeMap::new(),
            by_host: BTreeMap::new(),
        }
    }

    /// Registers the certificates of one Ingress's `spec.tls`.
    pub(crate) fn add_ingress(
        &mut self,
        namespace: &str,
        spec: &IngressSpec,
        report: &mut Reporter<'_>,
    ) {
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let field = format!("spec.tls[{i}]");
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                report.warn(
                    Some(format!("{field}.secretName")),
                    "NoTLSSecret",
                    "no secretName: these hosts get the default certificate and no HTTPS redirect"
                        .into(),
                );
                continue;
            };
            let cert = match self.load(namespace, secret) {
                Ok(c) => c,
                Err((reason, why)) => {
                    report.error(
                        Some(format!("{field}.secretName")),
                        reason,
                        format!(
                            "Secret {namespace}/{secret}: {why}; its hosts are served over HTTP only"
                        ),
                    );
                    continue;
                }
            };
            // Without hosts, the certificate covers every host this
            // Ingress's rules name.
            let listed: Vec<String> = match tls.hosts.as_deref() {
                Some(h) if !h.is_empty() => h.to_vec(),
                _ => spec
                    .rules
                    .iter()
                    .flatten()
                    .filter_map(|r| r.host.clone())
                    .filter(|h| !h.is_empty())
                    .collect(),
            };
            for (j, host) in listed.iter().enumerate() {
                let host_field = Some(format!("{field}.hosts[{j}]"));
                let host = match validate_host(host) {
                    Ok(h) => h,
                    Err(e) => {
                        report.error(host_field, "InvalidHost", e);
                        continue;
                    }
                };
                if !covers(&cert, &host) {
                    report.warn(
                        host_field.clone(),
                        "CertificateHostMismatch",
                        format!(
                            "the certificate in Secret {namespace}/{secret} does not cover {host}; clients will reject it"
                        ),
                    );
                }
                match self.by_host.get(&host) {
                    Some((existing, owner)) if existing.fingerprint != cert.fingerprint => {
                        if owner != report.object() {
                            report.warn(
                                host_field,
                                "CertificateConflict",
                                format!(
                                    "{host} already has a certificate from {owner}, which is older; that one is served"
                                ),
                            );
                        }
                    }
                    Some(_) => {}
                    None => {
                        self.by_host
                            .insert(host, (cert.clone(), report.object().clone()));
                    }
                }
            }
        }
    }

    /// The `--default-ssl-certificate` Secret, or a diagnostic on it.
    pub(crate) fn default_certificate(
        &mut self,
        namespace: &str,
        name: &str,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Arc<Certificate>> {
        match self.load(namespace, name) {
            Ok(c) => Some(c),
            Err((reason, why)) => {
                Reporter::new(ObjectRef::new("Secret", namespace, name), diagnostics).error(
                    None,
                    reason,
                    format!("--default-ssl-certificate: {why}; the generated certificate is served instead"),
                );
                None
            }
        }
    }

    /// Whether requests for this virtual host arrive with a certificate of
    /// their own (exact name, or a wildcard certificate covering it).
    pub(crate) fn covers(&self, host: &HostMatch) -> bool {
        match host {
            HostMatch::Exact(h) => {
                self.by_host.contains_key(h)
                    || h.split_once('.').is_some_and(|(_, parent)| {
                        self.by_host.contains_key(&format!("*.{parent}"))
                    })
            }
            HostMatch::Wildcard(suffix) => self.by_host.contains_key(&format!("*{suffix}")),
            HostMatch::Any => false,
        }
    }

    /// SNI name → certificate, for the snapshot.
    pub(crate) fn into_map(self) -> BTreeMap<String, Arc<Certificate>> {
        self.by_host.into_iter().map(|(h, (c, _))| (h, c)).collect()
    }

    fn load(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Certificate>, (&'static str, String)> {
        let key = ObjectKey::new(namespace, name);
        if let Some(done) = self.loaded.get(&key) {
            return done.clone();
        }
        let outcome = match self.inputs.secrets.get(&key) {
            None => Err(("TLSSecretNotFound", "not found".to_owned())),
            Some(secret) => parse_secret(secret, &format!("{namespace}/{name}"))
                .map(Arc::new)
                .map_err(|e| ("InvalidTLSSecret", e)),
        };
        self.loaded.insert(key, outcome.clone());
        outcome
    }
}

/// Reads `tls.crt` and `tls.key` (from `data`, or `stringData` as written in
/// a manifest file) and checks that they make a usable certificate.
fn parse_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
    source: &str,
) -> Result<Certificate, String> {
    if let Some(t) = secret.type_.as_deref()
        && t != TLS_SECRET_TYPE
        && t != "Opaque"
    {
        return Err(format!("type is {t:?}, not {TLS_SECRET_TYPE}"));
    }
    let field = |k: &str| crate::secret::value(secret, k).ok_or_else(|| format!("no {k}"));
    let crt = field("tls.crt")?;
    let key = field("tls.key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("tls.key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))?;
    webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| format!("tls.crt's first certificate does not parse: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "tls.key does not match the certificate in tls.crt".to_owned()
            }
            other => format!("tls.key cannot sign: {other}"),
        },
    )?;
    let fingerprint =
        crate::secret::fingerprint(chain.iter().map(|c| c.as_ref()).chain([key.secret_der()]));
    Ok(Certificate {
        source: source.to_owned(),
        fingerprint,
        chain,
        key,
    })
}

/// Whether the leaf certificate is valid for `host` (for a wildcard host,
/// for a name one label under it).
fn covers(cert: &Certificate, host: &str) -> bool {
    let name = match host.strip_prefix("*.") {
        Some(parent) => format!("weir-wildcard-check.{parent}"),
        None => host.to_owned(),
    };
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    let Some(leaf) = cert.chain.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}
