//! Verification key sets: from a JWKS document, a PEM public key or an HMAC
//! secret, indexed by `kid`.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{AlgorithmFamily, DecodingKey};

/// Keys of one provider.
#[derive(Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Vec<DecodingKey>>,
    /// Every key, for tokens without a `kid`.
    all: Vec<DecodingKey>,
}

impl KeySet {
    /// Keys a token may have been signed with: those of its `kid`, or every
    /// key of the algorithm's family when it names none.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&str>,
        family: AlgorithmFamily,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        let list: &[DecodingKey] = match kid {
            Some(k) => self.by_kid.get(k).map(Vec::as_slice).unwrap_or_default(),
            None => &self.all,
        };
        list.iter().filter(move |k| k.family() == family)
    }

    /// Whether a key with this `kid` is known.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    fn push(&mut self, kid: Option<String>, key: DecodingKey) {
        if let Some(kid) = kid {
            self.by_kid.entry(kid).or_default().push(key.clone());
        }
        self.all.push(key);
    }

    /// Parses a JWKS. Keys weir cannot use (symmetric `oct` keys, unknown
    /// types, `use: enc`) are skipped; a set with no usable key is an error.
    pub(crate) fn from_jwks(raw: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_slice(raw).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut out = KeySet::default();
        for jwk in &set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => out.push(jwk.common.key_id.clone(), key),
                Err(e) => tracing::debug!(error = %e, "Skipping an unusable JWK."),
            }
        }
        if out.all.is_empty() {
            return Err("the JWKS holds no usable signing key".into());
        }
        Ok(out)
    }

    /// Parses a PEM public key (RSA, EC or Ed25519).
    pub(crate) fn from_pem(raw: &[u8]) -> Result<KeySet, String> {
        let key = DecodingKey::from_rsa_pem(raw)
            .or_else(|_| DecodingKey::from_ec_pem(raw))
            .or_else(|_| DecodingKey::from_ed_pem(raw))
            .map_err(|_| "not a PEM RSA, EC or Ed25519 public key".to_owned())?;
        let mut out = KeySet::default();
        out.push(None, key);
        Ok(out)
    }

    /// An HMAC secret.
    pub(crate) fn from_hmac(secret: &[u8]) -> KeySet {
        let mut out = KeySet::default();
        out.push(None, DecodingKey::from_secret(secret));
        out
    }
}
