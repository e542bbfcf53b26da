//! Validates one `GatewayPolicy` spec and turns its sections into snapshot
//! form, reading the Secrets it names. Every problem is a diagnostic on the
//! policy; an invalid policy still attaches to its targets, fail closed.

use std::collections::{BTreeMap, BTreeSet};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use k8s_openapi::api::core::v1::Secret;
use weir_crd::{GatewayPolicySpec, JwtProvider as CrdProvider, SecretKeyRef};
use weir_snapshot::{
    ApiKeys, Authentication, Authorization, ClaimHeader, ClaimRule, ClaimTest, Consumer,
    JwtAlgorithm, JwtKeys, JwtProvider, RateAlgorithm, RateLimitHeaders, RateLimitKey,
    RateLimitRule, RateLimits, RateScope, Redacted, StoreFailure, TokenSource,
};

use crate::diagnostics::Reporter;
use crate::duration::parse_duration_ms;
use crate::secret;
use crate::{Inputs, ObjectKey};

/// Default and largest clock skew tolerated for `exp` / `nbf`.
const DEFAULT_LEEWAY_SECS: u64 = 30;
const MAX_LEEWAY_SECS: u64 = 300;
/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_HMAC_BYTES: usize = 32;

/// The enforceable sections of one valid policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sections {
    pub(crate) authentication: Option<Authentication>,
    pub(crate) authorization: Option<Authorization>,
    pub(crate) rate_limits: Option<RateLimits>,
}

/// Compiles the sections of `spec`. Errors are reported; the caller treats a
/// policy with errors as invalid.
pub(crate) fn compile_sections(
    namespace: &str,
    policy: &str,
    spec: &GatewayPolicySpec,
    inputs: &Inputs,
    report: &mut Reporter<'_>,
) -> Sections {
    for (set, field) in [
        (spec.cors.is_some(), "spec.cors"),
        (spec.ip_access.is_some(), "spec.ipAccess"),
        (spec.headers.is_some(), "spec.headers"),
        (spec.timeouts.is_some(), "spec.timeouts"),
        (spec.retries.is_some(), "spec.retries"),
    ] {
        if set {
            report.error(
                Some(field.into()),
                "Unsupported",
                format!("{field} is not enforced by this version of weir; remove it (the policy is not applied, and the routes it targets answer 503 until it is fixed)"),
            );
        }
    }
    let ctx = Ctx {
        namespace,
        policy,
        inputs,
    };
    let authentication = spec.authentication.as_ref().map(|a| {
        let providers = a
            .jwt
            .as_ref()
            .map(|j| j.providers.as_slice())
            .unwrap_or_default();
        let mut names = BTreeSet::new();
        let mut jwt = Vec::new();
        for (i, p) in providers.iter().enumerate() {
            let field = format!("spec.authentication.jwt.providers[{i}]");
            if !names.insert(p.name.as_str()) {
                report.error(
                    Some(format!("{field}.name")),
                    "InvalidPolicy",
                    format!("provider name {:?} is used twice", p.name),
                );
                continue;
            }
            if let Some(p) = ctx.provider(p, &field, report) {
                jwt.push(p);
            }
        }
        let api_keys = a
            .api_keys
            .as_ref()
            .and_then(|k| ctx.api_keys(k, "spec.authentication.apiKeys", report));
        if a.jwt.is_none() && a.api_keys.is_none() {
            report.error(
                Some("spec.authentication".into()),
                "InvalidPolicy",
                "authentication needs jwt, apiKeys or both".into(),
            );
        }
        Authentication {
            optional: a.mode == Some(weir_crd::AuthenticationMode::Optional),
            jwt,
            api_keys,
        }
    });
    let authorization = spec.authorization.as_ref().map(|a| {
        let mut require_claims = Vec::new();
        for (i, r) in a.require_claims.iter().enumerate() {
            let field = format!("spec.authorization.requireClaims[{i}]");
            let test = match (&r.equals, &r.any_of, &r.all_of) {
                (Some(v), None, None) => ClaimTest::Equals(v.clone()),
                (None, Some(v), None) if !v.is_empty() => ClaimTest::AnyOf(v.clone()),
                (None, None, Some(v)) if !v.is_empty() => ClaimTest::AllOf(v.clone()),
                _ => {
                    report.error(
                        Some(field),
                        "InvalidPolicy",
                        "set exactly one of equals, anyOf (non-empty) and allOf (non-empty)"
                            .into(),
                    );
                    continue;
                }
            };
            match claim_path(&r.claim) {
                Some(claim) => require_claims.push(ClaimRule { claim, test }),
                None => report.error(
                    Some(format!("{field}.claim")),
                    "InvalidPolicy",
                    format!("{:?} is not a claim name (dots separate nested claims)", r.claim),
                ),
            }
        }
        let mut allowed_consumers = a.allowed_consumers.clone();
        allowed_consumers.sort();
        allowed_consumers.dedup();
        if !a.allowed_consumers.is_empty() && authentication_lacks_api_keys(spec) {
            report.warn(
                Some("spec.authorization.allowedConsumers".into()),
                "NoApiKeys",
                "allowedConsumers is set but this policy configures no apiKeys; it applies to API keys configured by a less specific policy".into(),
            );
        }
        Authorization {
            require_claims,
            allowed_consumers,
        }
    });
    let rate_limits = spec
        .rate_limits
        .as_ref()
        .map(|rules| compile_rate_limits(namespace, policy, spec, rules, report));
    Sections {
        authentication,
        authorization,
        rate_limits,
    }
}

