//! A real `redis-server` on a free loopback port, started by the test and
//! killed by it to test failures. `make test` installs redis-server when it
//! is missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running redis-server (killed on drop).
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `requirepass`, which [`Redis::command`] sends first.
    password: Option<String>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    /// Starts redis-server on `port` (e.g. again after [`Redis::kill`]).
    pub async fn start_on(port: u16) -> Redis {
        Self::spawn(port, &[], None).await
    }

    /// Starts redis-server requiring `password` from every client.
    pub async fn start_with_password(password: &str) -> Redis {
        Self::spawn(free_port(), &["--requirepass", password], Some(password)).await
    }

    async fn spawn(port: u16, extra: &[&str], password: Option<&str>) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make test installs it)");
        let redis = Redis {
            child: Some(child),
            port,
            password: password.map(str::to_owned),
        };
        crate::eventually(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || {
                let ok = redis
                    .command("PING")
                    .is_some_and(|r| r.starts_with("+PONG"));
                async move { ok.then_some(()) }
            },
        )
        .await;
        redis
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one inline command and returns the raw reply, or `None` when
    /// the server is unreachable.
    pub fn command(&self, command: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let auth = self
            .password
            .as_ref()
            .map(|p| format!("AUTH {p}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("{auth}{command}\r\n").as_bytes())
            .ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).ok()?;
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            let text = match &self.password {
                Some(_) => match text.strip_prefix("+OK\r\n") {
                    Some(rest) => std::borrow::Cow::Owned(rest.to_owned()),
                    None if n == 0 => return None,
                    None => continue,
                },
                None => text,
            };
            // A simple reply is one line; a bulk reply says its length.
            if let Some(rest) = text.strip_prefix('$') {
                let (len, body) = rest.split_once("\r\n")?;
                let len: usize = len.parse().ok()?;
                if body.len() >= len {
                    return Some(body[..len].to_owned());
                }
            } else if text.ends_with("\r\n") {
                return Some(text.into_owned());
            }
            if n == 0 {
                return None;
            }
        }
    }

    /// One counter of one command from `INFO commandstats`, e.g.
    /// (`evalsha`, `calls`) or (`evalsha`, `failed_calls`); 0 when the
    /// command was never called.
    pub fn command_stat(&self, command: &str, field: &str) -> u64 {
        let info = self.command("INFO commandstats").unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
            .and_then(|stats| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Successful calls of one command (`calls - failed_calls`).
    pub fn calls(&self, command: &str) -> u64 {
        self.command_stat(command, "calls") - self.command_stat(command, "failed_calls")
    }

    /// Kills the server (SIGKILL): no goodbye to clients.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters only, each a real redis-server on loopback,
/// with the 16384 slots split evenly between them.
pub struct RedisCluster {
    /// The masters, in slot order.
    pub nodes: Vec<Redis>,
    _dir: crate::TempDir,
}

impl RedisCluster {
    /// Starts `masters` nodes, assigns slots, joins them with `CLUSTER MEET`
    /// and waits until every node reports `cluster_state:ok`.
    pub async fn start(masters: usize) -> RedisCluster {
        let dir = crate::TempDir::new("redis-cluster");
        let mut nodes = Vec::new();
        for _ in 0..masters {
            let port = free_cluster_port();
            let conf = dir.0.join(format!("nodes-{port}.conf"));
            let dir = dir.0.to_string_lossy().into_owned();
            let conf = conf.to_string_lossy().into_owned();
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "5000",
                "--dir",
                &dir,
            ];
            nodes.push(Redis::spawn(port, &extra, None).await);
        }
        let per = 16384 / masters;
        for (i, node) in nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == masters {
                16383
            } else {
                first + per - 1
            };
            let reply = node.command(&format!("CLUSTER ADDSLOTSRANGE {first} {last}"));
            assert_eq!(
                reply.as_deref(),
                Some("+OK\r\n"),
                "ADDSLOTSRANGE on {}",
                node.port
            );
        }
        for node in &nodes[1..] {
            let reply = nodes[0].command(&format!("CLUSTER MEET 127.0.0.1 {}", node.port));
            assert_eq!(reply.as_deref(), Some("+OK\r\n"), "MEET {}", node.port);
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        crate::eventually(
            Duration::from_secs(30),
            "every cluster node to report cluster_state:ok",
            || {
                let ok = cluster.nodes.iter().all(|n| {
                    n.command("CLUSTER INFO").is_some_and(|info| {
                        info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_known_nodes:{masters}"))
                    })
                });
                async move { ok.then_some(()) }
            },
        )
        .await;
        cluster
    }

    /// `redis://` URLs of every node (seeds for `--redis-url`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A redis-server that also serves TLS (`rediss://`) with a certificate for
/// 127.0.0.1 from a CA made for the test; the plain port is for the test's
/// own inspection.
pub struct TlsRedis {
    /// The server (its plain port).
    pub redis: Redis,
    /// The TLS port.
    pub tls_port: u16,
    /// The CA certificate, PEM.
    pub ca_file: std::path::PathBuf,
    _dir: crate::TempDir,
}

impl TlsRedis {
    /// Makes a CA and a server certificate, and starts redis-server.
    pub async fn start() -> TlsRedis {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let dir = crate::TempDir::new("redis-tls");
        dir.write("ca.pem", &ca.pem());
        dir.write("server.pem", &cert.pem());
        dir.write("server.key", &key.serialize_pem());
        let path = |name: &str| dir.0.join(name).to_string_lossy().into_owned();
        let tls_port = free_port();
        let extra = [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".to_string(),
            path("server.pem"),
            "--tls-key-file".to_string(),
            path("server.key"),
            "--tls-ca-cert-file".to_string(),
            path("ca.pem"),
            "--tls-auth-clients".to_string(),
            "no".to_string(),
        ];
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let redis = Redis::spawn(free_port(), &extra, None).await;
        TlsRedis {
            redis,
            tls_port,
            ca_file: dir.0.join("ca.pem"),
            _dir: dir,
        }
    }

    /// `rediss://127.0.0.1:tls_port`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}
