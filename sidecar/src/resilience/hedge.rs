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

use super::stage::{boxed_call, InnerService, Policy, PolicyLayer, PolicyService};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::{select, Either};
use http::{Request, Response};
use http_body::Body as _;
use serde::Serialize;

use super::budget::RetryBudget;
use super::retry::safe_to_repeat;
use super::ResponseFuture;
use crate::body::{empty, Body};
use crate::error::ProxyError;
use crate::outbound::balance::Tried;

/// The budget of a dependency that hedges without a retry policy.
pub const OWN_BUDGET: f64 = 0.1;
pub const OWN_MIN_PER_SECOND: u32 = 10;

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
    after_nanos: AtomicU64,
    funding: ArcSwap<Funding>,
    stats: HedgeStats,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl HedgePolicy {
    /// `shared`: the retry policy's budget, or `None` for a budget of its own.
    pub fn new(after: Duration, shared: Option<Arc<RetryBudget>>) -> Self {
        let policy = Self {
            after_nanos: AtomicU64::new(nanos(after)),
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
    /// no shared one is given.
    pub fn reconfigure(&self, after: Duration, shared: Option<Arc<RetryBudget>>) {
        self.after_nanos.store(nanos(after), Ordering::Relaxed);
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

    pub fn after(&self) -> Duration {
        Duration::from_nanos(self.after_nanos.load(Ordering::Relaxed))
    }

    /// The budget hedges are paid from.
    pub fn budget(&self) -> Arc<RetryBudget> {
        Arc::clone(&self.funding.load().budget)
    }

    pub fn stats(&self) -> &HedgeStats {
        &self.stats
    }
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
        return boxed_call(inner, req).await;
    }
    stats.eligible.fetch_add(1, Ordering::Relaxed);
    let (mut parts, _empty) = req.into_parts();
    if parts.extensions.get::<Tried>().is_none() {
        parts.extensions.insert(Tried::default());
    }
    let first = boxed_call(inner.clone(), Request::from_parts(parts.clone(), empty()));
    let timer = Box::pin(tokio::time::sleep(policy.after()));
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
    tracing::debug!(after = ?policy.after(), "hedging");
    let second = boxed_call(inner, Request::from_parts(parts, empty()));
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