/// Shortest and longest rate-limit periods: below a second the counters
/// measure the network more than the client; above a day, use quotas.
const MIN_PERIOD_MS: u64 = 1000;
const MAX_PERIOD_MS: u64 = 24 * 3600 * 1000;

fn compile_rate_limits(
    namespace: &str,
    policy: &str,
    spec: &GatewayPolicySpec,
    rules: &[weir_crd::RateLimit],
    report: &mut Reporter<'_>,
) -> RateLimits {
    use weir_crd::{
        OnStoreFailure as CrdFailure, RateLimitAlgorithm as CrdAlgorithm,
        RateLimitHeaders as CrdHeaders, RateLimitMode, RateLimitScope,
    };
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let field = format!("spec.rateLimits[{i}]");
        if !names.insert(r.name.as_str()) {
            report.error(
                Some(format!("{field}.name")),
                "InvalidPolicy",
                format!("rule name {:?} is used twice", r.name),
            );
            continue;
        }
        let period_ms = match parse_duration_ms(&r.per) {
            Ok(ms) if (MIN_PERIOD_MS..=MAX_PERIOD_MS).contains(&ms) => ms,
            Ok(_) => {
                report.error(
                    Some(format!("{field}.per")),
                    "InvalidPolicy",
                    "per must be between 1s and 24h".into(),
                );
                continue;
            }
            Err(e) => {
                report.error(Some(format!("{field}.per")), "InvalidPolicy", e);
                continue;
            }
        };
        if r.requests == 0 {
            report.error(
                Some(format!("{field}.requests")),
                "InvalidPolicy",
                "requests must be at least 1".into(),
            );
            continue;
        }
        let algorithm = match r.algorithm.unwrap_or_default() {
            CrdAlgorithm::Gcra => RateAlgorithm::Gcra,
            CrdAlgorithm::SlidingWindow => RateAlgorithm::SlidingWindow,
            CrdAlgorithm::FixedWindow => RateAlgorithm::FixedWindow,
        };
        if r.burst.is_some() && algorithm != RateAlgorithm::Gcra {
            report.error(
                Some(format!("{field}.burst")),
                "InvalidPolicy",
                "burst applies to the Gcra algorithm only".into(),
            );
            continue;
        }
        let mut key = Vec::new();
        if let Some(k) = &r.key {
            if k.client_ip == Some(true) {
                key.push(RateLimitKey::ClientIp);
            }
            if let Some(h) = &k.header {
                if !is_token(h) {
                    report.error(
                        Some(format!("{field}.key.header")),
                        "InvalidPolicy",
                        format!("{h:?} is not a header name"),
                    );
                    continue;
                }
                key.push(RateLimitKey::Header(h.to_ascii_lowercase()));
            }
            if let Some(c) = &k.claim {
                let Some(path) = claim_path(c) else {
                    report.error(
                        Some(format!("{field}.key.claim")),
                        "InvalidPolicy",
                        format!("{c:?} is not a claim name (dots separate nested claims)"),
                    );
                    continue;
                };
                if spec.authentication.as_ref().is_none_or(|a| a.jwt.is_none()) {
                    report.warn(
                        Some(format!("{field}.key.claim")),
                        "NoJwt",
                        "the key uses a claim but this policy configures no JWT; it relies on JWT authentication from a less specific policy, and unauthenticated requests share one bucket".into(),
                    );
                }
                key.push(RateLimitKey::Claim(path));
            }
            if k.consumer == Some(true) {
                if authentication_lacks_api_keys(spec) {
                    report.warn(
                        Some(format!("{field}.key.consumer")),
                        "NoApiKeys",
                        "the key uses the API-key consumer but this policy configures no apiKeys; it relies on API keys from a less specific policy, and requests without one share one bucket".into(),
                    );
                }
                key.push(RateLimitKey::Consumer);
            }
            if k.route == Some(true) {
                key.push(RateLimitKey::Route);
            }
            if key.is_empty() {
                report.error(
                    Some(format!("{field}.key")),
                    "InvalidPolicy",
                    "set at least one key part, or omit key to share one budget".into(),
                );
                continue;
            }
        }
        out.push(RateLimitRule {
            name: r.name.clone(),
            key,
            requests: r.requests,
            period_ms,
            burst: r.burst.unwrap_or(r.requests).max(1),
            algorithm,
            scope: match r.scope.unwrap_or_default() {
                RateLimitScope::Global => RateScope::Global,
                RateLimitScope::Local => RateScope::Local,
            },
            on_store_failure: match r.on_store_failure.unwrap_or_default() {
                CrdFailure::LocalShare => StoreFailure::LocalShare,
                CrdFailure::Allow => StoreFailure::Allow,
                CrdFailure::Deny => StoreFailure::Deny,
            },
            shadow: r.mode == Some(RateLimitMode::Shadow),
        });
    }
    RateLimits {
        source: format!("{namespace}/{policy}"),
        headers: match spec.rate_limit_headers.unwrap_or_default() {
            CrdHeaders::Draft => RateLimitHeaders::Draft,
            CrdHeaders::Legacy => RateLimitHeaders::Legacy,
            CrdHeaders::Both => RateLimitHeaders::Both,
            CrdHeaders::None => RateLimitHeaders::None,
        },
        rules: out,
    }
}

