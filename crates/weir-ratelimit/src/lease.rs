//! Tokens leased from the shared store: when a global bucket has plenty of
//! room, one Redis call takes several tokens for this replica, and the next
//! requests on that bucket spend them without a round trip. When half a
//! lease is spent, one background call (never a request) tops it up, so a
//! busy key far from its limit costs about one call per [`MAX_LEASE`]
//! requests and no request waits on Redis; a key near its limit is asked
//! for one token at a time, exactly as without leases.
//!
//! Why this cannot loosen a limit by more than 1 %: leased tokens are
//! consumed in Redis when granted, so the store's own accounting is exact.
//! The only slack is tokens granted but not yet spent, which can meet a
//! bucket that refilled meanwhile. A lease is at most 1/150 of the rule's
//! capacity (`burst` for GCRA, `requests` for windows) divided by the
//! replica count, and a replica holds at most one and a half leases, so all
//! replicas together hold at most 1 % of it; rules smaller than 150 ×
//! replicas never lease. A lease expires after a tenth of the period (at
//! most a second), and a fixed-window lease at its window's end, so tokens
//! never move into a later window. Unspent tokens are dropped: a lease can
//! only cost admissions, never add them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Bucket;
use crate::algorithm::{Algorithm, Limit, Outcome};

/// The most tokens one call takes for a replica.
pub const MAX_LEASE: u32 = 256;
/// A lease lives at most this long (and a tenth of the rule's period).
const MAX_TTL: Duration = Duration::from_secs(1);
const SHARDS: usize = 64;
/// Leases held per shard; a full shard is emptied (its tokens dropped),
/// which keeps a flood of distinct keys O(1) per request.
const PER_SHARD: usize = 1024;

/// Who a grant was for, which says what of it is spare and whether it
/// ends the bucket's top-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taker {
    /// A background top-up: every token is spare, and the top-up is over.
    TopUp,
    /// A request that asked for `asked` tokens and spends one of them;
    /// more than one means it carried the bucket's top-up (see
    /// [`Leases::want`]), which its grant ends.
    Request {
        /// What the request asked the store for.
        asked: u32,
    },
}

/// What the store granted one rule of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The rule's answer for this request (`remaining` counts after every
    /// granted token).
    pub outcome: Outcome,
    /// Tokens taken: 0 when refused, otherwise this request's one plus
    /// any leased ahead.
    pub tokens: u32,
}

struct Lease {
    tokens: u32,
    granted: Instant,
    expires: Instant,
    /// The store's `remaining` and `reset` right after the grant.
    remaining: u64,
    reset: Duration,
    /// Tokens to ask for on the next call.
    next: u32,
    /// A background top-up is out.
    refilling: bool,
}

/// A token spent from a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The rule's answer, from what the store said at the grant.
    pub outcome: Outcome,
    /// Ask the store for this many more tokens in the background: half the
    /// lease is spent and no top-up is out.
    pub refill: Option<u32>,
}

