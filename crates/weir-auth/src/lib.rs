//! Authentication and authorization at the edge.
//!
//! ```text
//!  Snapshot.policies ──AuthRuntime::build──▶ Policies { name -> Enforcer }
//!                         │  reuses RemoteKeys by JWKS URI across swaps
//!                         ▼
//!  request ─▶ Enforcer::enforce: strip identity headers ─▶ JWT or API key
//!            ─▶ requireClaims / allowedConsumers ─▶ identity headers
//! ```
//!
//! JWT signatures are checked with jsonwebtoken on a ring provider
//! ([`crypto`]); remote JWKS are fetched before readiness and kept fresh by
//! one background task per URI ([`remote`]); verified tokens are cached per
//! provider until their `exp`, across snapshots while the provider is
//! unchanged. API keys exist here only as SHA-256 digests.
//! This crate knows the snapshot, never Kubernetes.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod crypto;
mod enforce;
mod jwt;
mod keys;
mod metrics;
mod remote;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weir_snapshot::{JwtKeys, Snapshot};

pub use enforce::{Caller, Enforcer, Rejection};
pub use jwt::TokenError;
pub use metrics::AuthMetrics;

use crate::jwt::{Keys, Verifier};
use crate::keys::KeySet;
use crate::remote::{HttpClient, Location, RemoteKeys};

/// Enforcers of one snapshot, by policy name.
pub type Policies = HashMap<String, Arc<Enforcer>>;

struct Source {
    keys: Arc<RemoteKeys>,
    task: tokio::task::JoinHandle<()>,
}

/// Runtime state that outlives snapshots: remote key sources and metrics.
pub struct AuthRuntime {
    client: HttpClient,
    metrics: AuthMetrics,
    sources: Mutex<HashMap<Location, Source>>,
    token_cache: bool,
    /// The enforcers built last, whose token caches the next build inherits.
    previous: Mutex<Policies>,
}

impl AuthRuntime {
    /// Creates the runtime; installs the ring provider for jsonwebtoken.
    pub fn new(metrics: AuthMetrics) -> Self {
        crypto::install();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(3)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match builder.with_native_roots() {
            Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
            Err(e) => {
                tracing::warn!(error = %e, "No system CA certificates; https JWKS URIs cannot be verified.");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(rustls_config_without_roots())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            }
        };
        let client = Client::builder(TokioExecutor::new()).build(connector);
        AuthRuntime {
            client,
            metrics,
            sources: Mutex::new(HashMap::new()),
            token_cache: true,
            previous: Mutex::new(Policies::new()),
        }
    }

    /// Verifies every token in full, without the verified-token cache: for
    /// benchmarks that measure signature checks, and for debugging.
    pub fn without_token_cache(mut self) -> Self {
        self.token_cache = false;
        self
    }

    /// Builds the enforcers of `snapshot`, starting background fetches for
    /// new remote key sources and stopping those no longer used. Must run
    /// inside a tokio runtime.
    pub fn build(&self, snapshot: &Snapshot) -> Policies {
        // The registry stays consistent if a holder panicked: recover it
        // rather than building no enforcers (every policy route would 503).
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut previous = self
            .previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut used = std::collections::HashSet::new();
        let mut out = Policies::new();
        for (name, policy) in &snapshot.policies {
            let providers = policy
                .authentication
                .iter()
                .flat_map(|a| a.jwt.iter())
                .map(|p| {
                    let keys = match &p.keys {
                        JwtKeys::RemoteJwks(uri) => Keys::Remote(self.source(
                            &mut sources,
                            &mut used,
                            Location::Jwks(uri.clone()),
                        )),
                        JwtKeys::OidcDiscovery(issuer) => Keys::Remote(self.source(
                            &mut sources,
                            &mut used,
                            Location::Discovery(issuer.clone()),
                        )),
                        JwtKeys::Jwks(text) => static_keys(KeySet::from_jwks(text.as_bytes())),
                        JwtKeys::Pem(text) => static_keys(KeySet::from_pem(text.as_bytes())),
                        JwtKeys::Hmac(secret) => {
                            Keys::Static(Arc::new(KeySet::from_hmac(&secret.0)))
                        }
                    };
                    Verifier::new(p.clone(), keys, self.token_cache)
                })
                .collect();
            let mut enforcer = Enforcer::new(policy, providers, &self.metrics);
            if let Some(old) = previous.get(name) {
                enforcer.inherit_caches(old);
            }
            for problem in enforcer.key_problems() {
                tracing::error!(policy = %name, error = problem, "Policy keys are unusable; its tokens are refused.");
            }
            out.insert(name.clone(), Arc::new(enforcer));
        }
        sources.retain(|location, source| {
            let keep = used.contains(location);
            if !keep {
                source.task.abort();
                self.metrics.forget_source(location.label());
            }
            keep
        });
        previous.clone_from(&out);
        out
    }