fn authentication_lacks_api_keys(spec: &GatewayPolicySpec) -> bool {
    spec.authentication
        .as_ref()
        .is_none_or(|a| a.api_keys.is_none())
}

struct Ctx<'a> {
    namespace: &'a str,
    policy: &'a str,
    inputs: &'a Inputs,
}

/// The key families a set of verification keys holds.
#[derive(Default)]
struct Families {
    rsa: bool,
    ec: bool,
    ed: bool,
}

impl Families {
    fn algorithms(&self) -> Vec<JwtAlgorithm> {
        use JwtAlgorithm::*;
        let mut out = Vec::new();
        if self.rsa {
            out.extend([RS256, RS384, RS512, PS256, PS384, PS512]);
        }
        if self.ec {
            out.extend([ES256, ES384]);
        }
        if self.ed {
            out.push(EdDSA);
        }
        out
    }
}

impl Ctx<'_> {
    fn secret(
        &self,
        r: &SecretKeyRef,
        default_key: &str,
        field: &str,
        report: &mut Reporter<'_>,
    ) -> Option<Vec<u8>> {
        let key = r.key.as_deref().unwrap_or(default_key);
        let Some(secret) = self
            .inputs
            .secrets
            .get(&ObjectKey::new(self.namespace, &r.name))
        else {
            report.error(
                Some(field.into()),
                "SecretNotFound",
                format!("Secret {}/{} does not exist", self.namespace, r.name),
            );
            return None;
        };
        match secret::value(secret, key) {
            Some(v) => Some(v),
            None => {
                report.error(
                    Some(field.into()),
                    "SecretKeyNotFound",
                    format!("Secret {}/{} has no key {key:?}", self.namespace, r.name),
                );
                None
            }
        }
    }

    fn provider(
        &self,
        p: &CrdProvider,
        field: &str,
        report: &mut Reporter<'_>,
    ) -> Option<JwtProvider> {
        let errors = report.errors();
        let sources = [
            p.jwks.is_some(),
            p.oidc_discovery == Some(true),
            p.public_key.is_some(),
            p.hmac_secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            report.error(
                Some(field.into()),
                "InvalidPolicy",
                "set exactly one of jwks, oidcDiscovery: true, publicKey and hmacSecret".into(),
            );
            return None;
        }
        let chosen: Vec<JwtAlgorithm> = p.algorithms.iter().map(|a| algorithm(*a)).collect();
        if chosen.iter().any(|a| a.is_hmac()) && chosen.iter().any(|a| !a.is_hmac()) {
            report.error(
                Some(format!("{field}.algorithms")),
                "AlgorithmConfusion",
                "HMAC (HS*) and public-key algorithms cannot be mixed in one provider".into(),
            );
            return None;
        }
        let (keys, defaults) = if let Some(jwks) = &p.jwks {
            match (&jwks.uri, &jwks.secret_ref) {
                (Some(uri), None) => {
                    check_uri(uri, &format!("{field}.jwks.uri"), report)?;
                    (
                        JwtKeys::RemoteJwks(uri.clone()),
                        JwtAlgorithm::ASYMMETRIC.to_vec(),
                    )
                }
                (None, Some(r)) => {
                    let raw =
                        self.secret(r, "jwks.json", &format!("{field}.jwks.secretRef"), report)?;
                    let families = parse_jwks(&raw)
                        .map_err(|e| {
                            report.error(Some(format!("{field}.jwks.secretRef")), "InvalidKey", e)
                        })
                        .ok()?;
                    let text = String::from_utf8(raw).ok()?;
                    (JwtKeys::Jwks(text), families.algorithms())
                }
                _ => {
                    report.error(
                        Some(format!("{field}.jwks")),
                        "InvalidPolicy",
                        "set exactly one of uri and secretRef".into(),
                    );
                    return None;
                }
            }
        } else if p.oidc_discovery == Some(true) {
            check_uri(&p.issuer, &format!("{field}.issuer"), report)?;
            (
                JwtKeys::OidcDiscovery(p.issuer.clone()),
                JwtAlgorithm::ASYMMETRIC.to_vec(),
            )
        } else if let Some(r) = &p.public_key {
            let raw = self.secret(r, "key.pem", &format!("{field}.publicKey"), report)?;
            let families = parse_pem(&raw)
                .map_err(|e| report.error(Some(format!("{field}.publicKey")), "InvalidKey", e))
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            (JwtKeys::Pem(text), families.algorithms())
        } else if let Some(r) = &p.hmac_secret {
            let raw = self.secret(r, "secret", &format!("{field}.hmacSecret"), report)?;
            if raw.len() < MIN_HMAC_BYTES {
                report.error(
                    Some(format!("{field}.hmacSecret")),
                    "InvalidKey",
                    format!(
                        "the HMAC secret has {} bytes; at least {MIN_HMAC_BYTES} are required",
                        raw.len()
                    ),
                );
                return None;
            }
            use JwtAlgorithm::*;
            (JwtKeys::Hmac(Redacted(raw)), vec![HS256, HS384, HS512])
        } else {
            return None;
        };
        let symmetric = matches!(keys, JwtKeys::Hmac(_));
        let algorithms = if chosen.is_empty() {
            defaults
        } else {
            if chosen.iter().any(|a| a.is_hmac() != symmetric) {
                report.error(
                    Some(format!("{field}.algorithms")),
                    "AlgorithmConfusion",
                    if symmetric {
                        "an hmacSecret provider accepts only HS256, HS384 and HS512".into()
                    } else {
                        "a public-key provider cannot accept HS* algorithms".into()
                    },
                );
                return None;
            }
            let mut c = chosen;
            c.sort();
            c.dedup();
            c
        };
        let leeway_secs = match &p.clock_skew {
            None => DEFAULT_LEEWAY_SECS,
            Some(s) => match parse_duration_ms(s) {
                Ok(ms) if ms / 1000 <= MAX_LEEWAY_SECS => ms / 1000,
                Ok(_) => {
                    report.error(
                        Some(format!("{field}.clockSkew")),
                        "InvalidPolicy",
                        "clockSkew is at most 5m".into(),
                    );
                    return None;
                }
                Err(e) => {
                    report.error(Some(format!("{field}.clockSkew")), "InvalidPolicy", e);
                    return None;
                }
            },
        };
        let token = match &p.token_from {
            None => TokenSource::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            Some(t) => match (&t.header, &t.cookie) {
                (Some(h), None) if is_token(h) => {
                    let name = h.to_ascii_lowercase();
                    let prefix = t.prefix.clone().unwrap_or_else(|| {
                        if name == "authorization" {
                            "Bearer ".into()
                        } else {
                            String::new()
                        }
                    });
                    TokenSource::Header { name, prefix }
                }
                (None, Some(c)) if !c.is_empty() => TokenSource::Cookie(c.clone()),
                _ => {
                    report.error(
                        Some(format!("{field}.tokenFrom")),
                        "InvalidPolicy",
                        "set exactly one of header (a valid header name) and cookie".into(),
                    );
                    return None;
                }
            },
        };
        let mut claim_headers = Vec::new();
        for (i, c) in p.claim_to_headers.iter().enumerate() {
            match (claim_path(&c.claim), is_token(&c.header)) {
                (Some(claim), true) => claim_headers.push(ClaimHeader {
                    claim,
                    header: c.header.to_ascii_lowercase(),
                }),
                _ => report.error(
                    Some(format!("{field}.claimToHeaders[{i}]")),
                    "InvalidPolicy",
                    format!(
                        "{:?} -> {:?} is not a claim and a header name",
                        c.claim, c.header
                    ),
                ),
            }
        }
        if report.errors() > errors {
            return None;
        }
        Some(JwtProvider {
            name: format!("{}/{}/{}", self.namespace, self.policy, p.name),
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            algorithms,
            keys,
            leeway_secs,
            token,
            claim_headers,
            forward_token: p.forward_token.unwrap_or(true),
        })
    }

    fn api_keys(
        &self,
        k: &weir_crd::ApiKeys,
        field: &str,
        report: &mut Reporter<'_>,
    ) -> Option<ApiKeys> {
        let header = match &k.header {
            Some(h) if !is_token(h) => {
                report.error(
                    Some(format!("{field}.header")),
                    "InvalidPolicy",
                    format!("{h:?} is not a header name"),
                );
                return None;
            }
            h => h.as_ref().map(|h| h.to_ascii_lowercase()),
        };
        if header.is_none() && k.query_parameter.is_none() {
            report.error(
                Some(field.into()),
                "InvalidPolicy",
                "set header, queryParameter or both".into(),
            );
            return None;
        }
        let consumer_header = k.consumer_header.as_deref().unwrap_or("X-Consumer");
        if !is_token(consumer_header) {
            report.error(
                Some(format!("{field}.consumerHeader")),
                "InvalidPolicy",
                format!("{consumer_header:?} is not a header name"),
            );
            return None;
        }
        if k.secret_selector.match_labels.is_empty() {
            report.error(Some(format!("{field}.secretSelector")), "InvalidPolicy", "matchLabels must select consumer Secrets; an empty selector would match every Secret".into());
            return None;
        }
        let mut consumers: BTreeMap<String, Vec<[u8; 32]>> = BTreeMap::new();
        let mut seen: BTreeSet<[u8; 32]> = BTreeSet::new();
        let selected = self.inputs.secrets.iter().filter(|(key, s)| {
            key.namespace == self.namespace
                && k.secret_selector
                    .match_labels
                    .iter()
                    .all(|(l, v)| s.metadata.labels.as_ref().and_then(|m| m.get(l)) == Some(v))
        });
        for (key, secret) in selected {
            let given = secret::value(secret, "consumer")
                .and_then(|v| String::from_utf8(v).ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            // The name is forwarded in a header: visible ASCII only.
            let name = match given {
                Some(n) if n.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => n,
                Some(n) => {
                    report.warn(
                        Some(format!("{field}.secretSelector")),
                        "InvalidConsumerName",
                        format!("Secret {}/{}: consumer {n:?} is not printable ASCII; the Secret's name is used instead", key.namespace, key.name),
                    );
                    key.name.clone()
                }
                None => key.name.clone(),
            };
            let prehashed = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(API_KEY_FORMAT))
                .is_some_and(|v| v == SHA256_HEX);
            let mut hashes = Vec::new();
            for data_key in secret_keys(secret)
                .into_iter()
                .filter(|d| d.starts_with("key"))
            {
                let Some(value) = secret::value(secret, &data_key) else {
                    continue;
                };
                let value = value.trim_ascii();
                if value.is_empty() {
                    continue;
                }
                let hash = if prehashed {
                    match parse_hex_digest(value) {
                        Some(h) => h,
                        None => {
                            report.warn(
                                Some(format!("{field}.secretSelector")),
                                "InvalidApiKeyDigest",
                                format!("Secret {}/{} key {data_key:?} is not a hex SHA-256 digest ({API_KEY_FORMAT}: {SHA256_HEX}); it is ignored", key.namespace, key.name),
                            );
                            continue;
                        }
                    }
                } else {
                    sha256(value)
                };
                if !seen.insert(hash) {
                    report.warn(
                        Some(format!("{field}.secretSelector")),
                        "DuplicateApiKey",
                        format!("Secret {}/{} key {data_key:?} repeats a key of another consumer; it is ignored", key.namespace, key.name),
                    );
                    continue;
                }
                hashes.push(hash);
            }
            if hashes.is_empty() {
                report.warn(
                    Some(format!("{field}.secretSelector")),
                    "NoApiKeys",
                    format!(
                        "consumer Secret {}/{} has no non-empty data key starting with \"key\"",
                        key.namespace, key.name
                    ),
                );
                continue;
            }
            if consumers.contains_key(&name) {
                report.warn(
                    Some(format!("{field}.secretSelector")),
                    "DuplicateConsumer",
                    format!("consumer {name:?} (Secret {}/{}) is defined by another Secret too; their keys are merged", key.namespace, key.name),
                );
            }
            consumers.entry(name).or_default().extend(hashes);
        }
        if consumers.is_empty() {
            report.warn(
                Some(format!("{field}.secretSelector")),
                "NoConsumers",
                "no Secret in the namespace matches secretSelector; every API key is refused"
                    .into(),
            );
        }
        Some(ApiKeys {
            header,
            query_parameter: k.query_parameter.clone(),
            consumer_header: consumer_header.to_ascii_lowercase(),
            consumers: consumers
                .into_iter()
                .map(|(name, key_hashes)| Consumer { name, key_hashes })
                .collect(),
        })
    }
}

