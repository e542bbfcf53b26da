//! A ring-backed [`CryptoProvider`] for jsonwebtoken.
//!
//! jsonwebtoken 10+ ships backends for aws-lc-rs and RustCrypto only; the
//! workspace already links ring (kube's and our rustls use it), and a second
//! crypto library would add a C build or the `rsa` crate's advisory. This is
//! a direct mapping of each JWS algorithm onto ring's primitive for it
//! (RFC 7518 §3): HMAC via `ring::hmac` (constant-time verify), RSASSA
//! PKCS#1 v1.5 and PSS with 2048–8192-bit keys, ECDSA P-256/P-384 with
//! fixed-size signatures, and Ed25519. Every verifier first checks that the
//! key's family matches the algorithm's, which is what defeats algorithm
//! confusion (an RSA public key used as an HMAC secret).

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use ring::{digest, hmac};

/// The provider. Install it with [`install`] before verifying any token.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_components_from_private_key,
        compute_digest,
    },
};

/// Makes [`RING_PROVIDER`] jsonwebtoken's process-wide provider. Idempotent;
/// a provider installed earlier by someone else stays.
pub fn install() {
    let _ = RING_PROVIDER.install_default();
}

fn invalid(kind: ErrorKind) -> Error {
    Error::from(kind)
}

fn check_family(alg: Algorithm, family: jsonwebtoken::AlgorithmFamily) -> Result<()> {
    if alg.family() == family {
        Ok(())
    } else {
        Err(invalid(ErrorKind::InvalidAlgorithm))
    }
}

struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    check_family(*alg, key.family())?;
    Ok(Box::new(Verifier {
        alg: *alg,
        key: key.clone(),
    }))
}

fn rsa_params(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn hmac_alg(alg: Algorithm) -> Option<hmac::Algorithm> {
    Some(match alg {
        Algorithm::HS256 => hmac::HMAC_SHA256,
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => return None,
    })
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let fail = |_| signature::Error::new();
        if let Some(h) = hmac_alg(self.alg) {
            let secret = self
                .key
                .try_get_as_bytes()
                .map_err(|_| signature::Error::new())?;
            return hmac::verify(&hmac::Key::new(h, secret), msg, signature).map_err(fail);
        }
        if let Some(params) = rsa_params(self.alg) {
            return match self.key.kind() {
                DecodingKeyKind::SecretOrDer(der) => sig::UnparsedPublicKey::new(params, der)
                    .verify(msg, signature)
                    .map_err(fail),
                DecodingKeyKind::RsaModulusExponent { n, e } => {
                    sig::RsaPublicKeyComponents { n, e }
                        .verify(params, msg, signature)
                        .map_err(fail)
                }
            };
        }
        let alg: &'static dyn sig::VerificationAlgorithm = match self.alg {
            Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDSA => &sig::ED25519,
            _ => return Err(signature::Error::new()),
        };
        let bytes = self
            .key
            .try_get_as_bytes()
            .map_err(|_| signature::Error::new())?;
        sig::UnparsedPublicKey::new(alg, bytes)
            .verify(msg, signature)
            .map_err(fail)
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Signing exists for tests and tools that mint tokens; weir itself only
/// verifies.
enum SignKey {
    Hmac(hmac::Key),
    Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

struct Signer {
    alg: Algorithm,
    key: SignKey,
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    check_family(*alg, key.family())?;
    let rng = SystemRandom::new();
    let bytes = key.as_bytes();
    let k = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let h = hmac_alg(*alg).ok_or_else(|| invalid(ErrorKind::InvalidAlgorithm))?;
            SignKey::Hmac(hmac::Key::new(h, bytes))
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let enc: &'static dyn sig::RsaEncoding = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                _ => &sig::RSA_PSS_SHA512,
            };
            let pair = sig::RsaKeyPair::from_der(bytes)
                .map_err(|e| invalid(ErrorKind::InvalidRsaKey(e.to_string())))?;
            SignKey::Rsa(pair, enc)
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let a = if *alg == Algorithm::ES256 {
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            SignKey::Ecdsa(
                sig::EcdsaKeyPair::from_pkcs8(a, bytes, &rng)
                    .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?,
            )
        }
        Algorithm::EdDSA => SignKey::Ed(
            sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
                .map_err(|_| invalid(ErrorKind::InvalidEddsaKey))?,
        ),
        _ => return Err(invalid(ErrorKind::InvalidAlgorithm)),
    };
    Ok(Box::new(Signer { alg: *alg, key: k }))
}

impl signature::Signer<Vec<u8>> for Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            SignKey::Hmac(k) => Ok(hmac::sign(k, msg).as_ref().to_vec()),
            SignKey::Rsa(pair, enc) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*enc, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SignKey::Ecdsa(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SignKey::Ed(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for Signer {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = sig::RsaKeyPair::from_der(der)
        .map_err(|e| invalid(ErrorKind::InvalidRsaKey(e.to_string())))?;
    let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((c.n, c.e))
}

fn rsa_components_from_public_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    // ring cannot parse a bare RSA public key; nothing in weir needs it
    // (public keys become JWKs only from private keys, in tests).
    Err(invalid(ErrorKind::InvalidKeyFormat))
}

fn ec_components_from_private_key(
    der: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve, len) = match alg {
        Algorithm::ES256 => (
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            32,
        ),
        Algorithm::ES384 => (
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            48,
        ),
        _ => return Err(invalid(ErrorKind::InvalidEcdsaKey)),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new())
        .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?;
    let public = pair.public_key().as_ref();
    match public.split_first() {
        Some((4, rest)) if rest.len() == 2 * len => {
            let (x, y) = rest.split_at(len);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(invalid(ErrorKind::InvalidEcdsaKey)),
    }
}

fn ed_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    match curve {
        EllipticCurve::Ed25519 => Ok(sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| invalid(ErrorKind::InvalidEddsaKey))?
            .public_key()
            .as_ref()
            .to_vec()),
        _ => Err(invalid(ErrorKind::InvalidAlgorithm)),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(invalid(ErrorKind::InvalidAlgorithm)),
    };
    Ok(digest::digest(alg, data).as_ref().to_vec())
}
