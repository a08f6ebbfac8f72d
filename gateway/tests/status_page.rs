//! The admin listener's status page, rendered by a real headless Chromium (Debian's
//! `chromium`) against a real gateway: an upstream in two zones with one dead endpoint,
//! a TLS listener, and a refused reload. The screenshot is kept as a test artifact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backends_demo::browser::{artifact_dir, chromium, rendered_text, screenshot};
use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, test_client, wait_until, Backend, Gateway, GatewayConfig};
use serde_json::{json, Value};

const LOCAL_ZONE: &str = "us-test-1a";
const OTHER_ZONE: &str = "us-test-1b";

#[tokio::test]
async fn the_status_page_shows_zones_unhealthy_endpoints_reload_errors_and_certificates() {
    chromium(); // fail before starting anything when the browser is missing
    let ca = TestCa::new("status-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .issue(
            &CertSpec::dns(&["status.example.com"])
                .valid_for(Duration::from_secs(40 * 86_400 + 43_200)),
        )
        .unwrap()
        .write(dir.path(), "status")
        .unwrap();
    let local = Backend::builder()
        .zone(LOCAL_ZONE)
        .id("local")
        .spawn()
        .await
        .unwrap();
    let remote = Backend::builder()
        .zone(OTHER_ZONE)
        .id("remote")
        .spawn()
        .await
        .unwrap();
    // Nothing listens here: the active health check marks it unhealthy.
    let dead = free_addr("127.0.0.1");
    let config = GatewayConfig::new()
        .set("zone", LOCAL_ZONE)
        .listener(json!({
            "name": "https",
            "address": free_addr("127.0.0.1").to_string(),
            "tls": { "certificates": [{ "cert": cert, "key": key }] },
        }))
        .upstream_with(
            "app",
            &[],
            json!({
                "endpoints": [
                    { "address": local.addr().to_string(), "zone": LOCAL_ZONE },
                    { "address": remote.addr().to_string(), "zone": OTHER_ZONE },
                    { "address": dead.to_string(), "zone": OTHER_ZONE },
                ],
                "health_check": { "path": "/healthz", "interval": "200ms", "timeout": "100ms",
                                  "healthy": 1, "unhealthy": 1 },
            }),
        )
        .route("all", "app");
    let gw = Gateway::start(&config.to_yaml()).await.unwrap();

    let endpoint = |ups: &Value, addr: String| -> Value {
        ups["upstreams"][0]["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["address"] == addr.as_str()).cloned())
            .unwrap_or(Value::Null)
    };
    wait_until(Duration::from_secs(10), || async {
        let ups = gw.admin_json("/upstreams").await.unwrap();
        endpoint(&ups, dead.to_string())["healthy"] == false
    })
    .await
    .unwrap_or_else(|_| panic!("the dead endpoint never turned unhealthy\n{}", gw.log()));
    let client = test_client();
    for _ in 0..5 {
        let r = client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    // The certificate endpoint carries what the expiry metric exports.
    let certs = gw.admin_json("/certificates").await.unwrap();
    let c = &certs["certificates"][0];
    assert_eq!(c["listener"], "https", "{certs}");
    assert_eq!(c["certificate"], "status.example.com", "{certs}");
    assert_eq!(c["names"], json!(["status.example.com"]), "{certs}");
    let days_left = c["days_left"].as_i64().unwrap();
    assert!((38..=40).contains(&days_left), "{certs}");
    let exported = gw
        .metric(
            "gateway_tls_certificate_expiry_timestamp_seconds",
            &[("listener", "https"), ("certificate", "status.example.com")],
        )
        .await
        .unwrap();
    assert_eq!(c["not_after"].as_f64(), Some(exported), "{certs}");

    // A refused reload: the page must show why.
    gw.write_config(&config.route("broken", "nope").to_yaml())
        .unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 422, "{body}");
    let reload_error = body["error"].as_str().unwrap();
    let reload_error = reload_error
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");

    let url = gw.admin_url("/");
    let text = rendered_text(&url).await;
    let must_show = [
        (format!("zone {LOCAL_ZONE} (local)"), "the local zone"),
        (format!("zone {OTHER_ZONE}"), "the other zone"),
        (format!("{dead} unhealthy"), "the dead endpoint, unhealthy"),
        (
            format!("{} healthy", local.addr()),
            "a live endpoint, healthy",
        ),
        (reload_error, "the reload error"),
        (
            format!("{days_left} days"),
            "the certificate's days to expiry",
        ),
        ("status.example.com".to_owned(), "the certificate's name"),
        ("Routes all".to_owned(), "the route"),
    ];
    for (needle, what) in &must_show {
        assert!(
            text.contains(needle.as_str()),
            "the page does not show {what} ({needle:?}):\n{text}"
        );
    }

    let png = artifact_dir().join("status-page.png");
    screenshot(&url, &png).await;
}
