//! Per-dependency resilience with real processes: breaker, retries and their budget,
//! bulkhead, and certificate rotation under load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use backends_demo::load::{summarize, Load, Sample};
use backends_demo::pki::CertSpec;
use backends_demo::{test_client, wait_until};
use common::*;

fn policy(lines: &str) -> MeshOpts {
    MeshOpts {
        dep_policy: lines
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("    {}\n", l.trim()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn breaker_trips_fails_fast_and_recovers_through_half_open() {
    let m = Mesh::start(policy(
        "circuit_breaker: { failure_rate: 50%, min_requests: 10, window: 10s, open_for: 1s, half_open_probes: 2 }",
    ))
    .await;
    m.app.fault("status=503").await.unwrap();
    let c = test_client();
    let mut n = 0;
    loop {
        let r = c.get(m.url("/")).send().await.unwrap();
        n += 1;
        if r.headers()
            .get("x-sidecar-error")
            .is_some_and(|v| v == "circuit_open")
        {
            assert_eq!(r.status(), 503);
            assert!(r.headers().contains_key("retry-after"));
            break;
        }
        assert!(n <= 12, "breaker did not open after {n} calls");
    }
    // Open: calls fail fast and the dependency sees nothing.
    let seen = m.app.stats().await.unwrap().requests;
    let t = Instant::now();
    for _ in 0..200 {
        let r = c.get(m.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["x-sidecar-error"], "circuit_open");
    }
    let per_call = t.elapsed() / 200;
    println!("breaker open: {per_call:?} per call, client round trip included");
    assert_eq!(
        m.app.stats().await.unwrap().requests,
        seen,
        "no traffic while open"
    );
    let deps = m.a.admin_json("/dependencies").await.unwrap();
    assert_eq!(
        deps["dependencies"][0]["breaker"]["state"], "open",
        "{deps}"
    );

    // The dependency recovers; after open_for, probes close the breaker.
    m.app.clear_fault().await.unwrap();
    wait_until(Duration::from_secs(5), || async {
        c.get(m.url("/")).send().await.unwrap().status() == 200
    })
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
    }
    let deps = m.a.admin_json("/dependencies").await.unwrap();
    assert_eq!(
        deps["dependencies"][0]["breaker"]["state"], "closed",
        "{deps}"
    );
}

#[tokio::test]
async fn slow_calls_trip_the_breaker() {
    let m = Mesh::start(policy(
        "circuit_breaker: { failure_rate: 100%, slow_call: 100ms, slow_call_rate: 50%, min_requests: 5, window: 10s, open_for: 5s }",
    ))
    .await;
    m.app.fault("latency=200ms").await.unwrap();
    let c = test_client();
    let mut opened = false;
    for _ in 0..10 {
        let r = c.get(m.url("/")).send().await.unwrap();
        if r.headers()
            .get("x-sidecar-error")
            .is_some_and(|v| v == "circuit_open")
        {
            opened = true;
            break;
        }
        assert_eq!(r.status(), 200, "slow, not failed");
    }
    assert!(opened, "slow calls must open the breaker");
}

#[tokio::test]
async fn retries_follow_idempotency_rules() {
    let m = Mesh::start(policy(
        "retry: { attempts: 5, backoff: 1ms..5ms, budget: 100%, min_per_second: 1000, on: [5xx, reset, connect-failure] }",
    ))
    .await;
    m.app.fault("status=503&rate=0.5").await.unwrap();
    let c = test_client();
    let mut ok = 0;
    for _ in 0..100 {
        if c.get(m.url("/")).send().await.unwrap().status() == 200 {
            ok += 1;
        }
    }
    // 5 tries at 50%: about 97% succeed (85 is 7 standard deviations below).
    assert!(ok >= 85, "GETs almost all succeed with retries: {ok}/100");

    let before = m.app.stats().await.unwrap().requests;
    for _ in 0..40 {
        c.post(m.url("/")).body("x").send().await.unwrap();
    }
    let after = m.app.stats().await.unwrap().requests;
    assert_eq!(
        after - before,
        40,
        "POST without Idempotency-Key is never retried"
    );

    let mut ok = 0;
    for i in 0..40 {
        let r = c
            .post(m.url("/"))
            .header("idempotency-key", format!("k{i}"))
            .body("x")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            ok += 1;
        }
    }
    assert!(ok >= 33, "POST with Idempotency-Key is retried: {ok}/40");
}

#[tokio::test]
async fn retry_budget_bounds_amplification_in_a_total_outage() {
    let m = Mesh::start(policy(
        "retry: { attempts: 5, backoff: 1ms..2ms, budget: 20%, min_per_second: 0, on: [5xx] }",
    ))
    .await;
    m.app.fault("status=503").await.unwrap();
    let samples = Load::get(m.url("/"))
        .concurrency(4)
        .duration(Duration::from_secs(2))
        .spawn()
        .join()
        .await;
    let calls = samples.len() as f64;
    let sent = m.app.stats().await.unwrap().requests as f64;
    let amplification = sent / calls;
    println!(
        "total outage, attempts 5, budget 20%: {calls} calls -> {sent} requests to the dependency (x{amplification:.2})"
    );
    // Without a budget this would be x5.
    assert!(amplification <= 1.3, "x{amplification:.2}");
    assert!(
        m.a.metric("sidecar_retry_budget_exhausted_total", &[])
            .await
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn bulkhead_rejects_beyond_max_concurrent_at_once() {
    let m = Mesh::start(policy("max_concurrent: 5")).await;
    m.app.fault("latency=1s").await.unwrap();
    let c = test_client();
    let started = Instant::now();
    let calls: Vec<_> = (0..15)
        .map(|_| {
            let (c, url) = (c.clone(), m.url("/"));
            tokio::spawn(async move {
                let t = Instant::now();
                let r = c.get(url).send().await.unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("x-sidecar-error").cloned(),
                    t.elapsed(),
                )
            })
        })
        .collect();
    let mut ok = 0;
    let mut rejected = 0;
    for h in calls {
        let (status, err, took) = h.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(err.unwrap(), "bulkhead_full");
                assert!(
                    took < Duration::from_millis(500),
                    "rejected at once, not after {took:?}"
                );
                rejected += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, rejected), (5, 10), "after {:?}", started.elapsed());
}

#[tokio::test]
async fn certificate_rotation_on_both_sides_under_load_loses_nothing() {
    let m = Mesh::start(MeshOpts::default()).await;
    let load = Load::get(m.url("/"))
        .concurrency(4)
        .duration(Duration::from_secs(4))
        .spawn();
    let serial_before = m.a.admin_json("/identity").await.unwrap()["serial"].clone();
    tokio::time::sleep(Duration::from_millis(800)).await;
    issue(
        &m.ca,
        m.dir.path(),
        "a",
        CertSpec::spiffe(A_ID).serial(0xa2),
    );
    issue(
        &m.ca,
        m.dir.path(),
        "b",
        CertSpec::spiffe(B_ID).serial(0xb2),
    );
    wait_until(Duration::from_secs(3), || async {
        m.a.admin_json("/identity").await.unwrap()["serial"] != serial_before
    })
    .await
    .unwrap();
    let samples = load.join().await;
    println!("rotation under load: {}", summarize(&samples));
    assert!(samples.len() > 200);
    assert!(samples.iter().all(Sample::is_ok), "{}", summarize(&samples));
}
