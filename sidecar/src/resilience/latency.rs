//! A dependency's recent latency, for `hedge_after: p95`: a log-linear histogram of
//! the last one to two windows, kept in two rotating sets of atomic counters.
//!
//! - Buckets: exact below 16 µs, then 16 per power of two (a value is placed within
//!   1/16 = 6.25 % of itself), up to about 67 s; longer goes in the last bucket.
//!   Quantiles are read at a bucket's upper edge: "p95 is at most this".
//! - Windows: two slots, each counting one `window` of time; a slot is cleared when
//!   its turn comes again, so a reading covers the current window and the one before
//!   (between one and two windows of history, with no timestamps kept).
//! - Recording is two relaxed atomic adds and, once per window, a clear by the one
//!   thread that wins the compare-and-swap. The slot is marked as being cleared while
//!   that runs, so a sample recorded in the new window is never counted and then
//!   wiped: one arriving during the clear (a few hundred stores) is dropped, which a
//!   percentile does not notice. A slot never used is already zero and not cleared.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sub-buckets per power of two (and the count of exact buckets below them).
const SUB_BITS: u32 = 4;
/// A slot's epoch while its counters are being cleared for a new window.
const CLEARING: u64 = u64::MAX;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two above the exact range: 2^4 µs .. 2^26 µs (~67 s).
const OCTAVES: usize = 22;
pub const BUCKETS: usize = SUB + OCTAVES * SUB;

/// Bucket of a latency in microseconds.
pub fn bucket_of(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros(); // >= SUB_BITS
    let octave = (exp - SUB_BITS) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((micros >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    SUB + octave * SUB + sub
}

/// The largest latency (µs) a bucket holds.
pub fn upper_edge(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    let octave = ((bucket - SUB) / SUB) as u32;
    let sub = ((bucket - SUB) % SUB) as u64;
    let exp = octave + SUB_BITS;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + (sub + 1) * width - 1
}

struct Slot {
    /// Which window (time since `origin` / `window`) these counts belong to.
    epoch: AtomicU64,
    counts: Box<[AtomicU32]>,
}

impl Slot {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// Recent latency of one dependency's successful tries.
pub struct LatencyWindow {
    origin: Instant,
    window: Duration,
    slots: [Slot; 2],
}

impl std::fmt::Debug for LatencyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyWindow")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// What a reading of the window found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantile {
    pub value: Duration,
    /// Samples the reading was made from.
    pub samples: u64,
}

impl LatencyWindow {
    /// History of one to two `window`s (at least 1 ms).
    pub fn new(window: Duration) -> Self {
        Self::with_origin(window, Instant::now())
    }

    /// As [`new`](Self::new), times measured from `origin` (tests drive the clock).
    pub fn with_origin(window: Duration, origin: Instant) -> Self {
        Self {
            origin,
            window: window.max(Duration::from_millis(1)),
            slots: [Slot::new(), Slot::new()],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        // Epochs start at 1 so that a fresh slot (epoch 0) is never taken as current.
        // Capped below `CLEARING`.
        u64::try_from(since / self.window.as_nanos().max(1))
            .unwrap_or(u64::MAX)
            .min(CLEARING - 2)
            + 1
    }

    pub fn record(&self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    pub fn record_at(&self, latency: Duration, now: Instant) {
        let epoch = self.epoch(now);
        let Some(slot) = self.slots.get((epoch % 2) as usize) else {
            return;
        };
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch {
            if seen == CLEARING || seen > epoch {
                // Being cleared for a new window, or already counting a newer one
                // (a clock read late): drop the sample.
                return;
            }
            if seen == 0 {
                // Never used: already zero. Losing this race means another thread
                // took the slot, for this window or a newer one.
                let taken =
                    slot.epoch
                        .compare_exchange(0, epoch, Ordering::AcqRel, Ordering::Acquire);
                if matches!(taken, Err(now_seen) if now_seen != epoch) {
                    return;
                }
            } else if slot
                .epoch
                .compare_exchange(seen, CLEARING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // This slot last counted an older window: clear it, then open it.
                for c in slot.counts.iter() {
                    c.store(0, Ordering::Relaxed);
                }
                slot.epoch.store(epoch, Ordering::Release);
            } else if slot.epoch.load(Ordering::Acquire) != epoch {
                return;
            }
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(c) = slot.counts.get(bucket_of(micros)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `q` quantile (0..=1) of the current and previous window together, or `None`
    /// when they hold no sample.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        self.quantile_at(q, Instant::now())
    }

    pub fn quantile_at(&self, q: f64, now: Instant) -> Option<Quantile> {
        let epoch = self.epoch(now);
        let live: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| {
                let e = s.epoch.load(Ordering::Acquire);
                e != CLEARING && (e == epoch || e + 1 == epoch)
            })
            .collect();
        let count = |b: usize| -> u64 {
            live.iter()
                .map(|s| {
                    s.counts
                        .get(b)
                        .map_or(0, |c| u64::from(c.load(Ordering::Relaxed)))
                })
                .sum()
        };
        let per_bucket: Vec<u64> = (0..BUCKETS).map(count).collect();
        let samples: u64 = per_bucket.iter().sum();
        if samples == 0 {
            return None;
        }
        // The smallest value with at least q of the samples at or below it.
        let rank = ((q.clamp(0.0, 1.0) * samples as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in per_bucket.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Quantile {
                    value: Duration::from_micros(upper_edge(b)),
                    samples,
                });
            }
        }
        Some(Quantile {
            value: Duration::from_micros(upper_edge(BUCKETS - 1)),
            samples,
        })
    }
}
