//! Per-dependency resilience: the tower layers every outbound call goes through before
//! the load balancer. Each is a `Layer`/`Service` pair over
//! `Request<Body> -> Response<Body>` with [`ProxyError`] as the error, `Clone + Send`,
//! calling a clone of its inner service (`oneshot`) so waiting happens inside the
//! response future, never in `poll_ready`.
//!
//! Stack order, outermost first, and why each layer sits where it does:
//! - [`BulkheadLayer`]: first, so a call over the concurrency limit costs nothing but an immediate 503.
//! - [`FaultLayer`] (optional): inside the bulkhead, so an injected delay holds a slot like a real slow dependency; outside the breaker and timeouts, so injected faults are never counted as the dependency's failures.
//! - [`RateLimitLayer`] (optional): after the bulkhead and fault aborts, so only calls about to go out spend a token; before the breaker, so a refused call never takes a half-open probe.
//! - [`BreakerLayer`]: outside the overall timeout, so it sees an expiry as a `Timeout` failure instead of a cancelled call; gRPC-aware ([`grpc`]).
//! - [`TimeoutLayer`] (overall): bounds retries and backoff together: the app's deadline for one logical call.
//! - [`RetryLayer`]: retries a try that failed, within the budget; one breaker verdict per logical call.
//! - [`HedgeLayer`] (optional): inside retry (a hedged try is one try), outside the per-try timeout (each copy has its own).
//! - [`TimeoutLayer`] (per try): inside retry, so a hung try becomes a retryable `Timeout`.
//! - then the load balancer and the connection pool (`outbound`).
//!
//! Shared state that must outlive a config reload ([`CircuitBreaker`], [`RetryBudget`],
//! [`Bulkhead`], [`RetryPolicy`], [`RateLimiter`], [`HedgePolicy`]) lives behind `Arc`s
//! the layers are built from and is updated in place with `reconfigure`/`resize`; the
//! layers themselves are cheap to rebuild.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod fault;
pub mod grpc;
pub mod hedge;
pub mod latency;
pub mod ratelimit;
mod replay;
pub mod retry;
pub mod stage;
pub mod timeout;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;

use http::Response;

use crate::body::Body;
use crate::error::ProxyError;

pub use backoff::{backoff_cap, full_jitter, full_jitter_with};
pub use breaker::{
    classify, BreakerLayer, BreakerPermit, BreakerService, BreakerSnapshot, BreakerState,
    CallOutcome, CircuitBreaker, TransitionCounts,
};
pub use budget::{BudgetSnapshot, RetryBudget};
pub use bulkhead::{Bulkhead, BulkheadLayer, BulkheadService, BulkheadSnapshot, BulkheadStats};
pub use fault::{FaultLayer, FaultService};
pub use grpc::GrpcHead;
pub use hedge::{
    HedgeLayer, HedgePolicy, HedgeService, HedgeStats, HedgeStatsSnapshot, HedgeStatus,
};
pub use ratelimit::{RateLimitLayer, RateLimitService, RateLimitSnapshot, RateLimiter};
pub use retry::{
    safe_to_repeat, RetryLayer, RetryPolicy, RetryService, RetryStats, RetryStatsSnapshot,
    IDEMPOTENCY_KEY, RETRIES_HEADER,
};
pub use timeout::{TimeoutLayer, TimeoutService};

/// What every layer's service returns: boxed to keep the stack's types small.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, ProxyError>> + Send + 'static>>;
