//! The shared store: every replica decides against the same Redis, so a
//! limit holds however many replicas there are.
//!
//! One Lua script decides all the rules of a request atomically (all consume
//! or none does), reading the clock with `TIME` inside the script: replicas'
//! clocks never matter. The script is sent by SHA (`EVALSHA`) and re-sent
//! in full only when Redis answers `NOSCRIPT` (after a restart or
//! `SCRIPT FLUSH`), which the `redis` crate's `Script` does. Each bucket is
//! one hash whose whole name is a hash tag, so in a Redis Cluster a rule's
//! state lives in one slot; rules of one request generally live in
//! different slots there, so Cluster mode sends one script per rule,
//! concurrently, and only single-node mode has all-or-nothing across rules.
//!
//! On a single node, decisions are batched the way a database group-commits:
//! a driver task sends a request's decision at once when fewer than
//! [`MAX_IN_FLIGHT`] calls are out, and otherwise gathers every decision
//! that queued meanwhile into the next call. An idle gateway pays no added
//! latency; a busy one pays one script run for many requests, where the
//! script's fixed cost in Redis (about 15 µs) and a round trip each would
//! otherwise bound throughput. Requests in one call are decided in arrival
//! order, each all-or-nothing, exactly as separate calls would be.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::algorithm::{Algorithm, Limit, Outcome};
use crate::lease::Grant;
use crate::{Bucket, StoreError};

/// One rule of one request for the store: its bucket, its limit, and how
/// many tokens to take if there is room (1, or more to lease).
pub type Ask = (Bucket, Limit, u32);

/// Mirrors [`crate::algorithm`]; keep the two in step (the end-to-end
/// accuracy tests run this, the unit tests run the Rust). `ARGV[1]` is the
/// number of requests in the call, `ARGV[2..]` how many rules each has,
/// then five numbers per rule, one rule per key, in request order: the
/// algorithm, period, requests, burst, and the tokens wanted (more than
/// one to lease some, see [`crate::lease`]; the grant is whatever of that
/// fits, at least one, or a refusal). Each rule answers `{granted,
/// remaining, reset, retry}`, `granted` 0 when refused.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local groups = tonumber(ARGV[1])
local i = 0
for g = 1, groups do
  local writes = {}
  local all = true
  for j = 1, tonumber(ARGV[1 + g]) do
    i = i + 1
    local base = 1 + groups + (i - 1) * 5
    local alg = tonumber(ARGV[base + 1])
    local period = tonumber(ARGV[base + 2])
    local requests = tonumber(ARGV[base + 3])
    local burst = tonumber(ARGV[base + 4])
    local want = tonumber(ARGV[base + 5])
    local s = redis.call('HMGET', KEYS[i], 'a', 'b', 'c')
    local a = tonumber(s[1])
    local b = tonumber(s[2]) or 0
    local c = tonumber(s[3]) or 0
    local allowed, remaining, reset, retry
    if alg == 1 then
      local interval = math.max(1, math.floor(period / requests))
      local span = math.max(1, burst) * interval
      local tat = math.max(a or now, now)
      local room = math.floor((span - (tat - now)) / interval)
      if room < 1 then
        allowed, remaining, reset, retry = 0, 0, tat - now, tat + interval - now - span
      else
        allowed = math.min(want, room)
        local nxt = tat + allowed * interval
        remaining, reset, retry = math.floor((span - (nxt - now)) / interval), nxt - now, 0
        writes[i] = {nxt, 0, 0, nxt - now}
      end
    elseif alg == 2 then
      local w = math.floor(now / period)
      local count = 0
      if a == w then count = c end
      reset = (w + 1) * period - now
      if count + 1 > requests then
        allowed, remaining, retry = 0, 0, reset
      else
        allowed = math.min(want, requests - count)
        remaining, retry = requests - count - allowed, 0
        writes[i] = {w, 0, count + allowed, reset}
      end
    else
      local w = math.floor(now / period)
      local prev, cur = 0, 0
      if a == w then prev, cur = b, c elseif a == w - 1 then prev, cur = c, 0 end
      local e = now - w * period
      local est = prev * (period - e) / period + cur
      reset = 2 * period - e
      if est + 1 > requests then
        allowed, remaining = 0, 0
        if cur + 1 > requests or prev == 0 then
          local wait = 0
          if cur > 0 then wait = math.max(0, period * (1 - (requests - 1) / cur)) end
          retry = math.ceil((period - e) + wait)
        else
          local needed = period - period * (requests - 1 - cur) / prev
          retry = math.ceil(math.max(1, needed - e))
        end
      else
        allowed = math.max(1, math.min(want, math.floor(requests - est)))
        remaining, retry = math.max(0, math.floor(requests - est - allowed)), 0
        writes[i] = {w, prev, cur + allowed, reset}
      end
    end
    if allowed == 0 then all = false end
    out[i] = {allowed, remaining, reset, retry}
  end
  -- A request's rules consume together or not at all; the next request in
  -- the batch sees these writes, as it would in a call of its own.
  if all then
    for k, v in pairs(writes) do
      redis.call('HSET', KEYS[k], 'a', string.format('%.0f', v[1]), 'b', string.format('%.0f', v[2]), 'c', string.format('%.0f', v[3]))
      redis.call('PEXPIRE', KEYS[k], math.floor(v[4] / 1000) + 1000)
    end
  end
