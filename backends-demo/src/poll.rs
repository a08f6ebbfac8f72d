//! Waiting for things to become true, and the HTTP client tests use for it.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::{sleep, Instant};

const POLL_EVERY: Duration = Duration::from_millis(20);

/// An HTTP client for tests: never goes through a proxy (CI machines often set
/// `HTTP_PROXY`, which would swallow loopback traffic), 10s timeout.
pub fn test_client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

pub(crate) fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap_or_else(|e| panic!("building the test HTTP client: {e}"))
}

/// Poll `f` every 20ms until it returns true; error if it has not within `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        sleep(POLL_EVERY).await;
    }
}

/// Poll `GET url` until it answers 200; error naming the last answer if it has not
/// within `timeout`.
pub async fn http_get_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = client_with_timeout(Duration::from_secs(1).min(timeout));
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => error_chain(&e),
        };
        if Instant::now() >= deadline {
            bail!("GET {url} did not answer 200 within {timeout:?}: last {last}");
        }
        sleep(POLL_EVERY).await;
    }
}

/// An error and its sources on one line (reqwest's own message hides the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
