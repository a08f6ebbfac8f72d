//! A small closed-loop load generator for integration tests: N workers sending requests
//! back to back for a while, recording every outcome with its time. (Benchmarks use
//! real load tools; this one exists to count failures, not to measure speed.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// What happened to one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    Status(u16),
    /// The connection was refused: the request was never accepted.
    Refused,
    /// Any other failure (reset, timeout, truncated response).
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the start of the load.
    pub at: Duration,
    pub outcome: Outcome,
    /// `x-backend-zone` of the answer, if any.
    pub zone: Option<String>,
}

impl Sample {
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Status(s) if s < 400)
    }
}

#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub method: reqwest::Method,
    pub concurrency: usize,
    pub duration: Duration,
    pub headers: Vec<(String, String)>,
}

impl Load {
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: reqwest::Method::GET,
            concurrency: 4,
            duration: Duration::from_secs(2),
            headers: Vec::new(),
        }
    }

    pub fn method(mut self, m: reqwest::Method) -> Self {
        self.method = m;
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    pub fn duration(mut self, d: Duration) -> Self {
        self.duration = d;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    /// Run in the background; the handle yields every sample, sorted by time.
    pub fn spawn(self) -> LoadHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let workers = (0..self.concurrency)
            .map(|_| {
                let (client, stop, load) = (client.clone(), stop.clone(), self.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < load.duration {
                        let mut req = client.request(load.method.clone(), &load.url);
                        for (k, v) in &load.headers {
                            req = req.header(k, v);
                        }
                        let at = start.elapsed();
                        let (outcome, zone) = match req.send().await {
                            Ok(r) => {
                                let zone = r
                                    .headers()
                                    .get("x-backend-zone")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let status = r.status().as_u16();
                                match r.bytes().await {
                                    Ok(_) => (Outcome::Status(status), zone),
                                    Err(e) => (Outcome::Failed(format!("body: {e}")), zone),
                                }
                            }
                            Err(e) if e.is_connect() => (Outcome::Refused, None),
                            Err(e) => (Outcome::Failed(crate::poll::error_chain(&e)), None),
                        };
                        out.push(Sample { at, outcome, zone });
                    }
                    out
                })
            })
            .collect();
        LoadHandle {
            stop,
            workers,
            start,
        }
    }
}

pub struct LoadHandle {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
    start: Instant,
}

impl LoadHandle {
    /// Time since the load started (to line events up with samples).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stop early and collect.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Wait for the configured duration to pass and collect.
    pub async fn join(self) -> Vec<Sample> {
        let mut all = Vec::new();
        for w in self.workers {
            if let Ok(v) = w.await {
                all.extend(v);
            }
        }
        all.sort_by_key(|s| s.at);
        all
    }
}

/// One line per kind of outcome, for assertion messages.
pub fn summarize(samples: &[Sample]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for s in samples {
        let k = match &s.outcome {
            Outcome::Status(c) => format!("status {c}"),
            Outcome::Refused => "refused".into(),
            Outcome::Failed(e) => format!("failed: {e}"),
        };
        *counts.entry(k).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, n)| format!("{n} x {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}
