//! One effective policy, ready to run on requests: authentication, then
//! authorization, then identity headers (DESIGN.md's filter order).

use std::collections::HashMap;
use std::sync::Arc;

use http::header::HeaderName;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use prometheus::IntCounter;
use serde_json::Value;
use weir_snapshot::{ApiKeys, Authorization, ClaimRule, ClaimTest};

use crate::jwt::{TokenError, Verifier, claim, peek_issuer};

/// A request refused by a policy.
#[derive(Debug)]
pub struct Rejection {
    /// 401, 403 or 503.
    pub status: StatusCode,
    /// Stable error code for the JSON body.
    pub code: &'static str,
    /// Human-readable reason (never includes a credential).
    pub message: String,
    /// `WWW-Authenticate` for 401s.
    pub www_authenticate: Option<HeaderValue>,
}

/// Who the caller is, as later filters (rate limits keyed by claim or
/// consumer) need to know it.
#[derive(Clone, Debug, Default)]
pub enum Caller<'a> {
    /// No credentials (optional authentication) or no authentication.
    #[default]
    Anonymous,
    /// A verified JWT's claims.
    Jwt(Arc<Value>),
    /// An API-key consumer's name.
    Consumer(&'a str),
}

impl Caller<'_> {
    /// The claim at `path` as text (arrays joined with commas), if any.
    pub fn claim(&self, path: &[String]) -> Option<String> {
        match self {
            Caller::Jwt(claims) => claim(claims, path)
                .and_then(header_value)
                .and_then(|v| v.to_str().ok().map(str::to_owned)),
            _ => None,
        }
    }

    /// The consumer's name, if the caller used an API key.
    pub fn consumer(&self) -> Option<&str> {
        match self {
            Caller::Consumer(name) => Some(name),
            _ => None,
        }
    }
}

/// Who the caller is, once authenticated.
enum Identity {
    Anonymous,
    Jwt { claims: Arc<Value>, provider: usize },
    Consumer(usize),
}

struct ApiKeyTable {
    config: ApiKeys,
    header: Option<HeaderName>,
    consumer_header: HeaderName,
    /// SHA-256 of a key -> consumer index. The map's SipHash is keyed per
    /// process and its input is already a digest, so lookup timing says
    /// nothing about any valid key; the final comparison is constant-time.
    by_hash: HashMap<[u8; 32], usize>,
    names: Vec<HeaderValue>,
}

struct Outcomes {
    allowed: IntCounter,
    anonymous: IntCounter,
    unauthenticated: IntCounter,
    forbidden: IntCounter,
    invalid: IntCounter,
}

/// A compiled policy with its runtime parts.
pub struct Enforcer {
    name: String,
    invalid: Option<String>,
    optional: bool,
    has_authentication: bool,
    providers: Vec<Verifier>,
    api_keys: Option<ApiKeyTable>,
    authorization: Option<Authorization>,
    /// Identity headers a client must never set itself.
    strip: Vec<HeaderName>,
    claim_headers: Vec<Vec<(Vec<String>, HeaderName)>>,
    outcomes: Outcomes,
}

impl Enforcer {
    /// Carries verified-token caches over from the same policy's enforcer in
    /// the previous snapshot, provider by provider (matched by name; see
    /// [`Verifier::inherit`] for when a cache is kept).
    #[cfg(test)]
    pub(crate) fn shares_caches_with(&self, other: &Enforcer) -> bool {
        self.providers
            .iter()
            .zip(&other.providers)
            .all(|(a, b)| a.shares_cache_with(b))
    }

    pub(crate) fn inherit_caches(&mut self, previous: &Enforcer) {
        for verifier in &mut self.providers {
            if let Some(old) = previous
                .providers
                .iter()
                .find(|o| o.config.name == verifier.config.name)
            {
                verifier.inherit(old);
            }
        }
    }

