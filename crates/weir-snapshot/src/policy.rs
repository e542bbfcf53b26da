//! Compiled policies: what the data plane enforces before proxying.
//!
//! The compiler resolves every `GatewayPolicy` that reaches a route into one
//! [`Policy`] (section by section, most specific first) and names it; routes
//! refer to it by that name. Secrets never appear here in the clear: API keys
//! are SHA-256 hashes and HMAC secrets are redacted in `Debug` and
//! serialization, so a snapshot can be logged or dumped safely.

use std::fmt;

use serde::{Serialize, Serializer};

/// The effective policy of one or more routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Low-cardinality name for metrics and logs: the contributing
    /// `GatewayPolicy` objects, `ns/a` or `ns/a+ns/b`.
    pub name: String,
    /// Set when a contributing policy is invalid: every request to the routes
    /// gets 503 with this reason instead of passing unchecked (fail closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Who may call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// What callers must also satisfy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// How fast callers may go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
}

/// The rate limits of a policy: all rules apply; a request is admitted only
/// if every rule admits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// `namespace/name` of the GatewayPolicy that defines the rules: buckets
    /// are named by it (not by the merged policy name), so attaching another
    /// policy for another section does not reset counters.
    pub source: String,
    /// Which response headers report the limits.
    pub headers: RateLimitHeaders,
    /// The rules, in the policy's order.
    pub rules: Vec<RateLimitRule>,
}

/// Which headers report limits to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RateLimitHeaders {
    /// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft).
    Draft,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    Legacy,
    /// Both sets.
    Both,
    /// None (429 still carries `Retry-After`).
    None,
}

/// One rate-limit rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    /// Unique in its policy; a label in metrics and headers.
    pub name: String,
    /// What is counted separately; empty: every request shares one bucket.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<RateLimitKey>,
    /// Requests per period.
    pub requests: u64,
    /// The period in milliseconds.
    pub period_ms: u64,
    /// Requests that may arrive at once (GCRA).
    pub burst: u64,
    /// The algorithm.
    pub algorithm: RateAlgorithm,
    /// Local or global.
    pub scope: RateScope,
    /// What a global rule does while Redis is unreachable.
    pub on_store_failure: StoreFailure,
    /// Enforce, or only count would-be rejections.
    pub shadow: bool,
}

/// One part of a rate-limit key; parts are combined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitKey {
    /// The client address (from `X-Forwarded-For` behind trusted proxies).
    ClientIp,
    /// A request header's value (lower-case name).
    Header(String),
    /// A JWT claim (path of object keys).
    Claim(Vec<String>),
    /// The API-key consumer's name.
    Consumer,
    /// The route (host and path): each targeted route gets its own budget.
    Route,
}

/// Rate-limit algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RateAlgorithm {
    /// Token bucket semantics, exact.
    Gcra,
    /// Weighted sliding window.
    SlidingWindow,
    /// Calendar windows.
    FixedWindow,
}

/// Where counters live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RateScope {
    /// Per replica.
    Local,
    /// Shared through Redis.
    Global,
}

/// What a global rule does while Redis is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StoreFailure {
    /// Admit.
    Allow,
    /// Refuse with 503.
    Deny,
    /// Enforce `limit ÷ replicas` per replica.
    LocalShare,
}

/// Authentication methods; a request passes with any one of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// Requests without credentials pass anonymously.
    pub optional: bool,
    /// JWT providers, tried by issuer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<JwtProvider>,
    /// API keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeys>,
}

/// One JWT issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtProvider {
    /// `namespace/policy/provider`, for metrics and logs.
    pub name: String,
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values; empty: not checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted algorithms, never empty, never mixing HMAC and public keys.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Where the verification keys come from.
    pub keys: JwtKeys,
    /// Clock skew tolerated for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Where the token is read from.
    pub token: TokenSource,
    /// Claims copied into request headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claim_headers: Vec<ClaimHeader>,
    /// Keep the token in the forwarded request.
    pub forward_token: bool,
}

/// JWS algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[allow(missing_docs)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    /// Every asymmetric algorithm: the default for a JWKS, whose key types
    /// are only known at run time.
    pub const ASYMMETRIC: [JwtAlgorithm; 9] = [
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// Whether this is an HMAC (shared secret) algorithm.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

/// Where a provider's keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum JwtKeys {
    /// A JWKS fetched from this URI and cached across snapshots by URI.
    RemoteJwks(String),
    /// The JWKS URI found at `<issuer>/.well-known/openid-configuration`.
    OidcDiscovery(String),
    /// A JWKS document (JSON) from a Secret.
    Jwks(String),
    /// A PEM public key from a Secret.
    Pem(String),
    /// An HMAC secret from a Secret.
    Hmac(Redacted),
}

/// Secret bytes that never show in `Debug` output or serialized snapshots.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub Vec<u8>);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0.len())
    }
}

impl Serialize for Redacted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<{} bytes redacted>", self.0.len()))
    }
}

/// Where the token is read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenSource {
    /// A header (lower-case name) and a prefix stripped from its value.
    Header {
        /// Lower-case header name.
        name: String,
        /// Prefix before the token, e.g. `Bearer `; matched case-insensitively.
        prefix: String,
    },
    /// A cookie.
    Cookie(String),
}

/// One claim copied into one request header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimHeader {
    /// Path of the claim: `["realm_access", "roles"]`.
    pub claim: Vec<String>,
    /// Lower-case header name.
    pub header: String,
}

/// API-key authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeys {
    /// Lower-case header carrying the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Query parameter carrying the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
    /// Lower-case header the consumer name is forwarded in.
    pub consumer_header: String,
    /// Consumers, sorted by name.
    pub consumers: Vec<Consumer>,
}

/// One API-key consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    /// Name forwarded upstream and used in authorization.
    pub name: String,
    /// SHA-256 of each key; serialized as a count only.
    #[serde(rename = "keys", serialize_with = "count")]
    pub key_hashes: Vec<[u8; 32]>,
}

fn count<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.len() as u64)
}

/// Authorization rules, all of which must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// Conditions on JWT claims.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub require_claims: Vec<ClaimRule>,
    /// Allowed API-key consumers; empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_consumers: Vec<String>,
}

/// A condition on one claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRule {
    /// Path of the claim.
    pub claim: Vec<String>,
    /// The test.
    pub test: ClaimTest,
}

/// How a claim is tested. A string claim "contains" only itself; an array
/// claim contains its string elements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ClaimTest {
    /// Contains this value.
    Equals(String),
    /// Contains at least one of these.
    AnyOf(Vec<String>),
    /// Contains all of these.
    AllOf(Vec<String>),
}
