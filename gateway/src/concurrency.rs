//! Per-route concurrency limits (`routes[i].concurrency`): at most `max` requests of
//! the route in flight in this gateway; the next `queue` wait up to `queue_timeout`
//! for a slot; the rest are answered 503 at once, without touching a backend. This
//! protects a backend from a pile-up (a slow dependency, a retry storm) the way
//! Envoy's and Linkerd's concurrency limits do.
//!
//! The limiter is carried over across reloads while its settings stay the same, so the
//! requests in flight keep counting against it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tollgate_config::gateway::Concurrency;

use crate::filters::Rejection;

#[derive(Debug)]
pub struct ConcurrencyLimit {
    pub cfg: Concurrency,
    slots: Arc<Semaphore>,
    waiting: AtomicU32,
    /// `gateway_concurrency_queued{scope, name}`.
    queued: prometheus::IntGauge,
}

impl ConcurrencyLimit {
    /// The previous limiter when its settings are unchanged, else a new one. `scope`
    /// (`route` or `upstream`) and `name` label its queue-depth gauge.
    pub fn build(
        cfg: Concurrency,
        previous: Option<&Arc<Self>>,
        scope: &str,
        name: &str,
    ) -> Arc<Self> {
        match previous {
            Some(p) if p.cfg == cfg => p.clone(),
            _ => Arc::new(Self {
                cfg,
                slots: Arc::new(Semaphore::new(cfg.max as usize)),
                waiting: AtomicU32::new(0),
                queued: crate::metrics::METRICS
                    .concurrency_queued
                    .with_label_values(&[scope, name]),
            }),
        }
    }

    /// A slot, held until the permit is dropped (the request ended); `None` when the
    /// route is full and its queue is full or the wait ran out.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        // Join the queue if there is room.
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.cfg.queue).then_some(w + 1)
            })
            .is_ok();
        if !queued {
            return None;
        }
        self.queued.inc();
        let got = tokio::time::timeout(self.cfg.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.queued.dec();
        got
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.cfg.max - self.slots.available_permits() as u32
    }
}

/// Take the upstream's concurrency slot and adaptive-limit place for the request,
/// or say why not (503, without reaching a backend).
pub async fn upstream_slots(
    ctx: &mut crate::context::Ctx,
    upstream: &crate::balance::UpstreamRt,
) -> Option<Rejection> {
    let name = &upstream.cfg.name;
    if let Some(limit) = &upstream.concurrency {
        match limit.acquire().await {
            Some(slot) => ctx.upstream_slot = Some(slot),
            None => {
                let detail = format!(
                    "upstream {name} has {} requests in flight, its limit",
                    limit.cfg.max
                );
                return Some(
                    Rejection::new(503, "concurrency_limited", detail).retry_after(RETRY_AFTER),
                );
            }
        }
    }
    if let Some(adaptive) = &upstream.adaptive {
        match adaptive.try_acquire() {
            Some(p) => ctx.adaptive = Some(p),
            None => {
                let detail = format!(
                    "upstream {name} is at its adaptive concurrency limit ({})",
                    adaptive.limit()
                );
                return Some(
                    Rejection::new(503, "adaptive_concurrency_limited", detail)
                        .retry_after(RETRY_AFTER),
                );
            }
        }
    }
    None
}

const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn limit(max: u32, queue: u32) -> Arc<ConcurrencyLimit> {
        ConcurrencyLimit::build(
            Concurrency {
                max,
                queue,
                queue_timeout: Duration::from_millis(50),
            },
            None,
            "route",
            "t",
        )
    }

    #[tokio::test]
    async fn slots_then_queue_then_refusal() {
        let l = limit(2, 1);
        let a = l.acquire().await.unwrap();
        let _b = l.acquire().await.unwrap();
        assert_eq!(l.in_flight(), 2);
        // The third waits in the queue and gets the slot `a` frees.
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The queue (1) is full: refused at once.
        assert!(l.acquire().await.is_none());
        drop(a);
        let _c = waiter
            .await
            .unwrap()
            .expect("the queued request got the freed slot");
        // A queued request whose wait runs out is refused.
        assert!(l.acquire().await.is_none());
    }

    #[test]
    fn a_reload_keeps_an_unchanged_limiter() {
        let l = limit(2, 0);
        let same = ConcurrencyLimit::build(l.cfg, Some(&l), "route", "t");
        assert!(Arc::ptr_eq(&l, &same));
        let mut other = l.cfg;
        other.max = 3;
        assert!(!Arc::ptr_eq(
            &l,
            &ConcurrencyLimit::build(other, Some(&l), "route", "t")
        ));
    }
}
