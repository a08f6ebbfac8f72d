//! The gateway's metrics. Labels stay low-cardinality: route and upstream names come
//! from config, endpoints are bounded by config/discovery, status is grouped by class.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use tollgate_config::metrics as m;

pub struct Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub rejected: IntCounterVec,
    pub upstream_attempts: IntCounterVec,
    pub retries: IntCounterVec,
    pub panic_picks: IntCounterVec,
    pub ejections: IntCounterVec,
    pub endpoint_healthy: IntGaugeVec,
    pub health_transitions: IntCounterVec,
    pub in_flight: IntGauge,
    pub restart_required: IntGauge,
    pub discovery_errors: IntCounterVec,
    pub no_route: IntCounter,
    pub rate_limit_decisions: IntCounterVec,
    pub redis_duration: Histogram,
    pub redis_errors: IntCounterVec,
    pub redis_available: IntGauge,
    pub connections_closed: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    requests: m::counter_vec(
        "gateway_requests_total",
        "Requests by route and response status class",
        &["route", "status"],
    ),
    duration: m::histogram_vec(
        "gateway_request_duration_seconds",
        "Time from request start to the end of the response, by route",
        &["route"],
        m::latency_buckets(),
    ),
    rejected: m::counter_vec(
        "gateway_rejected_requests_total",
        "Requests the gateway answered itself (no route, limits, upstream failures), by reason",
        &["reason"],
    ),
    upstream_attempts: m::counter_vec(
        "gateway_upstream_attempts_total",
        "Attempts sent to upstream endpoints, by upstream and outcome",
        &["upstream", "outcome"],
    ),
    retries: m::counter_vec(
        "gateway_retries_total",
        "Retries by route and reason",
        &["route", "reason"],
    ),
    panic_picks: m::counter_vec(
        "gateway_upstream_panic_total",
        "Picks made in panic mode (no endpoint available: health ignored)",
        &["upstream"],
    ),
    ejections: m::counter_vec(
        "gateway_outlier_ejections_total",
        "Endpoints ejected by passive outlier detection",
        &["upstream"],
    ),
    endpoint_healthy: m::gauge_vec(
        "gateway_endpoint_healthy",
        "1 if the endpoint passes active health checks",
        &["upstream", "endpoint", "zone"],
    ),
    health_transitions: m::counter_vec(
        "gateway_health_transitions_total",
        "Active health state changes",
        &["upstream", "to"],
    ),
    in_flight: m::gauge("gateway_in_flight_requests", "Requests being served"),
    restart_required: m::gauge(
        "gateway_restart_required",
        "1 when the config on disk changes something only a restart applies (listeners, threads)",
    ),
    discovery_errors: m::counter_vec(
        "gateway_discovery_errors_total",
        "DNS discovery failures by upstream",
        &["upstream"],
    ),
    no_route: m::counter("gateway_no_route_total", "Requests that matched no route"),
    rate_limit_decisions: m::counter_vec(
        "gateway_rate_limit_decisions_total",
        "Rate-limit decisions by policy: allowed, limited (answered 429), skipped (a key part was missing); local_fallback and limited_locally are parts of allowed/limited decided without Redis",
        &["policy", "result"],
    ),
    redis_duration: m::histogram_vec(
        "gateway_redis_call_duration_seconds",
        "Time of each rate-limit call to Redis, errors and timeouts included",
        &[],
        m::latency_buckets(),
    )
    .with_label_values::<&str>(&[]),
    redis_errors: m::counter_vec(
        "gateway_redis_errors_total",
        "Failed rate-limit calls to Redis by kind (timeout, error)",
        &["kind"],
    ),
    connections_closed: m::counter_vec(
        "gateway_connections_closed_total",
        "Connections the gateway closed to protect itself, by reason (request_head_timeout, per_client_limit)",
        &["reason"],
    ),
    redis_available: m::gauge(
        "gateway_redis_available",
        "0 while the Redis breaker is open (rate limits decided locally), else 1",
    ),
}
});

pub use tollgate_config::metrics::status_class;

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Index of `status`'s class in [`CLASSES`], without comparing strings per request.
fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_indices_match_the_class_labels() {
        for status in [0u16, 99, 100, 204, 302, 404, 503, 599, 600, 999] {
            let i = super::class_index(status);
            assert_eq!(super::CLASSES[i], super::status_class(status), "{status}");
        }
    }
}

/// A route's metric handles, resolved once per snapshot instead of hashing label
/// values on every request.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_class: Vec<IntCounter>,
    pub duration: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        Self {
            by_class: CLASSES
                .iter()
                .map(|c| METRICS.requests.with_label_values(&[route, c]))
                .collect(),
            duration: METRICS.duration.with_label_values(&[route]),
        }
    }

    pub fn count(&self, status: u16) {
        if let Some(c) = self.by_class.get(class_index(status)) {
            c.inc();
        }
    }
}

/// An upstream's attempt counters.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub success: IntCounter,
    pub failure: IntCounter,
}

impl UpstreamMetrics {
    pub fn new(upstream: &str) -> Self {
        Self {
            success: METRICS
                .upstream_attempts
                .with_label_values(&[upstream, "success"]),
            failure: METRICS
                .upstream_attempts
                .with_label_values(&[upstream, "failure"]),
        }
    }
}
