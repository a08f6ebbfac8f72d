//! Traces and access logs on both sides of the mTLS hop. Each side is one span: the
//! outbound call (client span, retries and hedges inside it) and the inbound call
//! (server span). The span's id goes on in `traceparent`, so the next hop's span is
//! its child. With tracing off the sidecar does not take part: `traceparent` passes
//! through unchanged and the trace stays connected around it.

use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderName};
use tollgate_config::common::telemetry::Tracing;
use tollgate_config::telemetry::spans::{attr, attr_int, span, Kind};
use tollgate_config::telemetry::trace_context::{new_span_id, TraceContext};
use tollgate_config::telemetry::Telemetry;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One side of a call as its span reports it.
pub struct Hop {
    pub trace: TraceContext,
    pub span_id: u64,
    record: bool,
    pub start: SystemTime,
    pub started: Instant,
}

impl Hop {
    /// Continue the caller's trace (or start one) and tell the next hop about our span.
    pub fn begin(headers: &mut HeaderMap, tracing: Option<&Tracing>) -> Self {
        let incoming = headers.get(&TRACEPARENT).map(http::HeaderValue::as_bytes);
        let ratio = tracing.map_or(0.0, |t| t.sample_ratio);
        let trace = TraceContext::from_header(incoming, ratio);
        let span_id = new_span_id();
        if tracing.is_some() {
            headers.insert(TRACEPARENT, trace.traceparent(span_id));
        }
        Self {
            trace,
            span_id,
            record: trace.sampled && tracing.is_some(),
            start: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// This call's span is recorded (tracing on and the trace sampled).
    pub fn recording(&self) -> bool {
        self.record
    }

    /// Record the span (when sampled).
    pub fn end(
        &self,
        telemetry: &Telemetry,
        name: String,
        kind: Kind,
        attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
        error: Option<String>,
    ) {
        if !self.record {
            return;
        }
        if let Some(tracer) = &telemetry.tracer {
            tracer.record(span(
                self.trace.trace_id,
                self.span_id,
                self.trace.parent_span_id,
                name,
                kind,
                self.start,
                SystemTime::now(),
                attributes,
                error,
            ));
        }
    }
}

/// HTTP semantic-convention attributes of a call.
pub fn http_attributes(
    method: &http::Method,
    path: &str,
    status: u16,
) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    let mut v = vec![
        attr("http.request.method", method.as_str()),
        attr("url.path", path),
    ];
    if status != 0 {
        v.push(attr_int("http.response.status_code", i64::from(status)));
    }
    v
}
