//! Configuration providers: they read Kubernetes objects from somewhere,
//! compile them with `weir-compiler`, and publish the resulting snapshot on
//! the `tokio::sync::watch` channel the data plane follows.
//!
//! ```text
//!  manifests DIR ──poll──▶ parse ──▶ compile ──▶ publish if changed ──▶ watch::Sender<Option<Published>>
//! ```
//!
//! [`file::FileProvider`] (`weir serve --manifests DIR`) and
//! [`cluster::ClusterProvider`] (`weir run`, the Kubernetes API) publish on
//! the same channel.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;
pub mod file;
pub mod leader;
mod metrics;
mod publish;
mod secrets;
pub mod status;

pub use metrics::ControllerMetrics;
pub use publish::Publisher;
