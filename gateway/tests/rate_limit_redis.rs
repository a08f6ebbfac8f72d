//! Cluster-wide rate limits through a real `redis-server`: two gateways enforce one
//! combined limit; a dead Redis is ridden out locally (fail_open) or answered 503
//! (fail_closed) and recovered from by itself; a frozen Redis costs its timeout to a
//! few requests only (breaker).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backends_demo::{wait_until, Backend, Gateway, GatewayConfig, Redis};
use common::raw_http::RawConn;
use serde_json::json;

mod common;

fn config(app: SocketAddr, redis: &Redis, policy: serde_json::Value, timeout: &str) -> String {
    let mut p = json!({ "rate": "20/s", "burst": 10, "key": "route", "store": "redis" });
    if let (Some(p), Some(extra)) = (p.as_object_mut(), policy.as_object()) {
        p.extend(extra.clone());
    }
    GatewayConfig::new()
        .upstream("app", &[app])
        .set(
            "redis",
            json!({ "url": redis.url(), "timeout": timeout, "replicas": 2 }),
        )
        .set("rate_limits.shared", p)
        .route_with("limited", "app", json!({ "rate_limit": "shared" }))
        .to_yaml()
}

/// Requests on one connection per gateway, in turn, for `secs`: statuses seen.
async fn hammer(gws: Vec<SocketAddr>, secs: f64) -> (Vec<u16>, Duration) {
    tokio::task::spawn_blocking(move || {
        let mut conns: Vec<RawConn> = gws.into_iter().map(RawConn::open).collect();
        let mut seen = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            for c in &mut conns {
                let r = c
                    .exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    .expect("answer");
                seen.push(r.status);
            }
        }
        (seen, start.elapsed())
    })
    .await
    .unwrap()
}

