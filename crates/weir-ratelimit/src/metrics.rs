//! Rate-limit metrics. Labels are policy and rule names from the
//! configuration, never client keys.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Metrics of the rate limiter, registered once per process.
#[derive(Clone)]
pub struct RateLimitMetrics {
    /// Decisions by policy, rule and result (`allowed`, `rejected`,
    /// `shadow_rejected`, `store_failure_allowed`, `store_failure_denied`).
    pub decisions: IntCounterVec,
    pub(crate) store_duration: Histogram,
    pub(crate) store_errors: IntCounterVec,
    pub(crate) breaker_open: IntGauge,
    pub(crate) local_keys: IntGauge,
    pub(crate) replicas: IntGauge,
    pub(crate) leased: prometheus::IntCounter,
}

impl RateLimitMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "weir_ratelimit_decisions_total",
                "Rate-limit decisions by policy, rule and result (allowed, rejected, shadow_rejected, store_failure_allowed, store_failure_denied).",
            ),
            &["policy", "rule", "result"],
        )?;
        let store_duration = Histogram::with_opts(
            HistogramOpts::new(
                "weir_ratelimit_store_duration_seconds",
                "Round-trip time of one decision in the shared store (Redis), failures included.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "weir_ratelimit_store_errors_total",
                "Failed shared-store decisions by kind (timeout, connection, redis, reply).",
            ),
            &["kind"],
        )?;
        let breaker_open = IntGauge::new(
            "weir_ratelimit_store_circuit_open",
            "1 while the shared store's circuit breaker is open (rules apply onStoreFailure).",
        )?;
        let local_keys = IntGauge::new(
            "weir_ratelimit_local_keys",
            "Buckets held by the in-process store (bounded by --ratelimit-local-capacity).",
        )?;
        let replicas = IntGauge::new(
            "weir_ratelimit_replicas",
            "Replicas a global limit is divided among while the store is down (localShare).",
        )?;
        replicas.set(1);
        let leased = prometheus::IntCounter::new(
            "weir_ratelimit_leased_total",
            "Global decisions served from tokens this replica leased from the shared store (no round trip).",
        )?;
        registry.register(Box::new(leased.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(store_duration.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(breaker_open.clone()))?;
        registry.register(Box::new(local_keys.clone()))?;
        registry.register(Box::new(replicas.clone()))?;
        Ok(RateLimitMetrics {
            decisions,
            store_duration,
            store_errors,
            breaker_open,
            local_keys,
            replicas,
            leased,
        })
    }
}
