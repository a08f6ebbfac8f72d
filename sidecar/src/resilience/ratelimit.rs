//! Outbound rate limit per dependency: calls beyond `rate_limit` fail at once with
//! [`ProxyError::RateLimited`] (429 + `Retry-After`) without touching the dependency.
//!
//! GCRA (the token bucket without a refill task): one state, the theoretical arrival
//! time of the next call, advanced by `per / count` per admitted call. The burst is one
//! second's worth of calls (at least 1), so a rate of `600/m` admits 10 at once, then
//! one every 100 ms.
//!
//! One limiter per dependency, shared by every clone of its stack; keep the `Arc`
//! across reloads and [`RateLimiter::reconfigure`] it, so a reload neither refills nor
//! empties the bucket. Time is `tokio::time::Instant` (tests pause it).

use super::stage::{InnerService, Policy, PolicyLayer, PolicyService};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Request;
use serde::Serialize;
use tokio::time::Instant;
use tollgate_config::units::Rate;
use tower::ServiceExt;

use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    /// Time one call costs.
    interval: Duration,
    /// Calls admitted at once from a full bucket.
    burst: u32,
}

impl Params {
    fn of(rate: Rate) -> Self {
        let count = u32::try_from(rate.count.max(1)).unwrap_or(u32::MAX);
        let interval = rate.per / count;
        // Saturating float-to-int cast; `per_second` is finite and non-negative.
        let burst = (rate.per_second().ceil() as u32).max(1);
        Self { interval, burst }
    }

    /// How far ahead of now the arrival time may run: the burst.
    fn tolerance(self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }
}

#[derive(Debug)]
struct Inner {
    params: Params,
    rate: Rate,
    /// When the bucket is full again (in the past: it is full).
    tat: Instant,
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
    admitted: AtomicU64,
    limited: AtomicU64,
}

impl RateLimiter {
    /// A full bucket. A `count` of 0 is taken as 1 (config validation refuses 0).
    pub fn new(rate: Rate) -> Self {
        Self {
            inner: Mutex::new(Inner {
                params: Params::of(rate),
                rate,
                tat: Instant::now(),
            }),
            admitted: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// A new rate; the calls already admitted still count.
    pub fn reconfigure(&self, rate: Rate) {
        let mut inner = self.lock();
        inner.params = Params::of(rate);
        inner.rate = rate;
    }

    pub fn rate(&self) -> Rate {
        self.lock().rate
    }

    /// Admit one call, or say how long until one would be admitted.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let verdict = {
            let mut inner = self.lock();
            let p = inner.params;
            let next = inner.tat.max(now) + p.interval;
            let ahead = next.saturating_duration_since(now);
            if ahead <= p.tolerance() {
                inner.tat = next;
                Ok(())
            } else {
                Err(ahead - p.tolerance())
            }
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
        let (rate, params) = {
            let inner = self.lock();
            (inner.rate, inner.params)
        };
        RateLimitSnapshot {
            rate: rate.to_string(),
            per_second: rate.per_second(),
            burst: params.burst,
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