fn algorithm(a: weir_crd::JwtAlgorithm) -> JwtAlgorithm {
    use weir_crd::JwtAlgorithm as C;
    match a {
        C::RS256 => JwtAlgorithm::RS256,
        C::RS384 => JwtAlgorithm::RS384,
        C::RS512 => JwtAlgorithm::RS512,
        C::PS256 => JwtAlgorithm::PS256,
        C::PS384 => JwtAlgorithm::PS384,
        C::PS512 => JwtAlgorithm::PS512,
        C::ES256 => JwtAlgorithm::ES256,
        C::ES384 => JwtAlgorithm::ES384,
        C::EdDSA => JwtAlgorithm::EdDSA,
        C::HS256 => JwtAlgorithm::HS256,
        C::HS384 => JwtAlgorithm::HS384,
        C::HS512 => JwtAlgorithm::HS512,
    }
}

fn check_uri(uri: &str, field: &str, report: &mut Reporter<'_>) -> Option<()> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !uri.contains(char::is_whitespace) => {
            if uri.starts_with("http://") {
                report.warn(
                    Some(field.into()),
                    "InsecureKeySource",
                    format!(
                        "{uri} is fetched without TLS; anyone on the path can replace the keys"
                    ),
                );
            }
            Some(())
        }
        _ => {
            report.error(
                Some(field.into()),
                "InvalidPolicy",
                format!("{uri:?} is not an http(s) URI"),
            );
            None
        }
    }
}

