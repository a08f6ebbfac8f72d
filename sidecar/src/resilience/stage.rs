//! The Layer/Service plumbing every policy layer shares: a layer holds the policy's
//! shared state (`Arc<P>`, kept across reloads) and each call hands the policy a clone
//! of the inner service. Services are always ready: limits apply per call, so a call
//! over a limit fails fast instead of waiting in `poll_ready`.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::ResponseFuture;
use crate::body::Body;
use crate::error::ProxyError;

/// The service below a policy layer.
pub trait InnerService:
    Service<Request<Body>, Response = Response<Body>, Error = ProxyError, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> InnerService for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = ProxyError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A policy applied to each call: bulkhead, breaker, rate limit, retry, hedge.
pub trait Policy: Send + Sync + 'static {
    fn call<S: InnerService>(self: &Arc<Self>, inner: S, req: Request<Body>) -> ResponseFuture;
}

/// Layer over a policy's shared state.
#[derive(Debug)]
pub struct PolicyLayer<P> {
    pub(crate) policy: Arc<P>,
}

impl<P> Clone for PolicyLayer<P> {
    fn clone(&self) -> Self {
        Self {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<P> PolicyLayer<P> {
    /// The shared state this layer applies.
    pub fn policy(&self) -> &Arc<P> {
        &self.policy
    }
}

impl<S, P> Layer<S> for PolicyLayer<P> {
    type Service = PolicyService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

#[derive(Debug)]
pub struct PolicyService<S, P> {
    inner: S,
    policy: Arc<P>,
}

impl<S: Clone, P> Clone for PolicyService<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: InnerService, P: Policy> Service<Request<Body>> for PolicyService<S, P> {
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        self.policy.call(self.inner.clone(), req)
    }
}

/// Call `inner` once, boxed outside any `async fn`: an `async` block that holds
/// `S::Future` across an await trips rustc's higher-ranked `Send` check on the body's
/// `dyn Error`, while a boxed future is proven `Send` here for the concrete type.
pub fn boxed_call<S: InnerService>(inner: S, req: Request<Body>) -> ResponseFuture {
    use tower::ServiceExt;
    Box::pin(inner.oneshot(req))
}
