//! Rate limiting for weir's data plane, knowing nothing of Kubernetes or
//! HTTP: a request arrives as a list of (bucket, limit, scope) checks and
//! leaves with one [`Outcome`] per check.
//!
//! - [`algorithm`]: GCRA, sliding and fixed windows as pure functions.
//! - [`local`]: a sharded, bounded in-process store (per-replica limits,
//!   and the fallback when Redis is unreachable).
//! - [`redis`]: the shared store, one atomic Lua script per decision with
//!   Redis's own clock, single node or Cluster.
//! - [`lease`]: tokens a replica takes ahead from Redis for keys far from
//!   their limit, so those cost a fraction of a round trip per request.
//! - [`breaker`]: stops requests from waiting on a failing Redis.
//!
//! The [`RateLimiter`] outlives snapshots (it is built once per process), so
//! editing one rule never resets the counters of the others: a bucket is
//! named by policy, rule, algorithm, period and key, not by snapshot.

pub mod algorithm;
pub mod breaker;
pub mod lease;
pub mod local;
mod metrics;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use algorithm::{Algorithm, Limit, Outcome};
pub use metrics::RateLimitMetrics;

use breaker::{Breaker, Permit};
use local::LocalStore;

/// A bucket's identity: a digest of what names it (policy, rule, period,
/// key value). Fixed-size, so memory per bucket is bounded whatever the
/// key, and client identifiers never reach Redis in the clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bucket(pub [u8; 16]);

impl Bucket {
    /// The digest of `parts` (see [`BucketName`]).
    pub fn new(parts: &[&[u8]]) -> Bucket {
        let mut name = BucketName::new(&[]);
        for p in parts {
            name.part(p);
        }
        name.finish()
    }

    /// The same bucket for the per-replica fallback (`localShare`), kept
    /// apart from rules whose scope is local.
    fn fallback(&self) -> Bucket {
        let mut id = self.0;
        id[15] ^= 0x5a;
        Bucket(id)
    }

    /// Lower-case hex, for Redis keys.
    pub fn hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// A bucket name being built: the digest state after the fixed parts
/// (policy, rule, period), cloned per request and fed the key's parts, so a
/// request pays for hashing its own key only and allocates nothing. Parts
/// are length-prefixed so `("ab","c")` and `("a","bc")` differ.
#[derive(Clone)]
pub struct BucketName(ring::digest::Context);

impl BucketName {
    /// Starts a name with `parts`.
    pub fn new(parts: &[&[u8]]) -> BucketName {
        let mut name = BucketName(ring::digest::Context::new(&ring::digest::SHA256));
        for p in parts {
            name.part(p);
        }
        name
    }

    /// Appends one part.
    pub fn part(&mut self, part: &[u8]) -> &mut Self {
        self.0.update(&(part.len() as u64).to_be_bytes());
        self.0.update(part);
        self
    }

    /// The bucket.
    pub fn finish(self) -> Bucket {
        let digest = self.0.finish();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_ref()[..16]);
        Bucket(id)
    }
}

/// Where a rule's counters live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In this replica only.
    Local,
    /// In the shared store, across replicas.
    Global,
}

/// What a global rule does while the shared store is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStoreFailure {
    /// Admit every request (availability over the limit).
    Allow,
    /// Refuse every request (the limit over availability).
    Deny,
    /// Each replica enforces `limit ÷ replicas` locally.
    LocalShare,
}

/// One rule to check for one request.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// The bucket.
    pub bucket: Bucket,
    /// The limit.
    pub limit: Limit,
    /// Local or global.
    pub scope: Scope,
    /// The fallback of a global rule.
    pub on_store_failure: OnStoreFailure,
}

/// How a check was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// By the local store (a local rule).
    Local,
    /// By the shared store.
    Store,
    /// The store failed: admitted by `onStoreFailure: allow`.
    FailedOpen,
    /// The store failed: refused by `onStoreFailure: deny`.
    FailedClosed,
    /// The store failed: decided by this replica's share.
    LocalShare,
    /// Not looked at: another rule of the request refused first.
    NotChecked,
}

/// The decision for one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The algorithm's answer (for `FailedOpen`/`FailedClosed`, a
    /// synthetic one: full quota, or nothing and retry in a second).
    pub outcome: Outcome,
    /// Who decided.
    pub source: Source,
}

/// Why the shared store could not decide.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The breaker is open: not tried.
    #[error("circuit open")]
    CircuitOpen,
    /// Connection, protocol or script error.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The script answered something unexpected.
    #[error("unexpected reply: {0}")]
    Reply(String),
    /// Unusable configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The failure of a call this decision shared with others (batched on
    /// a single node), by the kind it was counted as.
    #[error("{message}")]
    Shared {
        /// [`StoreError`]'s metric label for the original error.
        kind: &'static str,
        /// The original error, rendered.
        message: String,
    },
}