    pub(crate) fn new(
        policy: &weir_snapshot::Policy,
        providers: Vec<Verifier>,
        metrics: &crate::AuthMetrics,
    ) -> Self {
        let outcome = |r: &str| metrics.decisions.with_label_values(&[&policy.name, r]);
        let authn = policy.authentication.as_ref();
        let mut strip = Vec::new();
        let mut claim_headers = Vec::new();
        for p in &providers {
            let mut list = Vec::new();
            for c in &p.config.claim_headers {
                if let Ok(h) = HeaderName::from_bytes(c.header.as_bytes()) {
                    strip.push(h.clone());
                    list.push((c.claim.clone(), h));
                }
            }
            claim_headers.push(list);
        }
        let api_keys = authn.and_then(|a| a.api_keys.clone()).and_then(|config| {
            let consumer_header = HeaderName::from_bytes(config.consumer_header.as_bytes()).ok()?;
            strip.push(consumer_header.clone());
            let header = config
                .header
                .as_ref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok());
            let mut by_hash = HashMap::new();
            let mut names = Vec::new();
            for (i, c) in config.consumers.iter().enumerate() {
                // The compiler only emits printable-ASCII names; the
                // fallback is unreachable for compiled snapshots.
                names.push(
                    HeaderValue::from_str(&c.name).unwrap_or(HeaderValue::from_static("invalid")),
                );
                for h in &c.key_hashes {
                    by_hash.insert(*h, i);
                }
            }
            Some(ApiKeyTable {
                config,
                header,
                consumer_header,
                by_hash,
                names,
            })
        });
        strip.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        strip.dedup();
        Enforcer {
            name: policy.name.clone(),
            invalid: policy.invalid.clone(),
            optional: authn.is_some_and(|a| a.optional),
            has_authentication: authn.is_some(),
            providers,
            api_keys,
            authorization: policy.authorization.clone(),
            strip,
            claim_headers,
            outcomes: Outcomes {
                allowed: outcome("allowed"),
                anonymous: outcome("anonymous"),
                unauthenticated: outcome("unauthenticated"),
                forbidden: outcome("forbidden"),
                invalid: outcome("invalid_policy"),
            },
        }
    }

    /// The policy's name, as in metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Problems with configured keys (bad key material), for logs.
    pub fn key_problems(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().filter_map(Verifier::keys_problem)
    }

    /// Runs the policy on a request. On success the request carries the
    /// caller's identity headers (client-sent copies removed) and no API key.
    pub async fn enforce(
        &self,
        headers: &mut HeaderMap,
        uri: &mut Uri,
    ) -> Result<Caller<'_>, Rejection> {
        if let Some(reason) = &self.invalid {
            self.outcomes.invalid.inc();
            return Err(Rejection {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "policy_invalid",
                message: format!("{reason}; see its status"),
                www_authenticate: None,
            });
        }
        for h in &self.strip {
            headers.remove(h);
        }
        let identity = match self.authenticate(headers, uri).await {
            Ok(i) => i,
            Err(r) => {
                self.outcomes.unauthenticated.inc();
                return Err(r);
            }
        };
        if let Err(r) = self.authorize(&identity) {
            if r.status == StatusCode::UNAUTHORIZED {
                self.outcomes.unauthenticated.inc();
            } else {
                self.outcomes.forbidden.inc();
            }
            return Err(r);
        }
        match &identity {
            Identity::Anonymous => self.outcomes.anonymous.inc(),
            _ => self.outcomes.allowed.inc(),
        }
        self.add_identity(&identity, headers);
        Ok(match identity {
            Identity::Anonymous => Caller::Anonymous,
            Identity::Jwt { claims, .. } => Caller::Jwt(claims),
            Identity::Consumer(i) => Caller::Consumer(
                self.api_keys
                    .as_ref()
                    .and_then(|t| t.config.consumers.get(i))
                    .map_or("", |c| c.name.as_str()),
            ),
        })
    }

    async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        uri: &mut Uri,
    ) -> Result<Identity, Rejection> {
        if !self.has_authentication {
            return Ok(Identity::Anonymous);
        }
        // A JWT first: the first provider whose token source is present.
        if let Some(result) = self.verify_token(headers).await {
            return match result {
                Ok((claims, provider)) => {
                    if let Some(p) = self.providers.get(provider)
                        && !p.config.forward_token
                        && let Some(name) = p.token_header()
                    {
                        headers.remove(name);
                    }
                    Ok(Identity::Jwt { claims, provider })
                }
                Err(e) => Err(self.invalid_token(&e)),
            };
        }
        if let Some(table) = &self.api_keys {
            // Hashed where it lies: the key is never copied.
            let from_header = table
                .header
                .as_ref()
                .and_then(|h| headers.get(h))
                .map(|v| sha256(v.as_bytes().trim_ascii()));
            let from_query = table
                .config
                .query_parameter
                .as_deref()
                .and_then(|q| take_query_param(uri, q))
                .map(|k| sha256(&k));
            if let Some(h) = &table.header {
                headers.remove(h);
            }
            if let Some(hash) = from_header.or(from_query) {
                let found = table.by_hash.get_key_value(&hash).filter(|(stored, _)| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        stored.as_slice(),
                        hash.as_slice(),
                    ))
                });
                return match found {
                    Some((_, &i)) => Ok(Identity::Consumer(i)),
                    None => Err(Rejection {
                        status: StatusCode::UNAUTHORIZED,
                        code: "invalid_api_key",
                        message: "the API key is not valid".into(),
                        www_authenticate: Some(self.challenge(None)),
                    }),
                };
            }
        }
        if self.optional {
            return Ok(Identity::Anonymous);
        }
        Err(self.missing())
    }

    /// Verifies the request's token, if any provider finds one: the
    /// provider is the only one, or the one of the token's (unverified)
    /// issuer. Borrows the headers, so the token is never copied.
    async fn verify_token(
        &self,
        headers: &HeaderMap,
    ) -> Option<Result<(Arc<Value>, usize), TokenError>> {
        let token = self.providers.iter().find_map(|p| p.token(headers))?;
        let provider = if self.providers.len() == 1 {
            Some(0)
        } else {
            peek_issuer(token)
                .and_then(|iss| self.providers.iter().position(|p| p.config.issuer == iss))
        };
        let now = jsonwebtoken::get_current_timestamp();
        Some(
            match provider.and_then(|i| Some((i, self.providers.get(i)?))) {
                Some((i, p)) => p.verify(token, now).await.map(|c| (c, i)),
                None => Err(TokenError::Issuer),
            },
        )
    }

    fn missing(&self) -> Rejection {
        Rejection {
            status: StatusCode::UNAUTHORIZED,
            code: "missing_credentials",
            message: "this route requires authentication".into(),
            www_authenticate: Some(self.challenge(None)),
        }
    }

    fn invalid_token(&self, e: &TokenError) -> Rejection {
        Rejection {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_token",
            message: e.to_string(),
            www_authenticate: Some(self.challenge(Some(e))),
        }
    }

    /// RFC 6750 §3 challenge; API-key-only policies name their header.
    fn challenge(&self, error: Option<&TokenError>) -> HeaderValue {
        let text = match (error, self.providers.is_empty(), &self.api_keys) {
            (Some(e), _, _) => {
                format!(r#"Bearer realm="weir", error="invalid_token", error_description="{e}""#)
            }
            (None, false, _) => r#"Bearer realm="weir""#.to_owned(),
            (None, true, Some(t)) => match &t.config.header {
                Some(h) => format!(r#"ApiKey realm="weir", header="{h}""#),
                None => r#"ApiKey realm="weir""#.to_owned(),
            },
            (None, true, None) => r#"Bearer realm="weir""#.to_owned(),
        };
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("Bearer"))
    }

    fn authorize(&self, identity: &Identity) -> Result<(), Rejection> {
        let Some(authz) = &self.authorization else {
            return Ok(());
        };
        let forbidden = |message: String| Rejection {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message,
            www_authenticate: None,
        };
        match identity {
            Identity::Anonymous => {
                if authz.require_claims.is_empty() && authz.allowed_consumers.is_empty() {
                    Ok(())
                } else {
                    Err(self.missing())
                }
            }
            Identity::Jwt { claims, .. } => {
                for rule in &authz.require_claims {
                    if !holds(rule, claims) {
                        return Err(forbidden(format!(
                            "claim {} does not satisfy the policy",
                            rule.claim.join(".")
                        )));
                    }
                }
                Ok(())
            }
            Identity::Consumer(i) => {
                if !authz.require_claims.is_empty() {
                    return Err(forbidden(
                        "this route requires token claims; an API key carries none".into(),
                    ));
                }
                let name = self
                    .api_keys
                    .as_ref()
                    .and_then(|t| t.config.consumers.get(*i))
                    .map(|c| c.name.as_str())
                    .unwrap_or("");
                if authz.allowed_consumers.is_empty()
                    || authz.allowed_consumers.iter().any(|c| c == name)
                {
                    Ok(())
                } else {
                    Err(forbidden(
                        "this consumer is not allowed on this route".into(),
                    ))
                }
            }
        }
    }

    fn add_identity(&self, identity: &Identity, headers: &mut HeaderMap) {
        match identity {
            Identity::Anonymous => {}
            Identity::Jwt { claims, provider } => {
                for (path, header) in self.claim_headers.get(*provider).into_iter().flatten() {
                    if let Some(v) = claim(claims, path).and_then(header_value) {
                        headers.insert(header.clone(), v);
                    }
                }
            }
            Identity::Consumer(i) => {
                if let Some(t) = &self.api_keys
                    && let Some(v) = t.names.get(*i)
                {
                    headers.insert(t.consumer_header.clone(), v.clone());
                }
            }
        }
    }
}

