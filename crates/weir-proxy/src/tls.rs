//! TLS termination: the rustls server configuration and the certificate
//! resolver that picks a certificate by SNI from the installed snapshot.
//!
//! Certificates swap with the snapshot: the resolver reads an `ArcSwap`
//! per handshake, so a rotated Secret is presented to the next handshake
//! while established connections keep the session they negotiated. Signing
//! keys are built once per certificate fingerprint and reused across
//! snapshots while the Secret is unchanged.
//!
//! Selection: the exact SNI name, then the wildcard one label up
//! (`a.example.com` → `*.example.com`), then the default certificate
//! (`--default-ssl-certificate`, else one generated at start-up, as other
//! controllers do). No SNI (IP-address clients) gets the default.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use weir_snapshot::Snapshot;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The generated default certificate could not be made.
    #[error("generating the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Certificates by SNI name, as one snapshot defines them.
#[derive(Default)]
struct Table {
    /// Exact host names.
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// Wildcards by the parent they cover (`*.example.com` under
    /// `example.com`), so a handshake looks one up without allocating.
    by_parent: HashMap<String, Arc<CertifiedKey>>,
    /// The snapshot's default certificate, when it has one.
    default: Option<Arc<CertifiedKey>>,
}

/// Picks the certificate for each handshake.
pub struct Resolver {
    table: ArcSwap<Table>,
    /// Presented when nothing else matches and no default is configured.
    generated: Arc<CertifiedKey>,
    /// Signing keys by certificate fingerprint, kept while a snapshot uses
    /// them.
    built: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("names", &self.table.load().by_name.len())
            .field("wildcards", &self.table.load().by_parent.len())
            .finish()
    }
}

impl Resolver {
    /// A resolver with no certificates but a freshly generated self-signed
    /// default (CN "weir default certificate").
    pub fn new() -> Result<Resolver, TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["weir.invalid".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weir default certificate");
        let cert = params.self_signed(&key)?;
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let generated = Arc::new(CertifiedKey::from_der(
            vec![cert.der().clone()],
            der,
            &provider(),
        )?);
        Ok(Resolver {
            table: ArcSwap::from_pointee(Table::default()),
            generated,
            built: Mutex::new(HashMap::new()),
        })
    }

    /// Installs the certificates of `snapshot`. A certificate rustls
    /// refuses (the compiler checked it, so this is not expected) is logged
    /// and left out: its names get the default certificate.
    pub fn install(&self, snapshot: &Snapshot) {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = HashMap::new();
        let mut key_for = |c: &Arc<weir_snapshot::Certificate>| -> Option<Arc<CertifiedKey>> {
            if let Some(k) = kept.get(&c.fingerprint) {
                return Some(Arc::clone(k));
            }
            let k = match built.remove(&c.fingerprint) {
                Some(k) => k,
                None => {
                    match CertifiedKey::from_der(c.chain.clone(), c.key.clone_key(), &provider()) {
                        Ok(k) => Arc::new(k),
                        Err(e) => {
                            tracing::error!(source = %c.source, error = %e, "Certificate refused; its hosts get the default certificate.");
                            return None;
                        }
                    }
                }
            };
            kept.insert(c.fingerprint.clone(), Arc::clone(&k));
            Some(k)
        };
        let mut table = Table::default();
        for (name, cert) in &snapshot.certificates {
            if let Some(k) = key_for(cert) {
                match name.strip_prefix("*.") {
                    Some(parent) => table.by_parent.insert(parent.to_owned(), k),
                    None => table.by_name.insert(name.clone(), k),
                };
            }
        }
        table.default = snapshot.default_certificate.as_ref().and_then(&mut key_for);
        *built = kept;
        self.table.store(Arc::new(table));
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        if let Some(sni) = hello.server_name() {
            // rustls hands over the SNI name validated and lower-cased.
            if let Some(k) = table.by_name.get(sni) {
                return Some(Arc::clone(k));
            }
            if let Some((_, parent)) = sni.split_once('.')
                && let Some(k) = table.by_parent.get(parent)
            {
                return Some(Arc::clone(k));
            }
        }
        Some(Arc::clone(
            table.default.as_ref().unwrap_or(&self.generated),
        ))
    }
}

/// The workspace's one crypto provider (ring), for the server and for
/// connections to upstreams.
pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The HTTPS listener's configuration: TLS 1.3 and 1.2 only, ring's suites
/// (AES-GCM and ChaCha20-Poly1305 with ECDHE; no CBC, no RSA key exchange),
/// ALPN `h2` then `http/1.1`, stateless session tickets for resumption.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
