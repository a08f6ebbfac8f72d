//! Fault injection per dependency, for chaos tests in staging: a share of the calls
//! (optionally only those carrying a given header) is delayed, and a share is answered
//! with [`ProxyError::FaultInjected`] without calling the dependency. Both are rolled
//! independently for each call; a call that gets both is delayed, then aborted.
//!
//! An abort is an answer made on our side, not a failure of the dependency
//! ([`ProxyError::is_dependency_failure`] is false for it): it never trips the breaker.
//! A delay happens before the call reaches the breaker and the timeouts, so it is not
//! a slow call either, and does not eat the dependency's deadline: it adds to the
//! latency the app sees, as a slow network in front of the dependency would.
//!
//! An abort needs `abort_status`; without one only delays are injected.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http::{Request, Response};
use tollgate_config::sidecar::Fault;
use tower::{Layer, Service, ServiceExt};

use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

#[derive(Debug, Clone)]
pub struct FaultLayer {
    fault: Arc<Fault>,
}

impl FaultLayer {
    pub fn new(fault: Fault) -> Self {
        Self {
            fault: Arc::new(fault),
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            fault: Arc::clone(&self.fault),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultService<S> {
    inner: S,
    fault: Arc<Fault>,
}

impl<S> Service<Request<Body>> for FaultService<S>
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
        let tollgate_config::common::fault::Injected { delay, abort } =
            self.fault.decide(req.headers());
        if let Some(status) = abort {
            tracing::debug!(status, ?delay, "fault injected: abort");
        } else if delay.is_some() {
            tracing::debug!(?delay, "fault injected: delay");
        }
        let inner = self.inner.clone();
        match (delay, abort) {
            (None, None) => Box::pin(inner.oneshot(req)),
            (None, Some(status)) => {
                Box::pin(std::future::ready(Err(ProxyError::FaultInjected(status))))
            }
            (Some(delay), Some(status)) => Box::pin(
                tokio::time::sleep(delay).map(move |()| Err(ProxyError::FaultInjected(status))),
            ),
            (Some(delay), None) => {
                Box::pin(tokio::time::sleep(delay).then(move |()| inner.oneshot(req)))
            }
        }
    }
}
