//! A test-only Kubernetes API server that the real kube-rs client accepts
//! unmodified.
//!
//! ```text
//!  kube::Client ──HTTP──▶ http.rs (routing, list, watch, CRUD, patch, discovery)
//!                              │
//!                              ▼
//!                         store.rs  one lock: rv counter, objects, history ring, broadcast
//!                              │
//!                 watches ◀────┘  replay from rv, 410 in-stream, bookmarks, selector transitions
//! ```
//!
//! It follows the API conventions in `../shared/specs/test-apiserver.md`,
//! not the controller's convenience: resourceVersions are opaque and
//! strictly increasing, writes are compare-and-swap, a watch resumes from
//! any rv still in history and gets an in-stream 410 otherwise, bookmarks
//! carry `apiVersion`/`kind`, status subresources and generation follow the
//! registry rules. Served today: namespaces, services, secrets, configmaps,
//! events (core and events.k8s.io), ingresses, ingressclasses,
//! endpointslices, leases; merge, JSON, strategic merge and apply patches;
//! minimal OpenAPI v3 documents so kubectl's default validation works, with
//! CRD schemas so `kubectl explain` does; CRDs and their custom resources,
//! printed as Tables from their printer columns; HTTP or HTTPS (a generated
//! CA in the kubeconfig). Not yet: Tables for built-in types (kubectl prints
//! NAME and AGE), protobuf bodies (kubectl's
//! imperative `create namespace` and friends send protobuf and get 415),
//! managed-fields ownership for server-side apply, ownerReference GC.

pub mod error;
mod http;
mod openapi;
pub mod resources;
pub mod selector;
pub mod smp;
pub mod store;
mod table;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::store::Store;

/// Settings of a test server.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Events kept for watches to resume from.
    pub history: usize,
    /// Address to bind; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Serve HTTPS with a generated CA (in the kubeconfig) instead of HTTP.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Duration::from_secs(1),
            history: 10_000,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
        }
    }
}

/// One request as received, for assertions on client behaviour.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path_and_query: String,
    /// User-Agent.
    pub user_agent: String,
}

pub(crate) struct Shared {
    store: Mutex<Store>,
    log: Mutex<Vec<LoggedRequest>>,
    pub(crate) drop_watches: watch::Sender<u64>,
    pub(crate) bookmark: Notify,
    pub(crate) options: Options,
    pub(crate) addr: SocketAddr,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock would be a bug in this crate; the
        // data is still consistent (every write is one step), so go on.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn log(&self, r: LoggedRequest) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding or writing the kubeconfig failed.
    #[error("test API server I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Building the kube client failed.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    /// The URL was not valid.
    #[error("server URL: {0}")]
    Url(String),
    /// Certificates or TLS configuration.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A running test API server. Stops when dropped.
pub struct TestApiServer {
    shared: Arc<Shared>,
    url: String,
    kubeconfig: PathBuf,
    /// The accept loop; `None` while stopped.
    task: Option<tokio::task::JoinHandle<()>>,
    /// The CA certificate (DER) when serving HTTPS.
    ca_der: Option<Vec<u8>>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    addr: SocketAddr,
}

/// Accepts connections until aborted; aborting it closes every connection it
/// accepted too (they live in its `JoinSet`).
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| http::handle(shared.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.shared.drop_watches.send_modify(|n| *n += 1);
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

impl TestApiServer {
    /// Binds, writes a kubeconfig next to the system temp dir and serves.
    pub async fn start(options: Options) -> Result<TestApiServer, StartError> {
        let listener = TcpListener::bind(options.addr).await?;
        let addr = listener.local_addr()?;
        let (drop_watches, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history)),
            log: Mutex::new(Vec::new()),
            drop_watches,
            bookmark: Notify::new(),
            options,
            addr,
        });
        let material = if shared.options.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let url = format!(
            "{}://{addr}",
            if material.is_some() { "https" } else { "http" }
        );
        let kubeconfig = std::env::temp_dir().join(format!(
            "weir-testkube-{}-{}.kubeconfig",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&url, material.as_ref().map(|m| m.ca_pem.as_str())),
        )?;
        let ca_der = material.as_ref().map(|m| m.ca_der.clone());
        let acceptor = material.map(|m| m.acceptor);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), acceptor.clone()));
        Ok(TestApiServer {
            shared,
            url,
            kubeconfig,
            task: Some(task),
            ca_der,
            acceptor,
            addr,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file pointing at this server (for kubectl and `weir run`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client for this server, built without touching process-wide
    /// environment (tests run in parallel).
    pub fn client(&self) -> Result<kube::Client, StartError> {
        let uri: ::http::Uri = self
            .url
            .parse()
            .map_err(|e: ::http::uri::InvalidUri| StartError::Url(e.to_string()))?;
        let mut config = kube::Config::new(uri);
        // Trust exactly this server's CA, as a kubeconfig would say.
        config.root_cert = self.ca_der.clone().map(|ca| vec![ca]);
        Ok(kube::Client::try_from(config)?)
    }

    /// Every request so far.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Test hook: forget all history, so watches resuming from an earlier rv
    /// get 410 Expired and continue tokens expire.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Test hook: end every open watch stream cleanly.
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|n| *n += 1);
    }

    /// Test hook: send a bookmark on every watch that allows them, now.
    pub fn bookmark(&self) {
        self.shared.bookmark.notify_waiters();
    }

    /// Test hook: the API server goes away. The port is closed and every
    /// open connection (watches included) is cut; the stored objects are
    /// kept, as etcd keeps them across an API-server restart.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.drop_watches();
    }

    /// Test hook: the API server comes back on the same address with the
    /// same objects and resourceVersions.
    pub async fn restart(&mut self) -> Result<(), StartError> {
        if self.task.is_some() {
            return Ok(());
        }
        // The old socket may take a moment to be released after abort.
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.task = Some(tokio::spawn(accept_loop(
                        listener,
                        self.shared.clone(),
                        self.acceptor.clone(),
                    )));
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(StartError::Io(
            last.unwrap_or_else(|| std::io::Error::other("bind failed")),
        ))
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv()
    }
}

fn kubeconfig_yaml(url: &str, ca_pem: Option<&str>) -> String {
    use base64::Engine;
    let ca = ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: weir-testkube
  cluster:
    server: {url}{ca}
contexts:
- name: weir-testkube
  context:
    cluster: weir-testkube
    user: weir-testkube
    namespace: default
current-context: weir-testkube
users:
- name: weir-testkube
  user:
    # The server accepts any client; a token keeps kubectl from prompting
    # for a password over HTTPS.
    token: weir-testkube
"
    )
}
