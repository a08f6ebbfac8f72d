//! gRPC-aware failure classification for the sidecar's tower stack. The classification
//! itself (status codes, which are failures, `grpc-timeout`) is shared with the gateway
//! in `tollgate_config::common::grpc` and re-exported here; this module adds what only
//! the sidecar does with it:
//!
//! - Status in the headers: classified at the head, like an HTTP status: the breaker
//!   records it, and retry treats a failure like a 5xx (nothing was streamed yet).
//! - Status in the trailers: the breaker's verdict waits for the end of the body
//!   (`OutcomeBody`). Retrying on it is impossible: the messages before the trailers
//!   have already gone to the app.

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tollgate_config::common::grpc as shared;
pub use tollgate_config::common::grpc::{
    code, code_of_http_status, encode_message, encode_timeout, is_failure_code, is_grpc,
    status_code, timeout, GrpcHead, FAILURE_CODES, GRPC_MESSAGE, GRPC_RETRY_PUSHBACK_MS,
    GRPC_STATUS, GRPC_TIMEOUT,
};

use super::breaker::{BreakerPermit, CallOutcome};
use crate::body::{Body, BoxError};

/// Read a response head.
pub fn head<B>(resp: &Response<B>) -> GrpcHead {
    shared::head(resp.status(), resp.headers())
}

/// A trailers-only gRPC response whose status is a failure of the dependency.
pub fn failed_at_head<B>(resp: &Response<B>) -> bool {
    shared::failed_at_head(resp.status(), resp.headers())
}

/// The breaker's reading of a gRPC call's trailers.
fn trailer_outcome(trailers: &HeaderMap) -> CallOutcome {
    if shared::trailers_failed(trailers) {
        CallOutcome::Failure
    } else {
        CallOutcome::Success
    }
}

/// Hand the breaker permit to the response body, to be recorded when the trailers
/// arrive.
pub(crate) fn record_at_end(resp: Response<Body>, permit: BreakerPermit) -> Response<Body> {
    resp.map(|inner| {
        crate::body::boxed(OutcomeBody {
            inner,
            permit: Some(permit),
        })
    })
}

/// A gRPC response body that gives the call's outcome to the breaker at its end:
/// the `grpc-status` of the trailers; a failure if the body breaks or ends without
/// trailers (a truncated call). Dropped before its end (the app went away), the permit
/// counts the call as cancelled.
pub(crate) struct OutcomeBody {
    inner: Body,
    permit: Option<BreakerPermit>,
}

impl OutcomeBody {
    fn record(&mut self, outcome: CallOutcome) {
        if let Some(permit) = self.permit.take() {
            permit.record(outcome);
        }
    }
}

impl http_body::Body for OutcomeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let outcome = trailer_outcome(trailers);
                    this.record(outcome);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.record(CallOutcome::Failure),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
