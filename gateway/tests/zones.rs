//! Zone-aware, health-aware balancing with real processes: backends in three "zones"
//! (loopback ranges 127.0.1.x, 127.0.2.x, 127.0.3.x) behind a gateway in zone a.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use backends_demo::load::{summarize, Load, Outcome, Sample};
use backends_demo::{test_client, wait_until, Backend, Gateway};

async fn zone_backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for (z, net) in [("a", 1), ("b", 2), ("c", 3)] {
        for i in 1..=2 {
            out.push(
                Backend::builder()
                    .zone(z)
                    .id(&format!("{z}{i}"))
                    .ip(&format!("127.0.{net}.{i}"))
                    .spawn()
                    .await
                    .unwrap(),
            );
        }
    }
    out
}

fn config(backends: &[Backend], retry_on: &str) -> String {
    let endpoints: String = backends
        .iter()
        .map(|b| format!("      - {{ address: {}, zone: {} }}\n", b.addr(), b.zone()))
        .collect();
    format!(
        r#"
zone: a
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes:
  - name: all
    upstream: app
    timeouts: {{ connect: 200ms, read: 300ms }}
    retry: {{ attempts: 3, on: [{retry_on}] }}
upstreams:
  app:
    balance: round_robin
    zone_aware: {{ min_local_healthy: 50% }}
    endpoints:
{endpoints}    health_check: {{ path: /healthz, interval: 200ms, timeout: 100ms, healthy: 2, unhealthy: 2 }}
    outlier_detection: {{ consecutive_failures: 3, eject_for: 5s, max_ejected: 50% }}
"#
    )
}

fn zones_of(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in samples {
        *m.entry(s.zone.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
    }
    m
}

/// Time of the last failed request after `since`, relative to `since`.
fn error_window(samples: &[Sample], since: Duration) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| s.at >= since && !s.is_ok())
        .map(|s| s.at - since)
        .max()
}

#[tokio::test]
async fn local_zone_preferred_and_zone_outage_is_invisible_to_idempotent_requests() {
    let mut backends = zone_backends().await;
    let gw = Gateway::start(&config(
        &backends,
        "connect-failure, timeout, reset, 502, 503",
    ))
    .await
    .unwrap();

    // Healthy: only the local zone serves.
    let warm = Load::get(gw.url("/x"))
        .duration(Duration::from_millis(500))
        .spawn()
        .join()
        .await;
    assert!(warm.iter().all(Sample::is_ok), "{}", summarize(&warm));
    let z = zones_of(&warm);
    assert_eq!(
        z.keys().collect::<Vec<_>>(),
        ["a"],
        "only zone a while healthy: {z:?}"
    );

    // Zone a goes dark: one backend killed, one frozen (accepts, never answers).
    let load = Load::get(gw.url("/x"))
        .duration(Duration::from_secs(4))
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outage_at = load.elapsed();
    backends[0].kill();
    backends[1].freeze().unwrap();
    let samples = load.join().await;
    backends[1].thaw().unwrap();

    let after: Vec<_> = samples
        .iter()
        .filter(|s| s.at >= outage_at)
        .cloned()
        .collect();
    let failed: Vec<_> = after.iter().filter(|s| !s.is_ok()).collect();
    println!(
        "zone outage, GET with retries: {} requests after the outage, {} failed, error window {:?}",
        after.len(),
        failed.len(),
        error_window(&samples, outage_at)
    );
    assert!(
        failed.is_empty(),
        "GETs must not fail: {}",
        summarize(&after)
    );
    let late: Vec<_> = after
        .iter()
        .filter(|s| s.at >= outage_at + Duration::from_secs(1))
        .cloned()
        .collect();
    let z = zones_of(&late);
    assert!(!z.contains_key("a"), "zone a still served after 1s: {z:?}");
    assert!(
        z.contains_key("b") && z.contains_key("c"),
        "spill to both other zones: {z:?}"
    );
}