/// A claim path: dot-separated, non-empty segments.
fn claim_path(claim: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = claim.split('.').map(str::to_owned).collect();
    (!parts.iter().any(String::is_empty)).then_some(parts)
}

/// An HTTP header name (RFC 9110 token).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn secret_keys(secret: &Secret) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = secret.data.iter().flat_map(|d| d.keys().cloned()).collect();
    keys.extend(secret.string_data.iter().flat_map(|d| d.keys().cloned()));
    keys
}

/// Annotation on a consumer Secret saying its `key*` values are already
/// digests: lower-case hex SHA-256 of the key (`sha256-hex`). Lets users keep
/// only digests in the cluster, and is how `weir run` keeps consumer Secrets
/// in its cache (see [`hash_consumer_secret`]).
pub const API_KEY_FORMAT: &str = "weir.dev/api-key-format";
/// The one value of [`API_KEY_FORMAT`].
pub const SHA256_HEX: &str = "sha256-hex";

/// Replaces every `key*` value of a consumer Secret by its hex SHA-256 and
/// drops every other value but `consumer`, so a cache of consumer Secrets
/// never holds a key in the clear. Idempotent.
pub fn hash_consumer_secret(secret: &mut Secret) {
    use k8s_openapi::ByteString;
    let already = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(API_KEY_FORMAT))
        .is_some_and(|v| v == SHA256_HEX);
    let mut data = std::collections::BTreeMap::new();
    for k in secret_keys(secret) {
        let Some(v) = secret::value(secret, &k) else {
            continue;
        };
        if k == "consumer" {
            data.insert(k, ByteString(v));
        } else if k.starts_with("key") {
            let v = v.trim_ascii();
            if already || v.is_empty() {
                data.insert(k, ByteString(v.to_vec()));
            } else {
                data.insert(k, ByteString(secret::hex(&sha256(v)).into_bytes()));
            }
        }
    }
    secret.data = Some(data);
    secret.string_data = None;
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(API_KEY_FORMAT.into(), SHA256_HEX.into());
}

