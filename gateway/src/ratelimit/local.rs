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
use tollgate_config::common::sliding_window::{SlidingWindow, WindowState};

/// A policy's arithmetic: GCRA (the state is one time) or a sliding window (the state
/// is a window index and two counts, packed into the same 64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Gcra(Gcra),
    Window(SlidingWindow),
}

impl Limit {
    /// Requests a fresh key may make at once (`q` of `RateLimit-Policy`).
    pub fn quota(&self) -> u32 {
        match self {
            Limit::Gcra(g) => g.burst(),
            Limit::Window(w) => w.limit(),
        }
    }

    /// The span the quota is counted over (`w` of `RateLimit-Policy`).
    pub fn span(&self) -> Duration {
        match self {
            Limit::Gcra(g) => g.tolerance(),
            Limit::Window(w) => w.window(),
        }
    }
}

/// Window state packed in a `u64`: window index (mod 2^22) | current (21 bits) |
/// previous (21 bits). Counts are capped by validation at 2,000,000 < 2^21.
const INDEX_BITS: u32 = 22;
const COUNT_BITS: u32 = 21;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

fn pack(s: &WindowState) -> u64 {
    ((s.index & INDEX_MASK) << (2 * COUNT_BITS))
        | ((u64::from(s.current) & COUNT_MASK) << COUNT_BITS)
        | (u64::from(s.previous) & COUNT_MASK)
}

/// Unpack relative to the window holding now (`now_index`): a stored index is at most
/// 2^22 windows old, or it is stale anyway.
fn unpack(v: u64, now_index: u64) -> WindowState {
    let stored = v >> (2 * COUNT_BITS);
    let age = (now_index.wrapping_sub(stored)) & INDEX_MASK;
    WindowState {
        index: now_index.saturating_sub(age),
        current: ((v >> COUNT_BITS) & COUNT_MASK) as u32,
        previous: (v & COUNT_MASK) as u32,
    }
}

fn window_index(w: &SlidingWindow, now: Duration) -> u64 {
    u64::try_from(now.as_nanos() / w.window().as_nanos().max(1)).unwrap_or(u64::MAX)
}

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
    pub fn check(&self, key: u64, limit: &Limit, now: Duration) -> Decision {
        match limit {
            Limit::Gcra(g) => self.check_gcra(key, g, now),
            Limit::Window(w) => self.check_window(key, w, now),
        }
    }

    fn check_gcra(&self, key: u64, gcra: &Gcra, now: Duration) -> Decision {
        let now_ns = nanos(now);
        // A TAT in the past is a full bucket: forgettable. The closest to full go first.
        let slot = self.slot(
            key,
            |tat| tat > now_ns,
            |tat| tat,
            |tat| {
                let mut state = GcraState::from_tat(Duration::from_nanos(*tat));
                let result = gcra.check(&mut state, now);
                *tat = nanos(state.tat());
                (
                    result,
                    gcra.remaining(&state, now),
                    gcra.reset_after(&state, now),
                )
            },
        );
        decision(slot, gcra.burst())
    }

    fn check_window(&self, key: u64, w: &SlidingWindow, now: Duration) -> Decision {
        let index = window_index(w, now);
        // Counts older than the previous window count for nothing: forgettable. The
        // previous window's and the smallest counts go first.
        let live = |v: u64| unpack(v, index).index + 1 >= index;
        let rank = |v: u64| {
            let s = unpack(v, index);
            (u64::from(s.index == index) << 32) | u64::from(s.current.max(s.previous))
        };
        let slot = self.slot(key, live, rank, |v| {
            let mut state = if *v == 0 {
                WindowState::default()
            } else {
                unpack(*v, index)
            };
            let result = w.check(&mut state, now);
            *v = pack(&state);
            (result, w.remaining(&state, now), w.reset_after(&state, now))
        });
        decision(slot, w.limit())
    }

    /// Run `f` on `key`'s value (0 when new), making room first if its shard is full:
    /// values that are not `live` are forgotten, then the lowest `rank` among a few.
    fn slot<R>(
        &self,
        key: u64,
        live: impl Fn(u64) -> bool,
        rank: impl Fn(u64) -> u64,
        f: impl FnOnce(&mut u64) -> R,
    ) -> Option<R> {
        let shard = self.shards.get((key % SHARDS as u64) as usize)?;
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            make_room(&mut map, self.per_shard, &live, &rank);
        }
        Some(f(map.entry(key).or_insert(0)))
    }
}

