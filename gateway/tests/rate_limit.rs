//! Rate limits with the local store, through a real gateway: a burst then the steady
//! rate, 429 with `Retry-After` and the IETF RateLimit fields on a kept-alive
//! connection, keys that combine request parts, and counters that survive a reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use backends_demo::{Backend, Gateway, GatewayConfig};
use common::raw_http::RawConn;
use serde_json::json;

mod common;

const RATE: f64 = 20.0;
const BURST: f64 = 10.0;

fn config(app: std::net::SocketAddr) -> GatewayConfig {
    GatewayConfig::new()
        .upstream("app", &[app])
        .set("rate_limits.per-client", json!({ "rate": "20/s", "burst": 10, "key": "client_ip" }))
        .set(
            "rate_limits.per-key",
            json!({ "rate": "2/s", "burst": 2, "key": ["route", "header:x-api-key"], "headers": "all" }),
        )
        .route_with("limited", "app", json!({ "match": { "path_prefix": "/limited" }, "rate_limit": "per-client" }))
        .route_with("keyed", "app", json!({ "match": { "path_prefix": "/keyed" }, "rate_limit": ["per-key"] }))
        .route("free", "app")
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_then_the_rate_and_429s_that_keep_the_connection() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(app.addr()).to_yaml()).await.unwrap();
    let addr = gw.listen;
    let (allowed, limited, elapsed, sample) = tokio::task::spawn_blocking(move || {
        let mut c = RawConn::open(addr);
        let (mut allowed, mut limited, mut sample) = (0u32, 0u32, None);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let r = c
                .exchange(&get("/limited", ""))
                .expect("answer on the same connection");
            match r.status {
                200 => allowed += 1,
                429 => {
                    limited += 1;
                    sample.get_or_insert(r);
                }
                s => panic!("unexpected {s}: {r:?}"),
            }
        }
        (allowed, limited, start.elapsed(), sample)
    })
    .await
    .unwrap();
    let expected = BURST + RATE * elapsed.as_secs_f64();
    println!("allowed {allowed}, limited {limited} in {elapsed:?}; expected {expected:.1}");
    assert!(
        (f64::from(allowed) - expected).abs() <= expected * 0.05 + 1.0,
        "allowed {allowed}, expected {expected:.1} within 5%"
    );
    assert!(limited > 0);
    let r = sample.unwrap();
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"per-client\";q=10;w=1")
    );
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with("\"per-client\";r=0;t="),
        "{r:?}"
    );
    assert!(
        r.body
            .contains("rate limit per-client exceeded\nreason: rate_limited"),
        "{}",
        r.body
    );
    assert_eq!(
        gw.metric(
            "gateway_rate_limit_decisions_total",
            &[("policy", "per-client"), ("result", "allowed")]
        )
        .await
        .unwrap(),
        f64::from(allowed)
    );
    assert_eq!(
        gw.metric(
            "gateway_rejected_requests_total",
            &[("reason", "rate_limited")]
        )
        .await
        .unwrap(),
        f64::from(limited)
    );
    // Refused requests count under their route, not as unrouted.
    assert_eq!(
        gw.metric(
            "gateway_requests_total",
            &[("route", "limited"), ("status", "4xx")]
        )
        .await
        .unwrap(),
        f64::from(limited)
    );
    // Routes without the policy are not limited.
    let free = tokio::task::spawn_blocking(move || {
        let mut c = RawConn::open(addr);
        (0..30).all(|_| c.exchange(&get("/free", "")).unwrap().status == 200)
    });
    assert!(free.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_combine_parts_missing_parts_are_not_counted_and_reloads_keep_counters() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(app.addr()).to_yaml()).await.unwrap();
    let addr = gw.listen;
    let statuses = move |extra: &'static str, n: usize| {
        tokio::task::spawn_blocking(move || {
            let mut c = RawConn::open(addr);
            (0..n)
                .map(|_| {
                    let r = c.exchange(&get("/keyed", extra)).unwrap();
                    (r.status, r.header("ratelimit").map(str::to_owned))
                })
                .collect::<Vec<_>>()
        })
    };
    let a = statuses("X-Api-Key: a\r\n", 3).await.unwrap();
    assert_eq!(a.iter().map(|s| s.0).collect::<Vec<_>>(), [200, 200, 429]);
    // headers: all -> every answer says where the client stands.
    assert!(
        a[0].1.as_deref().unwrap().starts_with("\"per-key\";r=1;"),
        "{a:?}"
    );
    assert!(
        a[1].1.as_deref().unwrap().starts_with("\"per-key\";r=0;"),
        "{a:?}"
    );
    let b = statuses("X-Api-Key: b\r\n", 1).await.unwrap();
    assert_eq!(b[0].0, 200, "another key has its own bucket");
    let none = statuses("", 5).await.unwrap();
    assert!(
        none.iter().all(|s| s.0 == 200),
        "no key: not counted {none:?}"
    );

    // A reload that changes something else keeps key a's empty bucket.
    gw.write_config(&config(app.addr()).route("extra", "app").to_yaml())
        .unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert!(status == 200, "{body}");
    let a = statuses("X-Api-Key: a\r\n", 1).await.unwrap();
    assert_eq!(a[0].0, 429, "counters carried over the reload");
}

#[tokio::test]
async fn bad_policies_are_refused_with_the_field_named() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let cfg = GatewayConfig::new()
        .upstream("app", &[app.addr()])
        .set(
            "rate_limits.p",
            json!({ "rate": "10/s", "key": ["header:", "ip"] }),
        )
        .route_with("r", "app", json!({ "rate_limit": ["p", "nope"] }));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.yaml");
    std::fs::write(
        &file,
        cfg.to_yaml()
            .replace("${LISTEN}", "127.0.0.1:1")
            .replace("${ADMIN}", "127.0.0.1:2"),
    )
    .unwrap();
    let out = std::process::Command::new(backends_demo::bin_path("gateway").unwrap())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rate_limits.p.key[0]") && err.contains("needs a name"),
        "{err}"
    );
    assert!(
        err.contains("rate_limits.p.key[1]") && err.contains("expected client_ip"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].rate_limit[1]") && err.contains("\"nope\" is not defined"),
        "{err}"
    );
}

/// "5 per 10 s" as a sliding window: five pass at once, the sixth waits until enough
/// of the window slid past (Retry-After from the window, not a constant), and the
/// RateLimit-Policy says q=5;w=10.
#[tokio::test]
async fn a_sliding_window_admits_its_count_per_window() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let cfg = GatewayConfig::new()
        .upstream("app", &[app.addr()])
        .set(
            "rate_limits.window",
            json!({ "rate": "5/10s", "algorithm": "sliding_window", "key": "route" }),
        )
        .route_with("r", "app", json!({ "rate_limit": "window" }));
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();
    let addr = gw.listen;
    let answers = tokio::task::spawn_blocking(move || {
        let mut c = RawConn::open(addr);
        (0..7)
            .map(|_| c.exchange(&get("/", "")).expect("answer"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let refused = &answers[5];
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"window\";q=5;w=10")
    );
    // Counted at time t in window [0,10): the next fits once 1/5 of the five slid out
    // of the next window, 10 - t + 2 s from now: between 2 and 12 s.
    let after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((2..=12).contains(&after), "Retry-After {after}");
    assert_eq!(app.stats().await.unwrap().requests, 5);
}
