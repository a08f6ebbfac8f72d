use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tollgate_config::sidecar::Breaker;
use tower::{Layer, ServiceExt};

use super::{call, code, get, status, until, Fake, FakeService, Step};
use crate::error::ProxyError;
use crate::resilience::breaker::BreakerService;
use crate::resilience::{
    classify, BreakerLayer, BreakerState, CallOutcome, CircuitBreaker, TransitionCounts,
};

const SEC: Duration = Duration::from_secs(1);

fn cfg() -> Breaker {
    Breaker {
        failure_rate: 0.5,
        slow_call: None,
        slow_call_rate: None,
        min_requests: 5,
        window: 10 * SEC,
        open_for: 5 * SEC,
        max_open_for: 60 * SEC,
        half_open_probes: 2,
        observe_only: false,
    }
}

fn stack(cfg: &Breaker, fake: &Fake) -> (Arc<CircuitBreaker>, BreakerService<FakeService>) {
    let breaker = Arc::new(CircuitBreaker::new(cfg).with_name("test"));
    let svc = BreakerLayer::new(Arc::clone(&breaker)).layer(fake.service());
    (breaker, svc)
}

async fn trip(svc: &BreakerService<FakeService>, breaker: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        let _ = call(svc, get()).await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}

fn is_open_error(r: &Result<http::Response<crate::body::Body>, ProxyError>) -> bool {
    matches!(r, Err(ProxyError::CircuitOpen { .. }))
}

#[tokio::test(start_paused = true)]
async fn all_503_trips_after_min_requests_then_fails_fast_without_calling() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = stack(&cfg(), &fake);
    for _ in 0..4 {
        assert_eq!(code(&svc, get()).await, 503);
        assert_eq!(breaker.state(), BreakerState::Closed, "below min_requests");
    }
    assert_eq!(code(&svc, get()).await, 503);
    assert_eq!(breaker.state(), BreakerState::Open);

    for _ in 0..10 {
        // Refused on the first poll: no waiting, no network.
        match svc.clone().oneshot(get()).now_or_never() {
            Some(Err(ProxyError::CircuitOpen { retry_after })) => {
                assert!(
                    retry_after <= 5 * SEC && retry_after > 4 * SEC,
                    "{retry_after:?}"
                );
            }
            other => panic!("expected CircuitOpen, got {other:?}"),
        }
    }
    assert_eq!(fake.calls(), 5);
    let s = breaker.snapshot();
    assert_eq!((s.rejected, s.trips, s.calls, s.failures), (10, 1, 5, 5));
    assert_eq!(s.failure_rate, 1.0);
    assert_eq!(s.open_remaining_ms, 5000);
}

#[tokio::test(start_paused = true)]
async fn under_the_failure_rate_stays_closed() {
    // 2 of 5 failed: 40% < 50%.
    let fake = Fake::new([
        Step::Status(503),
        Step::Status(200),
        Step::Status(503),
        Step::Status(200),
        Step::Status(200),
    ]);
    let (breaker, svc) = stack(&cfg(), &fake);
    for _ in 0..5 {
        let _ = call(&svc, get()).await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot().failure_rate, 0.4);
    // One more failure: 3 of 6 = 50%: trips.
    fake.then([Step::Status(500)]);
    let _ = call(&svc, get()).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_failures_slide_out_of_the_window() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = stack(&cfg(), &fake);
    for _ in 0..4 {
        let _ = call(&svc, get()).await;
    }
    tokio::time::advance(11 * SEC).await;
    let _ = call(&svc, get()).await;
    let s = breaker.snapshot();
    assert_eq!((s.state, s.calls), (BreakerState::Closed, 1));
}

