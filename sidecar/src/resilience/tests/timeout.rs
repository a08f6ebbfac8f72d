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
