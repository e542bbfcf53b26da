//! A test certificate authority (rcgen on ring): leaf certificates for
//! weir's HTTPS listener and for TLS upstreams, and the Secrets that carry
//! them into manifests.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate: PEM for Secrets, DER to serve it or recognise it.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Leaf {
    /// The private key, for a server presenting this certificate.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl Ca {
    /// A new CA with common name `name`.
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(params, key);
        Ca { cert, issuer }
    }

    /// A leaf for `names`, signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A root store trusting only this CA, for clients.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("add root");
        roots
    }

    /// An Opaque Secret `name` whose `ca.crt` is this CA (what
    /// `weir.dev/backend-ca-secret` names).
    pub fn ca_secret_yaml(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n  ca.crt: |\n{}",
            indent(&self.cert.pem())
        )
    }
}

/// A `kubernetes.io/tls` Secret `name` holding `crt` and `key` (PEM).
pub fn tls_secret_yaml(name: &str, crt: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    )
}

/// PEM text as a YAML block scalar's lines.
fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}
