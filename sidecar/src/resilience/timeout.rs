//! A deadline on the response head, used twice: once for the whole logical call
//! (overall) and once per try (under the retry layer). Expiry becomes
//! [`ProxyError::Timeout`] (504 to the app, retryable per try when `on: [timeout]`).
//!
//! The deadline covers waiting for the inner service to be ready and for the response
//! head; a response body that streams longer than the deadline is not cut off here.
//!
//! The overall one ([`TimeoutLayer::call_deadline`]) is also a gRPC call's deadline:
//! the sooner of the dependency's timeout and the caller's `grpc-timeout`. It goes in
//! the request's extensions as a [`Deadline`], from which each try tells the peer the
//! time left (`grpc-timeout`, set by the balancer just before sending). When the
//! caller's deadline is the sooner, its expiry is [`ProxyError::DeadlineExceeded`]:
//! not a failure of the dependency (a client's impatience must not open the breaker
//! for every other caller).

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::grpc;
use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

/// When a call must be answered by: the overall timeout or the gRPC caller's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// What is left of it, as a `grpc-timeout` (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    after: Duration,
    call_deadline: bool,
}

impl TimeoutLayer {
    /// A plain deadline (per try).
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            call_deadline: false,
        }
    }

    /// The call's deadline: also honours `grpc-timeout` and records the [`Deadline`].
    pub fn call_deadline(after: Duration) -> Self {
        Self {
            after,
            call_deadline: true,
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            after: self.after,
            call_deadline: self.call_deadline,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    after: Duration,
    call_deadline: bool,
}

impl<S> Service<Request<Body>> for TimeoutService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let mut after = self.after;
        let mut expired = ProxyError::Timeout(after);
        if self.call_deadline {
            let callers = grpc::is_grpc(req.headers())
                .then(|| grpc::timeout(req.headers()))
                .flatten();
            if let Some(t) = callers.filter(|t| *t < after) {
                after = t;
                expired = ProxyError::DeadlineExceeded(t);
            }
            req.extensions_mut()
                .insert(Deadline(Instant::now() + after));
        }
        let call = self.inner.clone().oneshot(req);
        Box::pin(tokio::time::timeout(after, call).map(move |r| r.unwrap_or(Err(expired))))
    }
}
