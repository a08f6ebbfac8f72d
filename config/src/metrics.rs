//! Metrics both binaries share (config reloads), helpers to declare metrics, and the
//! Prometheus text encoder. Every metric lives in the process-wide default registry.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder,
};

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Only a duplicate name fails here; the metric still counts, it is just not exported.
    if let Err(e) = prometheus::register(Box::new(c.clone())) {
        tracing::warn!("metric registration failed: {e}");
    }
    c
}

// The constructors below only fail on invalid metric or label names. Every name is a
// constant in this workspace and every metric is built by the admin tests, so a bad
// name is a bug caught before release, never something config or traffic can cause.

#[allow(clippy::expect_used)]
pub fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("valid metric name"))
}

#[allow(clippy::expect_used)]
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"))
}

#[allow(clippy::expect_used)]
pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid metric name"))
}

#[allow(clippy::expect_used)]
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"))
}

#[allow(clippy::expect_used)]
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric name"),
    )
}

/// Latency buckets in seconds, from 0.5 ms to 30 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

/// `config_reloads_total{result="success|failure|unchanged", trigger="file|signal|api"}`
pub static CONFIG_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "config_reloads_total",
        "Config reload attempts by result and trigger",
        &["result", "trigger"],
    )
});

/// Unix time of the last successful (re)load.
pub static CONFIG_LAST_SUCCESS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful config load",
    )
});

/// Configs applied since the process started (1 after startup, +1 per applied reload).
pub static CONFIG_GENERATION: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "config_generation",
        "Configs applied since start: 1 after startup, +1 per applied reload",
    )
});

/// A config was applied (at startup or by a reload).
pub fn config_applied() {
    CONFIG_LAST_SUCCESS.set(unix_now());
    CONFIG_GENERATION.inc();
    // The failure series exist from the start, at 0, so an alert on their increase
    // sees the first refused reload too.
    for trigger in ["file", "signal", "api"] {
        CONFIG_RELOADS.with_label_values(&["failure", trigger]);
    }
}

/// `NAME{version} 1` (`gateway_build_info`, `sidecar_build_info`): the Prometheus
/// convention for what is running.
pub fn publish_build_info(name: &str) {
    gauge_vec(
        name,
        "Always 1; the labels say which build is running",
        &["version"],
    )
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
}

/// Encode the default registry in the Prometheus text format.
pub fn encode_text() -> String {
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if TextEncoder::new().encode(&families, &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2xx`, `4xx`... as a static label (`error` when no status was sent).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    }
}

/// A reload was refused: count it, log it with the version that keeps serving, and
/// remember the reason for `/config`.
pub fn reload_refused(
    trigger: &str,
    serving: &str,
    err: &dyn std::fmt::Display,
    last_error: &std::sync::Mutex<Option<String>>,
) {
    CONFIG_RELOADS
        .with_label_values(&["failure", trigger])
        .inc();
    tracing::error!(
        trigger,
        "config reload refused, keeping version {serving}: {err}"
    );
    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
}
