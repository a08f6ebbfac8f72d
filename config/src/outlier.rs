//! Per-endpoint live state both proxies keep: active health verdict, passive outlier
//! ejection (consecutive failures, growing ejection time), in-flight count; and
//! [`record_outcome`], the eject-on-failure rule both apply after each attempt.
//!
//! One `EndpointState` per (upstream or dependency, address) lives across reloads and
//! DNS refreshes (the new snapshot reuses the old `Arc`), so a reload does not forget
//! that an endpoint is down, nor reset its in-flight count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::common::outlier_detection::Outlier;

/// Milliseconds since process start: a cheap monotonic clock that fits in an atomic.
pub fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

#[derive(Debug)]
pub struct EndpointState {
    pub address: SocketAddr,
    /// Active health check verdict (true until checks say otherwise).
    healthy: AtomicBool,
    consecutive_ok: AtomicU32,
    consecutive_fail: AtomicU32,
    /// When the next active check is due (ms, see [`now_ms`]); 0 = now.
    pub next_check_ms: AtomicU64,
    pub check_running: AtomicBool,
    /// Passive: consecutive failed requests.
    passive_failures: AtomicU32,
    /// Ejected until this time (ms); 0 = not ejected.
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    in_flight: AtomicI64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Since when the endpoint has been available (ms): created, healthy again, or
    /// back from an ejection. Slow start ramps from here.
    available_since_ms: AtomicU64,
    /// Requests using the endpoint until their whole exchange ends (an upgraded
    /// WebSocket included), unlike `in_flight` which ends at the response head.
    active: AtomicI64,
    /// Removed from its upstream and draining until this time (ms); 0 = not draining.
    drain_until_ms: AtomicU64,
}

/// What a health check observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    BecameHealthy,
    BecameUnhealthy,
}

impl EndpointState {
    pub fn new(address: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            address,
            healthy: AtomicBool::new(true),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            next_check_ms: AtomicU64::new(0),
            check_running: AtomicBool::new(false),
            passive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            in_flight: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            // Never 0: that means "available since the gateway started" (no ramp).
            available_since_ms: AtomicU64::new(now_ms().max(1)),
            active: AtomicI64::new(0),
            drain_until_ms: AtomicU64::new(0),
        })
    }

    /// Since when the endpoint has been available (ms, see [`now_ms`]).
    pub fn available_since_ms(&self) -> u64 {
        self.available_since_ms.load(Relaxed)
    }

    /// Pretend the endpoint became available at `ms` (0: it always was).
    pub fn set_available_since(&self, ms: u64) {
        self.available_since_ms.store(ms, Relaxed);
    }

    /// Requests whose exchange with the endpoint has not ended.
    pub fn active(&self) -> i64 {
        self.active.load(Relaxed)
    }

    /// Held from the start of an attempt to the end of its request.
    pub fn hold(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Relaxed);
        Active(self.clone())
    }

    /// Draining (removed) until this time (ms); `None` when not draining.
    pub fn drain_until_ms(&self) -> Option<u64> {
        Some(self.drain_until_ms.load(Relaxed)).filter(|&t| t != 0)
    }

    /// Start draining until `until_ms`, unless already draining; `None` clears it
    /// (the endpoint came back).
    pub fn set_draining(&self, until_ms: Option<u64>) {
        match until_ms {
            Some(t) => {
                let _ = self
                    .drain_until_ms
                    .compare_exchange(0, t.max(1), Relaxed, Relaxed);
            }
            None => self.drain_until_ms.store(0, Relaxed),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Relaxed) > now
    }

    /// Eligible for traffic: passes health checks and is not ejected.
    pub fn is_available(&self, now: u64) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Relaxed)
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    /// Record an active health check result.
    pub fn observe_check(&self, ok: bool, healthy_after: u32, unhealthy_after: u32) -> Transition {
        if ok {
            self.consecutive_fail.store(0, Relaxed);
            let n = self.consecutive_ok.fetch_add(1, Relaxed).saturating_add(1);
            if n >= healthy_after && !self.healthy.swap(true, Relaxed) {
                self.available_since_ms.store(now_ms().max(1), Relaxed);
                return Transition::BecameHealthy;
            }
        } else {
            self.consecutive_ok.store(0, Relaxed);
            let n = self
                .consecutive_fail
                .fetch_add(1, Relaxed)
                .saturating_add(1);
            if n >= unhealthy_after && self.healthy.swap(false, Relaxed) {
                return Transition::BecameUnhealthy;
            }
        }
        Transition::None
    }

    /// Forget active-check verdicts (the upstream no longer has a health check).
    pub fn reset_health(&self) {
        self.healthy.store(true, Relaxed);
        self.consecutive_ok.store(0, Relaxed);
        self.consecutive_fail.store(0, Relaxed);
    }

    /// Start of a request attempt to this endpoint; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub fn record_success(&self, outlier: Option<&Outlier>) {
        self.passive_failures.store(0, Relaxed);
        // Forgive past ejections after a long good stretch, so the ejection time stops growing.
        if let Some(o) = outlier {
            let until = self.ejected_until_ms.load(Relaxed);
            if self.ejections.load(Relaxed) > 0
                && until > 0
                && now_ms() > until + o.max_eject_for.as_millis() as u64
            {
                self.ejections.store(0, Relaxed);
            }
        }
    }

    /// Record a failed request attempt. Returns true if it should be ejected now
    /// (the caller checks the upstream-wide `max_ejected` cap and calls [`Self::eject`];
    /// [`record_outcome`] does both).
    pub fn record_failure(&self, outlier: Option<&Outlier>) -> bool {
        self.failures.fetch_add(1, Relaxed);
        let n = self
            .passive_failures
            .fetch_add(1, Relaxed)
            .saturating_add(1);
        match outlier {
            Some(o) => n >= o.consecutive_failures && !self.is_ejected(now_ms()),
            None => false,
        }
    }

    /// Eject for `eject_for` times the number of ejections so far (capped).
    /// Returns how long.
    pub fn eject(&self, o: &Outlier) -> Duration {
        let k = self.ejections.fetch_add(1, Relaxed).saturating_add(1);
        let d = o.eject_for.saturating_mul(k).min(o.max_eject_for);
        let until = now_ms() + d.as_millis() as u64;
        self.ejected_until_ms.store(until, Relaxed);
        // Available again when the ejection ends: slow start ramps from there.
        self.available_since_ms.store(until, Relaxed);
        self.passive_failures.store(0, Relaxed);
        d
    }
}

