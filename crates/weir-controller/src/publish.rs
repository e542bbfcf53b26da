//! Publishing compiled snapshots, shared by every provider.

use std::sync::Arc;

use tokio::sync::watch;
use weir_compiler::{Compiled, Severity};
use weir_snapshot::Published;

use crate::metrics::ControllerMetrics;

/// Publishes a snapshot only when it differs from the one being served, and
/// logs each compile's diagnostics once.
pub struct Publisher {
    tx: watch::Sender<Option<Published>>,
    metrics: ControllerMetrics,
    generation: u64,
}

impl Publisher {
    /// Wraps the sending side of the channel the data plane follows.
    pub fn new(tx: watch::Sender<Option<Published>>, metrics: ControllerMetrics) -> Self {
        Publisher {
            tx,
            metrics,
            generation: 0,
        }
    }

    /// Reports `compiled`'s diagnostics and publishes its snapshot if it
    /// changed. Returns whether a new generation was published.
    pub fn publish(&mut self, compiled: Compiled) -> bool {
        for d in &compiled.diagnostics {
            match d.severity {
                Severity::Error => tracing::warn!(
                    object = %d.object, field = d.field.as_deref().unwrap_or(""), reason = d.reason,
                    "Rejected: {}.", d.message
                ),
                Severity::Warning => tracing::info!(
                    object = %d.object, field = d.field.as_deref().unwrap_or(""), reason = d.reason,
                    "Served with a warning: {}.", d.message
                ),
            }
        }
        self.metrics.record_diagnostics(&compiled.diagnostics);
        let unchanged = self
            .tx
            .borrow()
            .as_ref()
            .is_some_and(|p| *p.snapshot == compiled.snapshot);
        if unchanged {
            return false;
        }
        self.generation += 1;
        let published = Published {
            generation: self.generation,
            snapshot: Arc::new(compiled.snapshot),
        };
        self.metrics.published.inc();
        // `send_replace` succeeds even with no receiver yet.
        self.tx.send_replace(Some(published));
        true
    }
}
