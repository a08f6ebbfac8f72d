//! `access_log:` and `tracing:`, the same in the gateway's and the sidecar's files.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::units::{HumanDuration, Percent};

/// One JSON line per request (gateway) or per outbound call (sidecar).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// Off by default (as on an ALB): an access log costs CPU and log-pipeline money.
    #[serde(default)]
    pub enabled: bool,
    /// `stdout`, or a file the process appends to (reopened when logrotate moves it).
    /// Needs a restart to change.
    #[serde(default = "default_log_path")]
    pub path: String,
    /// Share of successful requests logged. Errors (5xx, no answer) and the gateway's
    /// own refusals are always logged.
    #[serde(default = "all")]
    pub sample: Percent,
    /// Log the query string with the path (off: query strings often carry secrets).
    #[serde(default)]
    pub query: bool,
    /// Lines waiting for the writer thread; when full, new lines are dropped and
    /// counted (`access_log_lines_total{result="dropped"}`). Needs a restart to change.
    #[serde(default = "default_buffer")]
    pub buffer_lines: usize,
}

impl Default for AccessLogFile {
    fn default() -> Self {
        Self {
            enabled: false,
            path: default_log_path(),
            sample: all(),
            query: false,
            buffer_lines: default_buffer(),
        }
    }
}

fn default_log_path() -> String {
    "stdout".into()
}
fn all() -> Percent {
    Percent::new_const(100.0)
}
fn default_buffer() -> usize {
    16 * 1024
}

/// OpenTelemetry traces, exported with OTLP over HTTP (protobuf). Absent: off.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingFile {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`; spans go
    /// to `/v1/traces` under it. Needs a restart to change.
    pub otlp_endpoint: String,
    /// Share of new traces sampled. A request that arrives with a `traceparent` follows
    /// its caller's decision (parent-based sampling).
    #[serde(default = "default_ratio")]
    pub sample_ratio: Percent,
    /// `service.name` of the spans (default: `gateway` or `sidecar`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Finished spans waiting for export; when full, new spans are dropped and counted
    /// (`trace_spans_total{result="dropped"}`).
    #[serde(default = "default_queue")]
    pub max_queue: usize,
    /// Spans are sent in batches this often (or sooner when 512 are waiting).
    #[serde(default = "default_interval")]
    pub export_interval: HumanDuration,
    /// A batch the collector does not take within this time is dropped and counted
    /// (`result="failed"`).
    #[serde(default = "default_export_timeout")]
    pub export_timeout: HumanDuration,
}

fn default_ratio() -> Percent {
    Percent::new_const(1.0)
}
fn default_queue() -> usize {
    8192
}
fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_export_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// Per-route override of the access log (gateway routes).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAccessLogFile {
    /// Log this route's requests (default: the top-level `access_log.enabled`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Share of successful requests logged (default: the top-level `sample`).
    #[serde(default)]
    pub sample: Option<Percent>,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    pub enabled: bool,
    pub target: LogTarget,
    /// Fraction of successful requests logged, `0.0..=1.0`.
    pub sample: f64,
    pub query: bool,
    pub buffer_lines: usize,
}

impl AccessLog {
    /// Whether a request of this route, with this outcome, gets a line.
    pub fn wants(&self, route: Option<&RouteAccessLog>, failed: bool) -> bool {
        let enabled = route.and_then(|r| r.enabled).unwrap_or(self.enabled);
        if !enabled {
            return false;
        }
        let sample = route.and_then(|r| r.sample).unwrap_or(self.sample);
        failed || sample >= 1.0 || (sample > 0.0 && rand::random::<f64>() < sample)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteAccessLog {
    pub enabled: Option<bool>,
    pub sample: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// Full URL spans are POSTed to (`.../v1/traces`).
    pub traces_url: http::Uri,
    pub sample_ratio: f64,
    pub service_name: String,
    pub max_queue: usize,
    pub export_interval: Duration,
    pub export_timeout: Duration,
}

pub fn validate_access_log(
    f: Option<&AccessLogFile>,
    base_dir: &std::path::Path,
    p: &mut Problems,
) -> AccessLog {
    let f = f.cloned().unwrap_or_default();
    let target = match f.path.trim() {
        "stdout" | "-" => LogTarget::Stdout,
        "" => {
            p.push("access_log.path", "must be `stdout` or a file path");
            LogTarget::Stdout
        }
        path => LogTarget::File(base_dir.join(path)),
    };
    if !(1..=1 << 22).contains(&f.buffer_lines) {
        p.push("access_log.buffer_lines", "must be between 1 and 4194304");
    }
    AccessLog {
        enabled: f.enabled,
        target,
        sample: f.sample.fraction(),
        query: f.query,
        buffer_lines: f.buffer_lines.clamp(1, 1 << 22),
    }
}

pub fn validate_route_access_log(f: Option<&RouteAccessLogFile>) -> RouteAccessLog {
    f.map(|f| RouteAccessLog {
        enabled: f.enabled,
        sample: f.sample.map(Percent::fraction),
    })
    .unwrap_or_default()
}

pub fn validate_tracing(
    f: Option<&TracingFile>,
    default_service: &str,
    p: &mut Problems,
) -> Option<Tracing> {
    let f = f?;
    let base = f.otlp_endpoint.trim().trim_end_matches('/');
    let url = format!("{base}/v1/traces");
    let traces_url = match url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => u,
        Ok(u) if u.scheme_str() == Some("https") => {
            p.push(
                "tracing.otlp_endpoint",
                format!(
                    "{base}: https is not supported yet; export to a local collector over http"
                ),
            );
            u
        }
        _ => {
            p.push(
                "tracing.otlp_endpoint",
                format!("{base:?} is not a URL like http://otel-collector:4318"),
            );
            return None;
        }
    };
    if f.max_queue == 0 || f.max_queue > 1 << 20 {
        p.push("tracing.max_queue", "must be between 1 and 1048576");
    }
    let interval = f.export_interval.get();
    if interval < Duration::from_millis(10) {
        p.push("tracing.export_interval", "must be at least 10ms");
    }
    if f.export_timeout.get() < Duration::from_millis(10) {
        p.push("tracing.export_timeout", "must be at least 10ms");
    }
    let service_name = match f.service_name.as_deref().map(str::trim) {
        Some("") => {
            p.push("tracing.service_name", "must not be empty");
            default_service.to_owned()
        }
        Some(s) => s.to_owned(),
        None => default_service.to_owned(),
    };
    Some(Tracing {
        traces_url,
        sample_ratio: f.sample_ratio.fraction(),
        service_name,
        max_queue: f.max_queue.clamp(1, 1 << 20),
        export_interval: interval.max(Duration::from_millis(10)),
        export_timeout: f.export_timeout.get().max(Duration::from_millis(10)),
    })
}
