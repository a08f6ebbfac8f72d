//! Why a proxied call failed, and the HTTP answer each failure becomes.
//! Every layer of the outbound stack speaks `ProxyError`; one place turns it into a
//! response, so the app always gets a status and a short reason, never a dropped
//! connection.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};

use crate::body::{full, Body};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("bulkhead full: {max} calls already in flight")]
    BulkheadFull { max: u32 },
    #[error("circuit breaker open")]
    CircuitOpen { retry_after: Duration },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
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
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BulkheadFull { .. } | Self::CircuitOpen { .. } | Self::NoEndpoints => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::FaultInjected(s) => {
                StatusCode::from_u16(*s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::Connect(_)
            | Self::Refused(_)
            | Self::Reset(_)
            | Self::PeerIdentity(_)
            | Self::Other(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BulkheadFull { .. } => "bulkhead_full",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect_failure",
            Self::Refused(_) => "refused",
            Self::Reset(_) => "reset",
            Self::NoEndpoints => "no_endpoints",
            Self::RateLimited => "rate_limited",
            Self::FaultInjected(_) => "fault_injected",
            Self::PeerIdentity(_) => "peer_identity",
            Self::Body(_) => "body",
            Self::Other(_) => "error",
        }
    }

    /// The answer the app gets: status, `x-sidecar-error` naming the kind, a one-line
    /// body, and `Retry-After` where waiting helps.
    pub fn to_response(&self, dependency: &str) -> Response<Body> {
        let mut b = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-sidecar-error", self.kind());
        let retry_after = match self {
            Self::CircuitOpen { retry_after } => Some(retry_after.as_secs().max(1)),
            Self::BulkheadFull { .. } | Self::RateLimited | Self::NoEndpoints => Some(1),
            _ => None,
        };
        if let Some(s) = retry_after {
            b = b.header(header::RETRY_AFTER, s.to_string());
        }
        let text = format!("{dependency}: {self}\n");
        b.body(full(Bytes::from(text)))
            .unwrap_or_else(|_| Response::new(full(Bytes::new())))
    }
}
