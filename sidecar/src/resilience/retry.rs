//! Retries of a failed try, safe and bounded:
//! - safe: a response or a broken connection is retried only for an idempotent method
//!   (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) or a request with an `Idempotency-Key`;
//!   a failure that provably never reached the dependency (refused stream; connect
//!   failure when `on: [connect-failure]`) is retried whatever the method;
//! - on the configured conditions only: statuses (`retries_status`), `reset`,
//!   `timeout` (the per-try timeout below this layer), `connect-failure`;
//! - gRPC: every call is a POST, so its HTTP method says nothing. A method listed in
//!   `grpc_methods` is retried as an idempotent request is, and on a trailers-only
//!   UNAVAILABLE (in the headers) whatever `on:` says: gRPC's own retry policy with
//!   `retryableStatusCodes: [UNAVAILABLE]`. An unlisted method is retried only when
//!   the call provably never reached the dependency. (A call with an `Idempotency-Key`
//!   is retried with `5xx` on any trailers-only failure: UNAVAILABLE,
//!   DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED.) A gRPC status in the trailers cannot be
//!   retried: the messages before it are already on their way to the app;
//! - bounded: at most `attempts` tries, each retry paid from the dependency's
//!   [`RetryBudget`], after a backoff with full jitter; a `Retry-After` (seconds) on a
//!   retried 503/429 replaces the backoff when it is at most `4 * backoff_max`,
//!   otherwise the answer goes back to the app as is;
//! - the request body is kept (up to `max_body_bytes`) to be sent again; a larger body
//!   is delivered intact and the request is not retried.
//!
//! A response after retries carries `x-sidecar-retries: N`.

use super::stage::{boxed_call, InnerService, Policy, PolicyLayer, PolicyService};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;
use tollgate_config::sidecar::Retry;

use super::backoff::full_jitter;
use super::budget::RetryBudget;
use super::grpc;
use super::replay::Replay;
use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// How many retries a response took; added only when there was at least one.
pub const RETRIES_HEADER: HeaderName = HeaderName::from_static("x-sidecar-retries");
/// A failed response's body is read (so its connection can be reused) up to this much,
/// and only during the backoff wait.
const DRAIN_LIMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct RetryStats {
    requests: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    not_replayable: AtomicU64,
    retry_after_too_long: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryStatsSnapshot {
    /// Requests that went through the retry layer.
    pub requests: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries wanted but refused by the budget.
    pub budget_exhausted: u64,
    /// Retries wanted but impossible: the body was too large to keep.
    pub not_replayable: u64,
    /// Retries skipped because the dependency asked for a longer wait.
    pub retry_after_too_long: u64,
}

impl RetryStats {
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub fn budget_exhausted(&self) -> u64 {
        self.budget_exhausted.load(Ordering::Relaxed)
    }
    pub fn snapshot(&self) -> RetryStatsSnapshot {
        RetryStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries(),
            budget_exhausted: self.budget_exhausted(),
            not_replayable: self.not_replayable.load(Ordering::Relaxed),
            retry_after_too_long: self.retry_after_too_long.load(Ordering::Relaxed),
        }
    }
}

/// One dependency's retry settings, budget and counters. Keep the `Arc` across reloads
/// and [`reconfigure`](Self::reconfigure) it: calls in flight finish with the settings
/// they started with.
#[derive(Debug)]
pub struct RetryPolicy {
    config: ArcSwap<Retry>,
    budget: Arc<RetryBudget>,
    stats: RetryStats,
}

impl RetryPolicy {
    /// With a budget of its own, made from `cfg.budget` and `cfg.min_per_second`.
    pub fn new(cfg: &Retry) -> Self {
        Self::with_budget(
            cfg,
            Arc::new(RetryBudget::new(cfg.budget, cfg.min_per_second)),
        )
    }

    /// With a budget shared with others (e.g. hedging); its limits are left as they are.
    pub fn with_budget(cfg: &Retry, budget: Arc<RetryBudget>) -> Self {
        Self {
            config: ArcSwap::from_pointee(cfg.clone()),
            budget,
            stats: RetryStats::default(),
        }
    }

    /// New settings and budget limits; the budget's window and the counters are kept.
    pub fn reconfigure(&self, cfg: &Retry) {
        self.budget.reconfigure(cfg.budget, cfg.min_per_second);
        self.config.store(Arc::new(cfg.clone()));
    }

    pub fn config(&self) -> Arc<Retry> {
        self.config.load_full()
    }

    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    pub fn stats(&self) -> &RetryStats {
        &self.stats
    }
}

