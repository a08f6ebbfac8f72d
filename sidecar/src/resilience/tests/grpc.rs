use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tollgate_config::sidecar::{Breaker, Retry};
use tower::Layer;

use super::{call, get, request, Fake, Step};
use crate::body::{boxed, empty, full, Body, BoxError};
use crate::resilience::grpc::{head, is_grpc, GrpcHead};
use crate::resilience::{
    classify, BreakerLayer, BreakerState, CallOutcome, CircuitBreaker, RetryLayer, RetryPolicy,
    IDEMPOTENCY_KEY,
};

const SEC: Duration = Duration::from_secs(1);

fn grpc_head(status: Option<&'static str>, body: Body) -> Response<Body> {
    let mut b = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/grpc");
    if let Some(s) = status {
        b = b.header("grpc-status", s);
    }
    b.body(body).unwrap()
}

fn trailers(status: Option<&'static str>) -> HeaderMap {
    let mut t = HeaderMap::new();
    if let Some(s) = status {
        t.insert("grpc-status", HeaderValue::from_static(s));
    }
    t.insert("grpc-message", HeaderValue::from_static("x"));
    t
}

/// One message, then trailers with this status.
fn streamed_with_trailers(status: Option<&'static str>) -> Body {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01m"))),
        Ok(Frame::trailers(trailers(status))),
    ];
    boxed(StreamBody::new(futures_util::stream::iter(frames)))
}

fn unavailable_in_trailers() -> Response<Body> {
    grpc_head(None, streamed_with_trailers(Some("14")))
}
fn ok_in_trailers() -> Response<Body> {
    grpc_head(None, streamed_with_trailers(Some("0")))
}
fn not_found_in_trailers() -> Response<Body> {
    grpc_head(None, streamed_with_trailers(Some("5")))
}
fn no_trailers() -> Response<Body> {
    grpc_head(None, full("\0\0\0\0\x01m"))
}
fn unavailable_trailers_only() -> Response<Body> {
    grpc_head(Some("14"), empty())
}
fn ok_after_a_second_of_streaming() -> Response<Body> {
    let late = futures_util::stream::once(async {
        tokio::time::sleep(SEC).await;
        Ok::<_, BoxError>(Frame::trailers(trailers(Some("0"))))
    });
    grpc_head(None, boxed(StreamBody::new(late)))
}

fn breaker_cfg() -> Breaker {
    Breaker {
        failure_rate: 0.5,
        slow_call: None,
        slow_call_rate: None,
        min_requests: 2,
        window: 10 * SEC,
        open_for: 5 * SEC,
        max_open_for: 60 * SEC,
        half_open_probes: 1,
        observe_only: false,
    }
}

fn with_breaker(
    cfg: &Breaker,
    fake: &Fake,
) -> (
    Arc<CircuitBreaker>,
    crate::resilience::BreakerService<super::FakeService>,
) {
    let breaker = Arc::new(CircuitBreaker::new(cfg));
    let svc = BreakerLayer::new(Arc::clone(&breaker)).layer(fake.service());
    (breaker, svc)
}

#[test]
fn grpc_content_types() {
    let ct = |v: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        is_grpc(&h)
    };
    assert!(ct("application/grpc"));
    assert!(ct("application/grpc+proto"));
    assert!(ct("application/grpc; charset=utf-8"));
    assert!(ct("Application/GRPC"));
    assert!(!ct("application/grpc-web"));
    assert!(!ct("application/grpc-web+proto"));
    assert!(!ct("application/json"));
    assert!(!is_grpc(&HeaderMap::new()));
}

#[test]
fn the_head_tells_trailers_only_status_or_status_to_come() {
    assert_eq!(head(&unavailable_trailers_only()), GrpcHead::Status(14));
    assert_eq!(head(&ok_in_trailers()), GrpcHead::InTrailers);
    let mut not_ok = unavailable_in_trailers();
    *not_ok.status_mut() = http::StatusCode::BAD_GATEWAY;
    assert_eq!(
        head(&not_ok),
        GrpcHead::NotGrpc,
        "classified by HTTP status"
    );
    assert_eq!(head(&super::status(200)), GrpcHead::NotGrpc);
}

#[test]
fn only_unavailable_deadline_and_exhausted_are_failures_at_the_head() {
    for (code, outcome) in [
        ("14", CallOutcome::Failure),
        ("4", CallOutcome::Failure),
        ("8", CallOutcome::Failure),
        ("0", CallOutcome::Success),
        ("3", CallOutcome::Success),
        ("5", CallOutcome::Success),
        ("7", CallOutcome::Success),
    ] {
        assert_eq!(
            classify(&Ok(grpc_head(Some(code), empty()))),
            outcome,
            "grpc-status {code}"
        );
    }
    // grpc-web carries its status in the body: only the HTTP status counts.
    let web = Response::builder()
        .header(header::CONTENT_TYPE, "application/grpc-web")
        .header("grpc-status", "14")
        .body(empty())
        .unwrap();
    assert_eq!(classify(&Ok(web)), CallOutcome::Success);
}

