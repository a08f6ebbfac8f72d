//! Why a proxied call failed, and the answer each failure becomes.
//! Every layer of the outbound stack speaks `ProxyError`; one place ([`Reply`]) writes
//! every answer the sidecar makes itself, outbound and inbound, so the app always gets
//! a status and a short reason, never a dropped connection.
//!
//! A gRPC caller (`content-type: application/grpc`) gets the gRPC form: a
//! trailers-only response, HTTP 200 with `grpc-status` and `grpc-message`, since a gRPC
//! client reads a 503 only as "Received http2 header with status: 503". Breaker open
//! and no endpoint become UNAVAILABLE, a full bulkhead and the rate limit
//! RESOURCE_EXHAUSTED, a timeout DEADLINE_EXCEEDED.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{empty, full, Body};
use crate::resilience::grpc::{self, code};

/// `x-sidecar-error` of a refused `101` (outbound from a peer, inbound from the app).
pub const UNEXPECTED_UPGRADE: &str = "unexpected_upgrade";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("bulkhead full: {max} calls already in flight")]
    BulkheadFull { max: u32 },
    #[error("circuit breaker open")]
    CircuitOpen { retry_after: Duration },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The caller's own deadline (`grpc-timeout`, sooner than the dependency's
    /// timeout) passed: not held against the dependency.
    #[error("deadline of {0:?} set by the caller exceeded")]
    DeadlineExceeded(Duration),
    /// The connection could not be made: the request never left.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The peer refused the stream before processing it (HTTP/2 REFUSED_STREAM, GOAWAY
    /// above the stream id): safe to retry whatever the method.
    #[error("refused before processing: {0}")]
    Refused(String),
    /// The connection broke mid-call: the peer may have processed the request.
    #[error("connection reset: {0}")]
    Reset(String),
    #[error("no endpoint available")]
    NoEndpoints,
    #[error("outbound rate limit reached")]
    RateLimited,
    #[error("fault injected: status {0}")]
    FaultInjected(u16),
    #[error("peer identity rejected: {0}")]
    PeerIdentity(String),
    #[error("request body: {0}")]
    Body(String),
    /// The peer switched protocols (`101`) for a call that did not ask to.
    #[error(
        "unexpected 101 Switching Protocols from {0} to a request that did not ask to upgrade"
    )]
    UnexpectedUpgrade(String),
    #[error("{0}")]
    Other(String),
}

impl ProxyError {
    /// The request provably never reached the dependency.
    pub fn never_reached_upstream(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::Refused(_) | Self::NoEndpoints | Self::PeerIdentity(_)
        )
    }

    /// Counts as a failure of the dependency (for breakers and outlier detection).
    pub fn is_dependency_failure(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_)
                | Self::Connect(_)
                | Self::Refused(_)
                | Self::Reset(_)
                | Self::NoEndpoints
                | Self::PeerIdentity(_)
                | Self::UnexpectedUpgrade(_)
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BulkheadFull { .. } | Self::CircuitOpen { .. } | Self::NoEndpoints => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout(_) | Self::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::FaultInjected(s) => {
                StatusCode::from_u16(*s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::Connect(_)
            | Self::Refused(_)
            | Self::Reset(_)
            | Self::PeerIdentity(_)
            | Self::UnexpectedUpgrade(_)
            | Self::Other(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BulkheadFull { .. } => "bulkhead_full",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Timeout(_) => "timeout",
            Self::DeadlineExceeded(_) => "deadline_exceeded",
            Self::Connect(_) => "connect_failure",
            Self::Refused(_) => "refused",
            Self::Reset(_) => "reset",
            Self::NoEndpoints => "no_endpoints",
            Self::RateLimited => "rate_limited",
            Self::FaultInjected(_) => "fault_injected",
            Self::PeerIdentity(_) => "peer_identity",
            Self::Body(_) => "body",
            Self::UnexpectedUpgrade(_) => UNEXPECTED_UPGRADE,
            Self::Other(_) => "error",
        }
    }

    /// The gRPC status a gRPC caller gets for this failure.
    pub fn grpc_code(&self) -> u32 {
        match self {
            Self::BulkheadFull { .. } | Self::RateLimited => code::RESOURCE_EXHAUSTED,
            Self::Timeout(_) | Self::DeadlineExceeded(_) => code::DEADLINE_EXCEEDED,
            Self::CircuitOpen { .. }
            | Self::NoEndpoints
            | Self::Connect(_)
            | Self::Refused(_)
            | Self::Reset(_)
            | Self::PeerIdentity(_) => code::UNAVAILABLE,
            Self::FaultInjected(s) => grpc::code_of_http_status(*s),
            Self::Body(_) | Self::UnexpectedUpgrade(_) | Self::Other(_) => code::INTERNAL,
        }
    }

    /// The answer the app gets: status, `x-sidecar-error` naming the kind, a one-line
    /// reason, and `Retry-After` where waiting helps; the gRPC form for a gRPC call.
    pub fn to_response(&self, dependency: &str, grpc_call: bool) -> Response<Body> {
        let retry_after = match self {
            Self::CircuitOpen { retry_after } => Some(*retry_after),
            Self::BulkheadFull { .. } | Self::RateLimited | Self::NoEndpoints => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        };
        Reply {
            status: self.status(),
            grpc_code: self.grpc_code(),
            kind: self.kind(),
            message: &format!("{dependency}: {self}"),
            retry_after,
        }
        .into_response(grpc_call)
    }
}

