use std::time::Duration;

use crate::resilience::RetryBudget;

fn withdraw_all(b: &RetryBudget) -> u64 {
    let mut n = 0;
    while b.try_withdraw() {
        n += 1;
        assert!(n < 1_000_000, "budget never ran out");
    }
    n
}

#[tokio::test(start_paused = true)]
async fn twenty_percent_of_1000_requests_allows_200_retries() {
    let b = RetryBudget::new(0.2, 0);
    for _ in 0..1000 {
        b.record_request();
    }
    assert_eq!(b.snapshot().remaining, 200);
    assert_eq!(withdraw_all(&b), 200);
    let s = b.snapshot();
    assert_eq!((s.requests, s.retries, s.remaining), (1000, 200, 0));
    assert_eq!(s.refused, 1);
    assert!(!b.try_withdraw());
    assert_eq!(b.snapshot().refused, 2);
}

#[tokio::test(start_paused = true)]
async fn the_floor_allows_min_per_second_over_the_window() {
    let b = RetryBudget::new(0.2, 5);
    assert_eq!(b.snapshot().remaining, 50);
    assert_eq!(withdraw_all(&b), 50);
    // Requests add to the floor.
    for _ in 0..100 {
        b.record_request();
    }
    assert_eq!(withdraw_all(&b), 20);
}

#[tokio::test(start_paused = true)]
async fn no_budget_and_no_floor_allows_nothing() {
    let b = RetryBudget::new(0.0, 0);
    for _ in 0..100 {
        b.record_request();
    }
    assert!(!b.try_withdraw());
    // Nonsense fractions count as none.
    let b = RetryBudget::new(f64::NAN, 0);
    b.record_request();
    assert!(!b.try_withdraw());
}

#[tokio::test(start_paused = true)]
async fn old_seconds_slide_out_of_the_window() {
    let b = RetryBudget::new(0.1, 0);
    for _ in 0..100 {
        b.record_request();
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    for _ in 0..100 {
        b.record_request();
    }
    assert_eq!(withdraw_all(&b), 20);
    // 10.5 s after the start, the first second has left the window: only the second
    // 100 requests (and the retries spent with them) remain.
    tokio::time::advance(Duration::from_millis(5_500)).await;
    let s = b.snapshot();
    assert_eq!((s.requests, s.retries), (100, 20));
    assert!(!b.try_withdraw());
    // 20 s after: all gone.
    tokio::time::advance(Duration::from_secs(10)).await;
    let s = b.snapshot();
    assert_eq!((s.requests, s.retries, s.remaining), (0, 0, 0));
    for _ in 0..100 {
        b.record_request();
    }
    assert_eq!(withdraw_all(&b), 10);
}

#[tokio::test(start_paused = true)]
async fn reconfigure_changes_limits_and_keeps_counts() {
    let b = RetryBudget::new(0.0, 0);
    for _ in 0..100 {
        b.record_request();
    }
    assert!(!b.try_withdraw());
    b.reconfigure(0.5, 0);
    let s = b.snapshot();
    assert_eq!((s.requests, s.remaining, s.budget), (100, 50, 0.5));
    assert_eq!(withdraw_all(&b), 50);
}

#[tokio::test(start_paused = true)]
async fn fractional_allowance_rounds_up_in_remaining() {
    let b = RetryBudget::new(0.25, 0);
    for _ in 0..10 {
        b.record_request();
    }
    // 2.5 allowed: the third retry is let through (2 < 2.5).
    assert_eq!(b.snapshot().remaining, 3);
    assert_eq!(withdraw_all(&b), 3);
}

#[test]
fn snapshot_serializes() {
    let b = RetryBudget::new(0.2, 1);
    let v = serde_json::to_value(b.snapshot()).unwrap();
    assert_eq!(v["remaining"], 10);
    assert_eq!(v["min_per_second"], 1);
}