fn parse_hex_digest(v: &[u8]) -> Option<[u8; 32]> {
    if v.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in v.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// SHA-256, the form API keys are held in.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_jwks(raw: &[u8]) -> Result<Families, String> {
    let set: JwkSet =
        serde_json::from_slice(raw).map_err(|e| format!("not a JWKS document: {e}"))?;
    if set.keys.is_empty() {
        return Err("the JWKS holds no keys".into());
    }
    let mut f = Families::default();
    for (i, jwk) in set.keys.iter().enumerate() {
        DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i} is unusable: {e}"))?;
        match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => f.rsa = true,
            AlgorithmParameters::EllipticCurve(_) => f.ec = true,
            AlgorithmParameters::OctetKeyPair(_) => f.ed = true,
            AlgorithmParameters::OctetKey(_) => {
                return Err(format!(
                    "key {i} is a symmetric (oct) key; use hmacSecret for HMAC"
                ));
            }
            _ => return Err(format!("key {i} has an unsupported key type")),
        }
    }
    Ok(f)
}

fn parse_pem(raw: &[u8]) -> Result<Families, String> {
    let mut f = Families::default();
    if DecodingKey::from_rsa_pem(raw).is_ok() {
        f.rsa = true;
    } else if DecodingKey::from_ec_pem(raw).is_ok() {
        f.ec = true;
    } else if DecodingKey::from_ed_pem(raw).is_ok() {
        f.ed = true;
    } else {
        return Err("not a PEM RSA, EC or Ed25519 public key".into());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_consumer_secret_keeps_only_digests_and_is_idempotent() {
        let mut s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "acme"},
            "stringData": {"consumer": "acme", "key": "k-1\n", "key2": "k-2", "note": "secret stuff"}
        }))
        .expect("secret");
        hash_consumer_secret(&mut s);
        let once = s.clone();
        hash_consumer_secret(&mut s);
        assert_eq!(s, once, "idempotent");
        let data = s.data.as_ref().expect("data");
        assert_eq!(data.len(), 3, "other data is dropped: {data:?}");
        assert!(s.string_data.is_none());
        let digest = parse_hex_digest(&data["key"].0).expect("hex digest");
        assert_eq!(digest, sha256(b"k-1"), "trimmed key, hashed");
        assert_eq!(data["consumer"].0, b"acme");
    }
}