/// An answer the sidecar makes itself: the one writer of them all.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// For an HTTP caller.
    pub status: StatusCode,
    /// For a gRPC caller.
    pub grpc_code: u32,
    /// Short label, sent in `x-sidecar-error`.
    pub kind: &'static str,
    /// One line, no newline.
    pub message: &'a str,
    /// `Retry-After` (HTTP, whole seconds, at least 1) or `grpc-retry-pushback-ms`.
    pub retry_after: Option<Duration>,
}

impl Reply<'_> {
    /// `grpc_call`: the request was gRPC (see [`grpc::is_grpc`]).
    pub fn into_response(self, grpc_call: bool) -> Response<Body> {
        let mut b = Response::builder().header("x-sidecar-error", self.kind);
        let body = if grpc_call {
            b = b
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(grpc::GRPC_STATUS, self.grpc_code)
                .header(grpc::GRPC_MESSAGE, grpc::encode_message(self.message));
            if let Some(d) = self.retry_after {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                b = b.header(grpc::GRPC_RETRY_PUSHBACK_MS, ms);
            }
            // No body: a trailers-only response, the status in the one HEADERS frame.
            empty()
        } else {
            b = b
                .status(self.status)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
            if let Some(d) = self.retry_after {
                b = b.header(header::RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)));
            }
            full(Bytes::from(format!("{}\n", self.message)))
        };
        b.body(body)
            .unwrap_or_else(|_| Response::new(full(Bytes::new())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use http_body::Body as _;

    use super::*;

    #[test]
    fn a_grpc_caller_gets_a_trailers_only_status_it_can_read() {
        let cases = [
            (
                ProxyError::CircuitOpen {
                    retry_after: Duration::from_secs(5),
                },
                "14",
                Some("5000"),
            ),
            (ProxyError::BulkheadFull { max: 1 }, "8", Some("1000")),
            (ProxyError::RateLimited, "8", Some("1000")),
            (ProxyError::Timeout(Duration::from_secs(1)), "4", None),
            (ProxyError::NoEndpoints, "14", Some("1000")),
            (ProxyError::Reset("eof".into()), "14", None),
            (ProxyError::FaultInjected(503), "14", None),
            (ProxyError::FaultInjected(403), "7", None),
        ];
        for (e, code, pushback) in cases {
            let r = e.to_response("payments", true);
            assert_eq!(r.status(), StatusCode::OK, "{e}");
            let h = r.headers();
            assert_eq!(h["content-type"], "application/grpc");
            assert_eq!(h["grpc-status"], code, "{e}");
            assert_eq!(
                h["grpc-message"].to_str().unwrap(),
                grpc::encode_message(&format!("payments: {e}"))
            );
            assert_eq!(h["x-sidecar-error"], e.kind());
            assert_eq!(
                h.get("grpc-retry-pushback-ms").map(|v| v.to_str().unwrap()),
                pushback,
                "{e}"
            );
            assert!(!h.contains_key(header::RETRY_AFTER));
            assert!(r.body().is_end_stream(), "trailers-only: no body");
            // An HTTP caller still gets the HTTP form.
            let r = e.to_response("payments", false);
            assert_eq!(r.status(), e.status());
            assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        }
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc::encode_message("timed out: 100%"), "timed out: 100%25");
        assert_eq!(grpc::encode_message("caf\u{e9}\n"), "caf%C3%A9%0A");
    }
}
