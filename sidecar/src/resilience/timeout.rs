//! A deadline on the response head, used twice: once for the whole logical call
//! (overall) and once per try (under the retry layer). Expiry becomes
//! [`ProxyError::Timeout`] (504 to the app, retryable per try when `on: [timeout]`).
//!
//! The deadline covers waiting for the inner service to be ready and for the response
//! head; a response body that streams longer than the deadline is not cut off here.

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    pub fn new(after: Duration) -> Self {
        Self { after }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            after: self.after,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    after: Duration,
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

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let after = self.after;
        let call = self.inner.clone().oneshot(req);
        Box::pin(
            tokio::time::timeout(after, call)
                .map(move |r| r.unwrap_or(Err(ProxyError::Timeout(after)))),
        )
    }
}
