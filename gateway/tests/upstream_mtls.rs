//! Upstream mTLS: the gateway shows a client certificate to endpoints that ask for one,
//! here a real sidecar's inbound listener (SPIFFE allow-list) in front of a backend, so
//! a meshed service is reachable without a sidecar beside the gateway. Health checks
//! present it too, and a changed certificate file is picked up without a reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backends_demo::pki::{write_atomic, CertSpec, TestCa};
use backends_demo::{free_addr, wait_until, Backend, Gateway, GatewayConfig, Sidecar};
use serde_json::json;

const GATEWAY_ID: &str = "spiffe://test.local/ns/edge/sa/gateway";
const STRANGER_ID: &str = "spiffe://test.local/ns/edge/sa/stranger";
const PAYMENTS_ID: &str = "spiffe://test.local/ns/shop/sa/payments";

async fn status(url: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn the_gateway_presents_its_certificate_to_a_sidecar_and_rotates_it() {
    let ca = TestCa::new("mesh-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca.write_bundle(&d.join("ca.crt")).unwrap();
    // The sidecar's server certificate also names a DNS name the gateway checks (SNI).
    ca.issue(&CertSpec::spiffe(PAYMENTS_ID).add_dns("payments.internal"))
        .unwrap()
        .write(d, "b")
        .unwrap();
    ca.issue(&CertSpec::spiffe(GATEWAY_ID))
        .unwrap()
        .write(d, "gw")
        .unwrap();
    let app = Backend::builder().id("payments").spawn().await.unwrap();
    let inbound = free_addr("127.0.0.1");
    let sidecar = Sidecar::start(
        &format!(
            "identity: {{ cert: {d}/b.crt, key: {d}/b.key, trust_bundle: {d}/ca.crt }}\ninbound:\n  listen: \"{inbound}\"\n  forward_to: \"{}\"\n  allow: [\"{GATEWAY_ID}\"]\nadmin: {{ address: \"${{ADMIN}}\" }}\n",
            app.addr(),
            d = d.display()
        ),
        &[],
    )
    .await
    .unwrap();

    let tls = |client: bool| {
        let mut t = json!({ "sni": "payments.internal", "ca": format!("{}/ca.crt", d.display()) });
        if client {
            t["client_cert"] = json!(format!("{}/gw.crt", d.display()));
            t["client_key"] = json!(format!("{}/gw.key", d.display()));
        }
        t
    };
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream_with(
                "payments",
                &[inbound],
                json!({ "tls": tls(true),
                        "health_check": { "path": "/healthz", "interval": "200ms", "unhealthy": 1, "healthy": 1 } }),
            )
            .upstream_with("anonymous", &[inbound], json!({ "tls": tls(false) }))
            .route_with("anon", "anonymous", json!({ "match": { "path_prefix": "/anon/" } }))
            .route("pay", "payments")
            .to_yaml(),
    )
    .await
    .unwrap();

    // Through the sidecar with the gateway's identity; without a certificate, refused.
    assert_eq!(status(&gw.url("/charge")).await, 200, "{}", sidecar.log());
    assert_eq!(status(&gw.url("/anon/charge")).await, 502);
    // The health checks present the certificate too: the endpoint is healthy.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ups = gw.admin_json("/upstreams").await.unwrap();
    let text = ups.to_string();
    assert!(text.contains("\"healthy\":true"), "{text}");

    // Rotated to an identity the sidecar does not allow: it answers 403 not_allowed on
    // the new connections (no reload, no restart)...
    let stranger = ca.issue(&CertSpec::spiffe(STRANGER_ID)).unwrap();
    let stranger_dir = tempfile::tempdir().unwrap();
    let (c, k) = stranger.write(stranger_dir.path(), "x").unwrap();
    write_atomic(&d.join("gw.key"), &std::fs::read(&k).unwrap()).unwrap();
    write_atomic(&d.join("gw.crt"), &std::fs::read(&c).unwrap()).unwrap();
    wait_until(Duration::from_secs(10), || async {
        status(&gw.url("/charge")).await == 403
    })
    .await
    .expect("the rotated certificate is presented");
    // ...and back to an allowed one: through again.
    let (c, k) = ca
        .issue(&CertSpec::spiffe(GATEWAY_ID))
        .unwrap()
        .write(stranger_dir.path(), "y")
        .unwrap();
    write_atomic(&d.join("gw.key"), &std::fs::read(&k).unwrap()).unwrap();
    write_atomic(&d.join("gw.crt"), &std::fs::read(&c).unwrap()).unwrap();
    wait_until(Duration::from_secs(10), || async {
        status(&gw.url("/charge")).await == 200
    })
    .await
    .expect("the allowed certificate is presented again");
    assert!(gw.log().contains("upstream client certificate rotated"));
}

#[test]
fn a_client_certificate_needs_its_key_and_a_matching_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ca").unwrap();
    let (cert, _) = ca
        .issue(&CertSpec::spiffe(GATEWAY_ID))
        .unwrap()
        .write(dir.path(), "a")
        .unwrap();
    let (_, other_key) = ca
        .issue(&CertSpec::spiffe(GATEWAY_ID))
        .unwrap()
        .write(dir.path(), "b")
        .unwrap();
    let file = dir.path().join("gw.yaml");
    let write = |tls: &str| {
        std::fs::write(
            &file,
            format!("listeners: [{{ name: h, address: 127.0.0.1:1 }}]\nroutes: [{{ name: r, upstream: u }}]\nupstreams:\n  u:\n    endpoints: [{{ address: 127.0.0.1:2 }}]\n    tls: {{ sni: u.internal, {tls} }}\n"),
        )
        .unwrap();
    };
    let validate = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write(&format!("client_cert: {}", cert.display()));
    let (ok, err) = validate();
    assert!(!ok && err.contains("upstreams.u.tls.client_key"), "{err}");
    write(&format!(
        "client_cert: {}, client_key: {}",
        cert.display(),
        other_key.display()
    ));
    let (ok, err) = validate();
    assert!(!ok && err.contains("does not match"), "{err}");
}
