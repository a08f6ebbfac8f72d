//! Zone-aware routing in the sidecar: a dependency with peer sidecars in two zones
//! (zone a on 127.0.1.x, zone b on 127.0.2.x, each in front of a backend that says its
//! zone), called from a sidecar in zone a. Real processes, real mTLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, test_client, Backend, Sidecar};
use common::{a_config, b_config, issue, start_in, start_in_with_env, MeshOpts, A_ID, B_ID};
use serde_json::Value;

/// One peer: a backend in `zone` behind a sidecar whose inbound listens on `ip`.
struct Peer {
    sidecar: Sidecar,
    _app: Backend,
    endpoint: String,
}

async fn peer(dir: &std::path::Path, zone: &str, ip: &str) -> Peer {
    let app = Backend::builder().zone(zone).ip(ip).spawn().await.unwrap();
    let inbound = free_addr(ip);
    let sidecar = start_in(
        dir,
        &b_config(&[A_ID.to_owned()]),
        &[
            ("INBOUND", inbound.to_string()),
            ("APP", app.addr().to_string()),
        ],
    )
    .await;
    Peer {
        sidecar,
        _app: app,
        endpoint: format!("{{ address: \"{inbound}\", zone: {zone} }}"),
    }
}

/// The zone of the backend that answered, or the failure.
async fn call(c: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = c.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!(
            "{} {:?}",
            r.status(),
            r.headers().get("x-sidecar-error")
        ));
    }
    let j: Value = r.json().await.map_err(|e| e.to_string())?;
    Ok(j["zone"].as_str().unwrap_or_default().to_owned())
}

async fn metric(s: &Sidecar, name: &str, locality: &str) -> f64 {
    s.metric(name, &[("dependency", "app"), ("locality", locality)])
        .await
        .unwrap()
}

#[tokio::test]
async fn calls_stay_in_the_sidecars_zone_and_move_when_it_dies() {
    let ca = TestCa::new("zones-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    issue(&ca, dir.path(), "a", CertSpec::spiffe(A_ID));
    issue(&ca, dir.path(), "b", CertSpec::spiffe(B_ID));
    let mut a1 = peer(dir.path(), "a", "127.0.1.1").await;
    let mut a2 = peer(dir.path(), "a", "127.0.1.2").await;
    let b1 = peer(dir.path(), "b", "127.0.2.1").await;
    let b2 = peer(dir.path(), "b", "127.0.2.2").await;
    let endpoints = [&a1, &a2, &b1, &b2]
        .iter()
        .map(|p| p.endpoint.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let out = free_addr("127.0.0.1");
    // The file says zone b; SIDECAR_ZONE (as Kubernetes would set it) wins.
    let yaml = a_config(&MeshOpts {
        dep_policy: concat!(
            "    zone_aware: { min_local_healthy: 50% }\n",
            "    retry: { attempts: 3, on: [5xx, reset, connect-failure] }\n",
            "    outlier_detection: { consecutive_failures: 2, eject_for: 60s }",
        )
        .into(),
        ..Default::default()
    })
    .replace(
        "endpoints: [\"${B}\"]",
        &format!("endpoints: [{endpoints}]"),
    )
    .replace("\nidentity:", "\nzone: b\nidentity:");
    let a = start_in_with_env(
        dir.path(),
        &yaml,
        &[("OUT", out.to_string())],
        &[("SIDECAR_ZONE", "a")],
    )
    .await;
    let c = test_client();
    let url = format!("http://{out}/zones");

    // Everything healthy: every call stays in zone a.
    for i in 0..40 {
        assert_eq!(call(&c, &url).await.as_deref(), Ok("a"), "call {i}");
    }
    assert_eq!(
        metric(&a, "sidecar_dependency_requests_total", "same_zone").await,
        40.0
    );
    assert_eq!(
        metric(&a, "sidecar_dependency_requests_total", "cross_zone").await,
        0.0
    );
    assert!(metric(&a, "sidecar_dependency_received_bytes_total", "same_zone").await > 0.0);

    // Half of zone a gone: 1 of 2 healthy is still 50%, so calls stay in zone a.
    a1.sidecar.proc().kill();
    let results = calls_for(&c, &url, Duration::from_secs(2)).await;
    let (late, early): (Vec<_>, Vec<_>) = results
        .iter()
        .partition(|(t, _)| *t > Duration::from_secs(1));
    assert!(late.len() > 20, "too few calls: {}", late.len());
    assert!(
        late.iter().all(|(_, r)| r.as_deref() == Ok("a")),
        "half of zone a down, calls left it or failed: {late:?}"
    );
    assert!(
        early.iter().all(|(_, r)| r.is_ok()),
        "idempotent calls are retried within zone a: {early:?}"
    );

    // All of zone a gone: calls move to zone b, none failing after the first second.
    a2.sidecar.proc().kill();
    let cross_before = metric(&a, "sidecar_dependency_requests_total", "cross_zone").await;
    let results = calls_for(&c, &url, Duration::from_secs(3)).await;
    let late: Vec<_> = results
        .iter()
        .filter(|(t, _)| *t > Duration::from_secs(1))
        .collect();
    assert!(late.len() > 20, "too few calls: {}", late.len());
    assert!(
        late.iter().all(|(_, r)| r.as_deref() == Ok("b")),
        "zone a down, yet: {late:?}\n{}",
        a.log()
    );
    let in_b = results
        .iter()
        .filter(|(_, r)| r.as_deref() == Ok("b"))
        .count() as f64;
    let cross = metric(&a, "sidecar_dependency_requests_total", "cross_zone").await - cross_before;
    assert!(
        cross >= in_b,
        "{cross} cross-zone requests counted for {in_b} answers from zone b"
    );
    let failed_early = results.iter().filter(|(_, r)| r.is_err()).count();
    eprintln!(
        "zone a down: {} calls in 3s, {failed_early} failed, {in_b} answered by zone b, {cross} cross-zone requests counted",
        results.len()
    );
    assert!(metric(&a, "sidecar_dependency_received_bytes_total", "cross_zone").await > 0.0);
    assert_eq!(
        metric(&a, "sidecar_dependency_requests_total", "unknown").await,
        0.0
    );

    // The status view says where each endpoint is.
    let deps = a.admin_json("/dependencies").await.unwrap();
    let text = deps.to_string();
    assert!(
        text.contains("\"locality\":\"cross_zone\"") && text.contains("\"zone\":\"b\""),
        "{text}"
    );
}

/// Call `url` one after another for `window`: (time since start, outcome) per call.
async fn calls_for(
    c: &reqwest::Client,
    url: &str,
    window: Duration,
) -> Vec<(Duration, Result<String, String>)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < window {
        let r = call(c, url).await;
        out.push((start.elapsed(), r));
    }
    out
}
