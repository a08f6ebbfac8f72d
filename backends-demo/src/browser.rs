//! Headless Chromium (Debian's `chromium`) for tests of the admin status page: the
//! DOM after the page's script ran, and screenshots kept as test artifacts. These
//! helpers panic on failure: they are for tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Debian's `chromium` (or `$CHROMIUM`). Missing is a failure, not a skip: the page's
/// script only runs in a browser.
pub fn chromium() -> PathBuf {
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
pub async fn run_chromium(url: &str, args: &[String]) -> String {
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
pub async fn rendered_text(url: &str) -> String {
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
pub async fn screenshot(url: &str, png: &Path) {
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
pub fn artifact_dir() -> PathBuf {
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