/// Leases by bucket, sharded like the local store.
pub struct Leases {
    shards: Box<[Mutex<HashMap<Bucket, Lease>>]>,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// Tokens one replica asks for at once, given the store's `remaining`:
/// 1/150 of the capacity and half of what is left, shared by the replicas.
pub fn lease_size(limit: &Limit, remaining: u64, replicas: u32) -> u32 {
    let capacity = match limit.algorithm {
        Algorithm::Gcra => limit.burst,
        Algorithm::FixedWindow | Algorithm::SlidingWindow => limit.requests,
    };
    let n = u64::from(replicas.max(1));
    let size = (capacity / (150 * n)).min(remaining / (2 * n));
    u32::try_from(size).unwrap_or(MAX_LEASE).clamp(1, MAX_LEASE)
}

impl Leases {
    fn shard(&self, bucket: &Bucket) -> std::sync::MutexGuard<'_, HashMap<Bucket, Lease>> {
        // The bucket id is a digest (uniform bytes); a poisoned shard holds
        // valid leases (each write is one insert or field update).
        self.shards[usize::from(bucket.0[1]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Spends one leased token, if this replica holds a live one.
    pub fn take(&self, bucket: &Bucket, now: Instant) -> Option<Taken> {
        let mut shard = self.shard(bucket);
        let lease = shard.get_mut(bucket)?;
        if lease.tokens == 0 || now >= lease.expires {
            return None;
        }
        lease.tokens -= 1;
        let refill = (!lease.refilling && lease.tokens * 2 < lease.next).then(|| {
            lease.refilling = true;
            lease.next
        });
        Some(Taken {
            outcome: Outcome {
                allowed: true,
                remaining: lease.remaining + u64::from(lease.tokens),
                reset: lease
                    .reset
                    .saturating_sub(now.saturating_duration_since(lease.granted)),
                retry_after: Duration::ZERO,
            },
            refill,
        })
    }

    /// A top-up failed (the store is down or slow): the next request past
    /// half the lease tries again.
    pub fn refill_failed(&self, bucket: &Bucket) {
        if let Some(lease) = self.shard(bucket).get_mut(bucket) {
            lease.refilling = false;
        }
    }

    /// Returns a token taken by [`Leases::take`] for a request that another
    /// rule refused (a request consumes from all its rules or none).
    pub fn give_back(&self, bucket: &Bucket) {
        if let Some(lease) = self.shard(bucket).get_mut(bucket) {
            lease.tokens = lease.tokens.saturating_add(1);
        }
    }

    /// How many tokens a request should ask the store for: 1 until a grant
    /// showed room, and 1 while a top-up is out (requests that ran the
    /// lease dry before it lands need only their own token). A request told
    /// more carries the top-up itself: until its grant is kept (or
    /// [`Leases::refill_failed`]), others ask for one token, so concurrent
    /// requests never take several leases that would then be over the cap.
    pub fn want(&self, bucket: &Bucket) -> u32 {
        let mut shard = self.shard(bucket);
        match shard.get_mut(bucket) {
            Some(l) if !l.refilling && l.next > 1 => {
                l.refilling = true;
                l.next
            }
            _ => 1,
        }
    }

    /// Keeps the granted tokens no request has spent yet, and sizes the
    /// next ask from the store's `remaining`.
    pub fn keep(
        &self,
        bucket: &Bucket,
        limit: &Limit,
        replicas: u32,
        grant: &Grant,
        taker: Taker,
        now: Instant,
    ) {
        let (spare, ends_top_up) = match taker {
            Taker::TopUp => (grant.tokens, true),
            Taker::Request { asked } => (grant.tokens.saturating_sub(1), asked > 1),
        };
        let next = lease_size(limit, grant.outcome.remaining, replicas);
        let mut shard = self.shard(bucket);
        let (held, held_next, refilling) = shard
            .get(bucket)
            .filter(|l| now < l.expires)
            .map_or((0, 0, false), |l| (l.tokens, l.next, l.refilling));
        if spare == 0 && held == 0 && next == 1 {
            // Nothing to remember: no tokens, and the next call asks for one
            // token anyway.
            shard.remove(bucket);
            return;
        }
        let period_ttl = limit.period / 10;
        let mut ttl = MAX_TTL.min(period_ttl);
        if limit.algorithm == Algorithm::FixedWindow {
            ttl = ttl.min(grant.outcome.reset);
        }
        if shard.len() >= PER_SHARD && !shard.contains_key(bucket) {
            shard.clear();
        }
        // At most one and a half leases, of the size they were granted at:
        // as the size shrinks near the limit, tokens Redis already granted
        // stay spendable (dropping them would only lose admissions).
        let cap = next.max(held_next);
        // A one-token grant leaves a top-up that is still out in flight.
        let refilling = !ends_top_up && refilling;
        shard.insert(
            *bucket,
            Lease {
                tokens: (held + spare).min(cap + cap / 2),
                granted: now,
                expires: now + ttl,
                remaining: grant.outcome.remaining,
                reset: grant.outcome.reset,
                next,
                refilling,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::test_limits::gcra;

    fn grant(tokens: u32, remaining: u64) -> Grant {
        Grant {
            outcome: Outcome {
                allowed: tokens > 0,
                remaining,
                reset: Duration::from_millis(500),
                retry_after: Duration::ZERO,
            },
            tokens,
        }
    }

    /// What a request that asked for its own token keeps of `grant`, on
    /// one replica.
    fn keep_own(leases: &Leases, b: &Bucket, limit: &Limit, grant: &Grant, now: Instant) {
        leases.keep(b, limit, 1, grant, Taker::Request { asked: 1 }, now);
    }

    #[test]
    fn leases_are_a_fraction_of_capacity_across_replicas() {
        // Small rules never lease: every request is decided by the store.
        assert_eq!(lease_size(&gcra(10, 10), 10, 1), 1);
        assert_eq!(lease_size(&gcra(1000, 299), 299, 1), 1);
        // 1/150 of the burst, divided among the replicas.
        assert_eq!(lease_size(&gcra(1000, 4500), 4500, 3), 10);
        // Never more than half of what is left per replica...
        assert_eq!(lease_size(&gcra(1000, 3000), 8, 1), 4);
        // ...and at most MAX_LEASE.
        assert_eq!(
            lease_size(&gcra(1_000_000_000, 1_000_000_000), u64::MAX, 1),
            MAX_LEASE
        );
    }

    #[test]
    fn spare_tokens_are_spent_until_gone_or_expired() {
        let leases = Leases::default();
        let b = Bucket([7; 16]);
        let limit = gcra(100_000, 100_000);
        let t0 = Instant::now();
        assert_eq!(leases.want(&b), 1);
        keep_own(&leases, &b, &limit, &grant(3, 50_000), t0);
        assert_eq!(leases.want(&b), MAX_LEASE);
        let first = leases.take(&b, t0).map(|t| t.outcome.remaining);
        assert_eq!(first, Some(50_001));
        assert!(leases.take(&b, t0).is_some());
        assert!(leases.take(&b, t0).is_none(), "two spare tokens only");
        leases.give_back(&b);
        assert!(
            leases.take(&b, t0).is_some(),
            "a returned token is spent again"
        );
        keep_own(&leases, &b, &limit, &grant(5, 50_000), t0);
        assert!(
            leases.take(&b, t0 + Duration::from_millis(100)).is_none(),
            "a lease lives a tenth of the period"
        );
    }

    #[test]
    fn one_top_up_at_a_time_once_half_is_spent() {
        let leases = Leases::default();
        let b = Bucket([5; 16]);
        let limit = gcra(1_000_000, 1_000_000);
        let t0 = Instant::now();
        leases.keep(&b, &limit, 1, &grant(256, 900_000), Taker::TopUp, t0);
        let refills: Vec<Option<u32>> = (0..200)
            .map(|_| leases.take(&b, t0).and_then(|t| t.refill))
            .collect();
        // 256 held: the 129th spend leaves 127 < 256 / 2.
        assert_eq!(refills.iter().position(Option::is_some), Some(128));
        assert_eq!(refills.iter().flatten().count(), 1, "one top-up out");
        assert_eq!(leases.want(&b), 1, "only its own token while one is out");
        // A request's own grant leaves the top-up out...
        keep_own(&leases, &b, &limit, &grant(1, 900_000), t0);
        assert_eq!(leases.want(&b), 1);
        // ...a failed one lets the next spend try again...
        leases.refill_failed(&b);
        assert_eq!(leases.take(&b, t0).and_then(|t| t.refill), Some(MAX_LEASE));
        // ...and a landed one ends it, adding to the 55 tokens left...
        leases.keep(&b, &limit, 1, &grant(256, 900_000), Taker::TopUp, t0);
        assert_eq!(leases.want(&b), MAX_LEASE);
        let held = std::iter::from_fn(|| leases.take(&b, t0)).count();
        assert_eq!(held, 55 + 256);
        // ...but never to more than one and a half leases.
        leases.keep(&b, &limit, 1, &grant(256, 900_000), Taker::TopUp, t0);
        leases.keep(&b, &limit, 1, &grant(256, 900_000), Taker::TopUp, t0);
        let held = std::iter::from_fn(|| leases.take(&b, t0)).count();
        assert_eq!(held, 384);
    }

    #[test]
    fn one_request_at_a_time_asks_for_a_lease() {
        let leases = Leases::default();
        let b = Bucket([6; 16]);
        let limit = gcra(1_000_000, 1_000_000);
        let t0 = Instant::now();
        keep_own(&leases, &b, &limit, &grant(1, 900_000), t0);
        assert_eq!(leases.want(&b), MAX_LEASE, "the first asks for a lease");
        assert_eq!(leases.want(&b), 1, "concurrent ones for their own token");
        keep_own(&leases, &b, &limit, &grant(1, 900_000), t0);
        assert_eq!(leases.want(&b), 1, "a one-token grant leaves it out");
        leases.keep(
            &b,
            &limit,
            1,
            &grant(256, 900_000),
            Taker::Request { asked: MAX_LEASE },
            t0,
        );
        assert_eq!(leases.want(&b), MAX_LEASE, "its grant ends it");
        leases.refill_failed(&b);
        assert_eq!(leases.want(&b), MAX_LEASE, "so does its failure");
    }

    #[test]
    fn a_bucket_without_room_spends_what_it_holds_then_forgets_its_lease() {
        let leases = Leases::default();
        let b = Bucket([9; 16]);
        let limit = gcra(100_000, 100_000);
        let t0 = Instant::now();
        keep_own(&leases, &b, &limit, &grant(2, 50_000), t0);
        keep_own(&leases, &b, &limit, &grant(1, 1), t0);
        assert_eq!(leases.want(&b), 1, "no room: one token per ask");
        // The token granted earlier is still spent, not lost...
        assert!(leases.take(&b, t0).is_some());
        assert!(leases.take(&b, t0).is_none());
        // ...and once none is held, the lease is forgotten.
        keep_own(&leases, &b, &limit, &grant(1, 0), t0);
        assert!(leases.shard(&b).get(&b).is_none());
    }

    #[test]
    fn fixed_window_leases_end_with_their_window() {
        let leases = Leases::default();
        let b = Bucket([3; 16]);
        let limit = Limit {
            algorithm: Algorithm::FixedWindow,
            requests: 100_000,
            period: Duration::from_secs(60),
            burst: 1,
        };
        let t0 = Instant::now();
        let mut g = grant(10, 50_000);
        g.outcome.reset = Duration::from_millis(20);
        keep_own(&leases, &b, &limit, &g, t0);
        assert!(leases.take(&b, t0 + Duration::from_millis(10)).is_some());
        assert!(leases.take(&b, t0 + Duration::from_millis(20)).is_none());
    }
}
