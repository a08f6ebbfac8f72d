//! GCRA (generic cell rate algorithm): the token bucket without a refill task, as plain
//! arithmetic on time, independent of any clock.
//!
//! The state is one instant, the theoretical arrival time (TAT): when the bucket would
//! be full again. Each admitted call pushes it `interval` later; a call is refused when
//! that would put it more than `tolerance` (= `interval` x `burst`) ahead of now. Time is
//! a [`Duration`] since an origin the caller chooses (process start, a paused tokio
//! clock, a Redis server's clock), so the same code serves a local limiter, tests with
//! plain numbers, and a shared store later. Every operation saturates: no input panics.

use std::time::Duration;

use crate::units::Rate;

/// Limiter parameters: one call costs `interval`; a full bucket admits `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: Duration,
    burst: u32,
    tolerance: Duration,
}

/// One limiter's state: the theoretical arrival time, since the caller's origin.
/// The default (the origin itself) is a full bucket for any `now`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GcraState {
    tat: Duration,
}

impl GcraState {
    /// A state kept elsewhere (an atomic, a shared store) as its TAT.
    pub fn from_tat(tat: Duration) -> Self {
        Self { tat }
    }

    pub fn tat(self) -> Duration {
        self.tat
    }
}

impl Gcra {
    /// One call per `interval`, `burst` at once from a full bucket. A `burst` of 0 is
    /// taken as 1: a limiter that admits nothing is a config error, refused before this.
    pub fn new(interval: Duration, burst: u32) -> Self {
        let burst = burst.max(1);
        Self {
            interval,
            burst,
            tolerance: interval.saturating_mul(burst),
        }
    }

    /// `rate.count` calls per `rate.per`, evenly spaced, `burst` at once. A count of 0
    /// is taken as 1; counts beyond `u32::MAX` as `u32::MAX`.
    pub fn from_rate(rate: Rate, burst: u32) -> Self {
        let count = u32::try_from(rate.count.max(1)).unwrap_or(u32::MAX);
        Self::new(rate.per / count, burst)
    }

    /// Time one call costs (the emission interval).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Calls admitted at once from a full bucket.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How far the TAT may run ahead of now: `interval` x `burst`.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Admit one call at `now`: `Ok` and the state advanced, or `Err(retry_after)`, the
    /// exact wait until a call would be admitted, with the state unchanged (a refused
    /// call costs nothing, so a client that keeps trying is not locked out for longer).
    pub fn check(&self, state: &mut GcraState, now: Duration) -> Result<(), Duration> {
        // A bucket idle for long is full, never fuller: the TAT never lags behind now.
        let next = state.tat.max(now).saturating_add(self.interval);
        let ahead = next.saturating_sub(now);
        if ahead <= self.tolerance {
            state.tat = next;
            Ok(())
        } else {
            Err(ahead - self.tolerance)
        }
    }

