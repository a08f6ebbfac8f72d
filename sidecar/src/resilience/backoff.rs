//! Exponential backoff with full jitter: the wait before retry `n` (1-based) is
//! uniform in `[0, min(max, min * 2^(n-1))]`. Full jitter spreads the retries of many
//! callers that failed together, instead of sending them back in synchronized waves.

use std::time::Duration;

use rand::Rng;

/// The upper bound of the wait before retry `retry` (1-based; 0 is taken as 1).
pub fn backoff_cap(retry: u32, min: Duration, max: Duration) -> Duration {
    // 2^31 doublings saturate any useful range long before `max` stops mattering.
    let factor = 1u32 << retry.saturating_sub(1).min(31);
    min.saturating_mul(factor).min(max)
}

/// The wait before retry `retry`, drawn from the thread's RNG.
pub fn full_jitter(retry: u32, min: Duration, max: Duration) -> Duration {
    full_jitter_with(&mut rand::rng(), retry, min, max)
}

/// The wait before retry `retry`, drawn from `rng` (seeded in tests).
pub fn full_jitter_with<R: Rng + ?Sized>(
    rng: &mut R,
    retry: u32,
    min: Duration,
    max: Duration,
) -> Duration {
    let cap = u64::try_from(backoff_cap(retry, min, max).as_nanos()).unwrap_or(u64::MAX);
    if cap == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..=cap))
}
