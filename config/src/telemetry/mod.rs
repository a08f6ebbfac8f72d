//! Logging setup shared by the binaries: human-readable by default, JSON lines with
//! `LOG_FORMAT=json`; level from `RUST_LOG` (default `info`).

pub mod access_log;
pub mod spans;
pub mod trace_context;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Log a warning at most once per second per key: for conditions that can repeat on
/// every request (panic mode, a dead collector, a full disk).
pub fn warn_every(key: &str, msg: std::fmt::Arguments<'_>) {
    static LAST: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);
    let now = Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let due = last
        .get(key)
        .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(1));
    if due {
        last.insert(key.to_owned(), now);
        drop(last);
        tracing::warn!(key, "{msg}");
    }
}

/// The access-log writer and the span exporter a process started with. Their
/// threads and targets are fixed at startup; a reload may change what is logged and
/// sampled, and [`Telemetry::restart_needed`] says when it changes more.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    pub access_log: Option<access_log::AccessLogWriter>,
    pub tracer: Option<spans::Tracer>,
    started_with: Option<(
        crate::common::telemetry::AccessLog,
        Option<crate::common::telemetry::Tracing>,
    )>,
}

impl Telemetry {
    /// Start the writer (when some access log may be on: stdout always, a file only
    /// when logging is enabled somewhere, so no empty file is created) and the exporter.
    pub fn start(
        log: &crate::common::telemetry::AccessLog,
        some_route_logs: bool,
        tracing: Option<&crate::common::telemetry::Tracing>,
    ) -> std::io::Result<Self> {
        use crate::common::telemetry::LogTarget;
        let want_log = log.enabled || some_route_logs || log.target == LogTarget::Stdout;
        Ok(Self {
            access_log: if want_log {
                Some(access_log::AccessLogWriter::spawn(log)?)
            } else {
                None
            },
            tracer: tracing.map(spans::Tracer::spawn).transpose()?,
            started_with: Some((log.clone(), tracing.cloned())),
        })
    }

    /// What a new config changes that only a restart applies.
    pub fn restart_needed(
        &self,
        log: &crate::common::telemetry::AccessLog,
        some_route_logs: bool,
        tracing: Option<&crate::common::telemetry::Tracing>,
    ) -> Vec<&'static str> {
        let mut why = Vec::new();
        let Some((old_log, old_tracing)) = &self.started_with else {
            return why;
        };
        if old_log.target != log.target
            || old_log.buffer_lines != log.buffer_lines
            || (self.access_log.is_none() && (log.enabled || some_route_logs))
        {
            why.push("access_log.path or buffer_lines changed");
        }
        let fixed = |t: &crate::common::telemetry::Tracing| {
            (
                t.traces_url.clone(),
                t.service_name.clone(),
                t.max_queue,
                t.export_interval,
                t.export_timeout,
            )
        };
        if old_tracing.as_ref().map(fixed) != tracing.map(fixed) {
            why.push("tracing changed (other than sample_ratio)");
        }
        why
    }
}
