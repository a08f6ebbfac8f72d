//! The admin listener's status page, rendered by a real headless Chromium (Debian's
//! `chromium`) against a real gateway: an upstream in two zones with one dead endpoint,
//! a TLS listener, and a refused reload. The screenshot is kept as a test artifact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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

// ------------------------------------------------------------------ headless Chromium

/// Debian's `chromium` (or `$CHROMIUM`). Missing is a failure, not a skip: the page's
/// script only runs in a browser.
fn chromium() -> PathBuf {
    let found = match std::env::var_os("CHROMIUM") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file()),
    };
    found.unwrap_or_else(|| {
        panic!(
            "Debian's `chromium` is not installed (not on PATH, or not at $CHROMIUM): \
             install it with `apt-get install chromium`. This test renders the admin \
             status page in a real headless browser and is not skipped without one."
        )
    })
}

/// Run headless Chromium on `url` with `args`, after the page's script has had
/// 5 s of (virtual) time to fetch and render; returns stdout.
async fn run_chromium(url: &str, args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--disable-gpu",
        // Chromium refuses to run as root with its sandbox (CI containers run as root).
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-proxy-server",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium did not finish within 90s")
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the page's `<main>` once its script ran (not its script's source), tags
/// turned into spaces, entities decoded, whitespace collapsed.
async fn rendered_text(url: &str) -> String {
    let dom = run_chromium(url, &["--dump-dom".to_owned()]).await;
    let main = dom
        .split_once("<main")
        .and_then(|(_, rest)| rest.split_once("</main>"))
        .map(|(main, _)| main)
        .unwrap_or_else(|| panic!("no <main> in the rendered page:\n{dom}"));
    let mut text = String::new();
    let mut in_tag = false;
    for ch in main.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(ch),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Take a 1280x1000 screenshot to `png` and check it is a real, non-trivial image.
async fn screenshot(url: &str, png: &Path) {
    let _ = std::fs::remove_file(png);
    run_chromium(
        url,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,1000".to_owned(),
        ],
    )
    .await;
    let bytes =
        std::fs::read(png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    assert!(
        bytes.len() > 20_000,
        "{} is only {} bytes: a blank page?",
        png.display(),
        bytes.len()
    );
    eprintln!("status page screenshot: {}", png.display());
}

/// `<target>/test-artifacts/`, found from this test binary (`<target>/debug/deps/...`),
/// else `$CARGO_TARGET_DIR`, else the workspace's `target/`.
fn artifact_dir() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|d| d.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    let target = from_exe
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
