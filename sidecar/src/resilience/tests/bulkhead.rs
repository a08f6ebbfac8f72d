use std::time::Duration;

use futures_util::FutureExt;
use tower::{Layer, ServiceExt};

use super::{call, get, until, Fake, Step};
use crate::error::ProxyError;
use crate::resilience::BulkheadLayer;

#[tokio::test(start_paused = true)]
async fn beyond_the_limit_fails_at_once_while_the_others_proceed() {
    let fake = Fake::new([Step::Gated(200)]);
    let layer = BulkheadLayer::new(2, 0);
    let stats = layer.stats();
    let svc = layer.layer(fake.service());

    let a = tokio::spawn(svc.clone().oneshot(get()));
    let b = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 2).await;
    assert_eq!(stats.in_flight(), 2);

    // The third is refused on its first poll, without reaching the dependency.
    let third = svc.clone().oneshot(get()).now_or_never();
    assert!(matches!(
        third,
        Some(Err(ProxyError::BulkheadFull { max: 2 }))
    ));
    assert_eq!(fake.calls(), 2);
    assert_eq!(stats.rejected(), 1);

    fake.release(2);
    assert_eq!(a.await.unwrap().unwrap().status(), 200);
    assert_eq!(b.await.unwrap().unwrap().status(), 200);
    let s = stats.snapshot();
    assert_eq!((s.in_flight, s.admitted, s.rejected), (0, 2, 1));

    // Room again.
    fake.release(1);
    assert_eq!(call(&svc, get()).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_queue_admits_a_bounded_number_of_waiters() {
    let fake = Fake::new([Step::Gated(200)]);
    let layer = BulkheadLayer::new(1, 1);
    let stats = layer.stats();
    let svc = layer.layer(fake.service());

    let a = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 1).await;
    let b = tokio::spawn(svc.clone().oneshot(get()));
    until(|| stats.waiting() == 1).await;
    // The queue is full: refused at once.
    assert!(matches!(
        svc.clone().oneshot(get()).now_or_never(),
        Some(Err(ProxyError::BulkheadFull { max: 1 }))
    ));
    assert_eq!(fake.calls(), 1, "the waiter has not reached the dependency");

    fake.release(1);
    assert_eq!(a.await.unwrap().unwrap().status(), 200);
    until(|| fake.calls() == 2).await;
    assert_eq!((stats.waiting(), stats.in_flight()), (0, 1));
    fake.release(1);
    assert_eq!(b.await.unwrap().unwrap().status(), 200);
    let s = stats.snapshot();
    assert_eq!(
        (s.admitted, s.queued, s.rejected, s.in_flight),
        (2, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_frees_its_place() {
    let fake = Fake::new([Step::Gated(200)]);
    let layer = BulkheadLayer::new(1, 1);
    let stats = layer.stats();
    let svc = layer.layer(fake.service());

    let _a = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 1).await;
    // Waits, then its caller gives up.
    let gave_up = tokio::time::timeout(Duration::from_millis(10), svc.clone().oneshot(get())).await;
    assert!(gave_up.is_err());
    assert_eq!(stats.waiting(), 0);
    // So the next one may queue.
    let c = tokio::spawn(svc.clone().oneshot(get()));
    until(|| stats.waiting() == 1).await;
    fake.release(2);
    assert_eq!(c.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_released_on_errors_and_cancellation() {
    let fake = Fake::new([
        Step::Fail(ProxyError::Connect("refused".into())),
        Step::Hang,
    ]);
    let layer = BulkheadLayer::new(1, 0);
    let stats = layer.stats();
    let svc = layer.layer(fake.service());
    assert!(matches!(
        call(&svc, get()).await,
        Err(ProxyError::Connect(_))
    ));
    assert_eq!(stats.in_flight(), 0);
    let hung = tokio::time::timeout(Duration::from_secs(1), call(&svc, get())).await;
    assert!(hung.is_err());
    assert_eq!(stats.in_flight(), 0);
    // Still admits.
    let t = tokio::time::timeout(Duration::from_secs(1), call(&svc, get())).await;
    assert!(t.is_err(), "admitted and reached the hanging dependency");
    assert_eq!(fake.calls(), 3);
    assert_eq!(stats.rejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn resize_keeps_counting_the_calls_in_flight() {
    let fake = Fake::new([Step::Gated(200)]);
    let layer = BulkheadLayer::new(2, 0);
    let bulkhead = layer.bulkhead().clone();
    let svc = layer.layer(fake.service());

    let a = tokio::spawn(svc.clone().oneshot(get()));
    let b = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 2).await;

    // Shrink below what is in flight: nothing new until in-flight falls under 1.
    bulkhead.resize(1, 0);
    assert_eq!(bulkhead.stats().max_concurrent(), 1);
    fake.release(1);
    let first_done = tokio::select! { r = a => r, r = b => r };
    assert_eq!(first_done.unwrap().unwrap().status(), 200);
    assert_eq!(bulkhead.in_flight(), 1);
    assert!(matches!(
        svc.clone().oneshot(get()).now_or_never(),
        Some(Err(ProxyError::BulkheadFull { max: 1 }))
    ));
    fake.release(1);
    until(|| bulkhead.in_flight() == 0).await;

    // Exactly one slot now.
    let c = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 3).await;
    assert!(matches!(
        svc.clone().oneshot(get()).now_or_never(),
        Some(Err(ProxyError::BulkheadFull { max: 1 }))
    ));

    // Grow: two more fit beside the one in flight.
    bulkhead.resize(3, 0);
    let d = tokio::spawn(svc.clone().oneshot(get()));
    let e = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 5).await;
    assert!(matches!(
        svc.clone().oneshot(get()).now_or_never(),
        Some(Err(ProxyError::BulkheadFull { max: 3 }))
    ));
    fake.release(3);
    for h in [c, d, e] {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn shrink_then_grow_before_slots_return_adds_no_extra_slots() {
    let fake = Fake::new([Step::Gated(200)]);
    let layer = BulkheadLayer::new(2, 0);
    let bulkhead = layer.bulkhead().clone();
    let svc = layer.layer(fake.service());
    let a = tokio::spawn(svc.clone().oneshot(get()));
    let b = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 2).await;
    bulkhead.resize(1, 0); // one slot owed
    bulkhead.resize(2, 0); // debt cancelled: still two slots in total
    fake.release(2);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let c = tokio::spawn(svc.clone().oneshot(get()));
    let d = tokio::spawn(svc.clone().oneshot(get()));
    until(|| fake.calls() == 4).await;
    assert!(matches!(
        svc.clone().oneshot(get()).now_or_never(),
        Some(Err(ProxyError::BulkheadFull { max: 2 }))
    ));
    fake.release(2);
    c.await.unwrap().unwrap();
    d.await.unwrap().unwrap();
}
