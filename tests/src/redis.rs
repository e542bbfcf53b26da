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
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    /// Starts redis-server on `port` (e.g. again after [`Redis::kill`]).
    pub async fn start_on(port: u16) -> Redis {
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make test installs it)");
        let redis = Redis {
            child: Some(child),
            port,
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
        s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).ok()?;
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
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