#[tokio::test(start_paused = true)]
async fn half_open_after_open_for_and_closes_after_the_probes_succeed() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = stack(&cfg(), &fake);
    trip(&svc, &breaker, 5).await;

    tokio::time::advance(5 * SEC - Duration::from_millis(1)).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    fake.then([Step::Status(200)]);
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(breaker.state(), BreakerState::HalfOpen, "one probe of two");
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(breaker.state(), BreakerState::Closed);

    let s = breaker.snapshot();
    assert_eq!((s.trips, s.calls, s.failures), (0, 0, 0), "window cleared");
    assert_eq!(
        s.transitions,
        TransitionCounts {
            to_open: 1,
            to_half_open: 1,
            to_closed: 1
        }
    );
    // Closed again: it takes min_requests failures to trip anew, at the base open time.
    fake.then([Step::Status(503)]);
    trip(&svc, &breaker, 5).await;
    assert_eq!(breaker.snapshot().open_remaining_ms, 5000);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_half_open_probes_at_a_time() {
    let fake = Fake::new([Step::Status(503)]);
    let mut c = cfg();
    c.half_open_probes = 1;
    let (breaker, svc) = stack(&c, &fake);
    trip(&svc, &breaker, 5).await;
    tokio::time::advance(5 * SEC).await;

    fake.then([Step::Gated(200)]);
    let probe = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 6).await;
    let other = svc.clone().oneshot(get()).now_or_never().unwrap();
    assert!(is_open_error(&other));
    assert_eq!(fake.calls(), 6);
    assert_eq!(breaker.snapshot().half_open_in_flight, 1);

    fake.release(1);
    assert_eq!(probe.await.unwrap().unwrap().status(), 200);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_twice_as_long_up_to_max_open_for() {
    let fake = Fake::new([Step::Status(503)]);
    let mut c = cfg();
    c.max_open_for = 15 * SEC;
    let (breaker, svc) = stack(&c, &fake);
    trip(&svc, &breaker, 5).await;
    assert_eq!(breaker.snapshot().open_remaining_ms, 5_000);

    tokio::time::advance(5 * SEC).await;
    assert_eq!(code(&svc, get()).await, 503);
    let s = breaker.snapshot();
    assert_eq!(
        (s.state, s.trips, s.open_remaining_ms),
        (BreakerState::Open, 2, 10_000)
    );

    tokio::time::advance(9 * SEC).await;
    assert!(is_open_error(&call(&svc, get()).await));
    tokio::time::advance(SEC).await;
    assert_eq!(code(&svc, get()).await, 503);
    let s = breaker.snapshot();
    // 20 s, capped at 15 s.
    assert_eq!((s.trips, s.open_remaining_ms), (3, 15_000));

    tokio::time::advance(15 * SEC).await;
    assert_eq!(code(&svc, get()).await, 503);
    assert_eq!(breaker.snapshot().open_remaining_ms, 15_000);
    assert_eq!(fake.calls(), 8);
}

