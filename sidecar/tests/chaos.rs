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
