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
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};

use super::breaker::{BreakerPermit, CallOutcome};
use crate::body::{Body, BoxError};

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRPC's `Retry-After`: how long a client's retry policy should wait.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The gRPC status codes the sidecar reads or answers with (grpc/doc/statuscodes.md).
pub mod code {
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// gRPC status codes that count as failures of the dependency.
pub const FAILURE_CODES: [u32; 3] = [
    code::DEADLINE_EXCEEDED,
    code::RESOURCE_EXHAUSTED,
    code::UNAVAILABLE,
];

pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The `grpc-timeout` of a request: 1 to 8 ASCII digits and a unit, `H` hours, `M`
/// minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds
/// (grpc/doc/PROTOCOL-HTTP2.md). `None` when absent or malformed: a malformed
/// deadline is ignored rather than taken as zero, so the configured timeout applies.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` as a `grpc-timeout` value: the finest unit that holds it in 8 digits, rounded
/// down (a deadline passed on must not be later than ours).
pub fn encode_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = d.as_nanos();
    let (value, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(value, _)| value <= MAX)
        .unwrap_or((MAX, 'H'));
    HeaderValue::from_str(&format!("{value}{unit}"))
        .unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

/// The status a gRPC client gives an HTTP status that is not 200
/// (grpc/doc/http-grpc-status-mapping.md).
pub fn code_of_http_status(status: u16) -> u32 {
    match status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502..=504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself.
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

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
