//! Telemetry both binaries share: logging (human-readable by default, JSON lines with
//! `LOG_FORMAT=json`; level from `RUST_LOG`, default `info`), the access-log writer,
//! spans and their export, W3C trace context.

pub mod access_log;
pub mod spans;
pub mod trace_context;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The log filter, replaceable at run time (`server.log_level` on reload).
static FILTER: std::sync::OnceLock<FilterHandle> = std::sync::OnceLock::new();
/// Client noise is shown (debug enabled somewhere).
static SHOW_NOISE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn show_noise_for(filter: &EnvFilter) {
    let debug = filter
        .max_level_hint()
        .is_some_and(|l| l >= tracing_subscriber::filter::LevelFilter::DEBUG);
    SHOW_NOISE.store(debug, std::sync::atomic::Ordering::Relaxed);
}

/// Install the process's logger: `RUST_LOG` if set, else `info` until the config's
/// `server.log_level` is applied with [`set_log_level`].
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = rust_log()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    show_noise_for(&filter);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(ClientNoise))
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Apply the config's `server.log_level` (at startup and on every reload). `RUST_LOG`,
/// when set, wins: an operator debugging with it is not overridden by a reload.
pub fn set_log_level(level: Option<&str>) {
    if rust_log().is_some() {
        return;
    }
    let Some(handle) = FILTER.get() else {
        return;
    };
    let Ok(filter) = EnvFilter::try_new(level.unwrap_or("info")) else {
        return;
    };
    show_noise_for(&filter);
    let _ = handle.reload(filter);
}

/// Check a `log_level` the way [`set_log_level`] will read it.
pub fn validate_log_level(
    field: &str,
    level: Option<&str>,
    p: &mut crate::error::Problems,
) -> Option<String> {
    let level = level?.trim();
    // EnvFilter skips directives it cannot parse; ask for the strict parse.
    match EnvFilter::builder().parse(level) {
        Ok(_) if !level.is_empty() => Some(level.to_owned()),
        Ok(_) => {
            p.push(
                field,
                "must not be empty (e.g. info, or warn,gateway=debug)",
            );
            None
        }
        Err(e) => {
            p.push(
                field,
                format!("{level:?}: {e} (e.g. info, or warn,gateway=debug)"),
            );
            None
        }
    }
}

/// Pingora logs at ERROR what clients do every day: a TLS handshake abandoned or failed
/// (scanners, health checkers that only open a connection, browsers that give up), a
/// connection reset before its request head was complete. At that level such lines
/// hide real errors. They are counted in `gateway_downstream_errors_total{kind}` and
/// shown only when `RUST_LOG` enables debug.
struct ClientNoise;

static CLIENT_NOISE: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "gateway_downstream_errors_total",
        "Client-side failures Pingora reports (tls_handshake, tls_handshake_timeout, h2_handshake, request_read), logged only at debug",
        &["kind"],
    )
});

/// The kind of client noise a Pingora ERROR line is, if it is one.
pub fn client_noise_kind(target: &str, message: &str) -> Option<&'static str> {
    if !target.starts_with("pingora") {
        return None;
    }
    if message.starts_with("Downstream handshake error") {
        Some("tls_handshake")
    } else if message.starts_with("Downstream handshake timeout") {
        Some("tls_handshake_timeout")
    } else if message.starts_with("H2 handshake error") {
        Some("h2_handshake")
    } else if message.starts_with("Fail to proxy:") && message.contains("downstream session type") {
        // Only logged when reading a request head failed on a broken connection.
        Some("request_read")
    } else {
        None
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for ClientNoise {
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        // Pingora logs through the `log` crate: such events have target "log" and carry
        // the real target in a `log.target` field.
        let bridged = meta.target() == "log";
        if *meta.level() != tracing::Level::ERROR
            || !(bridged || meta.target().starts_with("pingora"))
        {
            return true;
        }
        #[derive(Default)]
        struct Fields {
            message: String,
            target: Option<String>,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                match f.name() {
                    "message" => self.message = format!("{v:?}"),
                    "log.target" => self.target = Some(format!("{v:?}")),
                    _ => {}
                }
            }
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                match f.name() {
                    "message" => v.clone_into(&mut self.message),
                    "log.target" => self.target = Some(v.to_owned()),
                    _ => {}
                }
            }
        }
        let mut m = Fields::default();
        event.record(&mut m);
        let target = m.target.as_deref().unwrap_or(meta.target());
        match client_noise_kind(target, &m.message) {
            Some(kind) => {
                CLIENT_NOISE.with_label_values(&[kind]).inc();
                SHOW_NOISE.load(std::sync::atomic::Ordering::Relaxed)
            }
            None => true,
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn log_levels_are_checked_as_they_will_be_applied() {
        let mut p = crate::error::Problems::default();
        assert_eq!(
            validate_log_level("server.log_level", Some(" warn,gateway=debug "), &mut p),
            Some("warn,gateway=debug".to_owned())
        );
        assert_eq!(validate_log_level("server.log_level", None, &mut p), None);
        assert!(p.is_empty());
        // (A bare word is a target name in this syntax: `loud` enables target "loud".)
        for bad in ["warn,gateway=loud", "gateway=verbose", ""] {
            let mut p = crate::error::Problems::default();
            assert_eq!(
                validate_log_level("server.log_level", Some(bad), &mut p),
                None
            );
            assert!(!p.is_empty(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pingora_client_noise_is_recognised_and_nothing_else() {
        let k = |t, m| client_noise_kind(t, m);
        assert_eq!(
            k(
                "pingora_core::services::listening",
                "Downstream handshake error from 1.2.3.4:5: x"
            ),
            Some("tls_handshake")
        );
        assert_eq!(
            k(
                "pingora_proxy",
                "Fail to proxy: Downstream ReadError, downstream session type: HTTP/1.1"
            ),
            Some("request_read")
        );
        // The same words from elsewhere, or a real proxy failure, stay errors.
        assert_eq!(k("gateway", "Downstream handshake error"), None);
        assert_eq!(
            k("pingora_proxy", "Fail to proxy: Upstream ConnectRefused"),
            None
        );
    }
}
