//! Fault injection, the outbound rate limit and hedging, with real processes:
//! app -> sidecar A -> mTLS -> sidecar B -> backend-demo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use backends_demo::test_client;
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

/// (status, `x-sidecar-error`, `retry-after`) of `GET path`, optionally with `x-chaos`.
async fn get(c: &reqwest::Client, m: &Mesh, chaos: bool) -> (u16, Option<String>, Option<String>) {
    let mut req = c.get(m.url("/"));
    if chaos {
        req = req.header("x-chaos", "1");
    }
    let r = req.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (err, retry_after) = (header("x-sidecar-error"), header("retry-after"));
    (r.status().as_u16(), err, retry_after)
}

#[tokio::test]
async fn an_injected_abort_answers_the_app_and_never_reaches_the_dependency() {
    let m = Mesh::start(policy("fault: { abort_status: 503, abort_percent: 100% }")).await;
    let c = test_client();
    for _ in 0..10 {
        let (status, err, _) = get(&c, &m, false).await;
        assert_eq!(status, 503);
        assert_eq!(err.as_deref(), Some("fault_injected"));
    }
    assert_eq!(m.app.stats().await.unwrap().requests, 0);
}

#[tokio::test]
async fn only_calls_with_the_header_are_faulted() {
    let m = Mesh::start(policy(
        "fault: { abort_status: 503, abort_percent: 100%, only_with_header: x-chaos }",
    ))
    .await;
    let c = test_client();
    for _ in 0..5 {
        assert_eq!(get(&c, &m, false).await, (200, None, None));
        let (status, err, _) = get(&c, &m, true).await;
        assert_eq!((status, err.as_deref()), (503, Some("fault_injected")));
    }
    assert_eq!(m.app.stats().await.unwrap().requests, 5);
}

#[tokio::test]
async fn an_injected_delay_is_applied() {
    let m = Mesh::start(policy("fault: { delay: 300ms, delay_percent: 100% }")).await;
    let c = test_client();
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(get(&c, &m, false).await.0, 200);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
    }
    assert_eq!(m.app.stats().await.unwrap().requests, 3);
}

