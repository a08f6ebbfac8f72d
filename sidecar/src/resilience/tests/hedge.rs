use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response};
use tokio::time::Instant;
use tollgate_config::sidecar::HedgeAfter;
use tower::{Layer, ServiceBuilder, ServiceExt};

use super::{call, code, get, request, status, streamed, Fake, FakeService, Step};
use crate::body::{empty, Body};
use crate::error::ProxyError;
use crate::outbound::balance::Tried;
use crate::resilience::hedge::HedgeService;
use crate::resilience::{
    HedgeLayer, HedgePolicy, HedgeStatsSnapshot, RetryBudget, TimeoutLayer, IDEMPOTENCY_KEY,
};

const MS: Duration = Duration::from_millis(1);
const AFTER: Duration = Duration::from_millis(50);

fn stack(fake: &Fake) -> (Arc<HedgePolicy>, HedgeService<FakeService>) {
    let policy = Arc::new(HedgePolicy::new(HedgeAfter::Fixed(AFTER), None));
    let svc = HedgeLayer::new(Arc::clone(&policy)).layer(fake.service());
    (policy, svc)
}

fn snapshot(requests: u64, eligible: u64, hedged: u64, won: u64) -> HedgeStatsSnapshot {
    HedgeStatsSnapshot {
        requests,
        eligible,
        hedged,
        won,
        budget_exhausted: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_try_is_hedged_and_the_first_answer_wins() {
    let fake = Fake::new([Step::Sleep(Duration::from_secs(1), 200), Step::Status(201)]);
    let (policy, svc) = stack(&fake);
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 201);
    assert_eq!(start.elapsed(), AFTER);
    let times = fake.times();
    assert_eq!(times, vec![start, start + AFTER]);
    assert_eq!(policy.stats().snapshot(), snapshot(1, 1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_first_copy_still_wins_when_it_answers_first() {
    let fake = Fake::new([
        Step::Sleep(100 * MS, 200),
        Step::Sleep(Duration::from_secs(1), 201),
    ]);
    let (policy, svc) = stack(&fake);
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(policy.stats().snapshot(), snapshot(1, 1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn an_answer_within_hedge_after_is_not_hedged() {
    let fake = Fake::new([Step::Sleep(49 * MS, 503)]);
    let (policy, svc) = stack(&fake);
    assert_eq!(code(&svc, get()).await, 503);
    assert_eq!(fake.calls(), 1);
    // An early error goes back at once too (to the retry layer above).
    fake.then([Step::Fail(ProxyError::Connect("refused".into()))]);
    assert!(matches!(
        call(&svc, get()).await,
        Err(ProxyError::Connect(_))
    ));
    assert_eq!(fake.calls(), 2);
    assert_eq!(policy.stats().snapshot(), snapshot(2, 2, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn only_bodiless_calls_safe_to_repeat_are_hedged() {
    let slow = || Fake::new([Step::Sleep(Duration::from_secs(1), 200)]);

    let fake = slow();
    let (policy, svc) = stack(&fake);
    assert_eq!(code(&svc, request(Method::POST, empty())).await, 200);
    assert_eq!(fake.calls(), 1, "POST without Idempotency-Key");

    assert_eq!(
        code(&svc, request(Method::PUT, streamed(&["a", "b"]))).await,
        200
    );
    assert_eq!(fake.calls(), 2, "a body cannot be replayed to a hedge");
    assert_eq!(fake.bodies()[1], "ab", "the body went through intact");
    assert_eq!(policy.stats().snapshot(), snapshot(2, 0, 0, 0));

    let fake = slow();
    let (policy, svc) = stack(&fake);
    let mut post = request(Method::POST, empty());
    post.headers_mut()
        .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k"));
    assert_eq!(code(&svc, post).await, 200);
    assert_eq!(code(&svc, request(Method::DELETE, empty())).await, 200);
    assert_eq!(fake.calls(), 4);
    assert_eq!(policy.stats().hedged(), 2);
}

#[tokio::test(start_paused = true)]
async fn one_copy_failing_waits_for_the_other() {
    // Each copy has its own per-try timeout of 200ms.
    let fake = Fake::new([Step::Hang, Step::Sleep(190 * MS, 200)]);
    let policy = Arc::new(HedgePolicy::new(HedgeAfter::Fixed(AFTER), None));
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(Arc::clone(&policy)))
        .layer(TimeoutLayer::new(200 * MS))
        .service(fake.service());
    let start = Instant::now();
    // The first copy times out at 200ms; the hedge answers at 240ms.
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(start.elapsed(), 240 * MS);
    assert_eq!(policy.stats().won(), 1);

    // Both time out: the later error, when the hedge's deadline passes.
    fake.then([Step::Hang]);
    let start = Instant::now();
    assert!(matches!(
        call(&svc, get()).await,
        Err(ProxyError::Timeout(_))
    ));
    assert_eq!(start.elapsed(), 250 * MS);
    assert_eq!(policy.stats().snapshot(), snapshot(2, 2, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn hedges_are_paid_from_the_budget() {
    let fake = Fake::new([Step::Sleep(Duration::from_secs(1), 200)]);
    let empty_budget = Arc::new(RetryBudget::new(0.0, 0));
    let policy = Arc::new(HedgePolicy::new(
        HedgeAfter::Fixed(AFTER),
        Some(Arc::clone(&empty_budget)),
    ));
    let svc = HedgeLayer::new(Arc::clone(&policy)).layer(fake.service());
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 200);
    assert_eq!(start.elapsed(), Duration::from_secs(1), "not hedged");
    assert_eq!(fake.calls(), 1);
    let s = policy.stats().snapshot();
    assert_eq!((s.hedged, s.budget_exhausted), (0, 1));
    // A shared budget is the retry layer's: it counts the requests, not the hedge layer.
    assert_eq!(empty_budget.snapshot().requests, 0);
    assert_eq!(empty_budget.snapshot().refused, 1);

    // A budget of its own: 10% of requests plus 10 per second (over 10 s).
    let fake = Fake::new([Step::Sleep(Duration::from_secs(1), 200)]);
    let (policy, svc) = stack(&fake);
    let calls: Vec<_> = (0..150)
        .map(|_| tokio::spawn(svc.clone().oneshot(get())))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().status(), 200);
    }
    let s = policy.stats().snapshot();
    // 150 requests: 0.1 x 150 + 10 x 10 = 115.
    assert_eq!((s.hedged, s.budget_exhausted), (115, 35));
    assert_eq!(policy.budget().snapshot().requests, 150);
}

#[tokio::test(start_paused = true)]
async fn the_hedge_shares_the_tried_list_and_the_loser_is_dropped() {
    #[derive(Default)]
    struct Seen {
        tried: Mutex<Vec<Tried>>,
        dropped: AtomicUsize,
    }
    struct Guard(Arc<Seen>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    // A balancer stand-in: endpoint n for the n-th copy; the first never answers.
    let inner = tower::service_fn(move |req: Request<Body>| {
        let s = Arc::clone(&s);
        async move {
            let guard = Guard(Arc::clone(&s));
            let tried = req.extensions().get::<Tried>().cloned().unwrap();
            let n = {
                let mut all = s.tried.lock().unwrap();
                all.push(tried.clone());
                all.len()
            };
            let ep = SocketAddr::from(([127, 0, 0, 1], u16::try_from(n).unwrap()));
            tried.0.lock().unwrap().push(ep);
            if n == 1 {
                std::future::pending::<()>().await;
            }
            drop(guard);
            Ok::<Response<Body>, ProxyError>(status(200))
        }
    });
    let policy = Arc::new(HedgePolicy::new(HedgeAfter::Fixed(AFTER), None));
    let svc = HedgeLayer::new(policy).layer(inner);
    let mut req = get();
    let tried = Tried::default();
    req.extensions_mut().insert(tried.clone());
    assert_eq!(code(&svc, req).await, 200);

    let all = seen.tried.lock().unwrap().clone();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|t| Arc::ptr_eq(&t.0, &tried.0)));
    assert_eq!(tried.0.lock().unwrap().len(), 2, "both copies listed");
    assert_eq!(
        seen.dropped.load(Ordering::SeqCst),
        2,
        "the hung copy dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn reconfigure_changes_the_delay_and_the_budget_source() {
    let policy = HedgePolicy::new(HedgeAfter::Fixed(AFTER), None);
    let own = policy.budget();
    policy.reconfigure(HedgeAfter::Fixed(100 * MS), None);
    assert_eq!(policy.after(), 100 * MS);
    assert!(Arc::ptr_eq(&own, &policy.budget()), "own budget kept");

    let shared = Arc::new(RetryBudget::new(0.2, 5));
    policy.reconfigure(HedgeAfter::Fixed(100 * MS), Some(Arc::clone(&shared)));
    assert!(Arc::ptr_eq(&shared, &policy.budget()));

    policy.reconfigure(HedgeAfter::Fixed(100 * MS), None);
    assert!(
        !Arc::ptr_eq(&shared, &policy.budget()),
        "back to one of its own"
    );
    assert_eq!(policy.budget().snapshot().budget, 0.1);
}

fn percentile(q: f64, min: Duration, max: Duration) -> HedgeAfter {
    HedgeAfter::Percentile {
        quantile: q,
        min,
        max,
    }
}

#[tokio::test(start_paused = true)]
async fn a_percentile_uses_the_ceiling_until_twenty_tries_are_seen() {
    let fake = Fake::new([Step::Sleep(4 * MS, 200)]);
    let policy = Arc::new(HedgePolicy::new(percentile(0.95, MS, 300 * MS), None));
    let svc = HedgeLayer::new(Arc::clone(&policy)).layer(fake.service());
    for _ in 0..19 {
        assert_eq!(code(&svc, get()).await, 200);
    }
    tokio::time::advance(200 * MS).await;
    assert_eq!(policy.after(), 300 * MS, "19 tries: still the ceiling");
    assert_eq!(policy.status().source, "warming_up");
    // A hung first copy on a cold start is still rescued, at the ceiling.
    fake.then([Step::Hang, Step::Sleep(4 * MS, 201)]);
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 201);
    assert_eq!(start.elapsed(), 304 * MS);
    // The hedge's answer was the 20th try: the percentile takes over at the next read.
    tokio::time::advance(200 * MS).await;
    let after = policy.after();
    assert!(after >= 4 * MS && after < 5 * MS, "{after:?}");
    let status = policy.status();
    assert_eq!(status.source, "percentile");
    assert_eq!(status.samples, 20);
    assert_eq!(status.hedge_after, "p95");
}

#[tokio::test(start_paused = true)]
async fn hedges_fire_at_the_observed_percentile_within_floor_and_ceiling() {
    // 95 fast answers and 5 slow ones: p95 is the fast mode, p99 the slow one.
    let fake = Fake::new([Step::Sleep(8 * MS, 200)]);
    let policy = Arc::new(HedgePolicy::new(
        percentile(0.95, MS, Duration::from_secs(1)),
        None,
    ));
    let svc = HedgeLayer::new(Arc::clone(&policy)).layer(fake.service());
    for _ in 0..95 {
        assert_eq!(code(&svc, get()).await, 200);
    }
    for _ in 0..5 {
        policy.record(100 * MS);
    }
    tokio::time::advance(200 * MS).await;
    let p95 = policy.after();
    assert!(p95 >= 8 * MS && p95 <= 9 * MS, "{p95:?}");
    let observed = policy.status().observed_ms.unwrap();
    assert!(observed.p99 >= 100.0, "{observed:?}");

    // A slow first copy is now hedged at the p95, and the hedge wins.
    fake.then([
        Step::Sleep(Duration::from_secs(1), 200),
        Step::Sleep(8 * MS, 201),
    ]);
    let start = Instant::now();
    assert_eq!(code(&svc, get()).await, 201);
    // (The paused clock's timers fire on whole milliseconds.)
    let took = start.elapsed();
    assert!(took >= p95 + 8 * MS && took <= p95 + 9 * MS, "{took:?}");
    assert_eq!(policy.stats().won(), 1);

    // The floor and the ceiling bound it.
    policy.reconfigure(percentile(0.95, 20 * MS, Duration::from_secs(1)), None);
    assert_eq!(policy.after(), 20 * MS);
    policy.reconfigure(percentile(0.99, MS, 50 * MS), None);
    assert_eq!(policy.after(), 50 * MS);
    // Back to a fixed delay: the history stays for the status view.
    policy.reconfigure(HedgeAfter::Fixed(AFTER), None);
    assert_eq!(policy.after(), AFTER);
    assert_eq!(policy.status().source, "fixed");
    assert!(policy.status().samples >= 100);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_not_taken_as_latency() {
    let fake = Fake::new([Step::Sleep(MS, 503)]);
    let policy = Arc::new(HedgePolicy::new(percentile(0.5, MS, 300 * MS), None));
    let svc = HedgeLayer::new(Arc::clone(&policy)).layer(fake.service());
    for _ in 0..30 {
        assert_eq!(code(&svc, get()).await, 503);
    }
    tokio::time::advance(200 * MS).await;
    assert_eq!(policy.after(), 300 * MS);
    assert_eq!(policy.status().samples, 0);
}