fn count(seen: &[u16], status: u16) -> usize {
    seen.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit() {
    let redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let yaml = config(app.addr(), &redis, json!({}), "50ms");
    let (a, b) = (
        Gateway::start(&yaml).await.unwrap(),
        Gateway::start(&yaml).await.unwrap(),
    );
    let (seen, elapsed) = hammer(vec![a.listen, b.listen], 2.0).await;
    let allowed = count(&seen, 200) as f64;
    let expected = 10.0 + 20.0 * elapsed.as_secs_f64();
    println!(
        "allowed {allowed} of {} in {elapsed:?}; expected {expected:.1}",
        seen.len()
    );
    assert_eq!(
        count(&seen, 200) + count(&seen, 429),
        seen.len(),
        "only 200 and 429"
    );
    assert!(
        (allowed - expected).abs() <= expected * 0.05 + 1.0,
        "allowed {allowed}, expected {expected:.1}"
    );
    for gw in [&a, &b] {
        assert!(
            gw.metric(
                "gateway_rate_limit_decisions_total",
                &[("result", "allowed")]
            )
            .await
            .unwrap()
                > 0.0,
            "both replicas served"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_is_ridden_out_locally_and_recovered_from() {
    let mut redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(app.addr(), &redis, json!({}), "50ms"))
        .await
        .unwrap();
    hammer(vec![gw.listen], 0.5).await;

    redis.kill();
    let (seen, elapsed) = hammer(vec![gw.listen], 2.0).await;
    let allowed = count(&seen, 200) as f64;
    println!(
        "redis down: {allowed} allowed of {} in {elapsed:?}",
        seen.len()
    );
    assert_eq!(
        count(&seen, 200) + count(&seen, 429),
        seen.len(),
        "no 5xx: {seen:?}"
    );
    // Locally, this replica's share: (20/s, burst 10) / 2 replicas.
    let local = 5.0 + 10.0 * elapsed.as_secs_f64();
    assert!(
        allowed <= local * 1.1 + 1.0 && allowed >= local * 0.5,
        "allowed {allowed}, local share {local:.1}"
    );
    assert!(
        gw.metric(
            "gateway_rate_limit_decisions_total",
            &[("result", "local_fallback")]
        )
        .await
        .unwrap()
            > 0.0
    );
    assert_eq!(
        gw.metric("gateway_redis_available", &[]).await.unwrap(),
        0.0
    );
    assert!(
        gw.log().contains("rate limits decided locally"),
        "{}",
        gw.log()
    );

    redis.restart().await.unwrap();
    wait_until(Duration::from_secs(10), || async {
        hammer(vec![gw.listen], 0.2).await;
        gw.metric("gateway_redis_available", &[]).await.unwrap() == 1.0
    })
    .await
    .expect("cluster-wide limiting resumes by itself");
    let keys = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.addr.port().to_string(),
            "--scan",
            "--pattern",
            "tollgate:rl:*",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.contains("tollgate:rl:{shared:"),
        "counters back in redis: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_while_redis_is_away() {
    let mut redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(
        app.addr(),
        &redis,
        json!({ "on_store_error": "fail_closed" }),
        "50ms",
    ))
    .await
    .unwrap();
    let addr = gw.listen;
    redis.kill();
    let r = tokio::task::spawn_blocking(move || {
        RawConn::open(addr)
            .exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.body.contains("reason: rate_limit_store_unavailable"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_its_timeout_to_a_few_requests_only() {
    let mut redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(
        app.addr(),
        &redis,
        json!({ "rate": "1000/s", "burst": 1000 }),
        "300ms",
    ))
    .await
    .unwrap();
    hammer(vec![gw.listen], 0.05).await;
    redis.freeze().unwrap();
    let addr = gw.listen;
    let times = tokio::task::spawn_blocking(move || {
        let mut c = RawConn::open(addr);
        (0..20)
            .map(|_| {
                let t = Instant::now();
                let r = c.exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
                t.elapsed()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    redis.thaw().unwrap();
    let slow = times
        .iter()
        .filter(|t| **t >= Duration::from_millis(250))
        .count();
    println!("frozen redis: {slow} of 20 requests waited for the timeout: {times:?}");
    assert!(
        (1..=4).contains(&slow),
        "a few waited, then the breaker: {times:?}"
    );
    assert!(
        times.iter().all(|t| *t < Duration::from_millis(1300)),
        "never more than the timeout: {times:?}"
    );
}

/// A client past its limit is refused without a Redis round trip until it may be
/// admitted again: a flood from one key costs Redis one call, not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_limit_costs_no_round_trip() {
    let redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(
        app.addr(),
        &redis,
        json!({ "rate": "1/s", "burst": 2 }),
        "50ms",
    ))
    .await
    .unwrap();
    let (seen, elapsed) = hammer(vec![gw.listen], 0.3).await;
    let calls = std::process::Command::new("redis-cli")
        .args(["-p", &redis.addr.port().to_string(), "info", "commandstats"])
        .output()
        .unwrap();
    let calls: u64 = String::from_utf8_lossy(&calls.stdout)
        .lines()
        .filter(|l| l.starts_with("cmdstat_eval"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    println!(
        "{} requests in {elapsed:?}, {} refused; {calls} script calls",
        seen.len(),
        count(&seen, 429)
    );
    assert_eq!(count(&seen, 200), 2, "the burst");
    assert!(count(&seen, 429) > 20);
    assert!(
        calls <= 5,
        "{calls} calls to Redis for {} requests",
        seen.len()
    );
    assert!(
        gw.metric(
            "gateway_rate_limit_decisions_total",
            &[("result", "limited_locally")]
        )
        .await
        .unwrap()
            > 20.0
    );
}

/// ElastiCache with in-transit encryption and AUTH: `rediss://` with a password and a
/// private CA. With the right password the limit is shared through Redis; with a
/// wrong one `fail_closed` says the store is unavailable (so the first half of the
/// test cannot pass by deciding locally).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_password_as_elasticache_runs_them() {
    let ca = backends_demo::pki::TestCa::new("redis-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .issue(&backends_demo::pki::CertSpec::dns(&["redis.test"]).add_ip([127, 0, 0, 1].into()))
        .unwrap()
        .write(dir.path(), "redis")
        .unwrap();
    let ca_path = dir.path().join("ca.crt");
    ca.write_bundle(&ca_path).unwrap();
    let redis = Redis::spawn_tls(&cert, &key, "s3cret").await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let yaml = |url: String| {
        GatewayConfig::new()
            .upstream("app", &[app.addr()])
            .set(
                "redis",
                json!({ "url": url, "timeout": "500ms", "ca": ca_path.display().to_string() }),
            )
            .set(
                "rate_limits.shared",
                json!({ "rate": "1/m", "burst": 3, "key": "route", "store": "redis",
                        "on_store_error": "fail_closed" }),
            )
            .route_with("limited", "app", json!({ "rate_limit": "shared" }))
            .to_yaml()
    };
    let (a, b) = (
        Gateway::start(&yaml(redis.url())).await.unwrap(),
        Gateway::start(&yaml(redis.url())).await.unwrap(),
    );
    let c = backends_demo::test_client();
    let t = Instant::now();
    let mut statuses = Vec::new();
    for gw in [&a, &b, &a, &b] {
        statuses.push(c.get(gw.url("/")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429], "one limit of 3 over both");
    println!("limited in {:?}", t.elapsed());

    let wrong = redis.url().replace("s3cret", "wrong");
    let gw = Gateway::start(&yaml(wrong)).await.unwrap();
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    println!("refused in {:?}", t.elapsed());
    let body = r.text().await.unwrap();
    assert!(body.contains("rate_limit_store_unavailable"), "{body}");
    assert!(
        !gw.log().contains("s3cret") && !gw.log().contains("wrong@"),
        "no password in logs"
    );
}

/// A sliding window kept in Redis: two gateways share "6 per minute".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_sliding_window() {
    let redis = Redis::spawn().await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let yaml = config(
        app.addr(),
        &redis,
        json!({ "rate": "6/m", "algorithm": "sliding_window", "burst": null }),
        "200ms",
    );
    let (a, b) = (
        Gateway::start(&yaml).await.unwrap(),
        Gateway::start(&yaml).await.unwrap(),
    );
    let c = backends_demo::test_client();
    let mut statuses = Vec::new();
    for gw in [&a, &b, &a, &b, &a, &b, &a, &b] {
        statuses.push(c.get(gw.url("/")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
    for gw in [&a, &b] {
        let local = gw
            .metric(
                "gateway_rate_limit_decisions_total",
                &[("result", "local_fallback")],
            )
            .await
            .unwrap();
        assert_eq!(local, 0.0, "decided by Redis, not locally");
    }
}

/// Redis Cluster (ElastiCache with cluster mode on): three masters. Limits keyed by an
/// API key land on different nodes (each key in its own slot) and each holds; and an
/// idempotent POST is answered from the cluster too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_spreads_keys_and_enforces_each() {
    let cluster = backends_demo::RedisCluster::spawn(3).await.unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let yaml = GatewayConfig::new()
        .upstream("app", &[app.addr()])
        .set(
            "redis",
            json!({ "url": cluster.url(), "cluster": true, "timeout": "500ms" }),
        )
        .set(
            "rate_limits.per-key",
            json!({ "rate": "1/m", "burst": 2, "key": "header:x-api-key", "store": "redis",
                    "on_store_error": "fail_closed" }),
        )
        .route_with(
            "limited",
            "app",
            json!({ "rate_limit": "per-key", "idempotency": {} }),
        )
        .to_yaml();
    let gw = Gateway::start(&yaml).await.unwrap();
    let c = backends_demo::test_client();
    // The cluster connection is made in the background: wait until it answers.
    wait_until(Duration::from_secs(10), || async {
        c.get(gw.url("/"))
            .header("x-api-key", "probe")
            .send()
            .await
            .is_ok_and(|r| r.status() != 503)
    })
    .await
    .expect("the gateway reaches the cluster");
    for key in 0..12 {
        let k = format!("key-{key}");
        let statuses: Vec<u16> = futures_util::future::join_all((0..3).map(|_| {
            let (c, url, k) = (c.clone(), gw.url("/"), k.clone());
            async move {
                c.get(url)
                    .header("x-api-key", k)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        }))
        .await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 2, "{k}: {statuses:?}");
    }
    let per_node = cluster.keys_per_node().unwrap();
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the nodes: {per_node:?}"
    );
    let post = |body: &'static str| {
        c.post(gw.url("/"))
            .header("x-api-key", "writer")
            .header("idempotency-key", "k1")
            .body(body)
            .send()
    };
    assert_eq!(post("a").await.unwrap().status(), 200);
    let again = post("a").await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.headers().contains_key("idempotent-replayed"));
}
