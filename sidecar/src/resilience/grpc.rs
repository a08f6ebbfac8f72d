//! gRPC-aware failure classification. A gRPC call answers HTTP 200 whatever happened;
//! its real outcome is `grpc-status`, sent either in the response headers (a
//! "trailers-only" response: the call failed or finished before any message) or in the
//! trailers after the last message.
//!
//! Only the statuses that say the dependency could not serve — UNAVAILABLE (14),
//! DEADLINE_EXCEEDED (4), RESOURCE_EXHAUSTED (8) — are failures; the others (e.g.
//! INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED) are answers about the caller's
//! request, as a 4xx is.
//!
//! - Status in the headers: classified at the head, like an HTTP status: the breaker
//!   records it, and retry treats a failure like a 5xx (nothing was streamed yet).
//! - Status in the trailers: the breaker's verdict waits for the end of the body
//!   (`OutcomeBody`). Retrying on it is impossible: the messages before the trailers
//!   have already gone to the app.
//!
//! `application/grpc-web` is not gRPC here: its status travels inside the body, not in
//! HTTP trailers, so it is classified by HTTP status only.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Response, StatusCode};
use http_body::{Frame, SizeHint};

use super::breaker::{BreakerPermit, CallOutcome};
use crate::body::{Body, BoxError};

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// gRPC status codes that count as failures of the dependency.
pub const FAILURE_CODES: [u32; 3] = [
    4,  // DEADLINE_EXCEEDED
    8,  // RESOURCE_EXHAUSTED
    14, // UNAVAILABLE
];

/// What a response head says about a gRPC call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcHead {
    /// Not a gRPC response (or not a 200, which is classified by its HTTP status).
    NotGrpc,
    /// Trailers-only: `grpc-status` is in the headers.
    Status(u32),
    /// The status will come in the trailers, at the end of the body.
    InTrailers,
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc;...` (not grpc-web).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.get(.."application/grpc".len()).map(|p| (p, ct)))
        .is_some_and(|(prefix, ct)| {
            prefix.eq_ignore_ascii_case("application/grpc")
                && matches!(ct.as_bytes().get(prefix.len()), None | Some(b'+' | b';'))
        })
}

/// The `grpc-status` in `headers` (or trailers), if any and numeric.
pub fn status_code(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn is_failure_code(code: u32) -> bool {
    FAILURE_CODES.contains(&code)
}

/// Read a response head.
pub fn head<B>(resp: &Response<B>) -> GrpcHead {
    if resp.status() != StatusCode::OK || !is_grpc(resp.headers()) {
        return GrpcHead::NotGrpc;
    }
    match status_code(resp.headers()) {
        Some(code) => GrpcHead::Status(code),
        None => GrpcHead::InTrailers,
    }
}

/// A trailers-only gRPC response whose status is a failure of the dependency.
pub fn failed_at_head<B>(resp: &Response<B>) -> bool {
    matches!(head(resp), GrpcHead::Status(code) if is_failure_code(code))
}

/// The breaker's reading of a gRPC call's trailers.
fn trailer_outcome(trailers: &HeaderMap) -> CallOutcome {
    match status_code(trailers) {
        Some(code) if is_failure_code(code) => CallOutcome::Failure,
        Some(_) => CallOutcome::Success,
        // Trailers without a status: the dependency broke the protocol.
        None => CallOutcome::Failure,
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
