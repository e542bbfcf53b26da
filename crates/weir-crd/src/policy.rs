//! `GatewayPolicy` spec and status types. Every doc comment here becomes the
//! field's description in the CRD schema, which is what `kubectl explain`
//! prints: write them for the platform engineer reading that output.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// GatewayPolicy attaches authentication, authorization, rate limits and
/// (in later versions) traffic settings to Ingresses, their paths, the
/// routes to a Service, or every route of a namespace. Where several policies
/// reach one route, each section (authentication, authorization, ...) comes
/// from the most specific policy that sets it: Ingress path, then Ingress,
/// then Service, then Namespace.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "GatewayPolicy",
    plural = "gatewaypolicies",
    doc = "GatewayPolicy attaches authentication, authorization and rate limits to weir's Ingress routes. See spec.",
    shortname = "gwpol",
    namespaced,
    status = "GatewayPolicyStatus",
    printcolumn = r#"{"name":"Targets","type":"string","jsonPath":".status.targets","description":"The objects this policy attaches to."}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Whether weir accepted the policy."}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPolicySpec {
    /// The objects this policy applies to, all in the policy's namespace:
    /// an Ingress (optionally one of its paths), a Service (every route whose
    /// backend is that Service), or the Namespace itself (every weir route in
    /// it).
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<TargetRef>,
    /// Who may call the targeted routes: JWTs from identity providers
    /// and/or API keys. Requests that fail get 401 with a JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// What an authenticated caller must also satisfy: required claims and
    /// allowed API-key consumers. Requests that fail get 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// Rate limits: how many requests callers may send, counted per client
    /// IP, header, claim, consumer or route, in Redis (shared by every
    /// replica) or per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub rate_limits: Option<Vec<RateLimit>>,
    /// Which headers report the rate limits on every response of a limited
    /// route: `Draft` (default: `RateLimit-Policy`, `RateLimit`), `Legacy`
    /// (`X-RateLimit-*`), `Both` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_headers: Option<RateLimitHeaders>,
    /// Reserved for CORS (not enforced by this version; a policy that sets it
    /// is not accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Reserved for client IP allow and deny lists (not enforced by this
    /// version; a policy that sets it is not accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_access: Option<IpAccess>,
    /// Reserved for request and response header rewrites (not enforced by
    /// this version; a policy that sets it is not accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRewrites>,
    /// Reserved for timeouts (not enforced by this version; a policy that
    /// sets it is not accepted). Use the `weir.dev/request-timeout` Ingress
    /// annotation meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Reserved for retries (not enforced by this version; a policy that sets
    /// it is not accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
}

/// One object the policy attaches to.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.path) || self.kind == 'Ingress'").message("path is only allowed when kind is Ingress"))]
pub struct TargetRef {
    /// API group of the target: `networking.k8s.io` for Ingress, empty for
    /// Service and Namespace. May be omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the target.
    pub kind: TargetKind,
    /// Name of the target, in the policy's namespace (for `Namespace`: the
    /// policy's own namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// With kind Ingress: only the rule path written exactly like this
    /// (e.g. `/admin`), under any host of the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = "^/"))]
    pub path: Option<String>,
}

/// The kinds a policy can attach to.
#[derive(
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    Deserialize,
    Serialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
pub enum TargetKind {
    /// An Ingress, or one of its paths.
    #[default]
    Ingress,
    /// Every route whose backend is this Service.
    Service,
    /// Every weir route in the namespace: the namespace default.
    Namespace,
}

/// Authentication methods. When several are configured, a request passes
/// with any one of them (a valid JWT or a valid API key).
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwt) || has(self.apiKeys)").message("set jwt, apiKeys or both"))]
pub struct Authentication {
    /// `Required` (default): requests without credentials get 401.
    /// `Optional`: requests without credentials pass anonymously (no identity
    /// headers), but invalid credentials still get 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AuthenticationMode>,
    /// JSON Web Tokens from one or more identity providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
    /// API keys of consumers defined by labelled Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeys>,
}

/// Whether credentials are required.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum AuthenticationMode {
    /// Requests without credentials are refused with 401.
    #[default]
    Required,
    /// Requests without credentials pass without identity headers.
    Optional,
}

/// JWT validation.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Jwt {
    /// Identity providers. A token is checked against the provider whose
    /// `issuer` equals the token's `iss` claim.
    #[schemars(length(min = 1, max = 8))]
    pub providers: Vec<JwtProvider>,
}