/// Whether repeating the request cannot do harm if an earlier try was processed.
/// Never an upgrade (WebSocket): a second handshake would open a second stream, so it
/// is repeated only when it provably never reached the peer, and never hedged.
pub fn safe_to_repeat(method: &Method, headers: &HeaderMap) -> bool {
    if headers.contains_key(http::header::UPGRADE) {
        return false;
    }
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// How safe repeating a call is.
#[derive(Debug, Clone, Copy)]
struct Repeat {
    /// Idempotent method or `Idempotency-Key`.
    idempotent: bool,
    /// A gRPC call of a method listed in `grpc_methods`.
    listed_grpc: bool,
}

impl Repeat {
    fn of(cfg: &Retry, parts: &http::request::Parts) -> Self {
        Self {
            idempotent: safe_to_repeat(&parts.method, &parts.headers),
            listed_grpc: !cfg.grpc_methods.is_empty()
                && grpc::is_grpc(&parts.headers)
                && cfg.grpc_methods.matches(parts.uri.path()),
        }
    }

    fn safe(self) -> bool {
        self.idempotent || self.listed_grpc
    }
}

/// Whether a try's result calls for another try, per the settings.
fn retryable(cfg: &Retry, repeat: Repeat, result: &Result<Response<Body>, ProxyError>) -> bool {
    match result {
        Ok(r) => match grpc::head(r) {
            grpc::GrpcHead::Status(code) => {
                (repeat.listed_grpc && code == grpc::code::UNAVAILABLE)
                    || (repeat.idempotent && cfg.on_5xx && grpc::is_failure_code(code))
            }
            _ => repeat.safe() && cfg.retries_status(r.status().as_u16()),
        },
        // The peer refused the stream unprocessed: always safe, always worth it.
        Err(ProxyError::Refused(_)) => true,
        // Never reached the dependency either: another endpoint may do.
        Err(ProxyError::Connect(_) | ProxyError::PeerIdentity(_)) => cfg.on_connect_failure,
        Err(ProxyError::Reset(_)) => repeat.safe() && cfg.on_reset,
        Err(ProxyError::Timeout(_)) => repeat.safe() && cfg.on_timeout,
        Err(_) => false,
    }
}

/// The wait a retried 503/429 asks for (delta-seconds form only).
fn retry_after(result: &Result<Response<Body>, ProxyError>) -> Option<Duration> {
    let r = result.as_ref().ok()?;
    if !matches!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    ) {
        return None;
    }
    let secs = r
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

fn describe(result: &Result<Response<Body>, ProxyError>) -> String {
    match result {
        Ok(r) => match grpc::head(r) {
            grpc::GrpcHead::Status(code) => format!("grpc-status {code}"),
            _ => r.status().as_str().to_owned(),
        },
        Err(e) => e.kind().to_owned(),
    }
}

async fn drain(mut body: Body) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

fn done(
    result: Result<Response<Body>, ProxyError>,
    retries: u32,
) -> Result<Response<Body>, ProxyError> {
    result.map(|mut r| {
        if retries > 0 {
            r.headers_mut()
                .insert(RETRIES_HEADER, HeaderValue::from(retries));
        }
        r
    })
}

async fn run<S: InnerService>(
    inner: S,
    policy: Arc<RetryPolicy>,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    policy.budget.record_request();
    policy.stats.requests.fetch_add(1, Ordering::Relaxed);
    let cfg = policy.config();
    if cfg.attempts <= 1 {
        return boxed_call(inner, req).await;
    }
    let (parts, body) = req.into_parts();
    let repeat = Repeat::of(&cfg, &parts);
    let mut replay = Replay::new(body, cfg.max_body_bytes);
    let mut retries: u32 = 0;
    loop {
        let last = retries.saturating_add(1) >= cfg.attempts;
        if last {
            replay.last_try();
        }
        let try_req = Request::from_parts(parts.clone(), replay.next_body());
        let result = boxed_call(inner.clone(), try_req).await;
        if last || !retryable(&cfg, repeat, &result) {
            return done(result, retries);
        }
        if !replay.replayable() {
            policy.stats.not_replayable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(outcome = %describe(&result), "not retried: request body too large to replay");
            return done(result, retries);
        }
        let wait = match retry_after(&result) {
            Some(asked) if asked <= cfg.backoff_max.saturating_mul(4) => asked,
            Some(asked) => {
                policy
                    .stats
                    .retry_after_too_long
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    ?asked,
                    "not retried: Retry-After longer than 4 x backoff max"
                );
                return done(result, retries);
            }
            None => full_jitter(retries + 1, cfg.backoff_min, cfg.backoff_max),
        };
        if !policy.budget.try_withdraw() {
            policy
                .stats
                .budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(outcome = %describe(&result), "not retried: retry budget exhausted");
            return done(result, retries);
        }
        retries += 1;
        policy.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(retry = retries, ?wait, outcome = %describe(&result), "retrying");
        let sleep = tokio::time::sleep(wait);
        if let Ok(failed) = result {
            // Read the failed answer while waiting anyway, so its connection stays usable.
            let _ = tokio::time::timeout_at(sleep.deadline(), drain(failed.into_body())).await;
        }
        sleep.await;
    }
}

pub type RetryLayer = PolicyLayer<RetryPolicy>;
pub type RetryService<S> = PolicyService<S, RetryPolicy>;

impl RetryLayer {
    pub fn new(policy: Arc<RetryPolicy>) -> Self {
        Self { policy }
    }
}

impl Policy for RetryPolicy {
    fn call<S: InnerService>(self: &Arc<Self>, inner: S, req: Request<Body>) -> ResponseFuture {
        Box::pin(run(inner, Arc::clone(self), req))
    }
}
