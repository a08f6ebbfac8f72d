//! Micro-benchmarks of the per-call bookkeeping of the sidecar's resilience policies
//! (no I/O, no tower stack: the shared state each call touches):
//!
//! - `ratelimit/admit`: `RateLimiter::try_acquire` at a rate so high every call is
//!   admitted (1e9/s, a burst of 1e9);
//! - `ratelimit/refuse`: the same at 1/h with its single token spent, so every call
//!   is refused (and told how long to wait);
//! - `breaker/closed_call`: one closed-state call through `CircuitBreaker`:
//!   `try_acquire` then `BreakerPermit::record(CallOutcome::Success)` (the window is
//!   updated and checked against the thresholds);
//! - `breaker/closed_call_cancelled`: the same, the permit dropped without an outcome
//!   (a call cancelled by the app).
//!
//! Run: `cargo bench -p sidecar --bench resilience` (add `-- --quick` for a fast pass).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sidecar_lib::resilience::{BreakerState, CallOutcome, CircuitBreaker, RateLimiter};
use tollgate_config::sidecar::Breaker;
use tollgate_config::units::Rate;

fn bench_ratelimit(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit");

    let open = RateLimiter::new(Rate {
        count: 1_000_000_000,
        per: Duration::from_secs(1),
    });
    assert!((0..1000).all(|_| open.try_acquire().is_ok()));
    g.bench_function("admit", |b| b.iter(|| black_box(&open).try_acquire()));
    assert_eq!(open.snapshot().limited, 0, "every call was admitted");

    let shut = RateLimiter::new(Rate {
        count: 1,
        per: Duration::from_secs(3600),
    });
    assert!(shut.try_acquire().is_ok(), "the one token of the burst");
    assert!(shut.try_acquire().is_err());
    g.bench_function("refuse", |b| b.iter(|| black_box(&shut).try_acquire()));
    assert_eq!(shut.snapshot().admitted, 1, "every call was refused");

    g.finish();
}

fn bench_breaker(c: &mut Criterion) {
    // The example sidecar's `payments` breaker, plus slow-call detection.
    let cfg = Breaker {
        failure_rate: 0.5,
        slow_call: Some(Duration::from_millis(300)),
        slow_call_rate: Some(0.8),
        min_requests: 20,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        max_open_for: Duration::from_secs(60),
        half_open_probes: 3,
        observe_only: false,
    };
    let breaker = Arc::new(CircuitBreaker::new(&cfg).with_name("bench"));

    let mut g = c.benchmark_group("breaker");
    g.bench_function("closed_call", |b| {
        b.iter(|| {
            let permit = black_box(&breaker).try_acquire().unwrap();
            permit.record(black_box(CallOutcome::Success));
        })
    });
    g.bench_function("closed_call_cancelled", |b| {
        b.iter(|| drop(black_box(&breaker).try_acquire().unwrap()))
    });
    g.finish();

    let snap = breaker.snapshot();
    assert_eq!(snap.state, BreakerState::Closed);
    assert_eq!(snap.failures, 0);
    assert_eq!(snap.transitions.to_open, 0, "never tripped");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = bench_ratelimit, bench_breaker
}
criterion_main!(benches);