/// One identity provider (token issuer).
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.jwks), has(self.oidcDiscovery) && self.oidcDiscovery, has(self.publicKey), has(self.hmacSecret)].filter(x, x).size() == 1").message("set exactly one of jwks, oidcDiscovery: true, publicKey or hmacSecret"))]
pub struct JwtProvider {
    /// Name of the provider, unique in the policy; used in metrics and logs.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The exact `iss` claim tokens from this provider carry, e.g.
    /// `https://auth.example.com/`.
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one. Empty means
    /// the audience is not checked (not recommended).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub audiences: Vec<String>,
    /// Accepted signing algorithms. Default: every algorithm of the family
    /// of the provider's keys (RS*/PS* for RSA keys, ES256/ES384 for EC,
    /// EdDSA for Ed25519, HS* for an HMAC secret). `none` is never accepted,
    /// and HMAC and public-key algorithms are never mixed in one provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Keys from a JWKS document: at a URI, or in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksSource>,
    /// Find the JWKS URI through OpenID Connect discovery:
    /// `<issuer>/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_discovery: Option<bool>,
    /// A PEM public key (RSA, EC or Ed25519) in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<SecretKeyRef>,
    /// A shared HMAC secret (HS256/384/512) in a Secret; at least 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<SecretKeyRef>,
    /// Tolerated clock difference for `exp` and `nbf`. Default `30s`, at
    /// most `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([0-9]+(ms|s|m|h))+$"))]
    pub clock_skew: Option<String>,
    /// Where the token is read from. Default: the `Authorization` header
    /// with the `Bearer ` prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_from: Option<TokenSource>,
    /// Claims copied into request headers for the upstream. Any copy of these
    /// headers sent by the client is removed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Keep the token in the request sent upstream (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_token: Option<bool>,
}

/// JWS signing algorithms weir verifies.
#[derive(
    JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
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

/// A JWKS document.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.uri) != has(self.secretRef)").message("set exactly one of uri and secretRef"))]
pub struct JwksSource {
    /// `https://` (or `http://`) URI of the JWKS. Fetched before weir reports
    /// ready, refreshed in the background (honouring `Cache-Control`, between
    /// 1 minute and 1 day), kept when the provider is unreachable, and
    /// refetched at once (rate-limited) when a token names an unknown `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = "^https?://"))]
    pub uri: Option<String>,
    /// A Secret key holding the JWKS JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the policy's namespace.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data. Defaults: `jwks.json` for a JWKS, `key.pem`
    /// for a public key, `secret` for an HMAC secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// Where a token is read from: one of header or cookie.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.header) != has(self.cookie)").message("set exactly one of header and cookie"))]
pub struct TokenSource {
    /// A request header, e.g. `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// With `header`: a prefix stripped from its value (default `Bearer `
    /// for `Authorization`, none otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A cookie name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub cookie: Option<String>,
}

/// Copy one claim into a request header.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    /// The claim; nested claims with dots (`realm_access.roles`). Arrays are
    /// joined with commas; objects are sent as JSON.
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    /// The header name, e.g. `X-User-Id`.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: String,
}

/// API keys. Each consumer is a Secret selected by label: `data.consumer`
/// (optional, defaults to the Secret's name) names it, and every data key
/// starting with `key` (`key`, `key2`, ...) holds one of its API keys, so a
/// key rotates by adding a second one and removing the first later. weir
/// keeps only SHA-256 hashes of the keys in memory and never forwards or
/// logs a key.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.header) || has(self.queryParameter)").message("set header, queryParameter or both"))]
pub struct ApiKeys {
    /// The request header carrying the key, e.g. `X-API-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// A query parameter carrying the key (removed before forwarding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub query_parameter: Option<String>,
    /// Selects the consumer Secrets in the policy's namespace.
    pub secret_selector: SecretSelector,
    /// Header the consumer name is sent upstream in (default `X-Consumer`).
    /// A client-sent copy is removed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub consumer_header: Option<String>,
}

/// A label selector (equality only).
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretSelector {
    /// Labels a consumer Secret must carry, all of them.
    #[schemars(length(min = 1))]
    pub match_labels: BTreeMap<String, String>,
}

/// Authorization rules. All listed conditions must hold.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// Claims the JWT must carry. A request authenticated by API key has no
    /// claims and fails these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub require_claims: Vec<ClaimRequirement>,
    /// API-key consumers allowed. When set, requests authenticated by API key
    /// must come from one of these consumers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_consumers: Vec<String>,
}

/// A condition on one claim: exactly one of equals, anyOf, allOf.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.equals), has(self.anyOf), has(self.allOf)].filter(x, x).size() == 1").message("set exactly one of equals, anyOf and allOf"))]
pub struct ClaimRequirement {
    /// The claim; nested claims with dots.
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    /// The claim is this string (or, for an array claim, contains it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The claim equals, or (array) contains, at least one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub any_of: Option<Vec<String>>,
    /// The claim (an array) contains all of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub all_of: Option<Vec<String>>,
}

