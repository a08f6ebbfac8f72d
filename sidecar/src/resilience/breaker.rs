//! Circuit breaker per dependency: while a dependency is failing, fail fast with
//! [`ProxyError::CircuitOpen`] (503 + `Retry-After`) instead of piling more calls on
//! it, then probe it carefully before trusting it again.
//!
//! - Closed: calls pass; outcomes go into a sliding window of 10 buckets. When the
//!   window holds at least `min_requests` calls and the failure share reaches
//!   `failure_rate` (or the slow share reaches `slow_call_rate`), it opens.
//! - Open: calls are refused without touching the inner service, for
//!   `open_for * 2^(trips in a row - 1)`, at most `max_open_for`.
//! - HalfOpen: at most `half_open_probes` calls at a time go through; once that many
//!   have succeeded it closes (window cleared, trip count reset); one failed (or slow)
//!   probe opens it again for twice as long.
//!
//! `observe_only` runs the same state machine and records every transition, but never
//! refuses a call: a safe way to roll out new thresholds.
//!
//! A failure is a 5xx response, a gRPC failure status (see [`super::grpc`]) or a
//! [`ProxyError::is_dependency_failure`] error. Errors made on our side (bulkhead full,
//! rate limited, fault injected, circuit open, a bad request body) are not calls of the
//! dependency and are not counted. A gRPC response whose status comes in the trailers is
//! recorded when its body ends, its slowness still measured at the response head (a
//! long stream is not a slow call). A call cancelled before it ended (the app went
//! away, or a timeout outside this layer fired) is not counted either, except as a slow
//! call when it had already run longer than `slow_call`.
//!
//! Time is `tokio::time::Instant`, so tests drive it with `tokio::time::pause`/`advance`.

use super::stage::{InnerService, Policy, PolicyLayer, PolicyService};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use serde::Serialize;
use tokio::time::Instant;
use tollgate_config::sidecar::Breaker;
use tower::ServiceExt;

use super::grpc::{self, GrpcHead};
use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

const BUCKETS: usize = 10;
/// What a caller refused while half-open is told to wait: the probes answer soon.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// For a state gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one call went, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    Failure,
    /// Not a call of the dependency (refused on our side): not counted.
    Ignored,
}