    fn source(
        &self,
        sources: &mut HashMap<Location, Source>,
        used: &mut std::collections::HashSet<Location>,
        location: Location,
    ) -> Arc<RemoteKeys> {
        used.insert(location.clone());
        sources
            .entry(location.clone())
            .or_insert_with(|| {
                let keys = RemoteKeys::new(location, self.client.clone(), self.metrics.clone());
                let task = tokio::spawn(keys.clone().refresh_forever());
                Source { keys, task }
            })
            .keys
            .clone()
    }

    /// Whether every remote key source has been fetched once: `/readyz`
    /// stays red until then, so no replica takes traffic it would refuse.
    pub fn ready(&self) -> bool {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .all(|src| src.keys.is_loaded())
    }
}

impl Drop for AuthRuntime {
    fn drop(&mut self) {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in sources.values() {
            s.task.abort();
        }
    }
}

fn static_keys(parsed: Result<KeySet, String>) -> Keys {
    match parsed {
        Ok(k) => Keys::Static(Arc::new(k)),
        Err(e) => Keys::Broken(e),
    }
}

/// A TLS client configuration that trusts nothing: https fetches fail with a
/// clear certificate error instead of the process refusing to start.
fn rustls_config_without_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weir_snapshot::{
        Authentication, JwtAlgorithm, JwtKeys, JwtProvider, Policy, Redacted, TokenSource,
    };

    use super::*;

    fn snapshot(secret: &[u8], policies: &[&str]) -> Snapshot {
        let provider = JwtProvider {
            name: "main".into(),
            issuer: "https://issuer.test/".into(),
            audiences: vec![],
            algorithms: vec![JwtAlgorithm::HS256],
            keys: JwtKeys::Hmac(Redacted(secret.to_vec())),
            leeway_secs: 0,
            token: TokenSource::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            claim_headers: vec![],
            forward_token: false,
        };
        let policies: BTreeMap<String, Policy> = policies
            .iter()
            .map(|name| {
                let policy = Policy {
                    name: (*name).into(),
                    invalid: None,
                    authentication: Some(Authentication {
                        optional: false,
                        jwt: vec![provider.clone()],
                        api_keys: None,
                    }),
                    authorization: None,
                    rate_limits: None,
                };
                ((*name).to_owned(), policy)
            })
            .collect();
        Snapshot {
            replicas: None,
            certificates: Default::default(),
            default_certificate: None,
            policies,
            ..Snapshot::default()
        }
    }

    #[test]
    fn token_caches_survive_unrelated_changes_only() {
        let registry = prometheus::Registry::new();
        let runtime = AuthRuntime::new(AuthMetrics::register(&registry).expect("metrics"));
        let secret = b"0123456789abcdef0123456789abcdef";
        let first = runtime.build(&snapshot(secret, &["a/p"]));
        // Another policy appears: a/p is unchanged and keeps its cache.
        let second = runtime.build(&snapshot(secret, &["a/p", "b/q"]));
        assert!(first["a/p"].shares_caches_with(&second["a/p"]));
        // a/p's secret changes: tokens verified under the old one must be
        // checked again.
        let third = runtime.build(&snapshot(
            b"another-secret-of-32-bytes-or-more!",
            &["a/p", "b/q"],
        ));
        assert!(!second["a/p"].shares_caches_with(&third["a/p"]));
        // Two policies never share one cache.
        assert!(!third["a/p"].shares_caches_with(&third["b/q"]));
    }
}
