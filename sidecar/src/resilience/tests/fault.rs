use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;
use tollgate_config::sidecar::{Breaker, Fault};
use tower::Layer;

use super::{call, code, get, Fake, Step};
use crate::error::ProxyError;
use crate::resilience::{classify, BreakerLayer, CallOutcome, CircuitBreaker, FaultLayer};

const MS: Duration = Duration::from_millis(1);
const CHAOS: HeaderName = HeaderName::from_static("x-chaos");

fn none() -> Fault {
    Fault {
        delay: None,
        delay_fraction: 0.0,
        abort_status: None,
        abort_fraction: 0.0,
        only_with_header: None,
    }
}

fn abort(status: u16, fraction: f64) -> Fault {
    Fault {
        abort_status: Some(status),
        abort_fraction: fraction,
        ..none()
    }
}

fn delay(d: Duration, fraction: f64) -> Fault {
    Fault {
        delay: Some(d),
        delay_fraction: fraction,
        ..none()
    }
}

fn with_chaos_header() -> http::Request<crate::body::Body> {
    let mut r = get();
    r.headers_mut().insert(CHAOS, HeaderValue::from_static("1"));
    r
}

#[tokio::test(start_paused = true)]
async fn an_abort_answers_the_status_without_calling_the_dependency() {
    let fake = Fake::new([Step::Status(200)]);
    let svc = FaultLayer::new(abort(503, 1.0)).layer(fake.service());
    let start = Instant::now();
    for _ in 0..10 {
        let err = call(&svc, get()).await.unwrap_err();
        assert!(matches!(err, ProxyError::FaultInjected(503)));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.kind(), "fault_injected");
        assert!(!err.is_dependency_failure());
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(fake.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_abort_fraction_is_respected() {
    let fake = Fake::new([Step::Status(200)]);
    let svc = FaultLayer::new(abort(500, 0.5)).layer(fake.service());
    let mut aborted = 0;
    for _ in 0..2000 {
        if call(&svc, get()).await.is_err() {
            aborted += 1;
        }
    }
    assert!((800..1200).contains(&aborted), "{aborted} of 2000");
    assert_eq!(fake.calls(), 2000 - aborted);

    let svc = FaultLayer::new(abort(500, 0.0)).layer(fake.service());
    for _ in 0..200 {
        assert_eq!(code(&svc, get()).await, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn only_calls_with_the_header_are_faulted() {
    let fake = Fake::new([Step::Status(200)]);
    let fault = Fault {
        only_with_header: Some(CHAOS),
        ..abort(418, 1.0)
    };
    let svc = FaultLayer::new(fault).layer(fake.service());
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(fake.calls(), 1);
    let err = call(&svc, with_chaos_header()).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_delay_holds_the_call_before_it_reaches_the_dependency() {
    let fake = Fake::new([Step::Status(200)]);
    let svc = FaultLayer::new(delay(300 * MS, 1.0)).layer(fake.service());
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(start.elapsed(), 300 * MS);
    assert_eq!(fake.times(), vec![start + 300 * MS]);
}

#[tokio::test(start_paused = true)]
async fn the_delay_respects_the_header_and_its_fraction() {
    let fake = Fake::new([Step::Status(200)]);
    let fault = Fault {
        only_with_header: Some(CHAOS),
        ..delay(300 * MS, 1.0)
    };
    let svc = FaultLayer::new(fault).layer(fake.service());
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(code(&svc, with_chaos_header()).await, 200);
    assert_eq!(start.elapsed(), 300 * MS);

    let svc = FaultLayer::new(delay(300 * MS, 0.0)).layer(fake.service());
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn delay_and_abort_together_delay_then_abort() {
    let fake = Fake::new([Step::Status(200)]);
    let fault = Fault {
        delay: Some(200 * MS),
        delay_fraction: 1.0,
        ..abort(503, 1.0)
    };
    let svc = FaultLayer::new(fault).layer(fake.service());
    let start = Instant::now();
    assert!(matches!(
        call(&svc, get()).await,
        Err(ProxyError::FaultInjected(503))
    ));
    assert_eq!(start.elapsed(), 200 * MS);
    assert_eq!(fake.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_abort_share_without_a_status_injects_nothing() {
    let fake = Fake::new([Step::Status(200)]);
    let fault = Fault {
        abort_fraction: 1.0,
        ..none()
    };
    let svc = FaultLayer::new(fault).layer(fake.service());
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn injected_aborts_never_count_as_failures_of_the_dependency() {
    assert_eq!(
        classify(&Err(ProxyError::FaultInjected(503))),
        CallOutcome::Ignored
    );
    // Even with the breaker outside the fault layer, aborts do not trip it.
    let breaker = Arc::new(CircuitBreaker::new(&Breaker {
        failure_rate: 0.5,
        slow_call: None,
        slow_call_rate: None,
        min_requests: 1,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        max_open_for: Duration::from_secs(60),
        half_open_probes: 1,
        observe_only: false,
    }));
    let fake = Fake::new([Step::Status(200)]);
    let svc = BreakerLayer::new(Arc::clone(&breaker))
        .layer(FaultLayer::new(abort(503, 1.0)).layer(fake.service()));
    for _ in 0..20 {
        assert!(call(&svc, get()).await.is_err());
    }
    let s = breaker.snapshot();
    assert_eq!((s.calls, s.failures, s.trips), (0, 0, 0));
}
