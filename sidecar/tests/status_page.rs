//! The sidecar's admin status page, rendered by a real headless Chromium (Debian's
//! `chromium`): a dependency whose only endpoint is dead, so its breaker opens.
//! (The gateway's page is tested in `gateway/tests/status_page.rs`; the Chromium helpers
//! below are the same.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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
