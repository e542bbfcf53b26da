//! Remote JWKS: fetched before readiness, refreshed in the background,
//! served stale when the identity provider is down, refetched at once (single
//! flight, rate-limited) when a token names a `kid` we do not know.
//!
//! One [`RemoteKeys`] per JWKS URI (or discovery issuer) lives in the
//! [`crate::AuthRuntime`] registry and survives snapshot swaps, so a config
//! change never throws away fetched keys or triggers a refetch storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::keys::KeySet;
use crate::metrics::AuthMetrics;

/// The HTTP(S) client JWKS and discovery documents are fetched with.
pub(crate) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Time for one fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Background refresh bounds around the document's `Cache-Control: max-age`.
const MIN_REFRESH: Duration = Duration::from_secs(60);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
/// Unknown-`kid` refetches happen at most this often per source.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// Retry backoff after a failed fetch.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where the keys are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Location {
    /// A JWKS URI.
    Jwks(String),
    /// An issuer whose discovery document names the JWKS URI.
    Discovery(String),
}

impl Location {
    pub(crate) fn label(&self) -> &str {
        match self {
            Location::Jwks(u) | Location::Discovery(u) => u,
        }
    }
}

/// Keys of one remote source.
pub(crate) struct RemoteKeys {
    location: Location,
    client: HttpClient,
    metrics: AuthMetrics,
    keys: ArcSwapOption<KeySet>,
    /// Incremented after every completed fetch attempt (success or not).
    fetches: AtomicU64,
    /// Serializes fetches: one in flight per source.
    fetch_lock: Mutex<Option<Instant>>,
}

impl RemoteKeys {
    pub(crate) fn new(location: Location, client: HttpClient, metrics: AuthMetrics) -> Arc<Self> {
        Arc::new(RemoteKeys {
            location,
            client,
            metrics,
            keys: ArcSwapOption::empty(),
            fetches: AtomicU64::new(0),
            fetch_lock: Mutex::new(None),
        })
    }

    /// The current keys; `None` until the first successful fetch.
    pub(crate) fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Whether keys have been fetched at least once.
    pub(crate) fn is_loaded(&self) -> bool {
        self.keys.load().is_some()
    }

    /// The background refresher: runs until its task is aborted (the source
    /// left every snapshot).
    pub(crate) async fn refresh_forever(self: Arc<Self>) {
        let mut backoff = RETRY_MIN;
        loop {
            let wait = match self.fetch_now().await {
                Ok(max_age) => {
                    backoff = RETRY_MIN;
                    max_age
                        .unwrap_or(DEFAULT_REFRESH)
                        .clamp(MIN_REFRESH, MAX_REFRESH)
                }
                Err(()) => {
                    let w = backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    w
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Called when a token names a `kid` the current keys lack. Waits for a
    /// fetch that started after the call (its own, or a concurrent one), so
    /// a burst of such tokens costs one fetch, and fetches at most once per
    /// [`MIN_REFETCH_INTERVAL`].
    pub(crate) async fn refetch_for_unknown_kid(&self, kid: &str) {
        let seen = self.fetches.load(Ordering::Acquire);
        let mut last = self.fetch_lock.lock().await;
        if self.fetches.load(Ordering::Acquire) != seen
            || self.keys().is_some_and(|k| k.has_kid(kid))
        {
            return; // someone fetched while we waited
        }
        if let Some(at) = *last {
            let next = at + MIN_REFETCH_INTERVAL;
            if next > Instant::now() {
                tokio::time::sleep_until(next).await;
            }
        }
        self.metrics
            .jwks_refetches
            .with_label_values(&[self.location.label()])
            .inc();
        let _ = self.fetch_locked(&mut last).await;
    }

    async fn fetch_now(&self) -> Result<Option<Duration>, ()> {
        let mut last = self.fetch_lock.lock().await;
        self.fetch_locked(&mut last).await
    }

    async fn fetch_locked(&self, last: &mut Option<Instant>) -> Result<Option<Duration>, ()> {
        *last = Some(Instant::now());
        let label = self.location.label();
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await;
        self.fetches.fetch_add(1, Ordering::AcqRel);
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
        };
        match result {
            Ok((set, max_age)) => {
                self.metrics
                    .jwks_keys
                    .with_label_values(&[label])
                    .set(set.len() as i64);
                self.metrics
                    .jwks_last_success
                    .with_label_values(&[label])
                    .set(unix_now());
                tracing::debug!(source = label, keys = set.len(), "Fetched JWKS.");
                self.keys.store(Some(Arc::new(set)));
                Ok(max_age)
            }
            Err(e) => {
                self.metrics
                    .jwks_fetch_errors
                    .with_label_values(&[label])
                    .inc();
                let stale = self.is_loaded();
                tracing::warn!(source = label, error = %e, serving_cached_keys = stale, "JWKS fetch failed.");
                Err(())
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), String> {
        let jwks_uri = match &self.location {
            Location::Jwks(uri) => uri.clone(),
            Location::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let (body, _) = self.get(&url).await?;
                let doc: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| format!("discovery document is not JSON: {e}"))?;
                let found = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or("");
                if found != issuer {
                    return Err(format!(
                        "discovery document names issuer {found:?}, expected {issuer:?}"
                    ));
                }
                doc.get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or("discovery document has no jwks_uri")?
                    .to_owned()
            }
        };
        let (body, max_age) = self.get(&jwks_uri).await?;
        Ok((KeySet::from_jwks(&body)?, max_age))
    }

    async fn get(&self, url: &str) -> Result<(Bytes, Option<Duration>), String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let req = Request::get(uri)
            .header(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            )
            .header(http::header::USER_AGENT, HeaderValue::from_static("weir"))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let max_age = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok((body, max_age))
    }
}

/// `max-age` of a `Cache-Control` value; `no-cache`/`no-store` mean "as
/// often as allowed".
fn max_age(value: &str) -> Option<Duration> {
    let mut out = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            out = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    out
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
