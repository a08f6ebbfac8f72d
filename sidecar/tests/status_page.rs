//! The sidecar's admin status page, rendered by a real headless Chromium (Debian's
//! `chromium`): a dependency whose only endpoint is dead, so its breaker opens.
//! (The gateway's page is tested in `gateway/tests/status_page.rs`; both use
//! `backends_demo::browser`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use backends_demo::browser::{artifact_dir, chromium, rendered_text, screenshot};
use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, test_client, wait_until};
use common::{issue, start_in, A_ID, B_ID};

#[tokio::test]
async fn the_sidecar_status_page_shows_dependencies_and_their_breaker_state() {
    chromium(); // fail before starting anything when the browser is missing
    let ca = TestCa::new("mesh-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    issue(&ca, dir.path(), "a", CertSpec::spiffe(A_ID));
    let out = free_addr("127.0.0.1");
    // Nothing listens here: every call fails to connect and the breaker opens.
    let dead = free_addr("127.0.0.1");
    let yaml = format!(
        r#"
identity: {{ cert: a.crt, key: a.key, trust_bundle: ca.crt }}
outbound:
  payments:
    listen: "${{OUT}}"
    endpoints: ["{dead}"]
    server_identity: "{B_ID}"
    max_concurrent: 8
    circuit_breaker: {{ failure_rate: 50%, min_requests: 3, window: 10s, open_for: 60s }}
admin: {{ address: "${{ADMIN}}" }}
"#
    );
    let sc = start_in(dir.path(), &yaml, &[("OUT", out.to_string())]).await;
    let client = test_client();
    let state = || async {
        let deps = sc.admin_json("/dependencies").await.unwrap();
        deps["dependencies"][0]["breaker"]["state"].clone()
    };
    wait_until(Duration::from_secs(10), || async {
        let _ = client.get(format!("http://{out}/")).send().await;
        state().await == "open"
    })
    .await
    .unwrap_or_else(|_| panic!("the breaker never opened\n{}", sc.log()));

    let url = sc.admin_url("/");
    let text = rendered_text(&url).await;
    let must_show = [
        (
            "payments breaker open",
            "the dependency and its breaker state",
        ),
        (A_ID, "the sidecar's SPIFFE id"),
        ("Circuit breaker open: payments", "the open-breaker banner"),
        ("0 / 8 in use", "the bulkhead usage"),
        // Issued for a day, a few minutes ago.
        ("23h ", "the identity's time to expiry"),
        ("m left", "the identity's time to expiry"),
    ];
    for (needle, what) in must_show {
        assert!(
            text.contains(needle),
            "the page does not show {what} ({needle:?}):\n{text}"
        );
    }
    assert!(
        text.contains(&format!("{dead} ")),
        "the page does not show the endpoint {dead}:\n{text}"
    );

    screenshot(&url, &artifact_dir().join("status-page-sidecar.png")).await;
}
