//! Outbound rate limit per dependency: calls beyond `rate_limit` fail at once with
//! [`ProxyError::RateLimited`] (429 + `Retry-After`) without touching the dependency.
//!
//! GCRA (the token bucket without a refill task, [`tollgate_config::common::gcra`]):
//! one state, the theoretical arrival time of the next call, advanced by `per / count`
//! per admitted call. The burst is one second's worth of calls (at least 1), so a rate
//! of `600/m` admits 10 at once, then one every 100 ms.
//!
//! One limiter per dependency, shared by every clone of its stack; keep the `Arc`
//! across reloads and [`RateLimiter::reconfigure`] it, so a reload neither refills nor
//! empties the bucket. Time is `tokio::time::Instant` since the limiter was made (tests
//! pause it), handed to the clock-agnostic GCRA as a `Duration`.

use super::stage::{InnerService, Policy, PolicyLayer, PolicyService};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Request;
use serde::Serialize;
use tokio::time::Instant;
use tollgate_config::common::gcra::{Gcra, GcraState};
use tollgate_config::units::Rate;
use tower::ServiceExt;

use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

/// The dependency's `rate_limit` has no burst field: the burst is one second's worth of
/// calls, at least 1.
fn gcra_of(rate: Rate) -> Gcra {
    // Saturating float-to-int cast; `per_second` is finite and non-negative.
    let burst = (rate.per_second().ceil() as u32).max(1);
    Gcra::from_rate(rate, burst)
}

#[derive(Debug)]
struct Inner {
    gcra: Gcra,
    rate: Rate,
    state: GcraState,
}

/// What the admin endpoint shows for a dependency's rate limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitSnapshot {
    /// As configured, e.g. `100/s`.
    pub rate: String,
    pub per_second: f64,
    pub burst: u32,
    /// Calls let through since start.
    pub admitted: u64,
    /// Calls refused with `RateLimited` since start.
    pub limited: u64,
}

#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<Inner>,
    /// The GCRA's time origin.
    origin: Instant,
    admitted: AtomicU64,
    limited: AtomicU64,
}

impl RateLimiter {
    /// A full bucket. A `count` of 0 is taken as 1 (config validation refuses 0).
    pub fn new(rate: Rate) -> Self {
        Self {
            inner: Mutex::new(Inner {
                gcra: gcra_of(rate),
                rate,
                state: GcraState::default(),
            }),
            origin: Instant::now(),
            admitted: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// A new rate; the calls already admitted still count.
    pub fn reconfigure(&self, rate: Rate) {
        let mut inner = self.lock();
        inner.gcra = gcra_of(rate);
        inner.rate = rate;
    }

    pub fn rate(&self) -> Rate {
        self.lock().rate
    }

    /// Admit one call, or say how long until one would be admitted.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = Instant::now().saturating_duration_since(self.origin);
        let verdict = {
            let inner = &mut *self.lock();
            inner.gcra.check(&mut inner.state, now)
        };
        let counter = if verdict.is_ok() {
            &self.admitted
        } else {
            &self.limited
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    pub fn snapshot(&self) -> RateLimitSnapshot {
        let (rate, gcra) = {
            let inner = self.lock();
            (inner.rate, inner.gcra)
        };
        RateLimitSnapshot {
            rate: rate.to_string(),
            per_second: rate.per_second(),
            burst: gcra.burst(),
            admitted: self.admitted.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub type RateLimitLayer = PolicyLayer<RateLimiter>;
pub type RateLimitService<S> = PolicyService<S, RateLimiter>;

impl RateLimitLayer {
    /// A layer over a shared limiter (kept across reloads).
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        Self { policy: limiter }
    }
}

impl Policy for RateLimiter {
    fn call<S: InnerService>(self: &Arc<Self>, inner: S, req: Request<Body>) -> ResponseFuture {
        match self.try_acquire() {
            Ok(()) => Box::pin(inner.oneshot(req)),
            Err(wait) => {
                tracing::debug!(?wait, "outbound rate limit reached");
                Box::pin(std::future::ready(Err(ProxyError::RateLimited)))
            }
        }
    }
}
