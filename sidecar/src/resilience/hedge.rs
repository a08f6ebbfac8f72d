//! Hedged requests: when a try's response head has not come within `hedge_after`,
//! send a second copy and take whichever head comes first; the other copy is dropped
//! (its stream reset, its connection slot freed). This cuts the tail latency that one
//! slow replica or one lost packet adds, at the price of a few extra requests.
//!
//! - Only calls safe to repeat ([`safe_to_repeat`]: idempotent method or an
//!   `Idempotency-Key`), and only with an empty request body: a hedge starts while the
//!   first copy may still be sending, so there is no complete body to give it (the
//!   retry layer's replay copy is for a try that has finished).
//! - Each hedge is paid from a [`RetryBudget`]: the dependency's retry budget when a
//!   retry policy is configured, so retries and hedges together stay within it;
//!   otherwise one of its own (10% of requests + 10 per second).
//! - The copy carries the same [`Tried`] list as the first, so the balancer sends it
//!   to another endpoint when there is one.
//! - An error of one copy while the other is still out does not end the call: the
//!   other's answer is awaited; when both fail, the later error is returned.
//!
//! It sits inside the retry layer (a hedged try is still one try to retry) and outside
//! the per-try timeout, so each copy has its own deadline.
//!
//! `hedge_after: p95` reads the delay from the dependency's recent latency
//! ([`LatencyWindow`]): the time to the response head of every try through this layer
//! that got an answer other than 5xx, hedged or not, over the last 10-20 s. A copy cut
//! short because the other answered first has no latency to record and is not counted,
//! so a slow replica that always loses its race does not drag the threshold up (the
//! budget bounds what that costs). The estimate is refreshed at most every 100 ms and
//! clamped to `min ..= max`; until [`MIN_SAMPLES`] tries are in the window the delay
//! is `max`: hedging still rescues a hung try on a cold start, and an estimate from a
//! handful of tries is never trusted to fire early.

use super::stage::{boxed_call, InnerService, Policy, PolicyLayer, PolicyService};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::{select, Either};
use http::{Request, Response};
use http_body::Body as _;
use serde::Serialize;
use tokio::time::Instant;
use tollgate_config::sidecar::HedgeAfter;

use super::budget::RetryBudget;
use super::latency::{LatencyWindow, Quantile};
use super::retry::safe_to_repeat;
use super::ResponseFuture;
use crate::body::{empty, Body};
use crate::error::ProxyError;
use crate::outbound::balance::Tried;

