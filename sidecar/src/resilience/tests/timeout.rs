use std::time::Duration;

use tokio::time::Instant;
use tower::Layer;

use super::{call, code, get, Fake, Step};
use crate::error::ProxyError;
use crate::resilience::TimeoutLayer;

#[tokio::test(start_paused = true)]
async fn expiry_becomes_a_timeout_error_at_the_deadline() {
    let fake = Fake::new([Step::Sleep(Duration::from_secs(10), 200)]);
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(fake.service());
    let start = Instant::now();
    let err = call(&svc, get()).await.unwrap_err();
    assert!(matches!(err, ProxyError::Timeout(d) if d == Duration::from_secs(1)));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.status(), http::StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn answers_in_time_pass_through() {
    let fake = Fake::new([Step::Sleep(Duration::from_millis(999), 201)]);
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(fake.service());
    assert_eq!(code(&svc, get()).await, 201);
}

#[tokio::test(start_paused = true)]
async fn errors_pass_through_unchanged() {
    let fake = Fake::new([Step::Fail(ProxyError::Reset("peer".into()))]);
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(fake.service());
    assert!(matches!(call(&svc, get()).await, Err(ProxyError::Reset(_))));
}

fn grpc_get(timeout: Option<&'static str>) -> http::Request<crate::body::Body> {
    let mut r = get();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    if let Some(t) = timeout {
        r.headers_mut()
            .insert("grpc-timeout", http::HeaderValue::from_static(t));
    }
    r
}

#[tokio::test(start_paused = true)]
async fn a_sooner_grpc_timeout_is_the_calls_deadline_and_not_the_dependencys_fault() {
    let fake = Fake::new([Step::Sleep(Duration::from_secs(10), 200)]);
    let svc = TimeoutLayer::call_deadline(Duration::from_secs(2)).layer(fake.service());
    let start = Instant::now();
    let err = call(&svc, grpc_get(Some("300m"))).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(matches!(err, ProxyError::DeadlineExceeded(d) if d == Duration::from_millis(300)));
    assert!(!err.is_dependency_failure());
    assert_eq!(err.grpc_code(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_later_or_absent_grpc_timeout_leaves_the_dependencys_timeout() {
    for t in [Some("1M"), None, Some("bogus"), Some("123456789S")] {
        let fake = Fake::new([Step::Sleep(Duration::from_secs(10), 200)]);
        let svc = TimeoutLayer::call_deadline(Duration::from_secs(2)).layer(fake.service());
        let err = call(&svc, grpc_get(t)).await.unwrap_err();
        assert!(matches!(err, ProxyError::Timeout(_)), "{t:?}: {err:?}");
        assert!(err.is_dependency_failure());
    }
    // Not a gRPC call: grpc-timeout means nothing.
    let fake = Fake::new([Step::Sleep(Duration::from_secs(10), 200)]);
    let svc = TimeoutLayer::call_deadline(Duration::from_secs(2)).layer(fake.service());
    let mut req = get();
    req.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("1m"));
    let start = Instant::now();
    assert!(matches!(call(&svc, req).await, Err(ProxyError::Timeout(_))));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}