impl StoreError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::CircuitOpen => "circuit_open",
            StoreError::Redis(e) if e.is_connection_refusal() || e.is_connection_dropped() => {
                "connection"
            }
            StoreError::Redis(e) if e.is_timeout() => "timeout",
            StoreError::Redis(_) => "redis",
            StoreError::Reply(_) => "reply",
            StoreError::Config(_) => "config",
            StoreError::Shared { kind, .. } => kind,
        }
    }
}

/// The process-wide limiter: the local store, the optional shared store and
/// its breaker.
pub struct RateLimiter {
    local: LocalStore,
    store: Option<redis::RedisStore>,
    leases: lease::Leases,
    breaker: Breaker,
    replicas: AtomicU32,
    metrics: RateLimitMetrics,
}

impl RateLimiter {
    /// A limiter with a local store of `local_capacity` buckets and, when
    /// `redis` is given, a shared store. Without one, global rules are
    /// enforced per replica (see [`RateLimiter::has_store`]).
    pub fn new(
        local_capacity: usize,
        redis: Option<&redis::RedisConfig>,
        metrics: RateLimitMetrics,
    ) -> Result<Arc<Self>, StoreError> {
        let store = redis.map(redis::RedisStore::new).transpose()?;
        let limiter = Arc::new(RateLimiter {
            local: LocalStore::new(local_capacity, metrics.local_keys.clone()),
            store,
            leases: lease::Leases::default(),
            breaker: Breaker::new(metrics.breaker_open.clone()),
            replicas: AtomicU32::new(1),
            metrics,
        });
        Ok(limiter)
    }

    /// Sweeps idle local buckets every `every` until the limiter is dropped.
    /// Must run inside a tokio runtime.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(l) => l.local.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Whether global rules are shared through Redis.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// Sets how many replicas share global limits (for `localShare`).
    pub fn set_replicas(&self, n: u32) {
        self.replicas.store(n.max(1), Ordering::Relaxed);
        self.metrics.replicas.set(i64::from(n.max(1)));
    }

    /// The decision metrics.
    pub fn metrics(&self) -> &RateLimitMetrics {
        &self.metrics
    }

    /// Decides every check of one request. Local rules are looked at first
    /// without consuming, so a request refused locally costs no Redis round
    /// trip; global rules go to the store in one call; local rules consume
    /// only once the store admitted. Never fails: a store failure becomes
    /// each rule's `onStoreFailure`.
    pub async fn check(self: &Arc<Self>, checks: &[Check]) -> Vec<Decision> {
        let (local_idx, global_idx): (Vec<usize>, Vec<usize>) = (0..checks.len())
            .partition(|&i| checks[i].scope == Scope::Local || self.store.is_none());
        let local: Vec<(Bucket, Limit)> = local_idx
            .iter()
            .map(|&i| (checks[i].bucket, checks[i].limit))
            .collect();
        let mut out: Vec<Option<Decision>> = vec![None; checks.len()];
        if !global_idx.is_empty() && !local.is_empty() {
            // Peek locally first: refused here means no store call at all.
            let peek = self.local.peek(&local);
            if peek.iter().any(|o| !o.allowed) {
                record(&mut out, peek, Source::Local, &local_idx);
                return finish(checks, out);
            }
        }
        if !global_idx.is_empty() && self.decide_global(checks, &global_idx, &mut out).await {
            return finish(checks, out);
        }
        if !local.is_empty() {
            let outcomes = self.local.decide(&local);
            record(&mut out, outcomes, Source::Local, &local_idx);
        }
        finish(checks, out)
    }

    /// Decides the global checks: from this replica's leases where it holds
    /// tokens, the rest in one store call (asking for leases where a rule
    /// has room). Returns whether any refused.
    async fn decide_global(
        self: &Arc<Self>,
        checks: &[Check],
        global_idx: &[usize],
        out: &mut [Option<Decision>],
    ) -> bool {
        let now = std::time::Instant::now();
        let mut leased = Vec::new();
        // Both allocate only when used: a request served from leases alone
        // never fills `asked`.
        let mut asked = Vec::new();
        for &i in global_idx {
            match self.leases.take(&checks[i].bucket, now) {
                Some(taken) => {
                    if let Some(want) = taken.refill {
                        self.spawn_refill(checks[i].bucket, checks[i].limit, want);
                    }
                    leased.push((i, taken.outcome));
                }
                None => asked.push(i),
            }
        }
        let give_back = |leased: &[(usize, Outcome)]| {
            for &(i, _) in leased {
                self.leases.give_back(&checks[i].bucket);
            }
        };
        for &(i, outcome) in &leased {
            out[i] = Some(Decision {
                outcome,
                source: Source::Store,
            });
        }
        if asked.is_empty() {
            self.metrics.leased.inc_by(leased.len() as u64);
            return false;
        }
        let asks: Vec<redis::Ask> = asked
            .iter()
            .map(|&i| {
                let c = &checks[i];
                (c.bucket, c.limit, self.leases.want(&c.bucket))
            })
            .collect();
        // Asks for more than one token carried their bucket's top-up; a
        // call that took nothing must say so, or the next request waits for
        // a top-up that never lands.
        let top_ups_failed = |asks: &[redis::Ask]| {
            for (bucket, _, want) in asks {
                if *want > 1 {
                    self.leases.refill_failed(bucket);
                }
            }
        };
        match self.store_decide(&asks).await {
            Ok(grants) => {
                let refused = grants.iter().any(|g| g.tokens == 0);
                if refused {
                    give_back(&leased);
                    top_ups_failed(&asks);
                } else {
                    self.metrics.leased.inc_by(leased.len() as u64);
                    let replicas = self.replicas.load(Ordering::Relaxed);
                    // A lease lives from its grant, not from the request's start.
                    let now = std::time::Instant::now();
                    for (grant, (bucket, limit, want)) in grants.iter().zip(&asks) {
                        let taker = lease::Taker::Request { asked: *want };
                        self.leases.keep(bucket, limit, replicas, grant, taker, now);
                    }
                }
                let outcomes = grants.into_iter().map(|g| g.outcome).collect();
                record(out, outcomes, Source::Store, &asked);
                refused
            }
            Err(e) => {
                give_back(&leased);
                top_ups_failed(&asks);
                if !matches!(e, StoreError::CircuitOpen) {
                    tracing::debug!(error = %e, "Rate-limit store failed.");
                }
                self.fallback(checks, global_idx, out)
            }
        }
    }