type Outcome = (Result<(), Duration>, u32, Duration);

fn decision(outcome: Option<Outcome>, quota: u32) -> Decision {
    match outcome {
        // A request the store cannot track is allowed.
        None => Decision {
            allowed: true,
            retry_after: Duration::ZERO,
            remaining: quota,
            reset_after: Duration::ZERO,
        },
        Some((result, remaining, reset_after)) => Decision {
            allowed: result.is_ok(),
            retry_after: result.err().unwrap_or(Duration::ZERO),
            remaining,
            reset_after,
        },
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
            let now_ns = nanos(now);
            make_room(&mut map, self.per_shard, &|t| t > now_ns, &|t| t);
        }
        map.insert(key, nanos(until));
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn make_room(map: &mut Shard, limit: usize, live: &dyn Fn(u64) -> bool, rank: &dyn Fn(u64) -> u64) {
    map.retain(|_, v| live(*v));
    if map.len() < limit {
        return;
    }
    if let Some(victim) = map
        .iter()
        .take(EVICTION_SAMPLE)
        .min_by_key(|(_, v)| rank(**v))
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
        let g = &Limit::Gcra(Gcra::new(100 * MS, 3));
        for _ in 0..3 {
            assert!(store.check(1, g, Duration::ZERO).allowed);
        }
        let d = store.check(1, g, Duration::ZERO);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, 100 * MS);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after, 300 * MS);
        assert!(
            store.check(2, g, Duration::ZERO).allowed,
            "other keys unaffected"
        );
        assert!(store.check(1, g, 100 * MS).allowed);
    }

    /// The bound holds under a flood of distinct keys, and a busy key survives it
    /// (it is never the one closest to a full bucket while the flood's keys are fresh).
    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let store = LocalStore::new(10_000);
        let g = &Limit::Gcra(Gcra::new(MS, 10));
        let mut now = Duration::ZERO;
        for k in 0..1_000_000u64 {
            store.check(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), g, now);
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
        let g = &Limit::Gcra(Gcra::new(10 * MS, 1));
        // One shard holds one key: key 0 uses its bucket, then is full again at 10 ms.
        assert!(store.check(0, g, Duration::ZERO).allowed);
        assert!(!store.check(0, g, Duration::ZERO).allowed);
        // A new key in the same shard after the first is full again: the first is
        // forgotten, which changes nothing for it.
        assert!(store.check(SHARDS as u64, g, 20 * MS).allowed);
        assert!(store.check(0, g, 20 * MS).allowed);
    }

    #[test]
    fn sliding_windows_count_per_key_and_survive_packing() {
        use tollgate_config::units::Rate;
        let store = LocalStore::new(1000);
        let w = &Limit::Window(SlidingWindow::from_rate(Rate {
            count: 3,
            per: Duration::from_secs(10),
        }));
        let at = |s: u64| Duration::from_secs(s);
        for _ in 0..3 {
            assert!(store.check(1, w, at(1)).allowed);
        }
        let d = store.check(1, w, at(1));
        assert!(!d.allowed);
        // Once a third of the three slid out of the next window: 9 s + 10/3 s from now.
        let want = at(9) + Duration::from_secs_f64(10.0 / 3.0);
        assert!(d.retry_after.abs_diff(want) < MS, "{:?}", d.retry_after);
        assert!(store.check(2, w, at(1)).allowed, "other keys unaffected");
        // In the next window the previous three still weigh: none fits at 10 s.
        assert!(!store.check(1, w, at(10)).allowed);
        assert!(store.check(1, w, at(14)).allowed);
        // Far later (beyond 2^22 windows of index wrap, too) the key starts afresh.
        assert_eq!(store.check(1, w, at(10 * (1 << 22) + 5)).remaining, 2);
    }

    #[test]
    fn packing_round_trips() {
        let s = WindowState {
            index: 5_000_000,
            current: 2_000_000,
            previous: 17,
        };
        assert_eq!(unpack(pack(&s), 5_000_000), s);
        assert_eq!(unpack(pack(&s), 5_000_001).index, 5_000_000);
    }
}
