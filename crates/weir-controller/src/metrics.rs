//! Control-plane metrics: compile time, publications, diagnostics.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use weir_compiler::{Diagnostic, Severity};

/// Metrics shared by the providers.
#[derive(Clone)]
pub struct ControllerMetrics {
    /// `weir_snapshot_compile_seconds`.
    pub compile_seconds: Histogram,
    /// `weir_snapshots_published_total`.
    pub published: IntCounter,
    /// `weir_config_diagnostics{severity, reason}`: findings of the last compile.
    diagnostics: IntGaugeVec,
    /// `weir_manifest_errors`: manifest documents that could not be read.
    pub manifest_errors: IntGauge,
    /// `weir_leader`: 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// `weir_watch_events_total{kind}`: watch events received.
    pub watch_events: IntCounterVec,
    /// `weir_watch_errors_total{kind}`: watch failures (each is retried with backoff).
    pub watch_errors: IntCounterVec,
    /// `weir_objects{kind}`: objects in the controller's caches.
    pub objects: IntGaugeVec,
    /// `weir_objects_invalid{kind}`: objects with an error in the last compile.
    pub objects_invalid: IntGaugeVec,
    /// `weir_change_to_publish_seconds`: first API event of a batch to the
    /// new snapshot being published.
    pub change_to_publish: Histogram,
}

impl ControllerMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let compile_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "weir_snapshot_compile_seconds",
                "Time to compile objects into a snapshot.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let published = IntCounter::new(
            "weir_snapshots_published_total",
            "Snapshots published to the data plane (compiles that changed something).",
        )?;
        let diagnostics = IntGaugeVec::new(
            Opts::new(
                "weir_config_diagnostics",
                "Findings of the last compile, by severity and reason (see the logs for objects).",
            ),
            &["severity", "reason"],
        )?;
        let manifest_errors = IntGauge::new(
            "weir_manifest_errors",
            "Manifest documents or files that could not be read in the last load.",
        )?;
        registry.register(Box::new(compile_seconds.clone()))?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(diagnostics.clone()))?;
        let leader = IntGauge::new(
            "weir_leader",
            "Whether this replica is the elected leader that writes status and Events (1) or not (0).",
        )?;
        registry.register(Box::new(manifest_errors.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        let watch_events = IntCounterVec::new(
            Opts::new(
                "weir_watch_events_total",
                "Kubernetes watch events received, by kind.",
            ),
            &["kind"],
        )?;
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "weir_watch_errors_total",
                "Kubernetes watch failures, by kind; each is retried with backoff.",
            ),
            &["kind"],
        )?;
        let objects = IntGaugeVec::new(
            Opts::new(
                "weir_objects",
                "Objects in the controller's caches, by kind.",
            ),
            &["kind"],
        )?;
        let objects_invalid = IntGaugeVec::new(
            Opts::new(
                "weir_objects_invalid",
                "Objects with at least one error in the last compile (rejected, or served in part or from their last valid version), by kind.",
            ),
            &["kind"],
        )?;
        let change_to_publish = Histogram::with_opts(
            HistogramOpts::new(
                "weir_change_to_publish_seconds",
                "Time from the first Kubernetes event of a batch to the new snapshot being published.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )?;
        registry.register(Box::new(watch_events.clone()))?;
        registry.register(Box::new(watch_errors.clone()))?;
        registry.register(Box::new(objects.clone()))?;
        registry.register(Box::new(objects_invalid.clone()))?;
        registry.register(Box::new(change_to_publish.clone()))?;
        Ok(ControllerMetrics {
            compile_seconds,
            published,
            diagnostics,
            manifest_errors,
            leader,
            watch_events,
            watch_errors,
            objects,
            objects_invalid,
            change_to_publish,
        })
    }

    pub(crate) fn record_diagnostics(&self, diagnostics: &[Diagnostic]) {
        self.diagnostics.reset();
        for d in diagnostics {
            let severity = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            self.diagnostics
                .with_label_values(&[severity, d.reason])
                .inc();
        }
        let invalid: std::collections::BTreeSet<&weir_compiler::ObjectRef> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| &d.object)
            .collect();
        self.objects_invalid.reset();
        for kind in ["Ingress", "GatewayPolicy", "Service", "IngressClass"] {
            self.objects_invalid.with_label_values(&[kind]).set(0);
        }
        for object in invalid {
            self.objects_invalid.with_label_values(&[object.kind]).inc();
        }
    }
}