end
return out
"#;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URLs: one for a single node, one or more
    /// seed nodes with `cluster`.
    pub urls: Vec<String>,
    /// Cluster mode (keys hash-tagged per bucket, routed by slot).
    pub cluster: bool,
    /// Password, when not in the URL (from a Secret or a file).
    pub password: Option<String>,
    /// PEM CA certificates that sign the server's certificate for
    /// `rediss://` (a private CA); the system's roots when `None`.
    pub ca_pem: Option<Vec<u8>>,
    /// How long one decision may wait for Redis before it counts as a
    /// failure.
    pub timeout: Duration,
}

/// Calls out at once on a single node; more decisions wait and share the
/// next call.
pub const MAX_IN_FLIGHT: usize = 4;
/// Rules decided in one call at most, so a call stays short in Redis
/// (which runs nothing else meanwhile).
const MAX_BATCH_RULES: usize = 256;
/// Decisions waiting for the driver; beyond this, callers wait to queue
/// (and time out like a slow Redis).
const QUEUE: usize = 4096;

/// One request's decision, waiting for the driver.
struct Job {
    checks: Vec<Ask>,
    reply: oneshot::Sender<Result<Vec<Grant>, StoreError>>,
}

enum Conn {
    /// The driver's queue, started on first use (inside the runtime).
    Single {
        manager: ConnectionManager,
        queue: std::sync::OnceLock<mpsc::Sender<Job>>,
    },
    /// Connected on first use (the client refuses to start without a
    /// reachable node); the connection then follows topology changes.
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
}

/// A Redis-backed store.
pub struct RedisStore {
    conn: Conn,
    script: redis::Script,
    timeout: Duration,
}

fn tls_roots(ca_pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.to_vec()),
    }
}

/// `TCP_NODELAY` on: the client's default (off) lets Nagle's algorithm hold
/// a small write until the previous one is acknowledged, which on one
/// multiplexed connection under load delays decisions by tens of
/// milliseconds (measured: 10–250 ms tails and timeouts at 14k req/s).
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

fn algorithm_code(a: Algorithm) -> u8 {
    match a {
        Algorithm::Gcra => 1,
        Algorithm::FixedWindow => 2,
        Algorithm::SlidingWindow => 3,
    }
}

fn key(bucket: &Bucket) -> String {
    // The whole bucket id is the hash tag: one slot per bucket.
    format!("weir:rl:{{{}}}", bucket.hex())
}

