//! A sliding-window counter, for limits written as "N per window" (`500/5m`, as AWS
//! WAF's rate-based rules count): the count of the current fixed window plus the
//! previous window's count weighted by how much of it the sliding window still
//! covers (Cloudflare's approximation: two counters per key, no log of timestamps).
//!
//! Plain arithmetic on a [`Duration`] since an origin the caller chooses, like
//! [`super::gcra`]; the Redis store runs the same steps in Lua on the server's clock.

use std::time::Duration;

use crate::units::Rate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    limit: u32,
    window: Duration,
}

/// One key's counters: the index of the window `current` counts in, and the count
/// of the window before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    pub index: u64,
    pub current: u32,
    pub previous: u32,
}

impl SlidingWindow {
    /// `rate.count` per `rate.per`; a count of 0 is taken as 1, a window of 0 as 1 s.
    pub fn from_rate(rate: Rate) -> Self {
        Self {
            limit: u32::try_from(rate.count.max(1)).unwrap_or(u32::MAX),
            window: if rate.per.is_zero() {
                Duration::from_secs(1)
            } else {
                rate.per
            },
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Move `state` to the window holding `now`; returns the time elapsed in it.
    fn advance(&self, state: &mut WindowState, now: Duration) -> Duration {
        let w = self.window.as_nanos().max(1);
        let index = u64::try_from(now.as_nanos() / w).unwrap_or(u64::MAX);
        if state.index != index {
            state.previous = if state.index + 1 == index {
                state.current
            } else {
                0
            };
            state.current = 0;
            state.index = index;
        }
        let start = Duration::from_nanos(u64::try_from(u128::from(index) * w).unwrap_or(u64::MAX));
        now.saturating_sub(start)
    }

    /// Requests counted in the sliding window ending at `elapsed` into the current one.
    fn estimate(&self, state: &WindowState, elapsed: Duration) -> f64 {
        let covered = 1.0 - elapsed.as_secs_f64() / self.window.as_secs_f64();
        f64::from(state.previous) * covered.clamp(0.0, 1.0) + f64::from(state.current)
    }

    /// Admit one request at `now`, or say how long until one would be admitted.
    pub fn check(&self, state: &mut WindowState, now: Duration) -> Result<(), Duration> {
        let elapsed = self.advance(state, now);
        let limit = f64::from(self.limit);
        if self.estimate(state, elapsed) + 1.0 <= limit {
            state.current = state.current.saturating_add(1);
            return Ok(());
        }
        let w = self.window.as_secs_f64();
        let (c, p) = (f64::from(state.current), f64::from(state.previous));
        // Still in this window, once enough of the previous one slid out...
        let wait = if c + 1.0 <= limit && p > 0.0 {
            w * (1.0 - (limit - 1.0 - c) / p) - elapsed.as_secs_f64()
        } else {
            // ...or in the next one, once enough of this one slid out.
            let into_next = if c > 0.0 {
                w * (1.0 - (limit - 1.0) / c)
            } else {
                0.0
            };
            w - elapsed.as_secs_f64() + into_next.max(0.0)
        };
        Err(Duration::from_secs_f64(wait.max(0.0)).max(Duration::from_millis(1)))
    }

    /// Requests admitted now without waiting.
    pub fn remaining(&self, state: &WindowState, now: Duration) -> u32 {
        let mut s = *state;
        let elapsed = self.advance(&mut s, now);
        (f64::from(self.limit) - self.estimate(&s, elapsed))
            .floor()
            .max(0.0) as u32
    }

    /// Until nothing counted now is counted any more.
    pub fn reset_after(&self, state: &WindowState, now: Duration) -> Duration {
        let mut s = *state;
        let elapsed = self.advance(&mut s, now);
        let left = self.window.saturating_sub(elapsed);
        match (s.current, s.previous) {
            (0, 0) => Duration::ZERO,
            (0, _) => left,
            _ => left + self.window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn sw(count: u64, per: Duration) -> SlidingWindow {
        SlidingWindow::from_rate(Rate { count, per })
    }

    #[test]
    fn a_fresh_key_gets_the_whole_limit_then_waits_for_the_next_window() {
        let l = sw(5, 10 * S);
        let mut s = WindowState::default();
        for _ in 0..5 {
            assert_eq!(l.check(&mut s, 2 * S), Ok(()));
        }
        // The 5 counted at 2 s weigh fully until 10 s, then slide out over the next
        // window: one request fits again once 1/5 of them slid out, at 12 s.
        assert_eq!(l.check(&mut s, 2 * S), Err(10 * S));
        assert_eq!(l.remaining(&s, 2 * S), 0);
        assert_eq!(l.reset_after(&s, 2 * S), 18 * S);
        assert_eq!(l.check(&mut s, 11 * S), Err(S));
        assert_eq!(l.check(&mut s, 12 * S), Ok(()));
    }

    #[test]
    fn the_previous_window_weighs_by_how_much_of_it_is_still_covered() {
        let l = sw(10, 10 * S);
        let mut s = WindowState::default();
        for _ in 0..10 {
            assert!(l.check(&mut s, 9 * S).is_ok());
        }
        // At 15 s half of the previous window is covered: 5 of 10 counted, 5 remain.
        assert_eq!(l.remaining(&s, 15 * S), 5);
        let admitted = (0..10).filter(|_| l.check(&mut s, 15 * S).is_ok()).count();
        assert_eq!(admitted, 5);
        // A window later the 10 are gone; the 5 still weigh half at 25 s.
        assert_eq!(l.remaining(&s, 25 * S), 7);
        // Two windows later nothing is left.
        assert_eq!(l.remaining(&s, 40 * S), 10);
    }

    #[test]
    fn over_any_window_length_no_more_than_the_limit_and_a_bit_passes() {
        // Requests every 100 ms for 10 windows: at most about `limit` in any window.
        let l = sw(20, 5 * S);
        let mut s = WindowState::default();
        let admitted: Vec<Duration> = (0..500)
            .map(|i| Duration::from_millis(i * 100))
            .filter(|t| l.check(&mut s, *t).is_ok())
            .collect();
        for start in admitted.iter().copied() {
            let n = admitted
                .iter()
                .filter(|t| **t >= start && **t < start + 5 * S)
                .count();
            assert!(n <= 22, "{n} admitted in the 5 s from {start:?}");
        }
        assert!(admitted.len() >= 190, "{}", admitted.len());
    }
}
