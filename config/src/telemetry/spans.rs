//! Spans and their export: OpenTelemetry's wire format (OTLP, protobuf over HTTP) from
//! the `opentelemetry-proto` types, with our own small recorder instead of the SDK's
//! tracer, as linkerd2-proxy does: a request only pays for a span when it is sampled,
//! and a finished span is handed to a bounded queue with `try_send`, so a slow or dead
//! collector never blocks or slows a request (spans are dropped and counted instead).
//!
//! The exporter runs on its own thread with a single-threaded tokio runtime (the
//! "background runtime"): batches of up to [`BATCH`] spans, sent every
//! `export_interval` (sooner when a batch fills), each POST bounded by `export_timeout`.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prometheus::{IntCounter, IntCounterVec};
use prost::Message;

use crate::common::telemetry::Tracing;

/// Most spans per export request.
pub const BATCH: usize = 512;

struct SpanMetrics {
    exported: IntCounter,
    dropped: IntCounter,
    failed: IntCounter,
}

static METRICS: LazyLock<SpanMetrics> = LazyLock::new(|| {
    let v: IntCounterVec = crate::metrics::counter_vec(
        "trace_spans_total",
        "Finished spans by fate: exported to the collector, dropped (export queue full), failed (the collector refused them or did not answer in time)",
        &["result"],
    );
    SpanMetrics {
        exported: v.with_label_values(&["exported"]),
        dropped: v.with_label_values(&["dropped"]),
        failed: v.with_label_values(&["failed"]),
    }
});

/// Where finished spans go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    tx: std::sync::mpsc::SyncSender<Span>,
}

impl Tracer {
    /// Start the exporter thread.
    pub fn spawn(cfg: &Tracing) -> std::io::Result<Self> {
        LazyLock::force(&METRICS);
        // A std channel drained on a timer, not a tokio one: `try_send` never wakes the
        // exporter (a wake-up per span cost ~1% of the gateway's CPU at 1% sampling).
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.max_queue);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cfg = cfg.clone();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || rt.block_on(export_loop(cfg, rx)))?;
        Ok(Self { tx })
    }

    /// Hand a finished span to the exporter; never waits.
    pub fn record(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            METRICS.dropped.inc();
        }
    }
}

async fn export_loop(cfg: Tracing, rx: std::sync::mpsc::Receiver<Span>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resource = Resource {
        attributes: vec![
            attr("service.name", cfg.service_name.clone()),
            attr("service.version", env!("CARGO_PKG_VERSION")),
            attr("telemetry.sdk.name", "tollgate"),
            attr("telemetry.sdk.language", "rust"),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "tollgate".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    // Woken by time only: every export_interval, or every 50 ms while spans keep
    // arriving, whatever is queued goes out in batches of up to BATCH.
    let poll = cfg
        .export_interval
        .min(std::time::Duration::from_millis(50));
    let mut waited = std::time::Duration::ZERO;
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
    loop {
        tokio::time::sleep(poll).await;
        waited += poll;
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(span) => batch.push(span),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
            if batch.len() >= BATCH {
                break;
            }
        }
        if batch.is_empty() || (batch.len() < BATCH && waited < cfg.export_interval && !closed) {
            if closed {
                return;
            }
            continue;
        }
        waited = std::time::Duration::ZERO;
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let n = spans.len() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        match export(&client, &cfg, req.encode_to_vec()).await {
            Ok(()) => METRICS.exported.inc_by(n),
            Err(e) => {
                METRICS.failed.inc_by(n);
                crate::telemetry::warn_every(
                    "otlp_export",
                    format_args!(
                        "trace export to {} failed, {n} spans lost: {e}",
                        cfg.traces_url
                    ),
                );
            }
        }
        if closed {
            return;
        }
    }
}

async fn export(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    cfg: &Tracing,
    body: Vec<u8>,
) -> Result<(), String> {
    let req = http::Request::post(cfg.traces_url.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(cfg.export_timeout, client.request(req))
        .await
        .map_err(|_| format!("no answer within {:?}", cfg.export_timeout))?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", resp.status()))
    }
}

pub fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub fn attr_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

pub fn attr_bool(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A span ready to record.
#[allow(clippy::too_many_arguments)]
pub fn span(
    trace_id: u128,
    span_id: u64,
    parent_span_id: u64,
    name: String,
    kind: SpanKind,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    error: Option<String>,
) -> Span {
    Span {
        trace_id: trace_id.to_be_bytes().to_vec(),
        span_id: span_id.to_be_bytes().to_vec(),
        parent_span_id: if parent_span_id == 0 {
            Vec::new()
        } else {
            parent_span_id.to_be_bytes().to_vec()
        },
        // W3C trace flags: sampled (we only record sampled spans).
        flags: 0x1,
        name,
        kind: kind as i32,
        start_time_unix_nano: unix_nanos(start),
        end_time_unix_nano: unix_nanos(end),
        attributes,
        status: Some(match error {
            Some(message) => Status {
                message,
                code: StatusCode::Error as i32,
            },
            None => Status::default(),
        }),
        ..Default::default()
    }
}

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind as Kind;