impl RedisStore {
    /// Prepares the connection without connecting: weir starts (and serves,
    /// per `onStoreFailure`) while Redis is down, and connects when it can.
    pub fn new(config: &RedisConfig) -> Result<Self, StoreError> {
        let script = redis::Script::new(SCRIPT);
        let connect_timeout = config.timeout.max(Duration::from_millis(500));
        if config.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(config.urls.clone())
                .tcp_settings(tcp_settings())
                .connection_timeout(connect_timeout)
                .response_timeout(config.timeout)
                .retries(0);
            if let Some(p) = &config.password {
                builder = builder.password(p.clone());
            }
            if let Some(ca) = &config.ca_pem {
                builder = builder.certs(tls_roots(ca));
            }
            let client = builder.build().map_err(StoreError::from)?;
            return Ok(RedisStore {
                conn: Conn::Cluster {
                    client: Box::new(client),
                    conn: OnceCell::new(),
                },
                script,
                timeout: config.timeout,
            });
        }
        let url = config
            .urls
            .first()
            .ok_or_else(|| StoreError::Config("no Redis URL".into()))?;
        let mut info: redis::ConnectionInfo =
            redis::IntoConnectionInfo::into_connection_info(url.as_str())?
                .set_tcp_settings(tcp_settings());
        if let Some(p) = &config.password {
            let settings = info.redis_settings().clone().set_password(p.clone());
            info = info.set_redis_settings(settings);
        }
        let client = match &config.ca_pem {
            Some(ca) => redis::Client::build_with_tls(info, tls_roots(ca))?,
            None => redis::Client::open(info)?,
        };
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(RedisStore {
            conn: Conn::Single {
                manager,
                queue: std::sync::OnceLock::new(),
            },
            script,
            timeout: config.timeout,
        })
    }

    /// Decides `checks` in one round trip (single node) or one concurrent
    /// round trip per rule (Cluster). Bounded by the configured timeout.
    pub async fn decide(&self, checks: &[Ask]) -> Result<Vec<Grant>, StoreError> {
        match tokio::time::timeout(self.timeout, self.decide_inner(checks)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn decide_inner(&self, checks: &[Ask]) -> Result<Vec<Grant>, StoreError> {
        match &self.conn {
            Conn::Single { manager, queue } => {
                let queue = queue.get_or_init(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(drive(manager.clone(), self.script.clone(), rx));
                    tx
                });
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    checks: checks.to_vec(),
                    reply,
                };
                queue
                    .send(job)
                    .await
                    .map_err(|_| StoreError::Reply("the Redis driver stopped".into()))?;
                answer
                    .await
                    .map_err(|_| StoreError::Reply("the Redis driver dropped a decision".into()))?
            }
            Conn::Cluster { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                let calls = checks.iter().map(|check| {
                    let mut conn = conn.clone();
                    let script = &self.script;
                    async move { invoke(script, &mut conn, &[std::slice::from_ref(check)]).await }
                });
                let results = futures::future::join_all(calls).await;
                let mut out = Vec::with_capacity(checks.len());
                for r in results {
                    out.extend(r?);
                }
                Ok(out)
            }
        }
    }
}

/// The single-node driver: takes decisions from `queue`, at most
/// [`MAX_IN_FLIGHT`] calls out at once, each carrying every decision that
/// was waiting (up to [`MAX_BATCH_RULES`] rules). Ends when every sender is
/// gone.
async fn drive(manager: ConnectionManager, script: redis::Script, mut queue: mpsc::Receiver<Job>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            job = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = job else { break };
                let mut rules = first.checks.len();
                let mut batch = vec![first];
                while rules < MAX_BATCH_RULES {
                    let Ok(job) = queue.try_recv() else { break };
                    rules += job.checks.len();
                    batch.push(job);
                }
                let mut conn = manager.clone();
                let script = &script;
                in_flight.push(async move {
                    let groups: Vec<&[Ask]> =
                        batch.iter().map(|j| j.checks.as_slice()).collect();
                    let result = invoke(script, &mut conn, &groups).await;
                    answer(batch, result);
                });
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Hands each job its outcomes, or the call's error.
fn answer(batch: Vec<Job>, result: Result<Vec<Grant>, StoreError>) {
    match result {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for job in batch {
                let mine = outcomes.by_ref().take(job.checks.len()).collect();
                // The caller may have timed out and gone: nothing to do.
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let (kind, message) = (e.kind(), e.to_string());
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Shared {
                    kind,
                    message: message.clone(),
                }));
            }
        }
    }
}

/// One script run deciding `groups` (each a request's rules, all or
/// nothing) in order; the outcomes of every rule, flat, in the same order.
async fn invoke<C: redis::aio::ConnectionLike>(
    script: &redis::Script,
    conn: &mut C,
    groups: &[&[Ask]],
) -> Result<Vec<Grant>, StoreError> {
    let mut invocation = script.prepare_invoke();
    invocation.arg(groups.len());
    for group in groups {
        invocation.arg(group.len());
    }
    let mut rules = 0;
    for (bucket, limit, want) in groups.iter().flat_map(|g| g.iter()) {
        rules += 1;
        invocation
            .key(key(bucket))
            .arg(algorithm_code(limit.algorithm))
            .arg(limit.period_us())
            .arg(limit.requests.max(1))
            .arg(limit.burst.max(1))
            .arg((*want).max(1));
    }
    let rows: Vec<(i64, i64, i64, i64)> = invocation.invoke_async(conn).await?;
    if rows.len() != rules {
        return Err(StoreError::Reply(format!(
            "{} results for {rules} rules",
            rows.len()
        )));
    }
    let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    Ok(rows
        .into_iter()
        .map(|(granted, remaining, reset, retry)| Grant {
            outcome: Outcome {
                allowed: granted > 0,
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset: us(reset),
                retry_after: us(retry),
            },
            tokens: u32::try_from(granted).unwrap_or(0),
        })
        .collect())
}
