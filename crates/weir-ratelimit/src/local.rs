//! The in-process store: limits per replica, and the fallback when Redis is
//! unreachable. Buckets live in shards (one mutex each, so cores rarely
//! contend) with a fixed total capacity: a flood of distinct keys (spoofed
//! client IPs, random header values) evicts idle and then soonest-expiring
//! buckets instead of growing memory. Evicting a live bucket forgives that
//! key's history, so capacity should exceed the keys active in one period;
//! `weir_ratelimit_local_keys` shows how full it is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::Bucket;
use crate::algorithm::{Limit, Outcome, State, decide};

const SHARDS: usize = 64;
/// Buckets examined when a full shard must evict one that is still live.
const EVICTION_SAMPLE: usize = 16;

struct Entry {
    state: State,
    expires: u64,
}

/// A bounded, sharded map of bucket states.
pub struct LocalStore {
    shards: Box<[Mutex<HashMap<Bucket, Entry>>]>,
    per_shard: usize,
    origin: Instant,
    keys: prometheus::IntGauge,
}

impl LocalStore {
    /// A store holding at most `capacity` buckets (rounded up to a multiple
    /// of the shard count).
    pub fn new(capacity: usize, keys: prometheus::IntGauge) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        LocalStore {
            shards,
            per_shard,
            origin: Instant::now(),
            keys,
        }
    }

    /// Monotonic microseconds since the store was created.
    pub fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn shard(&self, bucket: &Bucket) -> usize {
        // The bucket id is already a digest: its first byte is uniform.
        usize::from(bucket.0[0]) % SHARDS
    }

    /// Decides `checks` at once: if every one admits the request, every one
    /// consumes; otherwise none does. Shards are locked in index order, so
    /// concurrent multi-rule decisions cannot deadlock.
    pub fn decide(&self, checks: &[(Bucket, Limit)]) -> Vec<Outcome> {
        self.decide_at(checks, self.now(), true)
    }

    /// What [`LocalStore::decide`] would answer, consuming nothing.
    pub fn peek(&self, checks: &[(Bucket, Limit)]) -> Vec<Outcome> {
        self.decide_at(checks, self.now(), false)
    }

    pub(crate) fn decide_at(
        &self,
        checks: &[(Bucket, Limit)],
        now: u64,
        commit: bool,
    ) -> Vec<Outcome> {
        let mut order: Vec<usize> = checks.iter().map(|(b, _)| self.shard(b)).collect();
        order.sort_unstable();
        order.dedup();
        // A poisoned shard still holds valid states (every write is one
        // insert): keep using it rather than failing requests.
        let mut guards: Vec<(usize, std::sync::MutexGuard<'_, HashMap<Bucket, Entry>>)> = order
            .iter()
            .map(|&i| {
                let guard = self.shards[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (i, guard)
            })
            .collect();
        let mut outcomes = Vec::with_capacity(checks.len());
        let mut writes = Vec::with_capacity(checks.len());
        for (bucket, limit) in checks {
            let shard = self.shard(bucket);
            let map = guards.iter().find(|(i, _)| *i == shard).map(|(_, g)| &**g);
            let state = map
                .and_then(|m| m.get(bucket))
                .filter(|e| e.expires > now)
                .map(|e| e.state);
            let (outcome, next) = decide(limit, state, now);
            outcomes.push(outcome);
            if let Some(next) = next {
                writes.push((shard, *bucket, next, next.expires_us(limit)));
            }
        }
        if commit && outcomes.iter().all(|o| o.allowed) {
            for (shard, bucket, state, expires) in writes {
                if let Some((_, map)) = guards.iter_mut().find(|(i, _)| *i == shard) {
                    self.insert(map, bucket, Entry { state, expires }, now);
                }
            }
        }
        outcomes
    }

    fn insert(&self, map: &mut HashMap<Bucket, Entry>, bucket: Bucket, entry: Entry, now: u64) {
        if let Some(existing) = map.get_mut(&bucket) {
            *existing = entry;
            return;
        }
        if map.len() >= self.per_shard {
            // A full shard frees room from a sample, never by scanning the
            // whole shard: under a flood of new keys every insert lands
            // here, and a scan would make each request cost O(capacity).
            // Expired buckets in the sample go first; if none has expired,
            // the soonest-expiring one does. The sweeper clears the rest.
            let mut sample = [None; EVICTION_SAMPLE];
            for (slot, (k, e)) in sample.iter_mut().zip(map.iter()) {
                *slot = Some((*k, e.expires));
            }
            let sample = sample.iter().flatten();
            let mut evicted = 0;
            for (k, _) in sample.clone().filter(|(_, expires)| *expires <= now) {
                map.remove(k);
                evicted += 1;
            }
            if evicted == 0
                && let Some((k, _)) = sample.min_by_key(|(_, expires)| *expires)
            {
                map.remove(k);
                evicted = 1;
            }
            self.keys.sub(evicted);
        }
        map.insert(bucket, entry);
        self.keys.inc();
    }

    /// Drops expired buckets everywhere (run periodically, so idle keys do
    /// not linger until their shard fills).
    pub fn sweep(&self) {
        self.sweep_at(self.now());
    }

    pub(crate) fn sweep_at(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut map = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = map.len();
            map.retain(|_, e| e.expires > now);
            self.keys.sub((before - map.len()) as i64);
        }
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::test_limits::gcra;

    fn bucket(n: u64) -> Bucket {
        Bucket::new(&[b"test", &n.to_be_bytes()])
    }

    #[test]
    fn several_rules_consume_all_or_nothing() {
        let store = LocalStore::new(1000, prometheus::IntGauge::new("k", "k").expect("gauge"));
        let wide = (bucket(1), gcra(100, 100));
        let narrow = (bucket(2), gcra(1, 1));
        let now = 5_000_000;
        assert!(
            store
                .decide_at(&[wide, narrow], now, true)
                .iter()
                .all(|o| o.allowed)
        );
        let second = store.decide_at(&[wide, narrow], now, true);
        assert!(second[0].allowed && !second[1].allowed);
        // The rejected request consumed nothing from the wide rule.
        assert_eq!(store.decide_at(&[wide], now, true)[0].remaining, 98);
    }

    #[test]
    fn a_flood_of_keys_stays_within_capacity() {
        let gauge = prometheus::IntGauge::new("k", "k").expect("gauge");
        let store = LocalStore::new(6400, gauge.clone());
        let limit = gcra(1, 1_000_000);
        for n in 0..100_000 {
            store.decide_at(&[(bucket(n), limit)], 1_000_000, true);
        }
        assert!(store.len() <= 6400, "{}", store.len());
        assert_eq!(gauge.get(), store.len() as i64);
        // The newest key survives the flood and is still limited.
        assert!(!store.decide_at(&[(bucket(99_999), gcra(1, 1))], 1_000_001, true)[0].allowed);
        // Expired buckets are swept.
        store.sweep_at(10_000_000);
        assert!(store.is_empty(), "{}", store.len());
        assert_eq!(gauge.get(), 0);
    }
}
