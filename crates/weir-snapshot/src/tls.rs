//! TLS certificates as the snapshot carries them: validated DER, ready for
//! the data plane to turn into a signing key.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Serialize, Serializer};

/// A certificate chain and its private key from a `kubernetes.io/tls`
/// Secret, checked by the compiler (parses, key matches the leaf). The
/// fingerprint identifies the material, so the data plane reuses its
/// signing key across snapshots while the Secret is unchanged, and golden
/// files and logs never print key bytes.
#[derive(Debug)]
pub struct Certificate {
    /// Where it came from: `namespace/secret`, or a flag.
    pub source: String,
    /// SHA-256 of the chain and key, hex.
    pub fingerprint: String,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8, PKCS#1 or SEC1.
    pub key: PrivateKeyDer<'static>,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.fingerprint == other.fingerprint
    }
}

impl Eq for Certificate {}

impl Serialize for Certificate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Certificate", 2)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("fingerprint", &self.fingerprint)?;
        st.end()
    }
}

/// How weir verifies an upstream's TLS certificate: against the CA
/// certificates of a Secret, for a DNS name that is also sent as SNI.
/// Without it a TLS upstream is encrypted but not authenticated.
#[derive(Debug)]
pub struct UpstreamTls {
    /// `namespace/secret` holding `ca.crt`.
    pub ca_source: String,
    /// SHA-256 of the CA certificates, hex: pools are kept per trust
    /// configuration, and dumps never print certificates.
    pub ca_fingerprint: String,
    /// The name the upstream's certificate must be valid for.
    pub server_name: String,
    /// Trust anchors.
    pub roots: Vec<CertificateDer<'static>>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_source == other.ca_source
            && self.ca_fingerprint == other.ca_fingerprint
            && self.server_name == other.server_name
    }
}

impl Eq for UpstreamTls {}

impl Serialize for UpstreamTls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("UpstreamTls", 3)?;
        st.serialize_field("caSource", &self.ca_source)?;
        st.serialize_field("caFingerprint", &self.ca_fingerprint)?;
        st.serialize_field("serverName", &self.server_name)?;
        st.end()
    }
}
