//! Authentication metrics. Labels are policy names and JWKS URIs from the
//! configuration, never subjects, consumers or tokens.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metrics of the authentication filters, registered once per process.
#[derive(Clone)]
pub struct AuthMetrics {
    pub(crate) decisions: IntCounterVec,
    pub(crate) jwks_keys: IntGaugeVec,
    pub(crate) jwks_last_success: IntGaugeVec,
    pub(crate) jwks_fetch_errors: IntCounterVec,
    pub(crate) jwks_refetches: IntCounterVec,
}

impl AuthMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "weir_auth_decisions_total",
                "Policy decisions, by policy and result (allowed, anonymous, unauthenticated, forbidden, invalid_policy).",
            ),
            &["policy", "result"],
        )?;
        let jwks_keys = IntGaugeVec::new(
            Opts::new(
                "weir_jwks_keys",
                "Usable keys in the last JWKS fetched, by source.",
            ),
            &["source"],
        )?;
        let jwks_last_success = IntGaugeVec::new(
            Opts::new(
                "weir_jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch, by source (key age = now - this).",
            ),
            &["source"],
        )?;
        let jwks_fetch_errors = IntCounterVec::new(
            Opts::new(
                "weir_jwks_fetch_errors_total",
                "Failed JWKS fetches, by source.",
            ),
            &["source"],
        )?;
        let jwks_refetches = IntCounterVec::new(
            Opts::new(
                "weir_jwks_unknown_kid_refetches_total",
                "JWKS fetches triggered by a token naming an unknown key id, by source.",
            ),
            &["source"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(jwks_keys.clone()))?;
        registry.register(Box::new(jwks_last_success.clone()))?;
        registry.register(Box::new(jwks_fetch_errors.clone()))?;
        registry.register(Box::new(jwks_refetches.clone()))?;
        Ok(AuthMetrics {
            decisions,
            jwks_keys,
            jwks_last_success,
            jwks_fetch_errors,
            jwks_refetches,
        })
    }

    /// Drops the series of a source no snapshot uses any more.
    pub(crate) fn forget_source(&self, source: &str) {
        let _ = self.jwks_keys.remove_label_values(&[source]);
        let _ = self.jwks_last_success.remove_label_values(&[source]);
        let _ = self.jwks_fetch_errors.remove_label_values(&[source]);
        let _ = self.jwks_refetches.remove_label_values(&[source]);
    }
}
