//! Idempotency keys at the edge, through a real `redis-server` shared by two gateway
//! processes: a retried POST gets the stored answer and the backend sees it once;
//! a duplicate while the first is in flight gets 409 (or waits for its answer); the
//! same key on another request gets 422; an answer the backend failed is not stored.
//! And the route's fault injection, which game days use beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use backends_demo::{sum_metric, test_client, wait_until, Backend, Gateway, GatewayConfig, Redis};
use serde_json::{json, Value};

fn config(app: SocketAddr, redis: &Redis, idempotency: Value) -> String {
    GatewayConfig::new()
        .upstream("app", &[app])
        .set("redis", json!({ "url": redis.url(), "timeout": "200ms" }))
        .route_with("orders", "app", json!({ "idempotency": idempotency }))
        .to_yaml()
}

struct Answer {
    status: u16,
    replayed: bool,
    body: String,
}

async fn post(gw: &Gateway, key: Option<&str>, body: &'static str) -> Answer {
    let mut req = test_client()
        .post(format!("http://{}/orders", gw.listen))
        .header("authorization", "Bearer alice")
        .body(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    Answer {
        status: r.status().as_u16(),
        replayed: r
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true"),
        body: r.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_post_is_answered_from_the_store_on_any_replica() {
    let redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let yaml = config(app.addr(), &redis, json!({}));
    let (a, b) = (
        Gateway::start(&yaml).await.unwrap(),
        Gateway::start(&yaml).await.unwrap(),
    );

    let first = post(&a, Some("order-1"), "{\"sku\":42}").await;
    assert_eq!(
        (first.status, first.replayed),
        (200, false),
        "{}",
        first.body
    );
    // The echo names the request id the backend saw: a replay must carry that body.
    let echoed: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(echoed["body_bytes"], 10);

    for gw in [&a, &b, &a] {
        let again = post(gw, Some("order-1"), "{\"sku\":42}").await;
        assert_eq!((again.status, again.replayed), (200, true));
        assert_eq!(again.body, first.body, "the stored answer, byte for byte");
    }
    assert_eq!(
        app.stats().await.unwrap().requests,
        1,
        "the backend saw it once"
    );

    // The same key on another request is a client bug: refused, not replayed.
    let other = post(&b, Some("order-1"), "{\"sku\":43}").await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert!(
        other.body.contains("idempotency_key_reused"),
        "{}",
        other.body
    );

    // Another client's identical key is another key.
    let r = test_client()
        .post(format!("http://{}/orders", a.listen))
        .header("authorization", "Bearer bob")
        .header("idempotency-key", "order-1")
        .body("{\"sku\":42}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());

    // No key, and GETs: passed through every time.
    post(&a, None, "{}").await;
    post(&a, None, "{}").await;
    assert_eq!(app.stats().await.unwrap().requests, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_in_flight_gets_409_and_a_failed_answer_is_not_stored() {
    let redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let yaml = config(app.addr(), &redis, json!({ "required": true }));
    let (a, b) = (
        Gateway::start(&yaml).await.unwrap(),
        Gateway::start(&yaml).await.unwrap(),
    );

    app.fault("latency=1500ms").await.unwrap();
    let first = {
        let url = format!("http://{}/orders", a.listen);
        tokio::spawn(async move {
            test_client()
                .post(url)
                .header("authorization", "Bearer alice")
                .header("idempotency-key", "\"slow-1\"")
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    wait_until(Duration::from_secs(5), || async {
        app.stats().await.is_ok_and(|s| s.in_flight == 1)
    })
    .await
    .expect("the first request reaches the backend");
    let dup = post(&b, Some("slow-1"), "x").await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    assert!(
        dup.body.contains("idempotency_key_in_flight"),
        "{}",
        dup.body
    );
    assert_eq!(first.await.unwrap(), 200);
    app.clear_fault().await.unwrap();
    let after = post(&b, Some("slow-1"), "x").await;
    assert_eq!((after.status, after.replayed), (200, true));
    assert_eq!(app.stats().await.unwrap().requests, 1);

    // A key is required on this route.
    let missing = post(&a, None, "x").await;
    assert_eq!(missing.status, 400, "{}", missing.body);

    // A 503 from the backend is not an answer to keep: the retry goes through.
    app.fault("status=503").await.unwrap();
    assert_eq!(post(&a, Some("fails-once"), "y").await.status, 503);
    app.clear_fault().await.unwrap();
    let retry = post(&a, Some("fails-once"), "y").await;
    assert_eq!((retry.status, retry.replayed), (200, false));
    assert_eq!(app.stats().await.unwrap().requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_a_duplicate_gets_the_first_answer() {
    let redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(
        app.addr(),
        &redis,
        json!({ "in_flight": "wait", "wait_timeout": "5s" }),
    ))
    .await
    .unwrap();
    app.fault("latency=800ms").await.unwrap();
    let url = format!("http://{}/orders", gw.listen);
    let send = |url: String| async move {
        let r = test_client()
            .post(url)
            .header("idempotency-key", "w-1")
            .body("z")
            .send()
            .await
            .unwrap();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        (r.status().as_u16(), replayed, r.text().await.unwrap())
    };
    let first = tokio::spawn(send(url.clone()));
    wait_until(Duration::from_secs(5), || async {
        app.stats().await.is_ok_and(|s| s.in_flight == 1)
    })
    .await
    .expect("the first request reaches the backend");
    let second = send(url).await;
    let first = first.await.unwrap();
    assert_eq!((first.0, first.1), (200, false));
    assert_eq!((second.0, second.1), (200, true));
    assert_eq!(first.2, second.2);
    assert_eq!(app.stats().await.unwrap().requests, 1);
}

#[tokio::test]
async fn redis_down_forwards_without_the_guarantee_or_refuses_as_configured() {
    let mut redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let open = Gateway::start(&config(app.addr(), &redis, json!({})))
        .await
        .unwrap();
    let closed = Gateway::start(&config(
        app.addr(),
        &redis,
        json!({ "on_store_error": "fail_closed" }),
    ))
    .await
    .unwrap();
    redis.kill();
    assert_eq!(post(&open, Some("k"), "a").await.status, 200);
    let r = post(&closed, Some("k"), "a").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("idempotency_store_unavailable"),
        "{}",
        r.body
    );
    assert_eq!(app.stats().await.unwrap().requests, 1);
}

#[tokio::test]
async fn route_faults_abort_or_delay_only_what_they_select() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("app", &[app.addr()])
            .route_with(
                "chaos",
                "app",
                json!({ "match": { "path_prefix": "/chaos" }, "fault": {
                    "abort_status": 418, "abort_percent": "100%", "only_with_header": "x-chaos" } }),
            )
            .route_with(
                "slow",
                "app",
                json!({ "fault": { "delay": "300ms", "delay_percent": "100%" } }),
            )
            .to_yaml(),
    )
    .await
    .unwrap();
    let c = test_client();
    let url = |p: &str| format!("http://{}{p}", gw.listen);
    let r = c
        .get(url("/chaos"))
        .header("x-chaos", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 418);
    assert!(r.text().await.unwrap().contains("fault_injected"));
    assert_eq!(
        app.stats().await.unwrap().requests,
        0,
        "an abort never reaches the backend"
    );
    assert_eq!(c.get(url("/chaos")).send().await.unwrap().status(), 200);
    let t = std::time::Instant::now();
    assert_eq!(c.get(url("/other")).send().await.unwrap().status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let metrics = c
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (route, kind) in [("chaos", "abort"), ("slow", "delay")] {
        let n = sum_metric(
            &metrics,
            "gateway_faults_injected_total",
            &[("route", route), ("kind", kind)],
        );
        assert_eq!(n, 1.0, "{route} {kind}");
    }
}
