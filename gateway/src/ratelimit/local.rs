//! The local store: GCRA state per key in this process's memory, sharded so that
//! requests for different keys rarely wait on the same lock, and bounded.
//!
//! Keys arrive already hashed (a keyed SipHash of the key's parts, see the parent
//! module), so a shard maps a `u64` to a theoretical arrival time: 8 + 8 bytes per key
//! plus the map's overhead. A shard that is full first forgets every key whose bucket
//! is full again (nothing is lost: an absent key *is* a full bucket); if it is still
//! full, it forgets the key closest to a full bucket among a few, so a flood of new
//! keys can only ever make the limiter more lenient, never block a client wrongly.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tollgate_config::common::gcra::{Gcra, GcraState};

/// The keys are hashes already: use them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are stored; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<Prehashed>>;

const SHARDS: usize = 64;
/// Keys looked at to choose one to forget when a shard is full of active keys.
const EVICTION_SAMPLE: usize = 8;

pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// When refused: how long until a request would be admitted.
    pub retry_after: Duration,
    /// Requests admitted now without waiting, after this one.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_after: Duration,
}

impl LocalStore {
    /// A store tracking at most about `max_keys` keys (rounded up to whole shards).
    pub fn new(max_keys: usize) -> Self {
        let per_shard = max_keys.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
        }
    }

    /// Most keys this store keeps.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admit one request for `key` at `now` (time since the limiter's origin).
    pub fn check(&self, key: u64, gcra: &Gcra, now: Duration) -> Decision {
        let Some(shard) = self.shards.get((key % SHARDS as u64) as usize) else {
            return open(gcra);
        };
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let now_ns = nanos(now);
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            make_room(&mut map, now_ns, self.per_shard);
        }
        let tat = map.entry(key).or_insert(0);
        let mut state = GcraState::from_tat(Duration::from_nanos(*tat));
        let result = gcra.check(&mut state, now);
        *tat = nanos(state.tat());
        let (remaining, reset_after) = (gcra.remaining(&state, now), gcra.reset_after(&state, now));
        match result {
            Ok(()) => Decision {
                allowed: true,
                retry_after: Duration::ZERO,
                remaining,
                reset_after,
            },
            Err(retry_after) => Decision {
                allowed: false,
                retry_after,
                remaining,
                reset_after,
            },
        }
    }
}

impl LocalStore {
    /// As a cache of refusals (the Redis store's pre-check): until when `key` is
    /// known to be refused, if that is still ahead of `now`.
    pub fn refused_until(&self, key: u64, now: Duration) -> Option<Duration> {
        let shard = self.shards.get((key % SHARDS as u64) as usize)?;
        let map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let until = *map.get(&key)?;
        (until > nanos(now)).then(|| Duration::from_nanos(until))
    }

    /// Remember that `key` is refused until `until` (a time since the same origin).
    pub fn refuse_until(&self, key: u64, until: Duration, now: Duration) {
        let Some(shard) = self.shards.get((key % SHARDS as u64) as usize) else {
            return;
        };
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            make_room(&mut map, nanos(now), self.per_shard);
        }
        map.insert(key, nanos(until));
    }
}

/// A decision for a request the store cannot track: allowed.
fn open(gcra: &Gcra) -> Decision {
    Decision {
        allowed: true,
        retry_after: Duration::ZERO,
        remaining: gcra.burst(),
        reset_after: Duration::ZERO,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn make_room(map: &mut Shard, now_ns: u64, limit: usize) {
    map.retain(|_, tat| *tat > now_ns);
    if map.len() < limit {
        return;
    }
    if let Some(victim) = map
        .iter()
        .take(EVICTION_SAMPLE)
        .min_by_key(|(_, tat)| **tat)
        .map(|(k, _)| *k)
    {
        map.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn limits_per_key_with_exact_retry_after() {
        let store = LocalStore::new(1000);
        let g = Gcra::new(100 * MS, 3);
        for _ in 0..3 {
            assert!(store.check(1, &g, Duration::ZERO).allowed);
        }
        let d = store.check(1, &g, Duration::ZERO);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, 100 * MS);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after, 300 * MS);
        assert!(
            store.check(2, &g, Duration::ZERO).allowed,
            "other keys unaffected"
        );
        assert!(store.check(1, &g, 100 * MS).allowed);
    }

    /// The bound holds under a flood of distinct keys, and a busy key survives it
    /// (it is never the one closest to a full bucket while the flood's keys are fresh).
    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let store = LocalStore::new(10_000);
        let g = Gcra::new(MS, 10);
        let mut now = Duration::ZERO;
        for k in 0..1_000_000u64 {
            store.check(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), &g, now);
            if k % 1000 == 0 {
                now += MS;
            }
        }
        assert!(
            store.len() <= store.capacity(),
            "{} > {}",
            store.len(),
            store.capacity()
        );
        assert!(store.capacity() < 10_100);
    }

    #[test]
    fn refusals_are_remembered_until_they_run_out() {
        let store = LocalStore::new(100);
        assert_eq!(store.refused_until(7, Duration::ZERO), None);
        store.refuse_until(7, 50 * MS, Duration::ZERO);
        assert_eq!(store.refused_until(7, 10 * MS), Some(50 * MS));
        assert_eq!(store.refused_until(7, 50 * MS), None);
        assert_eq!(store.refused_until(8, 10 * MS), None);
    }

    #[test]
    fn full_buckets_are_forgotten_first() {
        let store = LocalStore::new(1);
        let g = Gcra::new(10 * MS, 1);
        // One shard holds one key: key 0 uses its bucket, then is full again at 10 ms.
        assert!(store.check(0, &g, Duration::ZERO).allowed);
        assert!(!store.check(0, &g, Duration::ZERO).allowed);
        // A new key in the same shard after the first is full again: the first is
        // forgotten, which changes nothing for it.
        assert!(store.check(SHARDS as u64, &g, 20 * MS).allowed);
        assert!(store.check(0, &g, 20 * MS).allowed);
    }
}