/// The budget of a dependency that hedges without a retry policy.
pub const OWN_BUDGET: f64 = 0.1;
pub const OWN_MIN_PER_SECOND: u32 = 10;
/// Tries in the window before a percentile is trusted.
pub const MIN_SAMPLES: u64 = 20;
/// Each of the two windows of latency history.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(10);
/// How often the percentile is read again (a scan of the histogram).
const REFRESH: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct HedgeStats {
    requests: AtomicU64,
    eligible: AtomicU64,
    hedged: AtomicU64,
    won: AtomicU64,
    budget_exhausted: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HedgeStatsSnapshot {
    /// Tries that went through the hedging layer.
    pub requests: u64,
    /// Of those, tries that could be hedged (safe to repeat, no body).
    pub eligible: u64,
    /// Hedges sent.
    pub hedged: u64,
    /// Hedges whose answer was the one used.
    pub won: u64,
    /// Hedges wanted but refused by the budget.
    pub budget_exhausted: u64,
}

impl HedgeStats {
    pub fn hedged(&self) -> u64 {
        self.hedged.load(Ordering::Relaxed)
    }
    pub fn won(&self) -> u64 {
        self.won.load(Ordering::Relaxed)
    }
    pub fn snapshot(&self) -> HedgeStatsSnapshot {
        HedgeStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            eligible: self.eligible.load(Ordering::Relaxed),
            hedged: self.hedged(),
            won: self.won(),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Funding {
    budget: Arc<RetryBudget>,
    /// A budget of our own: nobody else counts the requests into it.
    own: bool,
}

/// One dependency's hedging delay, budget and counters. Keep the `Arc` across reloads
/// and [`reconfigure`](Self::reconfigure) it.
#[derive(Debug)]
pub struct HedgePolicy {
    setting: ArcSwap<HedgeAfter>,
    /// The delay in force (the fixed one, or the last percentile read, clamped).
    after_nanos: AtomicU64,
    /// When the percentile was last read, in ms since `origin` (+1: 0 is "never").
    refreshed_ms: AtomicU64,
    origin: Instant,
    latency: LatencyWindow,
    funding: ArcSwap<Funding>,
    stats: HedgeStats,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The delay before anything is measured: the fixed one, or the ceiling.
fn initial(setting: &HedgeAfter) -> Duration {
    match *setting {
        HedgeAfter::Fixed(d) => d,
        HedgeAfter::Percentile { max, .. } => max,
    }
}

/// What the status view shows of a dependency's hedging.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HedgeStatus {
    /// As configured: `50ms`, `p95`.
    pub hedge_after: String,
    /// The delay in force now, in milliseconds.
    pub after_ms: f64,
    /// `fixed`, `percentile`, or `warming_up` (too few tries yet: the ceiling).
    pub source: &'static str,
    /// Tries in the latency window, and its p50 / p95 / p99 in milliseconds.
    pub samples: u64,
    pub observed_ms: Option<ObservedMs>,
    #[serde(flatten)]
    pub stats: HedgeStatsSnapshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ObservedMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl HedgePolicy {
    /// `shared`: the retry policy's budget, or `None` for a budget of its own.
    pub fn new(after: HedgeAfter, shared: Option<Arc<RetryBudget>>) -> Self {
        let origin = Instant::now();
        let policy = Self {
            after_nanos: AtomicU64::new(nanos(initial(&after))),
            setting: ArcSwap::from_pointee(after),
            refreshed_ms: AtomicU64::new(0),
            origin,
            latency: LatencyWindow::with_origin(LATENCY_WINDOW, origin.into_std()),
            funding: ArcSwap::from_pointee(Funding {
                budget: Arc::new(RetryBudget::new(OWN_BUDGET, OWN_MIN_PER_SECOND)),
                own: true,
            }),
            stats: HedgeStats::default(),
        };
        policy.fund(shared);
        policy
    }

    /// New delay and budget source. A budget of its own is kept (with its window) while
    /// no shared one is given; the latency history is kept.
    pub fn reconfigure(&self, after: HedgeAfter, shared: Option<Arc<RetryBudget>>) {
        self.setting.store(Arc::new(after));
        self.refreshed_ms.store(0, Ordering::Relaxed);
        self.refresh(Instant::now(), true);
        self.fund(shared);
    }

    fn fund(&self, shared: Option<Arc<RetryBudget>>) {
        match shared {
            Some(budget) => self.funding.store(Arc::new(Funding { budget, own: false })),
            None if self.funding.load().own => {}
            None => self.funding.store(Arc::new(Funding {
                budget: Arc::new(RetryBudget::new(OWN_BUDGET, OWN_MIN_PER_SECOND)),
                own: true,
            })),
        }
    }

    /// The delay in force: the fixed one, or the percentile (read again when the last
    /// reading is older than 100 ms).
    pub fn after(&self) -> Duration {
        self.refresh(Instant::now(), false);
        Duration::from_nanos(self.after_nanos.load(Ordering::Relaxed))
    }

    /// The delay a percentile setting gives now, and whether it came from enough tries.
    fn compute(&self, setting: &HedgeAfter, now: Instant) -> (Duration, bool) {
        match *setting {
            HedgeAfter::Fixed(d) => (d, true),
            HedgeAfter::Percentile { quantile, min, max } => {
                match self.latency.quantile_at(quantile, now.into_std()) {
                    Some(Quantile { value, samples }) if samples >= MIN_SAMPLES => {
                        (value.clamp(min, max), true)
                    }
                    _ => (max, false),
                }
            }
        }
    }

    fn refresh(&self, now: Instant, force: bool) {
        let setting = self.setting.load();
        if let HedgeAfter::Fixed(d) = **setting {
            self.after_nanos.store(nanos(d), Ordering::Relaxed);
            return;
        }
        let now_ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1;
        let last = self.refreshed_ms.load(Ordering::Relaxed);
        let due = force || last == 0 || now_ms.saturating_sub(last) >= REFRESH.as_millis() as u64;
        // One caller reads the histogram; the others keep the delay in force.
        if !due
            || self
                .refreshed_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (after, _) = self.compute(&setting, now);
        self.after_nanos.store(nanos(after), Ordering::Relaxed);
    }

    /// Count a try's time to an answer that was used (not 5xx).
    pub fn record(&self, latency: Duration) {
        self.latency.record_at(latency, Instant::now().into_std());
    }

    /// The budget hedges are paid from.
    pub fn budget(&self) -> Arc<RetryBudget> {
        Arc::clone(&self.funding.load().budget)
    }

    pub fn stats(&self) -> &HedgeStats {
        &self.stats
    }

    pub fn status(&self) -> HedgeStatus {
        let now = Instant::now();
        let setting = **self.setting.load();
        let (after, measured) = self.compute(&setting, now);
        let q = |q: f64| self.latency.quantile_at(q, now.into_std());
        let observed = match (q(0.5), q(0.95), q(0.99)) {
            (Some(a), Some(b), Some(c)) => Some(ObservedMs {
                p50: ms(a.value),
                p95: ms(b.value),
                p99: ms(c.value),
            }),
            _ => None,
        };
        HedgeStatus {
            hedge_after: setting.label(),
            after_ms: ms(after),
            source: match (setting, measured) {
                (HedgeAfter::Fixed(_), _) => "fixed",
                (_, true) => "percentile",
                (_, false) => "warming_up",
            },
            samples: q(0.5).map_or(0, |q| q.samples),
            observed_ms: observed,
            stats: self.stats.snapshot(),
        }
    }
}

/// Call `inner`, counting the try's latency when it answers with anything but a 5xx.
fn timed<S: InnerService>(
    inner: S,
    policy: Arc<HedgePolicy>,
    req: Request<Body>,
) -> ResponseFuture {
    let started = Instant::now();
    let call = boxed_call(inner, req);
    Box::pin(async move {
        let result = call.await;
        if result.as_ref().is_ok_and(|r| !r.status().is_server_error()) {
            policy.record(started.elapsed());
        }
        result
    })
}

async fn run<S: InnerService>(
    inner: S,
    policy: Arc<HedgePolicy>,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let funding = policy.funding.load_full();
    if funding.own {
        funding.budget.record_request();
    }
    let stats = &policy.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if !req.body().is_end_stream() || !safe_to_repeat(req.method(), req.headers()) {
        return timed(inner, policy, req).await;
    }
    stats.eligible.fetch_add(1, Ordering::Relaxed);
    let (mut parts, _empty) = req.into_parts();
    if parts.extensions.get::<Tried>().is_none() {
        parts.extensions.insert(Tried::default());
    }
    let first = timed(
        inner.clone(),
        Arc::clone(&policy),
        Request::from_parts(parts.clone(), empty()),
    );
    let after = policy.after();
    let timer = Box::pin(tokio::time::sleep(after));
    let first = match select(first, timer).await {
        Either::Left((result, _)) => return result,
        Either::Right(((), first)) => first,
    };
    if !funding.budget.try_withdraw() {
        stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("not hedged: retry budget exhausted");
        return first.await;
    }
    stats.hedged.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(?after, "hedging");
    let second = timed(
        inner,
        Arc::clone(&policy),
        Request::from_parts(parts, empty()),
    );
    let won = || {
        stats.won.fetch_add(1, Ordering::Relaxed);
    };
    match select(first, second).await {
        Either::Left((Ok(resp), _second)) => Ok(resp),
        Either::Right((Ok(resp), _first)) => {
            won();
            Ok(resp)
        }
        Either::Left((Err(_), second)) => {
            let result = second.await;
            if result.is_ok() {
                won();
            }
            result
        }
        Either::Right((Err(_), first)) => first.await,
    }
}

pub type HedgeLayer = PolicyLayer<HedgePolicy>;
pub type HedgeService<S> = PolicyService<S, HedgePolicy>;

impl HedgeLayer {
    pub fn new(policy: Arc<HedgePolicy>) -> Self {
        Self { policy }
    }
}

impl Policy for HedgePolicy {
    fn call<S: InnerService>(self: &Arc<Self>, inner: S, req: Request<Body>) -> ResponseFuture {
        Box::pin(run(inner, Arc::clone(self), req))
    }
}
