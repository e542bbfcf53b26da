//! Runs the real `weir` binary as a child process.
//!
//! weir binds port 0 and the harness reads the bound addresses from its
//! `Listening.` log line, so parallel tests never race for ports. Every log
//! line is kept for assertions.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running weir.
pub struct Weir {
    child: Child,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The HTTPS listener, when started with `--https-addr`.
    pub https: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Path of the `weir` binary next to the test executable
/// (`target/<profile>/weir`). `make test` builds it first; a binary older
/// than any source it was built from (cargo's dep-info file lists them)
/// fails loudly instead of testing stale code.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Test executables live in target/<profile>/deps, binaries (the
    // benchmark drivers) in target/<profile> itself.
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let bin = dir.join("weir");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p weir` (make test does)",
        bin.display()
    );
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .expect("binary mtime");
    let dep_info = std::fs::read_to_string(dir.join("weir.d")).unwrap_or_default();
    let sources = dep_info.split_once(':').map_or("", |(_, deps)| deps);
    for source in sources.split_whitespace().map(Path::new) {
        let newer = std::fs::metadata(source)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > built);
        assert!(
            !newer,
            "{} is older than {}: rebuild with `cargo build -p weir` (make test does)",
            bin.display(),
            source.display()
        );
    }
    bin
}

impl Weir {
    /// Starts `weir serve --manifests dir` with extra flags and waits until
    /// `/readyz` answers 200 (10 s deadline).
    pub async fn serve(dir: &Path, extra: &[&str]) -> Weir {
        let mut args = vec![
            "serve".to_string(),
            "--manifests".into(),
            dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&args).await
    }

    /// Starts `weir run --kubeconfig FILE` with extra flags and waits until
    /// `/readyz` answers 200 (the initial lists are compiled).
    pub async fn run(kubeconfig: &Path, extra: &[&str]) -> Weir {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::run_env(kubeconfig, &extra, &[]).await
    }

    /// Like [`Weir::run`] with environment variables set, as a pod spec
    /// would set them.
    pub async fn run_env(kubeconfig: &Path, extra: &[String], env: &[(&str, &str)]) -> Weir {
        let mut args = vec![
            "run".to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let weir = Self::spawn_env(&args, env);
        weir.await_ready().await;
        weir
    }

    async fn start(args: &[String]) -> Weir {
        let weir = Self::spawn(args);
        weir.await_ready().await;
        weir
    }

    /// Starts `weir serve --manifests dir` and returns once its listeners
    /// are bound, without waiting for `/readyz`: for tests of readiness.
    pub fn serve_unready(dir: &Path, extra: &[&str]) -> Weir {
        let mut args = vec![
            "serve".to_string(),
            "--manifests".into(),
            dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args)
    }

    /// `/readyz`'s status code.
    pub async fn readyz(&self) -> Option<u16> {
        let client = crate::client::http1();
        let r = crate::client::get(&client, self.admin, "admin", "/readyz", &[])
            .await
            .ok()?;
        Some(r.status.as_u16())
    }

    /// Waits up to 10 s for `/readyz` to answer 200.
    pub async fn await_ready(&self) {
        crate::eventually(
            Duration::from_secs(10),
            "weir /readyz to answer 200",
            || async { (self.readyz().await == Some(200)).then_some(()) },
        )
        .await;
    }

    fn spawn(args: &[String]) -> Weir {
        Self::spawn_env(args, &[])
    }

    fn spawn_env(args: &[String], env: &[(&str, &str)]) -> Weir {
        let (sub, rest) = args.split_first().expect("subcommand");
        let mut cmd = Command::new(binary());
        cmd.envs(env.iter().copied())
            .arg(sub)
            .args(rest)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(["--worker-threads", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn weir");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && v["message"] == "Listening."
                    {
                        let _ = tx.send((
                            v["http"].as_str().unwrap_or("").to_owned(),
                            v["admin"].as_str().unwrap_or("").to_owned(),
                            v["https"].as_str().map(str::to_owned),
                        ));
                    }
                    logs.lock().expect("log lock").push(line);
                }
            });
        }
        let Ok((http, admin, https)) = rx.recv_timeout(Duration::from_secs(10)) else {
            let _ = child.kill();
            panic!(
                "weir did not log its listeners within 10s; logs:\n{}",
                logs.lock().expect("lock").join("\n")
            );
        };
        Weir {
            child,
            http: http.parse().expect("http addr"),
            admin: admin.parse().expect("admin addr"),
            https: https.map(|a| a.parse().expect("https addr")),
            logs,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The admin port's Prometheus text; `None` while it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        let m = crate::client::get(
            &crate::client::http1(),
            self.admin,
            "admin",
            "/metrics",
            &[],
        )
        .await
        .ok()?;
        Some(String::from_utf8_lossy(&m.body).into_owned())
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends SIGKILL (a crash: nothing is cleaned up) and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit (deadline) and returns its exit code.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if tokio::time::Instant::now() > end {
                panic!("weir did not exit within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
