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
    let results = futures_util::future::join_all(calls).await;
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
