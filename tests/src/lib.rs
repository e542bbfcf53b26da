//! Test support for weir's end-to-end tests: real upstream HTTP servers, the
//! real `weir` binary in a child process, and HTTP clients (pooled, HTTP/2
//! prior knowledge, and raw TCP for malformed requests).

pub mod client;
pub mod cluster;
pub mod jwt;
pub mod pki;
pub mod redis;
pub mod upstream;
pub mod weir;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh, empty folder.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Writes `name` atomically (write + rename), as editors and ConfigMap
    /// updates do.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write temp file");
        std::fs::rename(&tmp, self.0.join(name)).expect("rename into place");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `deadline`. For conditions that have no event to await.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one unlabelled series (`name value`) in Prometheus text.
pub fn metric_value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::trim)
}

/// A manifest folder routing `api.test` (every path) to `upstream`; tests
/// add their policies beside it.
pub fn api_routes(tag: &str, upstream: std::net::SocketAddr) -> TempDir {
    let dir = TempDir::new(tag);
    let routes = route_yaml(
        "api",
        "api.test",
        "/",
        "Prefix",
        "api",
        &upstream.to_string(),
    );
    dir.write("routes.yaml", &routes);
    dir
}

/// Manifests for one Service with static endpoints (`weir.dev/upstream`) and
/// one Ingress path to it.
pub fn route_yaml(
    ingress: &str,
    host: &str,
    path: &str,
    path_type: &str,
    service: &str,
    upstream: &str,
) -> String {
    format!(
        "{}---\n{}",
        ingress_yaml(ingress, "", host, path, path_type, service),
        service_yaml(service, upstream)
    )
}

/// [`route_yaml`] for every path (`/`, Prefix) of `host`, with annotations
/// on the Ingress and on the Service (flow-style map entries, either may be
/// empty).
pub fn route_yaml_with(
    ingress: &str,
    annotations: &str,
    host: &str,
    service: &str,
    upstream: &str,
    service_annotations: &str,
) -> String {
    format!(
        "{}---\n{}",
        ingress_yaml(ingress, annotations, host, "/", "Prefix", service),
        service_yaml_with(service, upstream, service_annotations)
    )
}

/// One Ingress with one path to `service` port 80, with `annotations`
/// (flow-style map entries, e.g. `weir.dev/access-log: "false"`).
pub fn ingress_yaml(
    ingress: &str,
    annotations: &str,
    host: &str,
    path: &str,
    path_type: &str,
    service: &str,
) -> String {
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!(", annotations: {{{annotations}}}")
    };
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {ingress}{annotations}}}
spec:
  ingressClassName: weir
  rules:
  - host: {host}
    http:
      paths:
      - {{path: \"{path}\", pathType: {path_type}, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"
    )
}

/// A Service with static endpoints.
pub fn service_yaml(service: &str, upstream: &str) -> String {
    service_yaml_with(service, upstream, "")
}

/// [`service_yaml`] with more annotations (flow-style map entries, e.g.
/// `weir.dev/backend-protocol: h2c`).
pub fn service_yaml_with(service: &str, upstream: &str, annotations: &str) -> String {
    let more = if annotations.is_empty() {
        String::new()
    } else {
        format!(", {annotations}")
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {service}, annotations: {{weir.dev/upstream: \"{upstream}\"{more}}}}}
spec: {{ports: [{{port: 80}}]}}
"
    )
}

/// Waits up to 10 s until `GET /` on `addr` with `Host: host` answers
/// `want`; panics naming `what` otherwise.
pub async fn await_status(addr: std::net::SocketAddr, host: &str, want: u16, what: &str) {
    let client = client::http1();
    eventually(Duration::from_secs(10), what, || {
        let client = client.clone();
        async move {
            (client::get(&client, addr, host, "/", &[])
                .await
                .ok()?
                .status
                == want)
                .then_some(())
        }
    })
    .await;
}

/// A Kubernetes manifest tool (helm, kubernetes-validate, k8s-crd-check):
/// `$K8S_TOOLS_BIN`, then `target/k8s-tools/bin` where `make test-deps`
/// installs them, then a `shared/tools` folder above the checkout (where
/// k8s-crd-check ships), then `PATH`. Panics with what to run when absent.
pub fn k8s_tool(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root");
    let shared = root.ancestors().map(|d| d.join("shared/tools"));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    std::env::var_os("K8S_TOOLS_BIN")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([root.join("target/k8s-tools/bin")])
        .chain(shared)
        .chain(on_path)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: run `make test-deps` (it installs helm, kubernetes-validate \
                 and k8s-crd-check into target/k8s-tools with ../shared/tools/install-k8s-tools), \
                 or set K8S_TOOLS_BIN"
            )
        })
}
