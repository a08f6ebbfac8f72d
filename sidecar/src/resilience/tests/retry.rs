use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body::Frame;
use http_body_util::StreamBody;
use tollgate_config::sidecar::Retry;
use tower::Layer;

use super::{call, code, get, request, streamed, Fake, FakeService, Step};
use crate::body::{boxed, full, Body, BoxError};
use crate::error::ProxyError;
use crate::resilience::retry::RetryService;
use crate::resilience::{RetryBudget, RetryLayer, RetryPolicy, IDEMPOTENCY_KEY, RETRIES_HEADER};

const MS: Duration = Duration::from_millis(1);

fn cfg() -> Retry {
    Retry {
        attempts: 3,
        backoff_min: 25 * MS,
        backoff_max: 250 * MS,
        budget: 0.2,
        min_per_second: 10,
        on_5xx: true,
        statuses: Vec::new(),
        on_reset: true,
        on_connect_failure: true,
        on_timeout: true,
        max_body_bytes: 1024,
        grpc_methods: Default::default(),
    }
}

fn stack(cfg: &Retry, fake: &Fake) -> (Arc<RetryPolicy>, RetryService<FakeService>) {
    let policy = Arc::new(RetryPolicy::new(cfg));
    let svc = RetryLayer::new(Arc::clone(&policy)).layer(fake.service());
    (policy, svc)
}

fn post() -> http::Request<Body> {
    request(Method::POST, full("order"))
}

fn post_with_key() -> http::Request<Body> {
    let mut r = post();
    r.headers_mut()
        .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k-1"));
    r
}

fn retries_header(r: &http::Response<Body>) -> Option<&str> {
    r.headers()
        .get(RETRIES_HEADER)
        .and_then(|v| v.to_str().ok())
}