#[tokio::test]
async fn zone_outage_error_window_for_non_idempotent_requests() {
    let mut backends = zone_backends().await;
    // POSTs are only retried on connect failure (the request never left).
    let gw = Gateway::start(&config(&backends, "connect-failure"))
        .await
        .unwrap();
    let load = Load::get(gw.url("/x"))
        .method(reqwest::Method::POST)
        .duration(Duration::from_secs(4))
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outage_at = load.elapsed();
    // Freeze: connections are accepted by the kernel but never answered, the worst case.
    backends[0].freeze().unwrap();
    backends[1].freeze().unwrap();
    let samples = load.join().await;
    backends[0].thaw().unwrap();
    backends[1].thaw().unwrap();

    let window = error_window(&samples, outage_at);
    let failed = samples
        .iter()
        .filter(|s| s.at >= outage_at && !s.is_ok())
        .count();
    println!(
        "zone freeze, POST without retries: {failed} failed requests, error window {window:?}"
    );
    // Active checks (2 x 200ms) and passive ejection bound the window; well under the
    // 3.5 s the outage lasts in this test. (The 1 s goal is reported, not asserted.)
    let w = window.unwrap_or_default();
    assert!(
        w < Duration::from_millis(2500),
        "errors went on for {w:?}: {}",
        summarize(&samples)
    );
    assert!(samples
        .iter()
        .filter(|s| s.at >= outage_at + Duration::from_millis(2500))
        .all(Sample::is_ok));
    assert!(samples
        .iter()
        .all(|s| !matches!(s.outcome, Outcome::Refused)));
}

async fn upstream_endpoint(gw: &Gateway, addr: &str) -> serde_json::Value {
    let v = gw.admin_json("/upstreams").await.unwrap();
    v["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr)
        .cloned()
        .unwrap()
}

fn two_backend_config(a: &Backend, b: &Backend) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: all, upstream: app }}]
upstreams:
  app:
    endpoints: [{{ address: {} }}, {{ address: {} }}]
    health_check: {{ path: /healthz, interval: 100ms, timeout: 100ms, healthy: 2, unhealthy: 2 }}
"#,
        a.addr(),
        b.addr()
    )
}

async fn ids(gw: &Gateway, n: usize) -> BTreeMap<String, usize> {
    let c = test_client();
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let r = c.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-backend-id"].to_str().unwrap().to_owned();
        *m.entry(id).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn failing_health_check_removes_endpoint_until_it_recovers() {
    let a = Backend::builder().id("one").spawn().await.unwrap();
    let b = Backend::builder().id("two").spawn().await.unwrap();
    let gw = Gateway::start(&two_backend_config(&a, &b)).await.unwrap();
    assert_eq!(ids(&gw, 20).await.len(), 2);

    a.set_healthy(false).await.unwrap();
    let addr = a.addr().to_string();
    wait_until(Duration::from_secs(5), || async {
        upstream_endpoint(&gw, &addr).await["healthy"] == false
    })
    .await
    .unwrap();
    let seen = ids(&gw, 30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["two"], "{seen:?}");

    a.set_healthy(true).await.unwrap();
    wait_until(Duration::from_secs(5), || async {
        upstream_endpoint(&gw, &addr).await["healthy"] == true
    })
    .await
    .unwrap();
    assert_eq!(ids(&gw, 20).await.len(), 2, "traffic comes back");
    assert!(gw.log().contains("endpoint healthy again"));
}

#[tokio::test]
async fn panic_mode_sends_traffic_when_every_endpoint_fails_checks() {
    let a = Backend::builder().id("one").spawn().await.unwrap();
    let b = Backend::builder().id("two").spawn().await.unwrap();
    let gw = Gateway::start(&two_backend_config(&a, &b)).await.unwrap();
    a.set_healthy(false).await.unwrap();
    b.set_healthy(false).await.unwrap();
    wait_until(Duration::from_secs(5), || async {
        let v = gw.admin_json("/upstreams").await.unwrap();
        v["upstreams"][0]["panic"] == true
    })
    .await
    .unwrap();
    let seen = ids(&gw, 20).await;
    assert_eq!(seen.len(), 2, "fail open across all endpoints: {seen:?}");
    assert!(
        gw.metric("gateway_upstream_panic_total", &[("upstream", "app")])
            .await
            .unwrap()
            >= 20.0
    );
    assert!(gw.log().contains("panic mode"));
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_but_never_more_than_max_ejected() {
    let a = Backend::builder().id("one").spawn().await.unwrap();
    let b = Backend::builder().id("two").spawn().await.unwrap();
    a.fault("status=503").await.unwrap();
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: all, upstream: app, retry: {{ attempts: 1 }} }}]
upstreams:
  app:
    endpoints: [{{ address: {} }}, {{ address: {} }}]
    outlier_detection: {{ consecutive_failures: 3, eject_for: 30s, max_ejected: 50% }}