    /// Calls that would be admitted at `now` without waiting (the IETF `RateLimit`
    /// header's remaining quota), at most `burst`.
    pub fn remaining(&self, state: &GcraState, now: Duration) -> u32 {
        let used = state.tat.saturating_sub(now);
        let slack = self.tolerance.saturating_sub(used);
        match slack.as_nanos().checked_div(self.interval.as_nanos()) {
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX).min(self.burst),
            // No cost per call: nothing is ever used up.
            None => self.burst,
        }
    }

    /// How long until the bucket is full again at this rate (the IETF `RateLimit`
    /// header's reset); zero when it is full now.
    pub fn reset_after(&self, state: &GcraState, now: Duration) -> Duration {
        state.tat.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_full_bucket_admits_the_burst_then_one_per_interval() {
        let g = Gcra::new(100 * MS, 10);
        let mut s = GcraState::default();
        assert_eq!(g.remaining(&s, at(0)), 10);
        for i in 0..10 {
            assert_eq!(g.check(&mut s, at(0)), Ok(()), "call {i}");
        }
        assert_eq!(g.remaining(&s, at(0)), 0);
        assert_eq!(g.reset_after(&s, at(0)), at(1000));
        assert_eq!(g.check(&mut s, at(0)), Err(100 * MS));
        assert_eq!(g.check(&mut s, at(99)), Err(MS), "retry-after is exact");
        assert_eq!(g.check(&mut s, at(100)), Ok(()));
        assert_eq!(g.check(&mut s, at(100)), Err(100 * MS));
        assert_eq!(g.remaining(&s, at(350)), 2);
    }

    #[test]
    fn a_refused_call_costs_nothing() {
        let g = Gcra::new(100 * MS, 1);
        let mut s = GcraState::default();
        assert_eq!(g.check(&mut s, at(0)), Ok(()));
        let before = s;
        for t in 0..100 {
            assert!(g.check(&mut s, at(t)).is_err());
        }
        assert_eq!(s, before);
        assert_eq!(g.check(&mut s, at(100)), Ok(()));
    }

    #[test]
    fn a_steady_rate_at_the_limit_is_never_refused() {
        let g = Gcra::new(100 * MS, 1);
        let mut s = GcraState::default();
        for i in 0..1000 {
            assert_eq!(g.check(&mut s, at(i * 100)), Ok(()), "call {i}");
        }
        // ...and a little faster is.
        let mut s = GcraState::default();
        let refused = (0..100)
            .filter(|i| g.check(&mut s, at(i * 99)).is_err())
            .count();
        assert!(refused > 0);
    }

    #[test]
    fn a_long_idle_does_not_bank_more_than_the_burst() {
        let g = Gcra::new(10 * MS, 5);
        let mut s = GcraState::default();
        let later = Duration::from_secs(3600);
        assert_eq!(g.remaining(&s, later), 5);
        assert_eq!(g.reset_after(&s, later), Duration::ZERO);
        for _ in 0..5 {
            assert_eq!(g.check(&mut s, later), Ok(()));
        }
        assert_eq!(g.check(&mut s, later), Err(10 * MS));
    }

    #[test]
    fn the_origin_is_arbitrary() {
        // The same calls an hour after the origin give the same answers.
        let g = Gcra::new(100 * MS, 3);
        let (mut a, mut b) = (GcraState::default(), GcraState::default());
        let shift = Duration::from_secs(3600);
        for t in [0, 0, 0, 0, 50, 100, 120, 400] {
            assert_eq!(g.check(&mut a, at(t)), g.check(&mut b, at(t) + shift));
        }
    }

    #[test]
    fn from_rate_spaces_calls_evenly() {
        let r: Rate = "600/m".parse().unwrap_or_default();
        let g = Gcra::from_rate(r, 10);
        assert_eq!(
            (g.interval(), g.burst(), g.tolerance()),
            (100 * MS, 10, at(1000))
        );
        let zero = Rate {
            count: 0,
            per: Duration::from_secs(1),
        };
        assert_eq!(Gcra::from_rate(zero, 0).interval(), Duration::from_secs(1));
        assert_eq!(Gcra::from_rate(zero, 0).burst(), 1);
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let g = Gcra::new(Duration::MAX, u32::MAX);
        assert_eq!(g.tolerance(), Duration::MAX);
        let mut s = GcraState::default();
        assert_eq!(g.check(&mut s, Duration::MAX), Ok(()));
        let _ = g.check(&mut s, Duration::ZERO);
        let _ = g.remaining(&s, Duration::ZERO);
        let _ = g.reset_after(&s, Duration::ZERO);

        let half = Duration::from_secs(u64::MAX / 2);
        let g = Gcra::new(half, 1);
        let mut s = GcraState::default();
        assert_eq!(g.check(&mut s, Duration::ZERO), Ok(()));
        assert_eq!(g.check(&mut s, Duration::ZERO), Err(half));
        assert_eq!(g.remaining(&s, Duration::ZERO), 0);
        assert_eq!(g.check(&mut s, half), Ok(()));

        // No cost per call: everything is admitted, the quota never shrinks.
        let g = Gcra::new(Duration::ZERO, 4);
        let mut s = GcraState::default();
        for _ in 0..100 {
            assert_eq!(g.check(&mut s, at(1)), Ok(()));
        }
        assert_eq!(g.remaining(&s, at(1)), 4);
    }
}