#[tokio::test(start_paused = true)]
async fn get_is_retried_on_503_until_it_succeeds() {
    let fake = Fake::new([Step::Status(503), Step::Status(503), Step::Status(200)]);
    let (policy, svc) = stack(&cfg(), &fake);
    let r = call(&svc, get()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(retries_header(&r), Some("2"));
    assert_eq!(fake.calls(), 3);
    let s = policy.stats().snapshot();
    assert_eq!((s.requests, s.retries, s.budget_exhausted), (1, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_first_success_is_untouched() {
    let fake = Fake::new([Step::Status(200)]);
    let (_, svc) = stack(&cfg(), &fake);
    let r = call(&svc, get()).await.unwrap();
    assert_eq!(retries_header(&r), None);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_idempotent_method_is_retried() {
    for m in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ] {
        let fake = Fake::new([Step::Status(503), Step::Status(200)]);
        let (_, svc) = stack(&cfg(), &fake);
        assert_eq!(code(&svc, request(m.clone(), full("x"))).await, 200, "{m}");
        assert_eq!(fake.calls(), 2, "{m}");
    }
}

#[tokio::test(start_paused = true)]
async fn post_and_patch_are_not_retried_on_503() {
    for m in [Method::POST, Method::PATCH] {
        let fake = Fake::new([Step::Status(503), Step::Status(200)]);
        let (policy, svc) = stack(&cfg(), &fake);
        assert_eq!(code(&svc, request(m, full("order"))).await, 503);
        assert_eq!(fake.calls(), 1);
        assert_eq!(policy.stats().retries(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn post_with_an_idempotency_key_is_retried() {
    let fake = Fake::new([Step::Status(503), Step::Status(200)]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, post_with_key()).await, 200);
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_when_it_never_reached_the_dependency() {
    let fake = Fake::new([
        Step::Fail(ProxyError::Connect("refused".into())),
        Step::Status(200),
    ]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, post()).await, 200);
    assert_eq!(fake.calls(), 2);
    assert_eq!(fake.bodies().last().unwrap(), &Bytes::from_static(b"order"));
}

#[tokio::test(start_paused = true)]
async fn connect_failures_need_connect_failure_in_the_conditions() {
    let mut c = cfg();
    c.on_connect_failure = false;
    let fake = Fake::new([
        Step::Fail(ProxyError::Connect("refused".into())),
        Step::Status(200),
    ]);
    let (_, svc) = stack(&c, &fake);
    assert!(matches!(
        call(&svc, get()).await,
        Err(ProxyError::Connect(_))
    ));
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_stream_is_always_retried() {
    let c = Retry {
        on_5xx: false,
        on_reset: false,
        on_connect_failure: false,
        on_timeout: false,
        ..cfg()
    };
    let fake = Fake::new([
        Step::Fail(ProxyError::Refused("REFUSED_STREAM".into())),
        Step::Status(200),
    ]);
    let (_, svc) = stack(&c, &fake);
    assert_eq!(code(&svc, post()).await, 200);
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn resets_are_retried_only_when_configured_and_safe() {
    let reset = || {
        Fake::new([
            Step::Fail(ProxyError::Reset("eof".into())),
            Step::Status(200),
        ])
    };
    let fake = reset();
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, get()).await, 200);

    let fake = reset();
    let (_, svc) = stack(&cfg(), &fake);
    assert!(matches!(
        call(&svc, post()).await,
        Err(ProxyError::Reset(_))
    ));
    assert_eq!(fake.calls(), 1, "the POST may have been processed");

    let fake = reset();
    let c = Retry {
        on_reset: false,
        ..cfg()
    };
    let (_, svc) = stack(&c, &fake);
    assert!(call(&svc, get()).await.is_err());
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_are_retried_when_configured() {
    let timeout = || Fake::new([Step::Fail(ProxyError::Timeout(100 * MS)), Step::Status(200)]);
    let fake = timeout();
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, get()).await, 200);

    let fake = timeout();
    let c = Retry {
        on_timeout: false,
        ..cfg()
    };
    let (_, svc) = stack(&c, &fake);
    assert!(matches!(
        call(&svc, get()).await,
        Err(ProxyError::Timeout(_))
    ));
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn only_the_configured_statuses_are_retried() {
    let c = Retry {
        on_5xx: false,
        statuses: vec![502, 429],
        ..cfg()
    };
    for (first, retried) in [
        (502, true),
        (429, true),
        (503, false),
        (500, false),
        (404, false),
    ] {
        let fake = Fake::new([Step::Status(first), Step::Status(200)]);
        let (_, svc) = stack(&c, &fake);
        let _ = call(&svc, get()).await;
        assert_eq!(fake.calls(), if retried { 2 } else { 1 }, "{first}");
    }
}

#[tokio::test(start_paused = true)]
async fn local_refusals_are_not_retried() {
    for e in [
        ProxyError::CircuitOpen {
            retry_after: Duration::from_secs(1),
        },
        ProxyError::BulkheadFull { max: 1 },
        ProxyError::NoEndpoints,
        ProxyError::Body("bad".into()),
    ] {
        let fake = Fake::new([Step::Fail(e.clone()), Step::Status(200)]);
        let (_, svc) = stack(&cfg(), &fake);
        assert!(call(&svc, get()).await.is_err(), "{e}");
        assert_eq!(fake.calls(), 1, "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn at_most_attempts_tries() {
    let fake = Fake::new([Step::Status(503)]);
    let (policy, svc) = stack(&cfg(), &fake);
    let r = call(&svc, get()).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(retries_header(&r), Some("2"));
    assert_eq!(fake.calls(), 3);
    assert_eq!(policy.stats().retries(), 2);

    let fake = Fake::new([Step::Status(503)]);
    let c = Retry {
        attempts: 1,
        ..cfg()
    };
    let (_, svc) = stack(&c, &fake);
    assert_eq!(code(&svc, get()).await, 503);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries() {
    let c = Retry {
        budget: 0.0,
        min_per_second: 0,
        ..cfg()
    };
    let fake = Fake::new([Step::Status(503), Step::Status(200)]);
    let (policy, svc) = stack(&c, &fake);
    assert_eq!(code(&svc, get()).await, 503);
    assert_eq!(fake.calls(), 1);
    assert_eq!(policy.stats().budget_exhausted(), 1);
    assert_eq!(policy.budget().snapshot().refused, 1);
}

#[tokio::test(start_paused = true)]
async fn under_a_total_outage_the_budget_bounds_the_amplification() {
    // 1000 requests to a dependency that always fails, 3 attempts, 20% budget, no floor:
    // without a budget that is 3000 calls; with it at most 1200.
    let c = Retry {
        budget: 0.2,
        min_per_second: 0,
        ..cfg()
    };
    let fake = Fake::new([Step::Status(503)]);
    let (policy, svc) = stack(&c, &fake);
    for _ in 0..1000 {
        let _ = call(&svc, get()).await;
    }
    let calls = fake.calls();
    assert!(
        (1150..=1200).contains(&calls),
        "{calls} calls for 1000 requests"
    );
    let s = policy.stats().snapshot();
    assert_eq!(s.retries as usize, calls - 1000);
    assert!(s.budget_exhausted > 0);
}

#[tokio::test(start_paused = true)]
async fn a_shared_budget_is_spent_by_every_policy_using_it() {
    let budget = Arc::new(RetryBudget::new(0.0, 0));
    let policy = Arc::new(RetryPolicy::with_budget(&cfg(), Arc::clone(&budget)));
    let fake = Fake::new([Step::Status(503)]);
    let svc = RetryLayer::new(policy).layer(fake.service());
    assert_eq!(code(&svc, get()).await, 503);
    assert_eq!(fake.calls(), 1);
    budget.reconfigure(0.0, 1);
    let _ = call(&svc, get()).await;
    assert_eq!(fake.calls(), 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn the_body_is_replayed_identically_on_each_try() {
    let fake = Fake::new([Step::Status(503), Step::Status(502), Step::Status(200)]);
    let (_, svc) = stack(&cfg(), &fake);
    let mut req = request(Method::POST, streamed(&["hello ", "replayed ", "world"]));
    req.headers_mut()
        .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k"));
    assert_eq!(code(&svc, req).await, 200);
    assert_eq!(
        fake.bodies(),
        vec![Bytes::from_static(b"hello replayed world"); 3]
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_of_known_length_is_replayed_too() {
    let fake = Fake::new([
        Step::Fail(ProxyError::Reset("eof".into())),
        Step::Status(200),
    ]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, request(Method::PUT, full("abc"))).await, 200);
    assert_eq!(fake.bodies(), vec![Bytes::from_static(b"abc"); 2]);
}

#[tokio::test(start_paused = true)]
async fn the_body_is_replayed_when_a_try_read_none_or_part_of_it() {
    let fake = Fake::new([Step::Early(503), Step::Partial(503), Step::Status(200)]);
    let (_, svc) = stack(&cfg(), &fake);
    let req = request(Method::PUT, streamed(&["one,", "two,", "three"]));
    assert_eq!(code(&svc, req).await, 200);
    assert_eq!(
        fake.bodies(),
        [
            Bytes::from_static(b"one,"),
            Bytes::from_static(b"one,two,three")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn trailers_are_replayed() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"msg"))),
        Ok(Frame::trailers(trailers.clone())),
    ];
    let body = boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let fake = Fake::new([Step::Status(503), Step::Status(200)]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, request(Method::PUT, body)).await, 200);
    assert_eq!(fake.bodies(), vec![Bytes::from_static(b"msg"); 2]);
    assert_eq!(
        fake.trailers(),
        vec![Some(trailers.clone()), Some(trailers)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_oversized_body_is_delivered_intact_and_not_retried() {
    let c = Retry {
        max_body_bytes: 8,
        ..cfg()
    };
    // Unknown length: discovered while streaming.
    let chunks = ["0123456789", "abcdefghij", "ABCDEFGHIJ", "!!"];
    let fake = Fake::new([Step::Status(503), Step::Status(200)]);
    let (policy, svc) = stack(&c, &fake);
    assert_eq!(
        code(&svc, request(Method::PUT, streamed(&chunks))).await,
        503
    );
    assert_eq!(fake.calls(), 1);
    assert_eq!(fake.bodies(), [Bytes::from(chunks.concat())]);
    assert_eq!(policy.stats().snapshot().not_replayable, 1);

    // Known length above the cap: not even copied.
    let big = "x".repeat(100);
    let fake = Fake::new([Step::Status(503), Step::Status(200)]);
    let (policy, svc) = stack(&c, &fake);
    assert_eq!(
        code(&svc, request(Method::PUT, full(big.clone()))).await,
        503
    );
    assert_eq!(fake.bodies(), [Bytes::from(big)]);
    assert_eq!(policy.stats().snapshot().not_replayable, 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_exactly_at_the_cap_is_replayed() {
    let c = Retry {
        max_body_bytes: 8,
        ..cfg()
    };
    let fake = Fake::new([Step::Status(503), Step::Status(200)]);
    let (_, svc) = stack(&c, &fake);
    assert_eq!(
        code(&svc, request(Method::PUT, streamed(&["1234", "5678"]))).await,
        200
    );
    assert_eq!(fake.bodies(), vec![Bytes::from_static(b"12345678"); 2]);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_failed_is_not_retried() {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"half"))),
        Err("client went away".into()),
    ];
    let body = boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let fake = Fake::new([Step::Status(503), Step::Status(200)]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, request(Method::PUT, body)).await, 503);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_replaces_the_backoff_when_short_enough() {
    // backoff_max 250ms: Retry-After up to 1 s is honoured.
    let fake = Fake::new([Step::WithHeader(503, "retry-after", "1"), Step::Status(200)]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, get()).await, 200);
    let t = fake.times();
    assert_eq!(t[1] - t[0], Duration::from_secs(1));

    let fake = Fake::new([Step::WithHeader(429, "retry-after", "0"), Step::Status(200)]);
    let c = Retry {
        statuses: vec![429],
        ..cfg()
    };
    let (_, svc) = stack(&c, &fake);
    assert_eq!(code(&svc, get()).await, 200);
    let t = fake.times();
    assert_eq!(t[1], t[0], "Retry-After: 0 means at once");
}

#[tokio::test(start_paused = true)]
async fn a_longer_retry_after_goes_back_to_the_app() {
    let fake = Fake::new([Step::WithHeader(503, "retry-after", "2"), Step::Status(200)]);
    let (policy, svc) = stack(&cfg(), &fake);
    let r = call(&svc, get()).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(fake.calls(), 1);
    assert_eq!(policy.stats().snapshot().retry_after_too_long, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_ignored_on_other_statuses_and_in_date_form() {
    let fake = Fake::new([
        Step::WithHeader(500, "retry-after", "60"),
        Step::Status(200),
    ]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, get()).await, 200);
    let t = fake.times();
    assert!(t[1] - t[0] <= 25 * MS);

    let fake = Fake::new([
        Step::WithHeader(503, "retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
        Step::Status(200),
    ]);
    let (_, svc) = stack(&cfg(), &fake);
    assert_eq!(code(&svc, get()).await, 200);
}

#[tokio::test(start_paused = true)]
async fn waits_between_tries_stay_under_the_backoff_cap() {
    let c = Retry {
        attempts: 5,
        min_per_second: 1000,
        ..cfg()
    };
    let mut total = Duration::ZERO;
    let mut samples = 0u32;
    for _ in 0..50 {
        let fake = Fake::new([Step::Status(503)]);
        let (_, svc) = stack(&c, &fake);
        let _ = call(&svc, get()).await;
        let t = fake.times();
        assert_eq!(t.len(), 5);
        for (n, pair) in t.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let cap = [25 * MS, 50 * MS, 100 * MS, 200 * MS][n];
            assert!(gap <= cap, "retry {}: waited {gap:?} > {cap:?}", n + 1);
            if n == 3 {
                total += gap;
                samples += 1;
            }
        }
    }
    // Jittered, not fixed: the mean of the 4th wait is well inside (0, 200ms).
    let mean = total / samples;
    assert!(mean > 50 * MS && mean < 150 * MS, "{mean:?}");
}

#[tokio::test(start_paused = true)]
async fn reconfigure_applies_to_new_calls() {
    let fake = Fake::new([Step::Status(503)]);
    let (policy, svc) = stack(&cfg(), &fake);
    policy.reconfigure(&Retry {
        attempts: 2,
        ..cfg()
    });
    let _ = call(&svc, get()).await;
    assert_eq!(fake.calls(), 2);
    assert_eq!(policy.config().attempts, 2);
}
