//! Adaptive concurrency per upstream (`upstreams.NAME.adaptive_concurrency`), in the
//! spirit of Envoy's adaptive concurrency filter and Netflix's gradient limiter: the
//! number of requests in flight to an upstream is capped by a limit that follows its
//! latency. Beyond the limit a request is answered 503 at once, so a backend that
//! slows down under load sheds the excess before its queue (and everyone's latency)
//! grows without bound.
//!
//! Every `interval` the limit is recomputed from the latencies measured in it (request
//! sent to response head, answers below 500 only: a fast failure says nothing about
//! capacity):
//!
//! ```text
//! gradient  = clamp((min_rtt x (1 + buffer)) / p90(window), 0.5, 2.0)
//! limit     = clamp(limit x gradient + sqrt(limit x gradient), min_limit, max_limit)
//! ```
//!
//! so the limit grows (by its square root, then faster) while latency stays within
//! `buffer` of the minimum round-trip time, and shrinks (at most halving per interval)
//! when it rises. The minimum round-trip time is measured with the limit held at
//! `min_limit` until `min_rtt_samples` answers came back (their median), at startup
//! and every `min_rtt_interval` (with 10% jitter, so replicas do not measure at once):
//! measured under load it would drift up with the load it should detect.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tollgate_config::gateway::AdaptiveConcurrency;

use crate::metrics::METRICS;

pub struct AdaptiveLimit {
    pub cfg: AdaptiveConcurrency,
    in_flight: AtomicU32,
    limit: AtomicU32,
    window: Mutex<Window>,
    limit_gauge: IntGauge,
}

impl std::fmt::Debug for AdaptiveLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

struct Window {
    started: Instant,
    /// Latencies of this window, in microseconds.
    samples: Vec<u32>,
    min_rtt: Option<Duration>,
    /// Measuring the minimum round-trip time (the limit is held at `min_limit`).
    measuring: bool,
    next_measure: Instant,
}

/// A request's place under the limit, given back when dropped.
pub struct AdaptivePermit {
    limit: Arc<AdaptiveLimit>,
    started: Instant,
}

impl AdaptiveLimit {
    /// The previous limiter when its settings are unchanged (its limit and the
    /// requests in flight carry over), else a new one.
    pub fn build(
        cfg: AdaptiveConcurrency,
        upstream: &str,
        previous: Option<&Arc<Self>>,
    ) -> Arc<Self> {
        if let Some(p) = previous.filter(|p| p.cfg == cfg) {
            return p.clone();
        }
        let now = Instant::now();
        let limit_gauge = METRICS.adaptive_limit.with_label_values(&[upstream]);
        limit_gauge.set(i64::from(cfg.min_limit));
        Arc::new(Self {
            in_flight: AtomicU32::new(0),
            limit: AtomicU32::new(cfg.min_limit),
            window: Mutex::new(Window {
                started: now,
                samples: Vec::new(),
                min_rtt: None,
                measuring: true,
                next_measure: now,
            }),
            limit_gauge,
            cfg,
        })
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// A place under the limit, or `None` (shed).
    pub fn try_acquire(self: &Arc<Self>) -> Option<AdaptivePermit> {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(AdaptivePermit {
            limit: self.clone(),
            started: Instant::now(),
        })
    }

    fn record(&self, rtt: Duration, now: Instant) {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        w.samples
            .push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
        if w.measuring {
            if w.samples.len() >= self.cfg.min_rtt_samples as usize {
                let median = percentile(&mut w.samples, 0.5);
                w.min_rtt = Some(Duration::from_micros(u64::from(median)));
                w.measuring = false;
                let jitter = rand::random_range(0.9..1.1);
                w.next_measure = now + self.cfg.min_rtt_interval.mul_f64(jitter);
                w.samples.clear();
                w.started = now;
            }
            return;
        }
        if now.duration_since(w.started) < self.cfg.interval {
            return;
        }
        let sample = percentile(&mut w.samples, 0.9);
        w.samples.clear();
        w.started = now;
        let Some(min_rtt) = w.min_rtt else {
            return;
        };
        if now >= w.next_measure {
            // Measure the minimum again, at the lowest concurrency.
            w.measuring = true;
            self.set_limit(self.cfg.min_limit);
            return;
        }
        let target = min_rtt.as_secs_f64() * (1.0 + self.cfg.buffer);
        let sample = f64::from(sample.max(1)) / 1e6;
        let limit = next_limit(self.limit(), target / sample, &self.cfg);
        self.set_limit(limit);
    }

    fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
        self.limit_gauge.set(i64::from(limit));
    }
}

/// The limit after an interval whose latency ratio (target / sample) was `ratio`.
fn next_limit(limit: u32, ratio: f64, cfg: &AdaptiveConcurrency) -> u32 {
    let gradient = ratio.clamp(0.5, 2.0);
    let scaled = f64::from(limit) * gradient;
    let next = scaled + scaled.sqrt();
    (next.round() as u32).clamp(cfg.min_limit, cfg.max_limit)
}

/// The `q` quantile of `v` (reorders it).
fn percentile(v: &mut [u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    *v.select_nth_unstable(i).1
}

impl AdaptivePermit {
    /// The upstream answered (below 500): its latency is a sample.
    pub fn answered(&self) {
        let now = Instant::now();
        self.limit.record(now.duration_since(self.started), now);
    }
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> AdaptiveConcurrency {
        AdaptiveConcurrency {
            min_limit: 2,
            max_limit: 100,
            buffer: 0.25,
            interval: Duration::from_millis(100),
            min_rtt_interval: Duration::from_secs(30),
            min_rtt_samples: 5,
        }
    }

    #[test]
    fn the_limit_grows_while_latency_holds_and_shrinks_when_it_rises() {
        let c = cfg();
        assert_eq!(next_limit(10, 2.0, &c), 24); // 20 + sqrt(20)
        assert_eq!(next_limit(10, 1.0, &c), 13); // 10 + sqrt(10)
        assert_eq!(next_limit(40, 0.5, &c), 24); // halved, plus headroom
        assert_eq!(next_limit(40, 0.01, &c), 24); // never below half per interval
        assert_eq!(next_limit(2, 0.5, &c), 2); // never below min_limit
        assert_eq!(next_limit(90, 2.0, &c), 100); // nor above max_limit
    }

    #[test]
    fn min_rtt_is_measured_first_then_latency_drives_the_limit() {
        let l = AdaptiveLimit::build(cfg(), "t", None);
        assert_eq!(l.limit(), 2, "starts at min_limit, measuring");
        let a = l.try_acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none(), "shed beyond the limit");
        drop((a, b));
        let t0 = Instant::now();
        for i in 0..5 {
            l.record(Duration::from_millis(10), t0 + Duration::from_millis(i));
        }
        // Fast answers: the limit grows window after window.
        let mut now = t0;
        for _ in 0..8 {
            now += Duration::from_millis(101);
            l.record(Duration::from_millis(10), now);
        }
        let grown = l.limit();
        assert!(grown > 20, "{grown}");
        // Latency three times the minimum: it shrinks.
        for _ in 0..3 {
            now += Duration::from_millis(101);
            l.record(Duration::from_millis(30), now);
        }
        assert!(l.limit() < grown / 2, "{} vs {grown}", l.limit());
    }

    #[test]
    fn percentiles() {
        let mut v = vec![5, 1, 4, 2, 3];
        assert_eq!(percentile(&mut v, 0.5), 3);
        assert_eq!(percentile(&mut v, 0.9), 5);
        assert_eq!(percentile(&mut [], 0.9), 0);
    }
}
