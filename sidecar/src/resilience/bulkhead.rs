//! Concurrency limit per dependency (bulkhead): one slow dependency cannot take every
//! task and socket of the sidecar. Beyond `max_concurrent` calls in flight, a call
//! waits in a small bounded queue if one is configured and has room, and otherwise
//! fails at once with [`ProxyError::BulkheadFull`] without touching the inner service.
//!
//! A slot is held by the response future and released when the response head arrives
//! (or the call fails or is cancelled), not when the response body ends: the limit
//! bounds calls waiting on the dependency, not downloads in progress.

use super::stage::{InnerService, Policy, PolicyLayer, PolicyService};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{FutureExt, TryFutureExt};
use http::Request;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tower::ServiceExt;

use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

/// Counters for metrics and the admin endpoint.
#[derive(Debug, Default)]
pub struct BulkheadStats {
    max_concurrent: AtomicU32,
    queue: AtomicU32,
    in_flight: AtomicU32,
    waiting: AtomicU32,
    admitted: AtomicU64,
    queued: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BulkheadSnapshot {
    pub max_concurrent: u32,
    pub queue: u32,
    pub in_flight: u32,
    pub waiting: u32,
    /// Calls let through since start (including those that waited).
    pub admitted: u64,
    /// Calls that had to wait in the queue since start.
    pub queued: u64,
    /// Calls refused with `BulkheadFull` since start.
    pub rejected: u64,
}

impl BulkheadStats {
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent.load(Ordering::Relaxed)
    }
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    pub fn snapshot(&self) -> BulkheadSnapshot {
        BulkheadSnapshot {
            max_concurrent: self.max_concurrent(),
            queue: self.queue.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
            waiting: self.waiting(),
            admitted: self.admitted(),
            queued: self.queued.load(Ordering::Relaxed),
            rejected: self.rejected(),
        }
    }
}

/// The shared limit of one dependency. Keep the `Arc` across reloads and [`resize`]
/// it, so calls in flight during a reload still count against the new limit.
///
/// [`resize`]: Bulkhead::resize
#[derive(Debug)]
pub struct Bulkhead {
    semaphore: Arc<Semaphore>,
    stats: Arc<BulkheadStats>,
    /// Permits to destroy as they come back, after a shrink found them in use.
    debt: AtomicU32,
    resize: Mutex<()>,
}

impl Bulkhead {
    /// `max_concurrent` of 0 is taken as 1 (config validation refuses 0 anyway).
    pub fn new(max_concurrent: u32, queue: u32) -> Arc<Self> {
        let max_concurrent = max_concurrent.max(1);
        let stats = BulkheadStats::default();
        stats
            .max_concurrent
            .store(max_concurrent, Ordering::Relaxed);
        stats.queue.store(queue, Ordering::Relaxed);
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(max_concurrent as usize)),
            stats: Arc::new(stats),
            debt: AtomicU32::new(0),
            resize: Mutex::new(()),
        })
    }

    pub fn stats(&self) -> &Arc<BulkheadStats> {
        &self.stats
    }

    pub fn in_flight(&self) -> u32 {
        self.stats.in_flight()
    }

    /// Apply new limits without forgetting the calls in flight: growing adds slots at
    /// once, shrinking removes free slots now and busy ones as they are released.
    pub fn resize(&self, max_concurrent: u32, queue: u32) {
        let max_concurrent = max_concurrent.max(1);
        let _one_at_a_time = self.resize.lock().unwrap_or_else(PoisonError::into_inner);
        self.stats.queue.store(queue, Ordering::Relaxed);
        let old = self
            .stats
            .max_concurrent
            .swap(max_concurrent, Ordering::Relaxed);
        if max_concurrent > old {
            let grow = max_concurrent - old;
            // Cancel outstanding debt first: those permits simply stay.
            let debt = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d.saturating_sub(grow))
                })
                .unwrap_or(0);
            let add = grow - debt.min(grow);
            self.semaphore.add_permits(add as usize);
        } else if max_concurrent < old {
            let shrink = old - max_concurrent;
            let forgotten = self.semaphore.forget_permits(shrink as usize);
            let owed = shrink.saturating_sub(u32::try_from(forgotten).unwrap_or(shrink));
            self.debt.fetch_add(owed, Ordering::AcqRel);
        }
    }

    fn admit(self: &Arc<Self>) -> Admission {
        match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(permit) => Admission::Now(self.slot(permit)),
            Err(TryAcquireError::NoPermits) => {
                let queue = self.stats.queue.load(Ordering::Relaxed);
                let queued = queue > 0
                    && self
                        .stats
                        .waiting
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                            (w < queue).then_some(w + 1)
                        })
                        .is_ok();
                if queued {
                    self.stats.queued.fetch_add(1, Ordering::Relaxed);
                    Admission::Wait(Waiter {
                        bulkhead: Arc::clone(self),
                    })
                } else {
                    self.reject()
                }
            }
            Err(TryAcquireError::Closed) => self.reject(),
        }
    }

    fn reject(&self) -> Admission {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        Admission::Reject(ProxyError::BulkheadFull {
            max: self.stats.max_concurrent(),
        })
    }

    fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        Slot {
            permit: Some(permit),
            bulkhead: Arc::clone(self),
        }
    }
}

enum Admission {
    Now(Slot),
    Wait(Waiter),
    Reject(ProxyError),
}

/// A place in the queue; gives the place back when dropped, admitted or not.
struct Waiter {
    bulkhead: Arc<Bulkhead>,
}

impl Waiter {
    async fn wait(self) -> Result<Slot, ProxyError> {
        match Arc::clone(&self.bulkhead.semaphore).acquire_owned().await {
            Ok(permit) => Ok(self.bulkhead.slot(permit)),
            Err(_closed) => Err(ProxyError::BulkheadFull {
                max: self.bulkhead.stats.max_concurrent(),
            }),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.bulkhead.stats.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One call in flight.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    bulkhead: Arc<Bulkhead>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.bulkhead
            .stats
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        let owed = self
            .bulkhead
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if let Some(permit) = self.permit.take() {
            if owed {
                permit.forget();
            }
        }
    }
}

pub type BulkheadLayer = PolicyLayer<Bulkhead>;
pub type BulkheadService<S> = PolicyService<S, Bulkhead>;

impl BulkheadLayer {
    pub fn new(max_concurrent: u32, queue: u32) -> Self {
        Self::shared(Bulkhead::new(max_concurrent, queue))
    }

    /// A layer over an existing limit (kept across reloads).
    pub fn shared(bulkhead: Arc<Bulkhead>) -> Self {
        Self { policy: bulkhead }
    }

    pub fn bulkhead(&self) -> &Arc<Bulkhead> {
        &self.policy
    }

    pub fn stats(&self) -> Arc<BulkheadStats> {
        Arc::clone(&self.policy.stats)
    }
}

impl Policy for Bulkhead {
    fn call<S: InnerService>(self: &Arc<Self>, inner: S, req: Request<Body>) -> ResponseFuture {
        match self.admit() {
            Admission::Now(slot) => {
                let call = inner.oneshot(req);
                Box::pin(call.map(move |result| {
                    drop(slot);
                    result
                }))
            }
            Admission::Wait(waiter) => Box::pin(waiter.wait().and_then(move |slot| {
                inner.oneshot(req).map(move |result| {
                    drop(slot);
                    result
                })
            })),
            Admission::Reject(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