    /// Tops up a half-spent lease without making any request wait.
    fn spawn_refill(self: &Arc<Self>, bucket: Bucket, limit: Limit, want: u32) {
        let limiter = Arc::clone(self);
        tokio::spawn(async move {
            // A failure is already counted (store errors, breaker) by
            // store_decide; the lease only has to allow the next try.
            match limiter.store_decide(&[(bucket, limit, want)]).await {
                Ok(grants) => {
                    let replicas = limiter.replicas.load(Ordering::Relaxed);
                    let now = std::time::Instant::now();
                    for grant in &grants {
                        let taker = lease::Taker::TopUp;
                        limiter
                            .leases
                            .keep(&bucket, &limit, replicas, grant, taker, now);
                    }
                }
                Err(_) => limiter.leases.refill_failed(&bucket),
            }
        });
    }

    async fn store_decide(&self, global: &[redis::Ask]) -> Result<Vec<lease::Grant>, StoreError> {
        let Some(store) = &self.store else {
            return Err(StoreError::Config("no store".into()));
        };
        if self.breaker.permit() == Permit::Refuse {
            return Err(StoreError::CircuitOpen);
        }
        let start = std::time::Instant::now();
        let result = store.decide(global).await;
        self.metrics
            .store_duration
            .observe(start.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.breaker.success(),
            Err(e) => {
                self.metrics
                    .store_errors
                    .with_label_values(&[e.kind()])
                    .inc();
                self.breaker.failure();
            }
        }
        result
    }

    /// Applies `onStoreFailure` to the global checks; returns whether any
    /// refused.
    fn fallback(
        &self,
        checks: &[Check],
        global_idx: &[usize],
        out: &mut [Option<Decision>],
    ) -> bool {
        let replicas = self.replicas.load(Ordering::Relaxed);
        let shared: Vec<usize> = global_idx
            .iter()
            .copied()
            .filter(|&i| checks[i].on_store_failure == OnStoreFailure::LocalShare)
            .collect();
        let mut refused = false;
        for &i in global_idx {
            let c = &checks[i];
            match c.on_store_failure {
                OnStoreFailure::Allow => {
                    out[i] = Some(Decision {
                        outcome: Outcome::full(&c.limit),
                        source: Source::FailedOpen,
                    })
                }
                OnStoreFailure::Deny => {
                    refused = true;
                    out[i] = Some(Decision {
                        outcome: Outcome {
                            allowed: false,
                            remaining: 0,
                            reset: Duration::from_secs(1),
                            retry_after: Duration::from_secs(1),
                        },
                        source: Source::FailedClosed,
                    })
                }
                OnStoreFailure::LocalShare => {}
            }
        }
        if !shared.is_empty() && !refused {
            let checks_local: Vec<(Bucket, Limit)> = shared
                .iter()
                .map(|&i| (checks[i].bucket.fallback(), checks[i].limit.share(replicas)))
                .collect();
            let outcomes = self.local.decide(&checks_local);
            refused |= outcomes.iter().any(|o| !o.allowed);
            record(out, outcomes, Source::LocalShare, &shared);
        }
        refused
    }
}

/// Stores the outcomes of the checks at `idx`.
fn record(out: &mut [Option<Decision>], outcomes: Vec<Outcome>, source: Source, idx: &[usize]) {
    for (outcome, &i) in outcomes.into_iter().zip(idx) {
        out[i] = Some(Decision { outcome, source });
    }
}

/// Checks not decided (because another one refused first) are reported as
/// [`Source::NotChecked`].
fn finish(checks: &[Check], out: Vec<Option<Decision>>) -> Vec<Decision> {
    out.into_iter()
        .zip(checks)
        .map(|(d, c)| {
            d.unwrap_or(Decision {
                outcome: Outcome::full(&c.limit),
                source: Source::NotChecked,
            })
        })
        .collect()
}
