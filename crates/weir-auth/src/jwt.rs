//! JWT verification for one provider, with a verified-token cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::HeaderName;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use weir_snapshot::{JwtAlgorithm, JwtProvider, TokenSource};

use crate::keys::KeySet;
use crate::remote::RemoteKeys;

/// Tokens longer than this are refused before any parsing.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified tokens remembered per provider.
const CACHE_CAPACITY: usize = 10_000;

/// Where a provider's keys are.
pub(crate) enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<RemoteKeys>),
    /// The configured keys could not be loaded; every token fails.
    Broken(String),
}

/// Why a token was refused; the message goes into `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or a header we cannot read.
    #[error("the token is malformed")]
    Malformed,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is too large")]
    TooLarge,
    /// `alg` is not accepted by the provider (including `none`).
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// No provider has this issuer.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// `aud` lacks every accepted audience.
    #[error("the token's audience is not accepted")]
    Audience,
    /// `exp` passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` not reached.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A required claim (`exp`, `iss`, `aud`) is absent or not of its type.
    #[error("the token lacks a required claim or has one of the wrong type")]
    MissingClaim,
    /// No key verifies the signature.
    #[error("the token's signature is invalid")]
    Signature,
    /// The token names a key id the provider does not have.
    #[error("the token's key id is unknown")]
    UnknownKey,
    /// The provider's keys are unavailable.
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
}

/// A provider ready to verify.
pub(crate) struct Verifier {
    pub(crate) config: JwtProvider,
    /// The token header, parsed once (`None` for a cookie).
    header: Option<HeaderName>,
    keys: Keys,
    validations: HashMap<Algorithm, Validation>,
    /// `None` when caching is off. Shared with the verifier of the previous
    /// snapshot when the provider did not change (see [`Verifier::inherit`]).
    cache: Option<Arc<Mutex<TokenCache>>>,
}

/// Verified tokens: token -> (claims, `exp`).
type TokenCache = HashMap<Box<str>, (Arc<Value>, u64)>;

fn to_jwt(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
    }
}

impl Verifier {
    pub(crate) fn new(config: JwtProvider, keys: Keys, cache: bool) -> Self {
        let validations = config
            .algorithms
            .iter()
            .map(|a| {
                let alg = to_jwt(*a);
                let mut v = Validation::new(alg);
                v.leeway = config.leeway_secs;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_issuer(&[&config.issuer]);
                let mut required = vec!["exp", "iss"];
                if config.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&config.audiences);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (alg, v)
            })
            .collect();
        let header = match &config.token {
            TokenSource::Header { name, .. } => HeaderName::from_bytes(name.as_bytes()).ok(),
            TokenSource::Cookie(_) => None,
        };
        Verifier {
            config,
            header,
            keys,
            validations,
            cache: cache.then(|| Arc::new(Mutex::new(HashMap::new()))),
        }
    }

    /// Takes over the verified tokens of the same provider in the previous
    /// snapshot when nothing about it changed (issuer, audiences, keys or
    /// key source, …), so an unrelated change elsewhere in the cluster (an
    /// endpoint moving) does not cost every client a signature check.
    /// A changed provider starts empty: a token verified under its old
    /// rules must be checked again under the new ones.
    #[cfg(test)]
    pub(crate) fn shares_cache_with(&self, other: &Verifier) -> bool {
        match (&self.cache, &other.cache) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    pub(crate) fn inherit(&mut self, previous: &Verifier) {
        if self.cache.is_some() && previous.config == self.config {
            self.cache.clone_from(&previous.cache);
        }
    }

    /// The token this provider reads from the request, if present.
    pub(crate) fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        match &self.config.token {
            TokenSource::Header { prefix, .. } => {
                let value = headers.get(self.header.as_ref()?)?.to_str().ok()?.trim();
                if prefix.is_empty() {
                    return Some(value);
                }
                let head = value.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| value.get(prefix.len()..))
                    .flatten()
                    .map(str::trim)
            }
            TokenSource::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim_matches('"')),
        }
    }

    /// The header the token is read from, when it is one.
    pub(crate) fn token_header(&self) -> Option<&HeaderName> {
        self.header.as_ref()
    }

    /// Verifies a token: signature, algorithm, `iss`, `aud`, `exp`, `nbf`.
    pub(crate) async fn verify(&self, token: &str, now: u64) -> Result<Arc<Value>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        if let Some(claims) = self.cached(token, now) {
            return Ok(claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let validation = self
            .validations
            .get(&header.alg)
            .ok_or(TokenError::Algorithm)?;
        let family = header.alg.family();
        let keys = match &self.keys {
            Keys::Static(k) => k.clone(),
            Keys::Broken(_) => return Err(TokenError::KeysUnavailable),
            Keys::Remote(remote) => {
                let known = remote
                    .keys()
                    .is_some_and(|k| header.kid.as_deref().is_none_or(|kid| k.has_kid(kid)));
                if !known && let Some(kid) = header.kid.as_deref() {
                    remote.refetch_for_unknown_kid(kid).await;
                }
                remote.keys().ok_or(TokenError::KeysUnavailable)?
            }
        };
        let mut result = Err(TokenError::UnknownKey);
        for key in keys.candidates(header.kid.as_deref(), family) {
            match jsonwebtoken::decode::<Value>(token, key, validation) {
                Ok(data) => {
                    result = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    result = Err(map_error(e.kind()));
                    if result != Err(TokenError::Signature) {
                        break;
                    }
                }
            }
        }
        let claims = Arc::new(result?);
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            self.remember(token, claims.clone(), exp);
        }
        Ok(claims)
    }

    fn cached(&self, token: &str, now: u64) -> Option<Arc<Value>> {
        // A poisoned cache is still a valid map: keep using it.
        let cache = self
            .cache
            .as_ref()?
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (claims, exp) = cache.get(token)?;
        // Never outlive `exp` (no leeway for cached tokens).
        (now < *exp).then(|| claims.clone())
    }

    fn remember(&self, token: &str, claims: Arc<Value>, exp: u64) {
        let Some(cache) = self.cache.as_ref() else {
            return;
        };
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            let now = jsonwebtoken::get_current_timestamp();
            cache.retain(|_, (_, e)| *e > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(token.into(), (claims, exp));
    }

    /// Whether the keys are loaded (remote sources gate readiness).
    pub(crate) fn keys_problem(&self) -> Option<&str> {
        match &self.keys {
            Keys::Broken(e) => Some(e),
            _ => None,
        }
    }
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            TokenError::MissingClaim
        }
        _ => TokenError::Malformed,
    }
}

/// The unverified `iss` of a token, to pick the provider that verifies it.
pub(crate) fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

/// The value at a claim path.
pub(crate) fn claim<'a>(claims: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(claims, |v, seg| v.get(seg))
}