/// A request using an endpoint ([`EndpointState::hold`]); dropping it ends the use.
#[derive(Debug)]
pub struct Active(Arc<EndpointState>);

impl Active {
    pub fn state(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// An attempt in progress; dropping it ends the attempt.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    pub fn state(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Whether one more ejection keeps the ejected share within `max_ejected`.
pub fn may_eject(ejected_now: usize, total: usize, max_ejected: f64) -> bool {
    (ejected_now + 1) as f64 <= max_ejected * total as f64
}

/// Feed one attempt's outcome to passive outlier detection, and eject the endpoint when
/// this failure completes a streak of `consecutive_failures`, unless one more ejection
/// would take the ejected share of its set over `max_ejected`.
///
/// `census` returns (ejected now, total) for the endpoint's set; it is called only when
/// an ejection is due, so the common case (a success, or a failure inside a streak)
/// never walks the set. Returns how long the endpoint was ejected for, if it was: the
/// caller counts and logs ejections in its own terms (upstream or dependency).
pub fn record_outcome(
    state: &EndpointState,
    ok: bool,
    outlier: Option<&Outlier>,
    census: impl FnOnce() -> (usize, usize),
) -> Option<Duration> {
    if ok {
        state.record_success(outlier);
        return None;
    }
    if !state.record_failure(outlier) {
        return None;
    }
    let o = outlier?;
    let (ejected, total) = census();
    may_eject(ejected, total, o.max_ejected).then(|| state.eject(o))
}

/// (ejected at `now`, total) over a set of endpoints: the usual [`record_outcome`] census.
pub fn count_ejected<'a>(
    states: impl IntoIterator<Item = &'a EndpointState>,
    now: u64,
) -> (usize, usize) {
    states.into_iter().fold((0, 0), |(ejected, total), s| {
        (ejected + usize::from(s.is_ejected(now)), total + 1)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outlier() -> Outlier {
        Outlier {
            consecutive_failures: 3,
            eject_for: Duration::from_secs(10),
            max_eject_for: Duration::from_secs(25),
            max_ejected: 0.5,
        }
    }

    #[test]
    fn health_thresholds() {
        let s = EndpointState::new(([127, 0, 0, 1], 1).into());
        assert_eq!(s.observe_check(false, 2, 2), Transition::None);
        assert_eq!(s.observe_check(false, 2, 2), Transition::BecameUnhealthy);
        assert!(!s.is_healthy());
        assert_eq!(s.observe_check(true, 2, 2), Transition::None);
        assert_eq!(s.observe_check(false, 2, 2), Transition::None);
        assert_eq!(s.observe_check(true, 2, 2), Transition::None);
        assert_eq!(s.observe_check(true, 2, 2), Transition::BecameHealthy);
        assert!(s.is_healthy());
    }

    #[test]
    fn ejection_grows_and_is_capped() {
        let o = outlier();
        let s = EndpointState::new(([127, 0, 0, 1], 1).into());
        assert!(!s.record_failure(Some(&o)));
        s.record_success(Some(&o));
        assert!(!s.record_failure(Some(&o)));
        assert!(!s.record_failure(Some(&o)));
        assert!(s.record_failure(Some(&o)));
        assert_eq!(s.eject(&o), Duration::from_secs(10));
        assert!(s.is_ejected(now_ms()));
        assert!(!s.is_available(now_ms()));
        assert_eq!(s.eject(&o), Duration::from_secs(20));
        assert_eq!(
            s.eject(&o),
            Duration::from_secs(25),
            "capped at max_eject_for"
        );
    }

    #[test]
    fn record_outcome_ejects_at_the_end_of_a_streak() {
        let o = outlier();
        let s = EndpointState::new(([127, 0, 0, 1], 1).into());
        let unused = || -> (usize, usize) { panic!("census taken before an ejection is due") };
        assert_eq!(record_outcome(&s, false, Some(&o), unused), None);
        assert_eq!(record_outcome(&s, true, Some(&o), unused), None);
        assert_eq!(record_outcome(&s, false, Some(&o), unused), None);
        assert_eq!(record_outcome(&s, false, Some(&o), unused), None);
        assert_eq!(
            record_outcome(&s, false, Some(&o), || (0, 4)),
            Some(Duration::from_secs(10))
        );
        assert!(s.is_ejected(now_ms()));
        assert_eq!(s.failures(), 4);
    }

    #[test]
    fn record_outcome_respects_max_ejected() {
        let o = outlier();
        let s = EndpointState::new(([127, 0, 0, 1], 1).into());
        for _ in 0..2 {
            assert_eq!(record_outcome(&s, false, Some(&o), || (1, 2)), None);
        }
        // 1 of 2 already out at max_ejected 50%: this one stays in.
        assert_eq!(record_outcome(&s, false, Some(&o), || (1, 2)), None);
        assert!(!s.is_ejected(now_ms()));
        // The streak goes on; the next failure ejects once there is room.
        assert!(record_outcome(&s, false, Some(&o), || (1, 4)).is_some());
    }

    #[test]
    fn record_outcome_without_outlier_detection_only_counts() {
        let s = EndpointState::new(([127, 0, 0, 1], 1).into());
        for _ in 0..100 {
            assert_eq!(record_outcome(&s, false, None, || (0, 1)), None);
        }
        assert_eq!(s.failures(), 100);
        assert!(!s.is_ejected(now_ms()));
    }

    #[test]
    fn count_ejected_counts() {
        let o = outlier();
        let set: Vec<_> = (1..=3)
            .map(|p| EndpointState::new(([127, 0, 0, 1], p).into()))
            .collect();
        assert_eq!(count_ejected(set.iter().map(|s| &**s), now_ms()), (0, 3));
        set[1].eject(&o);
        assert_eq!(count_ejected(set.iter().map(|s| &**s), now_ms()), (1, 3));
    }

    #[test]
    fn in_flight_guard_counts() {
        let s = EndpointState::new(([127, 0, 0, 1], 1).into());
        let a = s.begin();
        let b = s.begin();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        assert_eq!(s.in_flight(), 1);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.requests(), 2);
    }
}
