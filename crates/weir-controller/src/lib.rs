//! Configuration providers: they read Kubernetes objects from somewhere,
//! compile them with `weir-compiler`, and publish the resulting snapshot on
//! the `tokio::sync::watch` channel the data plane follows.
//!
//! ```text
//!  manifests DIR ──poll──▶ parse ──▶ compile ──▶ publish if changed ──▶ watch::Sender<Option<Published>>
//! ```
//!
//! Today: [`file::FileProvider`] (`weir serve --manifests DIR`). The
//! Kubernetes API provider (`weir run`) publishes on the same channel.

pub mod file;
mod metrics;
mod publish;

pub use metrics::ControllerMetrics;
pub use publish::Publisher;