"#,
        a.addr(),
        b.addr()
    ))
    .await
    .unwrap();
    let c = test_client();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(c.get(gw.url("/")).send().await.unwrap().status().as_u16());
    }
    let failures = statuses.iter().filter(|s| **s == 503).count();
    // Round robin: a gets every other request until its 3rd consecutive 503 ejects it.
    assert_eq!(failures, 3, "{statuses:?}");
    let ep = upstream_endpoint(&gw, &a.addr().to_string()).await;
    assert_eq!(ep["ejected"], true, "{ep}");
    assert_eq!(ep["ejections"], 1);
    assert_eq!(
        gw.metric("gateway_outlier_ejections_total", &[])
            .await
            .unwrap(),
        1.0
    );

    // Now b fails too: ejecting it would exceed max_ejected (50% of 2), so it stays in.
    b.fault("status=503").await.unwrap();
    for _ in 0..10 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 503);
    }
    let ep = upstream_endpoint(&gw, &b.addr().to_string()).await;
    assert_eq!(ep["ejected"], false, "cap respected: {ep}");
}

#[tokio::test]
async fn remote_region_is_used_only_when_the_local_region_is_down() {
    let mut local = Backend::builder()
        .zone("a")
        .id("local")
        .ip("127.0.1.1")
        .spawn()
        .await
        .unwrap();
    let mut near = Backend::builder()
        .zone("b")
        .id("near")
        .ip("127.0.2.1")
        .spawn()
        .await
        .unwrap();
    let _far = Backend::builder()
        .zone("x")
        .id("far")
        .ip("127.0.4.1")
        .spawn()
        .await
        .unwrap();
    let gw = Gateway::start(&format!(
        r#"
zone: a
region: r1
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: all, upstream: app, retry: {{ attempts: 3 }} }}]
upstreams:
  app:
    zone_aware: {{ min_local_healthy: 100% }}
    endpoints:
      - {{ address: {}, zone: a, region: r1 }}
      - {{ address: {}, zone: b, region: r1 }}
      - {{ address: {}, zone: x, region: r2 }}
    health_check: {{ path: /healthz, interval: 100ms, timeout: 100ms, healthy: 1, unhealthy: 1 }}
"#,
        local.addr(),
        near.addr(),
        _far.addr()
    ))
    .await
    .unwrap();
    assert_eq!(ids(&gw, 10).await.keys().collect::<Vec<_>>(), ["local"]);
    local.kill();
    wait_until(Duration::from_secs(5), || async {
        upstream_endpoint(&gw, &local.addr().to_string()).await["healthy"] == false
    })
    .await
    .unwrap();
    assert_eq!(
        ids(&gw, 10).await.keys().collect::<Vec<_>>(),
        ["near"],
        "same region first"
    );
    near.kill();
    wait_until(Duration::from_secs(5), || async {
        upstream_endpoint(&gw, &near.addr().to_string()).await["healthy"] == false
    })
    .await
    .unwrap();
    assert_eq!(
        ids(&gw, 10).await.keys().collect::<Vec<_>>(),
        ["far"],
        "then the other region"
    );
}