#[tokio::test(start_paused = true)]
async fn an_error_of_the_dependency_fails_a_probe_too() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = stack(&cfg(), &fake);
    trip(&svc, &breaker, 5).await;
    tokio::time::advance(5 * SEC).await;
    fake.then([Step::Fail(ProxyError::Connect("refused".into()))]);
    let _ = call(&svc, get()).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.snapshot().trips, 2);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_it() {
    let fake = Fake::new([Step::Sleep(Duration::from_millis(200), 200)]);
    let mut c = cfg();
    c.slow_call = Some(Duration::from_millis(100));
    c.slow_call_rate = Some(0.8);
    let (breaker, svc) = stack(&c, &fake);
    for _ in 0..4 {
        assert_eq!(code(&svc, get()).await, 200);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(code(&svc, get()).await, 200);
    let s = breaker.snapshot();
    assert_eq!(
        (s.state, s.failures, s.slow_calls),
        (BreakerState::Open, 0, 5)
    );
    assert_eq!(s.slow_rate, 1.0);
}

#[tokio::test(start_paused = true)]
async fn fast_calls_do_not_count_as_slow() {
    let fake = Fake::new([Step::Sleep(Duration::from_millis(100), 200)]);
    let mut c = cfg();
    c.slow_call = Some(Duration::from_millis(100));
    c.slow_call_rate = Some(0.5);
    let (breaker, svc) = stack(&c, &fake);
    for _ in 0..10 {
        let _ = call(&svc, get()).await;
    }
    let s = breaker.snapshot();
    assert_eq!((s.state, s.slow_calls), (BreakerState::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_reopens() {
    let fake = Fake::new([Step::Sleep(Duration::from_millis(200), 200)]);
    let mut c = cfg();
    c.slow_call = Some(Duration::from_millis(100));
    c.slow_call_rate = Some(0.5);
    let (breaker, svc) = stack(&c, &fake);
    trip(&svc, &breaker, 5).await;
    tokio::time::advance(5 * SEC).await;
    let _ = call(&svc, get()).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_cancelled_after_slow_call_counts_as_slow() {
    // A timeout outside the breaker cancels hung calls: they still count as slow.
    let fake = Fake::new([Step::Hang]);
    let mut c = cfg();
    c.slow_call = Some(Duration::from_millis(100));
    c.slow_call_rate = Some(0.5);
    let (breaker, svc) = stack(&c, &fake);
    for _ in 0..5 {
        let r = tokio::time::timeout(SEC, call(&svc, get())).await;
        assert!(r.is_err());
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    // Cancelled before slow_call: not counted at all.
    let fake = Fake::new([Step::Hang]);
    let (breaker, svc) = stack(&c, &fake);
    for _ in 0..5 {
        let _ = tokio::time::timeout(Duration::from_millis(50), call(&svc, get())).await;
    }
    let s = breaker.snapshot();
    assert_eq!((s.state, s.calls), (BreakerState::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_gives_its_place_back() {
    let fake = Fake::new([Step::Status(503)]);
    let mut c = cfg();
    c.half_open_probes = 1;
    let (breaker, svc) = stack(&c, &fake);
    trip(&svc, &breaker, 5).await;
    tokio::time::advance(5 * SEC).await;
    fake.then([Step::Hang]);
    let gave_up = tokio::time::timeout(Duration::from_millis(10), call(&svc, get())).await;
    assert!(gave_up.is_err());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.snapshot().half_open_in_flight, 0);
    fake.then([Step::Status(200)]);
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn observe_only_reports_open_but_never_refuses() {
    let fake = Fake::new([Step::Status(503)]);
    let mut c = cfg();
    c.observe_only = true;
    let (breaker, svc) = stack(&c, &fake);
    for _ in 0..5 {
        assert_eq!(code(&svc, get()).await, 503);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    for _ in 0..10 {
        assert_eq!(code(&svc, get()).await, 503);
    }
    assert_eq!(fake.calls(), 15, "every call reached the dependency");
    let s = breaker.snapshot();
    assert_eq!((s.rejected, s.observed_rejections), (0, 10));
    assert!(s.observe_only);
    assert_eq!(
        s.transitions.to_open, 1,
        "calls it would have refused do not re-trip it"
    );

    // The rest of the state machine runs as usual.
    tokio::time::advance(5 * SEC).await;
    fake.then([Step::Status(200)]);
    for _ in 0..2 {
        assert_eq!(code(&svc, get()).await, 200);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn reconfigure_keeps_the_state() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = stack(&cfg(), &fake);
    trip(&svc, &breaker, 5).await;
    tokio::time::advance(SEC).await;

    let mut c = cfg();
    c.failure_rate = 0.9;
    c.open_for = SEC;
    c.min_requests = 50;
    breaker.reconfigure(&c);
    let s = breaker.snapshot();
    assert_eq!((s.state, s.trips, s.calls), (BreakerState::Open, 1, 5));
    assert_eq!(
        s.open_remaining_ms, 4_000,
        "the current open period is kept"
    );
    assert!(is_open_error(&call(&svc, get()).await));
    assert_eq!(breaker.config().min_requests, 50);

    // A new window length drops the counts, not the state.
    c.window = 20 * SEC;
    breaker.reconfigure(&c);
    let s = breaker.snapshot();
    assert_eq!((s.state, s.trips, s.calls), (BreakerState::Open, 1, 0));

    // Observe-only switched on in a reload stops refusing at once.
    c.observe_only = true;
    breaker.reconfigure(&c);
    assert_eq!(code(&svc, get()).await, 503);
}

#[tokio::test(start_paused = true)]
async fn counts_in_a_closed_window_survive_a_reload() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = stack(&cfg(), &fake);
    for _ in 0..4 {
        let _ = call(&svc, get()).await;
    }
    breaker.reconfigure(&cfg());
    assert_eq!(breaker.snapshot().calls, 4);
    let _ = call(&svc, get()).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn errors_made_on_our_side_are_not_counted() {
    for e in [
        ProxyError::BulkheadFull { max: 1 },
        ProxyError::RateLimited,
        ProxyError::CircuitOpen { retry_after: SEC },
        ProxyError::Body("client went away".into()),
    ] {
        let fake = Fake::new([Step::Fail(e)]);
        let (breaker, svc) = stack(&cfg(), &fake);
        for _ in 0..10 {
            let _ = call(&svc, get()).await;
        }
        let s = breaker.snapshot();
        assert_eq!((s.state, s.calls), (BreakerState::Closed, 0));
    }
    for e in [
        ProxyError::Timeout(SEC),
        ProxyError::Connect("refused".into()),
        ProxyError::Reset("eof".into()),
        ProxyError::Refused("goaway".into()),
    ] {
        let fake = Fake::new([Step::Fail(e)]);
        let (breaker, svc) = stack(&cfg(), &fake);
        for _ in 0..5 {
            let _ = call(&svc, get()).await;
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}

#[test]
fn classify_reads_statuses_and_errors() {
    assert_eq!(classify(&Ok(status(200))), CallOutcome::Success);
    assert_eq!(classify(&Ok(status(404))), CallOutcome::Success);
    assert_eq!(classify(&Ok(status(429))), CallOutcome::Success);
    assert_eq!(classify(&Ok(status(500))), CallOutcome::Failure);
    assert_eq!(classify(&Ok(status(503))), CallOutcome::Failure);
    assert_eq!(
        classify(&Err(ProxyError::Timeout(SEC))),
        CallOutcome::Failure
    );
    assert_eq!(
        classify(&Err(ProxyError::RateLimited)),
        CallOutcome::Ignored
    );
}

#[tokio::test(start_paused = true)]
async fn the_transition_hook_sees_every_transition() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let breaker = Arc::new(
        CircuitBreaker::new(&cfg()).with_on_transition(move |from, to| {
            log.lock().unwrap().push((from, to));
        }),
    );
    let fake = Fake::new([Step::Status(503)]);
    let svc = BreakerLayer::new(Arc::clone(&breaker)).layer(fake.service());
    trip(&svc, &breaker, 5).await;
    tokio::time::advance(5 * SEC).await;
    fake.then([Step::Status(200)]);
    for _ in 0..2 {
        let _ = call(&svc, get()).await;
    }
    use BreakerState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_answer_from_before_the_trip_does_not_count_after_it() {
    let fake = Fake::new([Step::Gated(503)]);
    let mut c = cfg();
    c.half_open_probes = 1;
    c.min_requests = 1;
    let (breaker, svc) = stack(&c, &fake);
    // Two slow calls admitted while closed...
    let late: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(get())))
        .collect();
    until(|| fake.calls() == 2).await;
    // ...then the breaker trips and half-opens.
    fake.then([Step::Status(503)]);
    trip(&svc, &breaker, 1).await;
    tokio::time::advance(5 * SEC).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    // A late failure while half-open is not a probe: it does not reopen the breaker.
    let mut late = late.into_iter();
    fake.release(1);
    let first = late.next().unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), 503);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    // The probe closes it; the other late failure must not count in the new window.
    fake.then([Step::Status(200)]);
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(breaker.state(), BreakerState::Closed);
    fake.release(1);
    assert_eq!(late.next().unwrap().await.unwrap().unwrap().status(), 503);
    let s = breaker.snapshot();
    assert_eq!((s.state, s.calls), (BreakerState::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn snapshot_serializes_for_the_admin_endpoint() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = stack(&cfg(), &fake);
    trip(&svc, &breaker, 5).await;
    let v = serde_json::to_value(breaker.snapshot()).unwrap();
    assert_eq!(v["state"], "open");
    assert_eq!(v["failure_rate"], 1.0);
    assert_eq!(v["calls"], 5);
    assert_eq!(v["trips"], 1);
    assert_eq!(v["open_remaining_ms"], 5000);
    assert_eq!(v["observe_only"], false);
    assert_eq!(v["transitions"]["to_open"], 1);
    tokio::time::advance(5 * SEC).await;
    assert_eq!(
        serde_json::to_value(breaker.snapshot()).unwrap()["state"],
        "half_open"
    );
}
