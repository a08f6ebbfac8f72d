use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{header, StatusCode};
use tollgate_config::units::Rate;
use tower::{Layer, ServiceExt};

use super::{code, get, Fake, Step};
use crate::error::ProxyError;
use crate::resilience::{RateLimitLayer, RateLimiter};

const MS: Duration = Duration::from_millis(1);

fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_one_seconds_worth_then_one_per_interval() {
    let fake = Fake::new([Step::Status(200)]);
    let limiter = Arc::new(RateLimiter::new(rate("10/s")));
    let svc = RateLimitLayer::new(Arc::clone(&limiter)).layer(fake.service());
    for _ in 0..10 {
        assert_eq!(code(&svc, get()).await, 200);
    }
    // Refused on the first poll, without reaching the dependency.
    for _ in 0..5 {
        assert!(matches!(
            svc.clone().oneshot(get()).now_or_never(),
            Some(Err(ProxyError::RateLimited))
        ));
    }
    assert_eq!(fake.calls(), 10);

    tokio::time::advance(99 * MS).await;
    assert_eq!(limiter.try_acquire(), Err(MS));
    tokio::time::advance(MS).await;
    assert_eq!(code(&svc, get()).await, 200);
    assert!(svc.clone().oneshot(get()).now_or_never().unwrap().is_err());

    // A second later the bucket is full again, not fuller.
    tokio::time::advance(Duration::from_secs(5)).await;
    for _ in 0..10 {
        assert!(limiter.try_acquire().is_ok());
    }
    assert!(limiter.try_acquire().is_err());

    let s = limiter.snapshot();
    assert_eq!((s.rate.as_str(), s.burst), ("10/s", 10));
    assert_eq!((s.admitted, s.limited), (11 + 10, 5 + 2 + 1));
}

#[tokio::test(start_paused = true)]
async fn the_burst_is_one_seconds_worth_and_at_least_one() {
    for (r, burst, wait) in [
        ("600/m", 10, 100 * MS),
        ("1000/h", 1, Duration::from_millis(3600)),
        ("1/s", 1, Duration::from_secs(1)),
        ("7/m", 1, Duration::from_secs(60) / 7),
    ] {
        let limiter = RateLimiter::new(rate(r));
        for _ in 0..burst {
            assert!(limiter.try_acquire().is_ok(), "{r}");
        }
        assert_eq!(limiter.try_acquire(), Err(wait), "{r}");
        assert_eq!(limiter.snapshot().burst, burst, "{r}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_steady_rate_at_the_limit_is_never_refused() {
    let limiter = RateLimiter::new(rate("10/s"));
    for _ in 0..100 {
        assert!(limiter.try_acquire().is_ok());
        tokio::time::advance(100 * MS).await;
    }
}

#[tokio::test(start_paused = true)]
async fn reconfigure_neither_refills_nor_empties_the_bucket() {
    let limiter = RateLimiter::new(rate("10/s"));
    for _ in 0..10 {
        assert!(limiter.try_acquire().is_ok());
    }
    limiter.reconfigure(rate("20/s"));
    assert_eq!(limiter.rate(), rate("20/s"));
    // 10 calls already admitted count against the new burst of 20 x 50ms = 1s.
    assert_eq!(limiter.try_acquire(), Err(50 * MS));
    tokio::time::advance(50 * MS).await;
    assert!(limiter.try_acquire().is_ok());

    let limiter = RateLimiter::new(rate("10/s"));
    limiter.reconfigure(rate("2/s"));
    assert!(limiter.try_acquire().is_ok());
    assert!(limiter.try_acquire().is_ok());
    assert!(limiter.try_acquire().is_err());
}

#[test]
fn a_refused_call_is_a_429_with_retry_after() {
    let r = ProxyError::RateLimited.to_response("payments", false);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(r.headers()["x-sidecar-error"], "rate_limited");
    assert!(!ProxyError::RateLimited.is_dependency_failure());
}