/// A rate-limit rule. Every rule of a policy applies: a request is admitted
/// only if each rule admits it, and a refused request consumes from none of
/// them (with Redis Cluster: from none of the refusing ones). Refused
/// requests get 429 with `Retry-After` and a JSON body.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.burst) || !has(self.algorithm) || self.algorithm == 'Gcra'").message("burst applies to the Gcra algorithm only"))]
pub struct RateLimit {
    /// Name of the rule, unique in the policy. Appears in metrics and in the
    /// `RateLimit-Policy` response header.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// What is counted separately. Omitted: every request to the policy's
    /// routes shares one budget. Several parts combine (e.g. `consumer` and
    /// `route`: one budget per consumer per route). A request without the
    /// value (no such header, claim or consumer) is counted in one shared
    /// "absent" bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// Requests admitted per period.
    #[schemars(range(min = 1, max = 1000000000))]
    pub requests: u64,
    /// The period: `1s`, `1m`, `1h`, `24h`, ... (at least 1s, at most 24h).
    #[schemars(regex(pattern = "^([0-9]+(ms|s|m|h))+$"))]
    pub per: String,
    /// Gcra only: how many requests may arrive at once (the bucket size).
    /// Default: `requests` (a whole period's budget may be spent at once).
    /// Over any time t a client gets at most `burst + requests × t / per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub burst: Option<u64>,
    /// `Gcra` (default): token bucket semantics, exact, smooth.
    /// `SlidingWindow`: the previous window's count weighted by overlap;
    /// at most `2 × requests` in a trailing period in the worst case, close
    /// to `requests` for steady traffic. `FixedWindow`: calendar windows of
    /// `per`; cheapest, but up to `2 × requests` across a window boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<RateLimitAlgorithm>,
    /// `Global` (default): counted in Redis and shared by every weir replica
    /// (enforced per replica when weir runs without `--redis-url`).
    /// `Local`: counted in each replica's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RateLimitScope>,
    /// What a Global rule does while Redis is unreachable: `LocalShare`
    /// (default: each replica enforces `requests ÷ replicas` itself),
    /// `Allow` (admit everything) or `Deny` (refuse with 503
    /// `rate_limit_unavailable`). weir never answers 500 for a Redis failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_failure: Option<OnStoreFailure>,
    /// `Enforce` (default) or `Shadow`: count and log what would be refused
    /// (`weir_ratelimit_decisions_total{result="shadow_rejected"}`) but admit
    /// it, to try a limit on real traffic first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RateLimitMode>,
}

/// What a rate-limit rule counts separately; set one or more parts.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.clientIP) && self.clientIP) || has(self.header) || has(self.claim) || (has(self.consumer) && self.consumer) || (has(self.route) && self.route)").message("set at least one key part"))]
pub struct RateLimitKey {
    /// Per client address: the TCP peer, or behind proxies listed in weir's
    /// `--trusted-proxies`, the right-most untrusted `X-Forwarded-For` entry.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<bool>,
    /// Per value of this request header (e.g. `X-Tenant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: Option<String>,
    /// Per value of this JWT claim, dotted for nested claims (`sub`,
    /// `org.id`). Needs JWT authentication on the same routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub claim: Option<String>,
    /// Per API-key consumer. Needs API-key authentication on the same routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<bool>,
    /// Per route (host and path): each route the policy reaches gets its
    /// own budget instead of sharing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<bool>,
}

/// Rate-limit algorithms.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum RateLimitAlgorithm {
    /// Generic cell rate algorithm (token bucket semantics).
    #[default]
    Gcra,
    /// Weighted sliding window.
    SlidingWindow,
    /// Fixed calendar windows.
    FixedWindow,
}

/// Where a rule's counters live.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum RateLimitScope {
    /// Shared through Redis by every replica.
    #[default]
    Global,
    /// Per replica.
    Local,
}

/// What a Global rule does while Redis is unreachable.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum OnStoreFailure {
    /// Each replica enforces its share of the limit.
    #[default]
    LocalShare,
    /// Admit every request.
    Allow,
    /// Refuse every request with 503.
    Deny,
}

/// Whether a rule refuses requests.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum RateLimitMode {
    /// Refuse over-limit requests with 429.
    #[default]
    Enforce,
    /// Only count and log them.
    Shadow,
}

/// Which response headers report rate limits.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum RateLimitHeaders {
    /// `RateLimit-Policy` and `RateLimit`, as in the IETF httpapi
    /// ratelimit-headers draft.
    #[default]
    Draft,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Legacy,
    /// Both sets.
    Both,
    /// None (a 429 still carries `Retry-After`).
    None,
}

/// CORS settings (reserved: not enforced by this version).
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Allowed origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
}

/// Client IP access lists (reserved: not enforced by this version).
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IpAccess {
    /// CIDRs allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// CIDRs denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Header rewrites (reserved: not enforced by this version).
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRewrites {
    /// Changes to the request sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderRewrite>,
    /// Changes to the response sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderRewrite>,
}

/// Headers to set and remove.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRewrite {
    /// Headers set, replacing any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Timeouts (reserved: not enforced by this version).
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time for the upstream's response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([0-9]+(ms|s|m|h))+$"))]
    pub request: Option<String>,
    /// Time to connect to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([0-9]+(ms|s|m|h))+$"))]
    pub connect: Option<String>,
}

/// Retries (reserved: not enforced by this version).
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Attempts after the first.
    #[schemars(range(min = 0, max = 5))]
    pub attempts: u32,
    /// Conditions retried: `connect-failure` or a status code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
}

/// What weir made of the policy, written by the leader.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The targets, as `Kind/name[path]`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<String>,
    /// `Accepted`: the policy is valid and in force. `ResolvedRefs`: every
    /// target and Secret it names exists. `Programmed`: the data plane
    /// enforces it on at least one route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition, following the Kubernetes `metav1.Condition` shape.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs` or `Programmed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}