#[tokio::test(start_paused = true)]
async fn a_trailers_only_failure_counts_at_once() {
    let fake = Fake::new([Step::Respond(unavailable_trailers_only)]);
    let (breaker, svc) = with_breaker(&breaker_cfg(), &fake);
    let _r1 = call(&svc, get()).await.unwrap();
    let _r2 = call(&svc, get()).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open, "bodies not even read");
}

#[tokio::test(start_paused = true)]
async fn the_trailers_status_is_recorded_when_the_body_ends() {
    let fake = Fake::new([Step::Respond(unavailable_in_trailers)]);
    let (breaker, svc) = with_breaker(&breaker_cfg(), &fake);
    let r1 = call(&svc, get()).await.unwrap();
    let r2 = call(&svc, get()).await.unwrap();
    assert_eq!(breaker.snapshot().calls, 0, "nothing known at the head");
    let c = r1.into_body().collect().await.unwrap();
    assert_eq!(
        c.trailers().unwrap()["grpc-status"],
        "14",
        "trailers passed on"
    );
    let s = breaker.snapshot();
    assert_eq!((s.calls, s.failures, s.state), (1, 1, BreakerState::Closed));
    r2.into_body().collect().await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn caller_errors_in_the_trailers_are_successes_of_the_dependency() {
    for make in [
        ok_in_trailers as fn() -> Response<Body>,
        not_found_in_trailers,
    ] {
        let fake = Fake::new([Step::Respond(make)]);
        let (breaker, svc) = with_breaker(&breaker_cfg(), &fake);
        for _ in 0..3 {
            let r = call(&svc, get()).await.unwrap();
            r.into_body().collect().await.unwrap();
        }
        let s = breaker.snapshot();
        assert_eq!((s.calls, s.failures), (3, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_trailers_fails_and_a_dropped_one_is_not_counted() {
    let fake = Fake::new([Step::Respond(no_trailers)]);
    let (breaker, svc) = with_breaker(&breaker_cfg(), &fake);
    let r = call(&svc, get()).await.unwrap();
    r.into_body().collect().await.unwrap();
    let s = breaker.snapshot();
    assert_eq!((s.calls, s.failures), (1, 1), "truncated call");

    fake.then([Step::Respond(unavailable_in_trailers)]);
    let r = call(&svc, get()).await.unwrap();
    drop(r);
    assert_eq!(breaker.snapshot().calls, 1, "the app went away: cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_long_stream_is_not_a_slow_call() {
    let cfg = Breaker {
        slow_call: Some(100 * Duration::from_millis(1)),
        slow_call_rate: Some(0.5),
        ..breaker_cfg()
    };
    let fake = Fake::new([Step::Respond(ok_after_a_second_of_streaming)]);
    let (breaker, svc) = with_breaker(&cfg, &fake);
    let r = call(&svc, get()).await.unwrap();
    r.into_body().collect().await.unwrap();
    let s = breaker.snapshot();
    assert_eq!((s.calls, s.slow_calls, s.failures), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_half_open_probe_holds_its_slot_until_the_trailers() {
    let fake = Fake::new([Step::Status(503)]);
    let (breaker, svc) = with_breaker(&breaker_cfg(), &fake);
    for _ in 0..2 {
        let _ = call(&svc, get()).await;
    }
    tokio::time::advance(5 * SEC).await;
    fake.then([Step::Respond(ok_in_trailers)]);
    let probe = call(&svc, get()).await.unwrap();
    assert_eq!(breaker.snapshot().half_open_in_flight, 1);
    probe.into_body().collect().await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

fn retry_cfg(on_5xx: bool) -> Retry {
    Retry {
        attempts: 3,
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(10),
        budget: 1.0,
        min_per_second: 10,
        on_5xx,
        statuses: Vec::new(),
        on_reset: false,
        on_connect_failure: false,
        on_timeout: false,
        max_body_bytes: 1024,
        grpc_methods: Default::default(),
    }
}

fn grpc_call_with_key() -> http::Request<Body> {
    let mut r = request(Method::POST, full("\0\0\0\0\x01q"));
    r.headers_mut()
        .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k"));
    r
}

#[tokio::test(start_paused = true)]
async fn a_trailers_only_unavailable_is_retried_like_a_503() {
    let fake = Fake::new([
        Step::Respond(unavailable_trailers_only),
        Step::Respond(ok_in_trailers),
    ]);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&retry_cfg(true)))).layer(fake.service());
    let r = call(&svc, grpc_call_with_key()).await.unwrap();
    assert_eq!(head(&r), GrpcHead::InTrailers);
    assert_eq!(fake.calls(), 2);
    assert_eq!(fake.bodies()[1], &b"\0\0\0\0\x01q"[..], "request replayed");

    // Not without `5xx` in the conditions; not for a POST without a key.
    let fake = Fake::new([Step::Respond(unavailable_trailers_only)]);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&retry_cfg(false)))).layer(fake.service());
    call(&svc, grpc_call_with_key()).await.unwrap();
    assert_eq!(fake.calls(), 1);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&retry_cfg(true)))).layer(fake.service());
    call(&svc, request(Method::POST, full("q"))).await.unwrap();
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_status_in_the_trailers_cannot_be_retried() {
    let fake = Fake::new([
        Step::Respond(unavailable_in_trailers),
        Step::Respond(ok_in_trailers),
    ]);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&retry_cfg(true)))).layer(fake.service());
    let r = call(&svc, grpc_call_with_key()).await.unwrap();
    let c = r.into_body().collect().await.unwrap();
    assert_eq!(c.trailers().unwrap()["grpc-status"], "14");
    assert_eq!(fake.calls(), 1);
}