/// The breaker's reading of a call's result, as far as its head tells (a gRPC status
/// in the trailers is read at the end of the body, see [`grpc`]).
pub fn classify(result: &Result<Response<Body>, ProxyError>) -> CallOutcome {
    match result {
        Ok(r) if r.status().is_server_error() || grpc::failed_at_head(r) => CallOutcome::Failure,
        Ok(_) => CallOutcome::Success,
        Err(e) if e.is_dependency_failure() => CallOutcome::Failure,
        Err(_) => CallOutcome::Ignored,
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransitionCounts {
    pub to_open: u64,
    pub to_half_open: u64,
    pub to_closed: u64,
}

/// What the admin endpoint shows for a dependency's breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Share of calls in the window that failed (0 when empty).
    pub failure_rate: f64,
    /// Share of calls in the window that were slow (0 when empty).
    pub slow_rate: f64,
    pub calls: u64,
    pub failures: u64,
    pub slow_calls: u64,
    /// Trips in a row (reset when it closes).
    pub trips: u32,
    /// Time left before half-open, when open.
    pub open_remaining_ms: u64,
    pub half_open_in_flight: u32,
    pub observe_only: bool,
    /// Calls refused since start.
    pub rejected: u64,
    /// Calls an observe-only breaker would have refused since start.
    pub observed_rejections: u64,
    pub transitions: TransitionCounts,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Totals {
    fn rate(part: u64, calls: u64) -> f64 {
        if calls == 0 {
            0.0
        } else {
            part as f64 / calls as f64
        }
    }
}

/// Sliding window: `BUCKETS` buckets of `window / BUCKETS` each.
#[derive(Debug)]
struct Window {
    width_nanos: u128,
    origin: Instant,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(length: Duration, now: Instant) -> Self {
        let width = (length / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            width_nanos: width.as_nanos(),
            origin: now,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.width_nanos).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, failure: bool, slow: bool) {
        let epoch = self.epoch(now);
        let b = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b.calls += 1;
        b.failures += u64::from(failure);
        b.slow += u64::from(slow);
    }

    fn totals(&self, now: Instant) -> Totals {
        let epoch = self.epoch(now);
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && b.epoch.saturating_add(BUCKETS as u64) > epoch)
            .fold(Totals::default(), |t, b| Totals {
                calls: t.calls + b.calls,
                failures: t.failures + b.failures,
                slow: t.slow + b.slow,
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

impl State {
    fn public(self) -> BreakerState {
        match self {
            Self::Closed => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    cfg: Breaker,
    state: State,
    window: Window,
    trips: u32,
    /// Bumped on every transition: an outcome of a call admitted in an earlier state
    /// (or an earlier closed period) must not count in the current one.
    generation: u64,
}

type Fired = Vec<(BreakerState, BreakerState)>;

impl Inner {
    fn go(&mut self, to: State, fired: &mut Fired) {
        let from = self.state.public();
        self.state = to;
        self.generation += 1;
        fired.push((from, to.public()));
    }

    /// Open -> HalfOpen once the open time is over.
    fn tick(&mut self, now: Instant, fired: &mut Fired) {
        if let State::Open { until } = self.state {
            if now >= until {
                self.go(
                    State::HalfOpen {
                        in_flight: 0,
                        successes: 0,
                    },
                    fired,
                );
            }
        }
    }

    fn trip(&mut self, now: Instant, fired: &mut Fired) {
        self.trips = self.trips.saturating_add(1);
        let factor = 1u32 << (self.trips - 1).min(31);
        let open_for = self
            .cfg
            .open_for
            .saturating_mul(factor)
            .min(self.cfg.max_open_for.max(self.cfg.open_for));
        // A duration from config so large it overflows the clock: a year is forever enough.
        let until = now
            .checked_add(open_for)
            .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
            .unwrap_or(now);
        self.go(State::Open { until }, fired);
    }

    fn close(&mut self, fired: &mut Fired) {
        self.trips = 0;
        self.window.clear();
        self.go(State::Closed, fired);
    }

    fn should_trip(&self, t: Totals) -> bool {
        if t.calls == 0 || t.calls < u64::from(self.cfg.min_requests) {
            return false;
        }
        let failing = self.cfg.failure_rate > 0.0
            && Totals::rate(t.failures, t.calls) >= self.cfg.failure_rate;
        let slow = self.cfg.slow_call.is_some()
            && self
                .cfg
                .slow_call_rate
                .is_some_and(|r| r > 0.0 && Totals::rate(t.slow, t.calls) >= r);
        failing || slow
    }

    fn is_slow(&self, elapsed: Duration) -> bool {
        self.cfg.slow_call.is_some_and(|s| elapsed > s)
    }
}

#[derive(Debug, Default)]
struct Counters {
    to_open: AtomicU64,
    to_half_open: AtomicU64,
    to_closed: AtomicU64,
    rejected: AtomicU64,
    observed_rejections: AtomicU64,
}

type TransitionHook = Box<dyn Fn(BreakerState, BreakerState) + Send + Sync>;

/// One dependency's breaker, shared by every clone of its stack. Keep the `Arc`
/// across reloads and [`reconfigure`](Self::reconfigure) it.
pub struct CircuitBreaker {
    name: String,
    inner: Mutex<Inner>,
    counters: Counters,
    on_transition: Option<TransitionHook>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Admitted while closed.
    Normal,
    /// A half-open probe.
    Probe,
    /// Let through only because the breaker observes: its outcome is not counted.
    Observed,
}

impl CircuitBreaker {
    pub fn new(cfg: &Breaker) -> Self {
        Self {
            name: String::new(),
            inner: Mutex::new(Inner {
                cfg: cfg.clone(),
                state: State::Closed,
                window: Window::new(cfg.window, Instant::now()),
                trips: 0,
                generation: 0,
            }),
            counters: Counters::default(),
            on_transition: None,
        }
    }

    /// The dependency's name, for logs.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Called after every transition `(from, to)`, outside the breaker's lock (metrics,
    /// logs). It may read the breaker.
    pub fn with_on_transition(
        mut self,
        hook: impl Fn(BreakerState, BreakerState) + Send + Sync + 'static,
    ) -> Self {
        self.on_transition = Some(Box::new(hook));
        self
    }

    /// Apply new thresholds without resetting the state, the trip count or the window
    /// (the window's counts are dropped only if its length changed).
    pub fn reconfigure(&self, cfg: &Breaker) {
        let mut inner = self.lock();
        if inner.cfg.window != cfg.window {
            inner.window = Window::new(cfg.window, Instant::now());
        }
        inner.cfg = cfg.clone();
    }

    pub fn config(&self) -> Breaker {
        self.lock().cfg.clone()
    }

    /// The current state. Reading it moves an expired Open to HalfOpen (and fires the
    /// hook), so a gauge never shows "open" past `open_for`.
    pub fn state(&self) -> BreakerState {
        let mut fired = Fired::new();
        let state = {
            let mut inner = self.lock();
            inner.tick(Instant::now(), &mut fired);
            inner.state.public()
        };
        self.fire(fired);
        state
    }

    pub fn transitions(&self) -> TransitionCounts {
        TransitionCounts {
            to_open: self.counters.to_open.load(Ordering::Relaxed),
            to_half_open: self.counters.to_half_open.load(Ordering::Relaxed),
            to_closed: self.counters.to_closed.load(Ordering::Relaxed),
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let mut fired = Fired::new();
        let snap = {
            let mut inner = self.lock();
            inner.tick(now, &mut fired);
            let t = inner.window.totals(now);
            let (open_remaining_ms, half_open_in_flight) = match inner.state {
                State::Open { until } => (
                    u64::try_from(until.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX),
                    0,
                ),
                State::HalfOpen { in_flight, .. } => (0, in_flight),
                State::Closed => (0, 0),
            };
            BreakerSnapshot {
                state: inner.state.public(),
                failure_rate: Totals::rate(t.failures, t.calls),
                slow_rate: Totals::rate(t.slow, t.calls),
                calls: t.calls,
                failures: t.failures,
                slow_calls: t.slow,
                trips: inner.trips,
                open_remaining_ms,
                half_open_in_flight,
                observe_only: inner.cfg.observe_only,
                rejected: self.counters.rejected.load(Ordering::Relaxed),
                observed_rejections: self.counters.observed_rejections.load(Ordering::Relaxed),
                transitions: self.transitions(),
            }
        };
        self.fire(fired);
        snap
    }

    /// Ask to make a call. `Err(retry_after)` means refused: do not call the dependency.
    /// The permit must be given the call's outcome ([`BreakerPermit::record`]); dropped
    /// without one, the call counts as cancelled.
    pub fn try_acquire(self: &Arc<Self>) -> Result<BreakerPermit, Duration> {
        let now = Instant::now();
        let mut fired = Fired::new();
        let (admission, generation, observe_only) = {
            let mut inner = self.lock();
            inner.tick(now, &mut fired);
            let probes = inner.cfg.half_open_probes.max(1);
            let admission = match &mut inner.state {
                State::Closed => Ok(PermitKind::Normal),
                State::Open { until } => Err(until.saturating_duration_since(now)),
                State::HalfOpen { in_flight, .. } if *in_flight < probes => {
                    *in_flight += 1;
                    Ok(PermitKind::Probe)
                }
                State::HalfOpen { .. } => Err(HALF_OPEN_RETRY_AFTER),
            };
            (admission, inner.generation, inner.cfg.observe_only)
        };
        self.fire(fired);
        let kind = match admission {
            Ok(kind) => kind,
            Err(_) if observe_only => {
                self.counters
                    .observed_rejections
                    .fetch_add(1, Ordering::Relaxed);
                PermitKind::Observed
            }
            Err(retry_after) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(retry_after);
            }
        };
        Ok(BreakerPermit {
            breaker: Arc::clone(self),
            kind,
            generation,
            started: now,
            head: None,
            done: false,
        })
    }

    /// `outcome: None` = the call was cancelled before it ended. Slowness is measured
    /// from `started` to `head` (when the response head came) or to now.
    fn finish(
        &self,
        kind: PermitKind,
        generation: u64,
        (started, head): (Instant, Option<Instant>),
        outcome: Option<CallOutcome>,
    ) {
        let now = Instant::now();
        let mut fired = Fired::new();
        {
            let mut inner = self.lock();
            let slow = inner.is_slow(head.unwrap_or(now).saturating_duration_since(started));
            let current = generation == inner.generation;
            match (kind, inner.state) {
                (PermitKind::Normal, State::Closed) if current => {
                    match outcome {
                        Some(CallOutcome::Success) => inner.window.record(now, false, slow),
                        Some(CallOutcome::Failure) => inner.window.record(now, true, slow),
                        Some(CallOutcome::Ignored) => {}
                        None if slow => inner.window.record(now, false, true),
                        None => {}
                    }
                    let totals = inner.window.totals(now);
                    if inner.should_trip(totals) {
                        inner.trip(now, &mut fired);
                    }
                }
                (
                    PermitKind::Probe,
                    State::HalfOpen {
                        in_flight,
                        successes,
                    },
                ) if current => {
                    let in_flight = in_flight.saturating_sub(1);
                    let failed = match outcome {
                        Some(CallOutcome::Failure) => true,
                        Some(CallOutcome::Success) | None => slow,
                        Some(CallOutcome::Ignored) => false,
                    };
                    if failed {
                        inner.trip(now, &mut fired);
                    } else {
                        let successes =
                            successes + u32::from(outcome == Some(CallOutcome::Success));
                        if successes >= inner.cfg.half_open_probes.max(1) {
                            inner.close(&mut fired);
                        } else {
                            inner.state = State::HalfOpen {
                                in_flight,
                                successes,
                            };
                        }
                    }
                }
                // Admitted in an earlier state, or only observed: not counted.
                _ => {}
            }
        }
        self.fire(fired);
    }

    fn fire(&self, fired: Fired) {
        for (from, to) in fired {
            let counter = match to {
                BreakerState::Open => &self.counters.to_open,
                BreakerState::HalfOpen => &self.counters.to_half_open,
                BreakerState::Closed => &self.counters.to_closed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            match to {
                BreakerState::Open => {
                    tracing::warn!(dependency = %self.name, %from, %to, "circuit breaker opened")
                }
                _ => tracing::info!(dependency = %self.name, %from, %to, "circuit breaker"),
            }
            if let Some(hook) = &self.on_transition {
                hook(from, to);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leave to make one call; give it the outcome with [`record`](Self::record).
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: Arc<CircuitBreaker>,
    kind: PermitKind,
    generation: u64,
    started: Instant,
    /// When the response head came, if the outcome is recorded later.
    head: Option<Instant>,
    done: bool,
}

impl BreakerPermit {
    pub fn record(mut self, outcome: CallOutcome) {
        self.done = true;
        self.breaker.finish(
            self.kind,
            self.generation,
            (self.started, self.head),
            Some(outcome),
        );
    }

    /// The response head has come; the outcome will be recorded later (at the end of
    /// the body), but the call's slowness is its time to the head.
    pub fn head_arrived(&mut self) {
        self.head.get_or_insert_with(Instant::now);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker
                .finish(self.kind, self.generation, (self.started, self.head), None);
        }
    }
}

pub type BreakerLayer = PolicyLayer<CircuitBreaker>;
pub type BreakerService<S> = PolicyService<S, CircuitBreaker>;

impl BreakerLayer {
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { policy: breaker }
    }
}

impl Policy for CircuitBreaker {
    fn call<S: InnerService>(self: &Arc<Self>, inner: S, req: Request<Body>) -> ResponseFuture {
        match self.try_acquire() {
            Err(retry_after) => Box::pin(std::future::ready(Err(ProxyError::CircuitOpen {
                retry_after,
            }))),
            Ok(mut permit) => {
                let call = inner.oneshot(req);
                // Dropping the future drops the permit: counted as a cancelled call.
                Box::pin(call.map(move |result| match result {
                    // The verdict is in the trailers: the body carries the permit there.
                    Ok(resp) if grpc::head(&resp) == GrpcHead::InTrailers => {
                        permit.head_arrived();
                        Ok(grpc::record_at_end(resp, permit))
                    }
                    result => {
                        permit.record(classify(&result));
                        result
                    }
                }))
            }
        }
    }
}
