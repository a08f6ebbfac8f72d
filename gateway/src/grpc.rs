//! gRPC through the gateway: what a gRPC call changes in the request's life. The
//! classification (statuses, failures, `grpc-timeout`) is the one the sidecar uses,
//! `tollgate_config::common::grpc`; this module applies it to Pingora's phases.
//!
//! - Deadline: the sooner of the route's `timeouts.request` and the caller's
//!   `grpc-timeout`, passed on to the server as the time left of it.
//! - Retry: a gRPC call is a POST whatever it does, so only methods listed in the
//!   route's `retry.grpc_methods` are repeated: on a trailers-only UNAVAILABLE (the
//!   status in the response headers, before any message) and on the `on:` conditions
//!   as an idempotent request. A status in the trailers comes after messages the client
//!   already has: Pingora decided the retry at the response head, so it cannot be
//!   retried, only counted.
//! - Outlier detection: UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are
//!   failures of the endpoint, from the headers or from the trailers.
//! - The gateway's own answers to a gRPC call are gRPC: HTTP 200, trailers-only, with
//!   `grpc-status` and `grpc-message` (see [`crate::respond`]).

use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora_http::RequestHeader;
pub use tollgate_config::common::grpc::{
    code, code_of_http_status, encode_message, encode_timeout, head, is_failure_code, is_grpc,
    status_code, trailers_failed, GrpcHead, GRPC_MESSAGE, GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS,
    GRPC_TIMEOUT,
};
use tollgate_config::gateway::RetryPolicy;

use crate::context::Ctx;

/// A gRPC call in progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call {
    /// The method is in the route's `retry.grpc_methods`: safe to repeat.
    pub listed: bool,
    /// The response head came without a status: the attempt's outcome waits for the
    /// trailers.
    pub awaiting_trailers: bool,
}

/// The request is a gRPC call: note it and tighten its deadline to the caller's
/// `grpc-timeout`. Called once the route forwards the request.
pub fn begin(ctx: &mut Ctx, req: &RequestHeader) {
    if !is_grpc(&req.headers) {
        return;
    }
    let listed = ctx
        .route()
        .is_some_and(|r| r.config.retry.grpc_methods.matches(req.uri.path()));
    ctx.grpc = Some(Call {
        listed,
        awaiting_trailers: false,
    });
    let caller = tollgate_config::common::grpc::timeout(&req.headers);
    if let (Some(routed), Some(t)) = (ctx.routed.as_mut(), caller) {
        routed.deadline = sooner(routed.deadline, ctx.started.checked_add(t));
    }
}

fn sooner(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Tell the server how long the call has left (the deadline may be the route's,
/// sooner than the caller's): a server that knows stops working for nobody.
pub fn upstream_request(ctx: &Ctx, req: &mut RequestHeader) -> pingora_error::Result<()> {
    let deadline = ctx.routed.as_ref().and_then(|r| r.deadline);
    if let (Some(_), Some(d)) = (ctx.grpc, deadline) {
        let left = d.saturating_duration_since(Instant::now());
        req.insert_header(GRPC_TIMEOUT, encode_timeout(left))?;
    }
    Ok(())
}

/// Whether a trailers-only status should be retried: UNAVAILABLE for a listed method,
/// and the failures (as a 5xx) when the route retries 5xx.
pub fn retries_status(policy: &RetryPolicy, call: Call, code: u32) -> bool {
    call.listed && (code == code::UNAVAILABLE || (policy.on_5xx && is_failure_code(code)))
}

/// A listed gRPC method is as safe to repeat as an idempotent request.
pub fn safe_to_repeat(ctx: &Ctx) -> bool {
    ctx.grpc.is_some_and(|c| c.listed)
}

/// The gRPC status of the gateway's own answer with this HTTP status and reason.
pub fn code_of_rejection(status: u16, reason: &str) -> u32 {
    match (status, reason) {
        (_, "upstream_timeout" | "request_timeout") | (504, _) => code::DEADLINE_EXCEEDED,
        (429 | 413 | 431, _) => code::RESOURCE_EXHAUSTED,
        (503 | 502, _) => code::UNAVAILABLE,
        (404, _) => code::UNIMPLEMENTED,
        (s, _) => code_of_http_status(s),
    }
}

/// The headers of a trailers-only gRPC answer: `grpc-status`, `grpc-message`, and
/// gRPC's `Retry-After` (`grpc-retry-pushback-ms`) when there is one.
pub fn answer_headers(
    status: u16,
    reason: &str,
    detail: &str,
    retry_after: Option<Duration>,
) -> Vec<(http::HeaderName, HeaderValue)> {
    let mut h = vec![
        (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        ),
        (
            GRPC_STATUS,
            HeaderValue::from(code_of_rejection(status, reason)),
        ),
    ];
    if let Ok(v) = HeaderValue::from_str(&encode_message(detail)) {
        h.push((GRPC_MESSAGE, v));
    }
    if let Some(d) = retry_after {
        h.push((
            GRPC_RETRY_PUSHBACK_MS,
            HeaderValue::from(d.as_millis() as u64),
        ));
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rejections_become_grpc_statuses() {
        assert_eq!(
            code_of_rejection(504, "upstream_timeout"),
            code::DEADLINE_EXCEEDED
        );
        assert_eq!(
            code_of_rejection(429, "rate_limited"),
            code::RESOURCE_EXHAUSTED
        );
        assert_eq!(
            code_of_rejection(503, "upstream_unavailable"),
            code::UNAVAILABLE
        );
        assert_eq!(code_of_rejection(404, "no_route"), code::UNIMPLEMENTED);
        assert_eq!(code_of_rejection(403, "waf"), code::PERMISSION_DENIED);
        let h = answer_headers(
            503,
            "x",
            "upstream unavailable: 100%",
            Some(Duration::from_secs(1)),
        );
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("grpc-status").unwrap(), "14");
        assert_eq!(get("grpc-message").unwrap(), "upstream unavailable: 100%25");
        assert_eq!(get("grpc-retry-pushback-ms").unwrap(), "1000");
    }

    #[test]
    fn only_listed_methods_retry_their_statuses() {
        let mut p = RetryPolicy::default();
        let listed = Call {
            listed: true,
            awaiting_trailers: false,
        };
        assert!(retries_status(&p, listed, code::UNAVAILABLE));
        assert!(!retries_status(&p, listed, code::DEADLINE_EXCEEDED));
        assert!(!retries_status(&p, Call::default(), code::UNAVAILABLE));
        p.on_5xx = true;
        assert!(retries_status(&p, listed, code::DEADLINE_EXCEEDED));
        assert!(!retries_status(&p, listed, 5 /* NOT_FOUND */));
    }
}