fn grpc_call(path: &'static str) -> http::Request<Body> {
    let mut r = request(Method::POST, full("\0\0\0\0\x01q"));
    *r.uri_mut() = http::Uri::from_static(path);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

fn listing(methods: &[&str], on_5xx: bool) -> Retry {
    let mut p = tollgate_config::error::Problems::default();
    let methods: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
    Retry {
        grpc_methods: tollgate_config::common::retry::validate_grpc_methods("m", &methods, &mut p),
        on_reset: true,
        ..retry_cfg(on_5xx)
    }
}

fn deadline_exceeded_trailers_only() -> Response<Body> {
    grpc_head(Some("4"), empty())
}

#[tokio::test(start_paused = true)]
async fn a_listed_method_is_retried_on_unavailable_and_an_unlisted_one_is_not() {
    // Listed: retried on UNAVAILABLE, even without `5xx` in the conditions.
    let cfg = listing(&["/shop.Orders/Get", "/shop.Stock/*"], false);
    for path in ["http://d/shop.Orders/Get", "http://d/shop.Stock/Reserve"] {
        let fake = Fake::new([
            Step::Respond(unavailable_trailers_only),
            Step::Respond(ok_in_trailers),
        ]);
        let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&cfg))).layer(fake.service());
        let r = call(&svc, grpc_call(path)).await.unwrap();
        assert_eq!(head(&r), GrpcHead::InTrailers, "{path}");
        assert_eq!(fake.calls(), 2, "{path}");
        assert_eq!(fake.bodies()[1], &b"\0\0\0\0\x01q"[..], "request replayed");
    }
    // Unlisted, or not a gRPC call: not retried.
    let fake = Fake::new([Step::Respond(unavailable_trailers_only)]);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&cfg))).layer(fake.service());
    call(&svc, grpc_call("http://d/shop.Orders/Put"))
        .await
        .unwrap();
    assert_eq!(fake.calls(), 1);
    let mut not_grpc = grpc_call("http://d/shop.Orders/Get");
    not_grpc.headers_mut().remove(header::CONTENT_TYPE);
    call(&svc, not_grpc).await.unwrap();
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_listed_method_is_retried_on_unavailable_only_of_the_grpc_statuses() {
    let fake = Fake::new([
        Step::Respond(deadline_exceeded_trailers_only),
        Step::Respond(ok_in_trailers),
    ]);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&listing(
        &["/shop.Orders/Get"],
        true,
    ))))
    .layer(fake.service());
    let r = call(&svc, grpc_call("http://d/shop.Orders/Get"))
        .await
        .unwrap();
    assert_eq!(head(&r), GrpcHead::Status(4));
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_listed_method_is_retried_on_the_conditions_like_an_idempotent_call() {
    let fake = Fake::new([
        Step::Fail(crate::error::ProxyError::Reset("eof".into())),
        Step::Respond(ok_in_trailers),
    ]);
    let cfg = listing(&["/shop.Orders/Get"], false);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&cfg))).layer(fake.service());
    call(&svc, grpc_call("http://d/shop.Orders/Get"))
        .await
        .unwrap();
    assert_eq!(fake.calls(), 2);
    // The same reset of an unlisted method: it may have been processed.
    let fake = Fake::new([Step::Fail(crate::error::ProxyError::Reset("eof".into()))]);
    let svc = RetryLayer::new(Arc::new(RetryPolicy::new(&cfg))).layer(fake.service());
    assert!(call(&svc, grpc_call("http://d/shop.Orders/Put"))
        .await
        .is_err());
    assert_eq!(fake.calls(), 1);
}
