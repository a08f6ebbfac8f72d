//! Retry budget: retries may add at most `budget` (a fraction) to the request rate,
//! plus a small floor of `min_per_second`, so retries cannot multiply the load on a
//! dependency that is already failing. Counted over a sliding 10 s window of 1 s
//! buckets: a retry is allowed while
//! `retries < budget * requests + min_per_second * 10`.
//!
//! One budget per dependency, shared by every call's retry (and hedging) decisions;
//! keep the `Arc` across reloads and [`RetryBudget::reconfigure`] it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_secs(1);
/// The length of the sliding window.
pub const WINDOW: Duration = Duration::from_secs(BUCKETS as u64);

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    requests: u64,
    retries: u64,
}

#[derive(Debug)]
struct Inner {
    budget: f64,
    min_per_second: u32,
    origin: Instant,
    buckets: [Bucket; BUCKETS],
}

impl Inner {
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / BUCKET.as_secs()
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let second = self.second(now);
        let b = &mut self.buckets[(second % BUCKETS as u64) as usize];
        if b.second != second {
            *b = Bucket {
                second,
                ..Bucket::default()
            };
        }
        b
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let second = self.second(now);
        self.buckets
            .iter()
            .filter(|b| b.second <= second && b.second + BUCKETS as u64 > second)
            .fold((0, 0), |(req, ret), b| (req + b.requests, ret + b.retries))
    }

    fn allowed(&self, requests: u64) -> f64 {
        self.budget * requests as f64 + f64::from(self.min_per_second) * WINDOW.as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetSnapshot {
    /// Requests counted in the window.
    pub requests: u64,
    /// Retries spent in the window.
    pub retries: u64,
    /// Retries still allowed now.
    pub remaining: u64,
    pub budget: f64,
    pub min_per_second: u32,
    /// Retries refused for lack of budget since start.
    pub refused: u64,
}

#[derive(Debug)]
pub struct RetryBudget {
    inner: Mutex<Inner>,
    refused: AtomicU64,
}

impl RetryBudget {
    /// `budget_fraction` is clamped to `0.0..` (a NaN counts as 0).
    pub fn new(budget_fraction: f64, min_per_second: u32) -> Self {
        Self {
            inner: Mutex::new(Inner {
                budget: sane(budget_fraction),
                min_per_second,
                origin: Instant::now(),
                buckets: [Bucket::default(); BUCKETS],
            }),
            refused: AtomicU64::new(0),
        }
    }

    /// New limits; the counts in the window are kept.
    pub fn reconfigure(&self, budget_fraction: f64, min_per_second: u32) {
        let mut inner = self.lock();
        inner.budget = sane(budget_fraction);
        inner.min_per_second = min_per_second;
    }

    /// Count one request (not a retry) toward the budget.
    pub fn record_request(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        let b = inner.bucket(now);
        b.requests = b.requests.saturating_add(1);
    }

    /// Spend one retry if the budget allows it.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let (requests, retries) = inner.totals(now);
        if (retries as f64) < inner.allowed(requests) {
            let b = inner.bucket(now);
            b.retries = b.retries.saturating_add(1);
            true
        } else {
            drop(inner);
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    pub fn snapshot(&self) -> BudgetSnapshot {
        let now = Instant::now();
        let inner = self.lock();
        let (requests, retries) = inner.totals(now);
        let allowed = inner.allowed(requests).ceil();
        // Saturating float-to-int cast; `allowed` is finite and non-negative.
        let remaining = (allowed as u64).saturating_sub(retries);
        BudgetSnapshot {
            requests,
            retries,
            remaining,
            budget: inner.budget,
            min_per_second: inner.min_per_second,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sane(fraction: f64) -> f64 {
    if fraction.is_finite() && fraction > 0.0 {
        fraction
    } else {
        0.0
    }
}
