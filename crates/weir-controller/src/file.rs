//! The manifest-folder provider behind `weir serve --manifests DIR`.
//!
//! Reads every `*.yaml` / `*.yml` file directly in DIR (multi-document, the
//! same YAML a user would `kubectl apply`), compiles, publishes, and then
//! polls the folder for changes. Polling a fingerprint (name, size, mtime,
//! inode) every `poll_interval` is deliberate: it sees edits, atomic
//! renames and Kubernetes ConfigMap symlink swaps alike, which inotify-style
//! watchers get wrong, and costs one `stat` per file. A change is debounced
//! until the folder is quiet for one interval (at most `max_delay`) so a
//! multi-file write is read whole.
//!
//! A file that is not valid YAML is logged with its position and skipped; a
//! document that does not match its kind is logged and skipped alone;
//! everything else keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use weir_compiler::{CompileOptions, Inputs, compile, manifest};

use crate::publish::Publisher;

/// Reads a manifest folder and keeps the snapshot in step with it.
pub struct FileProvider {
    dir: PathBuf,
    options: CompileOptions,
    publisher: Publisher,
    metrics: crate::ControllerMetrics,
    /// How often the folder is checked.
    pub poll_interval: Duration,
    /// Longest a change waits for the folder to settle.
    pub max_delay: Duration,
    /// The fingerprint of what was last read, so the watch compares against
    /// what is served, not against the folder as it was when the watch task
    /// first ran (an edit in between would go unseen).
    served: Vec<FileStamp>,
}

#[derive(PartialEq, Eq, Debug)]
struct FileStamp {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// Problems reading the folder itself (not its files).
#[derive(Debug, thiserror::Error)]
pub enum FileProviderError {
    /// The folder cannot be listed.
    #[error("cannot read manifest folder {dir}: {source}")]
    ReadDir {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl FileProvider {
    /// A provider for `dir`, publishing through `publisher`.
    pub fn new(
        dir: PathBuf,
        options: CompileOptions,
        publisher: Publisher,
        metrics: crate::ControllerMetrics,
    ) -> Self {
        FileProvider {
            dir,
            options,
            publisher,
            metrics,
            poll_interval: Duration::from_millis(200),
            max_delay: Duration::from_millis(500),
            served: Vec::new(),
        }
    }

    /// Loads the folder once and publishes. Fails only if the folder itself
    /// cannot be read, so `weir serve` can refuse to start on a typo.
    pub fn load(&mut self) -> Result<(), FileProviderError> {
        let stamps = fingerprint(&self.dir)?;
        self.reload(&stamps);
        self.served = stamps;
        Ok(())
    }

    /// Polls for changes forever (the caller aborts the task on shutdown).
    pub async fn watch(mut self) {
        let mut current = std::mem::take(&mut self.served);
        loop {
            tokio::time::sleep(self.poll_interval).await;
            let Ok(mut seen) = fingerprint(&self.dir).inspect_err(|e| {
                tracing::warn!(error = %e, "Cannot read the manifest folder; serving the last snapshot.");
            }) else {
                continue;
            };
            if seen == current {
                continue;
            }
            // Settle: wait until two looks in a row agree, within max_delay.
            let deadline = Instant::now() + self.max_delay;
            while Instant::now() < deadline {
                tokio::time::sleep(self.poll_interval.min(Duration::from_millis(50))).await;
                match fingerprint(&self.dir) {
                    Ok(again) if again == seen => break,
                    Ok(again) => seen = again,
                    Err(_) => break,
                }
            }
            current = seen;
            // Parsing and compiling are CPU work; keep them off the reactor.
            self = match tokio::task::spawn_blocking(move || {
                self.reload(&current);
                (self, current)
            })
            .await
            {
                Ok((provider, stamps)) => {
                    current = stamps;
                    provider
                }
                Err(e) => {
                    tracing::error!(error = %e, "Manifest reload task failed; stopping the watch.");
                    return;
                }
            };
        }
    }

    fn reload(&mut self, stamps: &[FileStamp]) {
        let start = std::time::Instant::now();
        let mut inputs = Inputs::default();
        let mut errors = 0;
        for stamp in stamps {
            let text = match std::fs::read_to_string(&stamp.path) {
                Ok(t) => t,
                Err(e) => {
                    errors += 1;
                    tracing::warn!(file = %stamp.path.display(), error = %e, "Cannot read manifest file; skipped.");
                    continue;
                }
            };
            let parsed = manifest::parse(&text);
            for e in &parsed.errors {
                errors += 1;
                let (line, column) = e.location.unwrap_or((0, 0));
                if e.fatal {
                    tracing::warn!(file = %stamp.path.display(), document = e.document, line, column, error = %e.message,
                        "Manifest file is not valid YAML; the whole file is skipped.");
                } else {
                    tracing::warn!(file = %stamp.path.display(), document = e.document, error = %e.message,
                        "Manifest document skipped.");
                }
            }
            for ignored in &parsed.ignored {
                tracing::debug!(file = %stamp.path.display(), object = %ignored, "Kind not read by weir serve; ignored.");
            }
            for object in parsed.objects {
                inputs.insert(object);
            }
        }
        self.metrics.manifest_errors.set(errors);
        let compiled = compile(&inputs, &self.options);
        self.metrics
            .compile_seconds
            .observe(start.elapsed().as_secs_f64());
        let routes = compiled.snapshot.route_count();
        if self.publisher.publish(compiled) {
            tracing::info!(
                files = stamps.len(),
                routes,
                ms = start.elapsed().as_millis() as u64,
                "Manifests compiled and published."
            );
        }
    }
}

fn fingerprint(dir: &Path) -> Result<Vec<FileStamp>, FileProviderError> {
    let read_dir = std::fs::read_dir(dir).map_err(|source| FileProviderError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut stamps = Vec::new();
    for entry in read_dir.flatten() {
        let path = entry.path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !is_yaml || hidden {
            continue;
        }
        // Follows symlinks, as ConfigMap volumes need.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        stamps.push(FileStamp {
            path,
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        });
    }
    stamps.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(stamps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> String {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  ingressClassName: weir
  rules:
  - host: {name}.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, annotations: {{weir.dev/upstream: \"127.0.0.1:9\"}}}}
spec: {{ports: [{{port: 80}}]}}
"
        )
    }

    /// An edit after `load` but before the watch task first runs (a busy
    /// runtime, or a deploy script writing right after start) is picked up.
    #[tokio::test]
    async fn an_edit_before_the_watch_starts_is_seen() {
        let dir = std::env::temp_dir().join(format!("weir-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), route("a")).unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(None);
        let metrics = crate::ControllerMetrics::register(&prometheus::Registry::new()).unwrap();
        let publisher = Publisher::new(tx, metrics.clone());
        let mut provider =
            FileProvider::new(dir.clone(), CompileOptions::default(), publisher, metrics);
        provider.poll_interval = Duration::from_millis(20);
        provider.load().unwrap();
        let routes = |p: &Option<weir_snapshot::Published>| {
            p.as_ref().map_or(0, |p| p.snapshot.route_count())
        };
        assert_eq!(routes(&rx.borrow()), 1);
        std::fs::write(dir.join("b.yaml"), route("b")).unwrap();
        let watch = tokio::spawn(provider.watch());
        let seen =
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| routes(p) == 2)).await;
        watch.abort();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(seen.is_ok(), "the second file was never read");
    }
}