#[tokio::test]
async fn the_rate_limit_refuses_beyond_its_burst_with_429() {
    let m = Mesh::start(policy("rate_limit: 10/s")).await;
    let c = test_client();
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let (c, url) = (c.clone(), m.url("/"));
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
                (r.status().as_u16(), h("x-sidecar-error"), h("retry-after"))
            })
        })
        .collect();
    let mut ok = 0u64;
    for h in calls {
        match h.await.unwrap() {
            (200, _, _) => ok += 1,
            (429, err, retry_after) => {
                assert_eq!(err.as_deref(), Some("rate_limited"));
                assert!(retry_after.is_some(), "429 without Retry-After");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A burst of one second's worth, plus what refilled while the 40 went out.
    assert!((10..=14).contains(&ok), "{ok} of 40 passed");
    assert_eq!(m.app.stats().await.unwrap().requests, ok);
}

#[tokio::test]
async fn the_rate_limit_survives_a_reload_and_faults_come_first() {
    // Burst 1, then one call every 3 minutes: the bucket stays empty for the test.
    let m = Mesh::start(policy("rate_limit: 20/h")).await;
    let c = test_client();
    assert_eq!(get(&c, &m, false).await.0, 200);
    assert_eq!(get(&c, &m, false).await.0, 429);

    let yaml = std::fs::read_to_string(m.a.config_path()).unwrap();
    let changed = yaml.replace(
        "    rate_limit: 20/h\n",
        "    rate_limit: 30/h\n    fault: { abort_status: 503, abort_percent: 100%, only_with_header: x-chaos }\n",
    );
    assert_ne!(yaml, changed);
    m.a.write_config(&changed).unwrap();
    let (status, body) = m.a.reload().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "applied", "{body}");

    // Not refilled by the reload.
    let (status, err, _) = get(&c, &m, false).await;
    assert_eq!((status, err.as_deref()), (429, Some("rate_limited")));
    // The new fault applies, before the rate limit.
    let (status, err, _) = get(&c, &m, true).await;
    assert_eq!((status, err.as_deref()), (503, Some("fault_injected")));
    assert_eq!(m.app.stats().await.unwrap().requests, 1);
}

#[tokio::test]
async fn hedged_gets_get_past_hung_requests() {
    // Half the requests hang; a hedge after 50ms rescues most of those.
    let m = Mesh::start(policy("timeout: 1s\nhedge_after: 50ms")).await;
    let c = test_client();
    // Warm the connection A -> B so first copies are not slowed by the handshake.
    assert_eq!(get(&c, &m, false).await.0, 200);
    let before = m.app.stats().await.unwrap().requests;
    m.app.fault("hang=true&rate=0.5").await.unwrap();
    const CALLS: u64 = 100;
    let (mut ok, mut timed_out) = (0u64, 0u64);
    for _wave in 0..4 {
        let calls: Vec<_> = (0..CALLS / 4)
            .map(|_| {
                let (c, url) = (c.clone(), m.url("/"));
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = c.get(url).send().await.unwrap();
                    let err = r.headers().get("x-sidecar-error").cloned();
                    (r.status().as_u16(), err, t.elapsed())
                })
            })
            .collect();
        for h in calls {
            match h.await.unwrap() {
                (200, _, took) => {
                    ok += 1;
                    assert!(took < Duration::from_millis(900), "{took:?}");
                }
                // Both copies hung.
                (504, err, _) => {
                    timed_out += 1;
                    assert_eq!(err.unwrap(), "timeout");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let sent = m.app.stats().await.unwrap().requests - before;
    println!(
        "hedging past 50% hung requests: {ok}/{CALLS} ok, {timed_out} timed out, {sent} requests sent"
    );
    // One try each would give about 50 of 100; with a hedge about 75.
    assert!(ok >= 60, "{ok}/{CALLS} succeeded");
    // About one hedge per hung first copy, and never more than one per call.
    assert!(sent >= CALLS + 25, "{sent} requests for {CALLS} calls");
    assert!(sent <= 2 * CALLS, "{sent} requests for {CALLS} calls");
}

#[tokio::test]
async fn hedges_fire_at_the_observed_p95_and_win() {
    // 2.5% of the dependency's answers take 300ms (a slow tail), the rest a few ms: the
    // p95 of recent tries sits at the top of the fast ones, so a slow first copy is
    // hedged there and the hedge (97.5% likely fast) answers first. (A tail of 5% or
    // more would put the p95 itself in the slow mode, where it stays: the slow tries
    // are then never hedged, so all of them are counted. That is what p95 means.)
    let m = Mesh::start(policy(
        "timeout: 2s\nhedge_after: { percentile: p95, min: 1ms, max: 500ms }",
    ))
    .await;
    let c = test_client();
    let dep = [("dependency", "app")];
    // Before any try: the ceiling, shown as warming up.
    let status = m.a.admin_json("/dependencies").await.unwrap();
    let hedge = &status["dependencies"][0]["hedge"];
    assert_eq!(hedge["source"], "warming_up", "{hedge}");
    assert_eq!(hedge["after_ms"], 500.0, "{hedge}");
    assert_eq!(
        m.a.metric("sidecar_hedge_after_seconds", &dep)
            .await
            .unwrap(),
        0.5
    );

    m.app
        .fault("latency=300ms&latency_rate=0.05")
        .await
        .unwrap();
    const CALLS: u64 = 600;
    for _ in 0..CALLS {
        assert_eq!(get(&c, &m, false).await.0, 200);
    }
    let status = m.a.admin_json("/dependencies").await.unwrap();
    let hedge = &status["dependencies"][0]["hedge"];
    println!("hedge status after {CALLS} calls: {hedge}");
    assert_eq!(hedge["source"], "percentile", "{hedge}");
    assert_eq!(hedge["hedge_after"], "p95", "{hedge}");
    let after_ms = hedge["after_ms"].as_f64().unwrap();
    let p95 = hedge["observed_ms"]["p95"].as_f64().unwrap();
    let p99 = hedge["observed_ms"]["p99"].as_f64().unwrap();
    // The delay in force is the observed p95 (floor 1ms), below the slow tail.
    assert!((1.0..300.0).contains(&after_ms), "{hedge}");
    assert!(
        (after_ms - p95.max(1.0)).abs() <= p95 * 0.5 + 1.0,
        "{hedge}"
    );
    assert!(p99 >= after_ms, "{hedge}");
    let gauge =
        m.a.metric("sidecar_hedge_after_seconds", &dep)
            .await
            .unwrap();
    assert!(gauge > 0.0 && gauge < 0.3, "{gauge}");

    let hedged = m.a.metric("sidecar_hedges_total", &dep).await.unwrap();
    let won = m.a.metric("sidecar_hedges_won_total", &dep).await.unwrap();
    let sent = m.app.stats().await.unwrap().requests;
    println!(
        "p95 hedging: delay {after_ms:.2} ms (observed p95 {p95:.2} ms, p99 {p99:.2} ms), \
         {hedged} hedges, {won} won, {sent} requests for {CALLS} calls"
    );
    // About 15 slow first copies (2.5% of 600, less the warm-up's) are hedged and won,
    // plus the fast tries just above the p95.
    assert!(won >= 4.0, "{won} hedges won of {hedged}");
    assert!(hedged >= won, "{hedged} {won}");
    // Within the hedging budget (10% of requests + 10/s), and one hedge per call at most.
    assert!(hedged <= (CALLS / 2) as f64, "{hedged}");
    // A losing copy may be cancelled before the peer passes it on: at most one each.
    assert!(
        sent >= CALLS && sent as f64 <= CALLS as f64 + hedged,
        "{sent} requests for {CALLS} calls and {hedged} hedges"
    );
}