/// A claim as a header value: strings as they are, arrays joined with
/// commas, other JSON as JSON. Values with control characters are dropped.
fn header_value(v: &Value) -> Option<HeaderValue> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => return None,
        other => other.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

fn contains(v: &Value, wanted: &str) -> bool {
    match v {
        Value::String(s) => s == wanted,
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        // A space-separated `scope` string is common; treat it as a list.
        _ => false,
    }
}

fn holds(rule: &ClaimRule, claims: &Value) -> bool {
    let Some(v) = claim(claims, &rule.claim) else {
        return false;
    };
    let has = |w: &String| contains(v, w) || scope_contains(&rule.claim, v, w);
    match &rule.test {
        ClaimTest::Equals(w) => has(w),
        ClaimTest::AnyOf(ws) => ws.iter().any(has),
        ClaimTest::AllOf(ws) => ws.iter().all(has),
    }
}

/// `scope` (RFC 8693) is one space-separated string.
fn scope_contains(path: &[String], v: &Value, wanted: &str) -> bool {
    path.len() == 1
        && (path[0] == "scope" || path[0] == "scp")
        && v.as_str()
            .is_some_and(|s| s.split(' ').any(|p| p == wanted))
}

/// Removes `name=value` from the query and returns the value.
fn take_query_param(uri: &mut Uri, name: &str) -> Option<Vec<u8>> {
    let pq = uri.path_and_query()?;
    let query = pq.query()?;
    let mut found = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == name {
                if found.is_none() {
                    found = Some(percent_decode(v));
                }
                false
            } else {
                true
            }
        })
        .collect();
    found.as_ref()?;
    let rebuilt = if kept.is_empty() {
        pq.path().to_owned()
    } else {
        format!("{}?{}", pq.path(), kept.join("&"))
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = PathAndQuery::try_from(rebuilt).ok();
    *uri = Uri::from_parts(parts).unwrap_or_default();
    found
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_is_removed() {
        let mut uri: Uri = "/a?x=1&api_key=s%2Fk&y=2".parse().unwrap();
        assert_eq!(take_query_param(&mut uri, "api_key"), Some(b"s/k".to_vec()));
        assert_eq!(uri.to_string(), "/a?x=1&y=2");
        let mut uri: Uri = "/a?api_key=k".parse().unwrap();
        assert_eq!(take_query_param(&mut uri, "api_key"), Some(b"k".to_vec()));
        assert_eq!(uri.to_string(), "/a");
        let mut uri: Uri = "/a?x=1".parse().unwrap();
        assert_eq!(take_query_param(&mut uri, "api_key"), None);
        assert_eq!(uri.to_string(), "/a?x=1");
    }

    #[test]
    fn claim_values() {
        let v: Value =
            serde_json::json!({"roles": ["a", "b"], "n": 3, "s": "x", "scope": "read write"});
        assert_eq!(header_value(&v["roles"]).unwrap(), "a,b");
        assert_eq!(header_value(&v["n"]).unwrap(), "3");
        assert!(contains(&v["roles"], "b"));
        assert!(!contains(&v["roles"], "c"));
        let rule = ClaimRule {
            claim: vec!["scope".into()],
            test: ClaimTest::AllOf(vec!["read".into(), "write".into()]),
        };
        assert!(holds(&rule, &v));
    }
}
