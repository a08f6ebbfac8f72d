//! SIGTERM: readiness goes 503, the gateway keeps serving for the drain delay, stops
//! accepting, finishes in-flight requests and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use backends_demo::load::{summarize, Load, Outcome};
use backends_demo::{test_client, Backend, Gateway};

#[tokio::test]
async fn sigterm_under_load_loses_no_accepted_request() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    // Slow answers, so requests are in flight when the listeners close.
    a.fault("latency=300ms").await.unwrap();
    let mut gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1, shutdown: {{ drain_delay: 1s, grace_period: 10s }} }}
routes: [{{ name: all, upstream: app }}]
upstreams: {{ app: {{ endpoints: [{{ address: {} }}] }} }}
"#,
        a.addr()
    ))
    .await
    .unwrap();

    let load = Load::get(gw.url("/"))
        .concurrency(8)
        .duration(Duration::from_secs(4))
        .spawn();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let term_at = load.elapsed();
    let t0 = Instant::now();
    gw.proc().signal("TERM").unwrap();

    // Readiness flips at once; traffic is still served during the drain delay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = test_client()
        .get(gw.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let served = test_client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(served.status(), 200, "still serving during the drain delay");
    assert_eq!(
        served.headers()["connection"],
        "close",
        "clients are told to reconnect"
    );

    let code = gw.proc().wait_exit(Duration::from_secs(12)).await.unwrap();
    let took = t0.elapsed();
    let samples = load.join().await;
    println!(
        "SIGTERM: exit {code:?} after {took:?}; {}",
        summarize(&samples)
    );
    assert_eq!(code, Some(0), "{}", gw.log());
    // Served through the drain delay, exited soon after the last in-flight request.
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    let lost: Vec<_> = samples
        .iter()
        .filter(|s| {
            matches!(s.outcome, Outcome::Failed(_))
                || matches!(s.outcome, Outcome::Status(c) if c >= 500)
        })
        .collect();
    assert!(
        lost.is_empty(),
        "accepted requests lost: {lost:?}\n{}",
        summarize(&samples)
    );
    let ok_after_term = samples
        .iter()
        .filter(|s| s.at > term_at && s.is_ok())
        .count();
    assert!(
        ok_after_term >= 8,
        "requests kept being served after SIGTERM: {ok_after_term}"
    );
    // After the listeners closed, new connections are refused (not accepted, not lost).
    assert!(samples
        .iter()
        .any(|s| matches!(s.outcome, Outcome::Refused)));
}
