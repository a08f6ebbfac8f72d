//! Per-route concurrency limits with real processes: a slow backend, more requests
//! than the route allows at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use backends_demo::{test_client, Backend, Gateway, GatewayConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_at_its_limit_queues_then_refuses_without_touching_the_backend() {
    let app = Backend::builder().spawn().await.unwrap();
    app.fault("latency=400ms").await.unwrap();
    let cfg = GatewayConfig::new()
        .route_with(
            "slow",
            "u",
            json!({ "concurrency": { "max": 2, "queue": 1, "queue_timeout": "2s" } }),
        )
        .upstream("u", &[app.addr()]);
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();
    let before = app.stats().await.unwrap().requests;

    // Five at once: two run, one waits for a slot, two are refused at once.
    let c = test_client();
    let calls = (0..5).map(|_| {
        let (c, url) = (c.clone(), gw.url("/"));
        async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, retry_after, r.text().await.unwrap())
        }
    });
    let queued = || async {
        gw.metric(
            "gateway_concurrency_queued",
            &[("scope", "route"), ("name", "slow")],
        )
        .await
        .unwrap_or(0.0)
    };
    let (results, seen_queued) = tokio::join!(futures_util::future::join_all(calls), async {
        backends_demo::wait_until(std::time::Duration::from_secs(2), || async {
            queued().await == 1.0
        })
        .await
    });
    seen_queued.expect("the queue depth shows the waiting request");
    assert_eq!(queued().await, 0.0, "and empties");
    let ok = results.iter().filter(|(s, ..)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, ..)| *s == 503).collect();
    assert_eq!((ok, refused.len()), (3, 2), "{results:#?}");
    for (_, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(body.contains("reason: concurrency_limited"), "{body}");
    }
    assert_eq!(
        app.stats().await.unwrap().requests - before,
        3,
        "refusals never reach the backend"
    );
    assert_eq!(
        gw.metric(
            "gateway_rejected_requests_total",
            &[("reason", "concurrency_limited")]
        )
        .await
        .unwrap(),
        2.0
    );
    // The slots were given back.
    for _ in 0..3 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
}

/// `clients` loops of requests for `secs`: latencies of the 200s, and how many were
/// shed with `reason`.
async fn offered_load(url: String, clients: usize, secs: f64, reason: &str) -> (Vec<f64>, usize) {
    let c = test_client();
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (c, url, reason) = (c.clone(), url.clone(), reason.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut shed) = (Vec::new(), 0usize);
                while std::time::Instant::now() < end {
                    let t = std::time::Instant::now();
                    let r = c.get(&url).send().await.unwrap();
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap();
                    match status {
                        200 => ok.push(t.elapsed().as_secs_f64() * 1000.0),
                        503 if body.contains(&format!("reason: {reason}")) => {
                            shed += 1;
                            // A shed client backs off a little, as Retry-After asks.
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                (ok, shed)
            })
        })
        .collect();
    let (mut all, mut shed) = (Vec::new(), 0);
    for t in tasks {
        let (ok, s) = t.await.unwrap();
        all.extend(ok);
        shed += s;
    }
    all.sort_by(f64::total_cmp);
    (all, shed)
}

fn p99(sorted: &[f64]) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * 0.99).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_limit_holds_across_its_routes() {
    let app = Backend::builder().spawn().await.unwrap();
    app.fault("latency=400ms").await.unwrap();
    let cfg = GatewayConfig::new()
        .route_with("a", "u", json!({ "match": { "path_prefix": "/a" } }))
        .route_with("b", "u", json!({ "match": { "path_prefix": "/b" } }))
        .upstream_with("u", &[app.addr()], json!({ "concurrency": { "max": 2 } }));
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();
    let c = test_client();
    let calls = ["/a", "/b", "/a", "/b", "/a"].map(|p| {
        let (c, url) = (c.clone(), gw.url(p));
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 2, "{results:#?}");
    for (s, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*s, 503);
        assert!(
            body.contains("upstream u has 2 requests in flight"),
            "{body}"
        );
    }
    assert_eq!(app.stats().await.unwrap().peak_in_flight, 2);
}

/// A backend whose latency grows with its load (20 ms + 10 ms per other request in
/// flight), offered 32 concurrent clients: once through a plain upstream, once through
/// one with adaptive concurrency. The adaptive limit keeps the backend's concurrency
/// (and so its latency) near what it serves at its best, and sheds the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_sheds_what_a_slowing_backend_cannot_take() {
    const CLIENTS: usize = 32;
    let plain_app = Backend::builder().spawn().await.unwrap();
    let adaptive_app = Backend::builder().spawn().await.unwrap();
    for app in [&plain_app, &adaptive_app] {
        app.fault("latency=20ms&load_latency=10ms").await.unwrap();
    }
    let cfg = GatewayConfig::new()
        .route_with(
            "plain",
            "plain",
            json!({ "match": { "path_prefix": "/plain" } }),
        )
        .route("adaptive", "adaptive")
        .upstream("plain", &[plain_app.addr()])
        .upstream_with(
            "adaptive",
            &[adaptive_app.addr()],
            json!({ "adaptive_concurrency": {
                "min_limit": 2, "interval": "50ms", "min_rtt_samples": 10 } }),
        );
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();

    let (plain, plain_shed) = offered_load(gw.url("/plain"), CLIENTS, 3.0, "none").await;
    let (adaptive, shed) = offered_load(
        gw.url("/adaptive"),
        CLIENTS,
        3.0,
        "adaptive_concurrency_limited",
    )
    .await;
    let (plain_peak, adaptive_peak) = (
        plain_app.stats().await.unwrap().peak_in_flight,
        adaptive_app.stats().await.unwrap().peak_in_flight,
    );
    let limit = gw
        .metric(
            "gateway_upstream_adaptive_concurrency_limit",
            &[("upstream", "adaptive")],
        )
        .await
        .unwrap();
    println!(
        "plain: {} served, p99 {:.0} ms, backend peak {plain_peak} in flight\n\
         adaptive: {} served, p99 {:.0} ms, {shed} shed, backend peak {adaptive_peak} in flight, limit now {limit}",
        plain.len(),
        p99(&plain),
        adaptive.len(),
        p99(&adaptive),
    );
    assert_eq!(plain_shed, 0);
    assert!(
        plain_peak >= CLIENTS as u64 - 2,
        "the plain upstream took it all"
    );
    assert!(shed > 0, "nothing was shed");
    assert!(!adaptive.is_empty(), "nothing was served");
    assert!(
        adaptive_peak <= CLIENTS as u64 / 2,
        "the adaptive limit let {adaptive_peak} of {CLIENTS} through at once"
    );
}
