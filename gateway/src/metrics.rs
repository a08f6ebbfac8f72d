//! The gateway's metrics. Labels stay low-cardinality: route and upstream names come
//! from config, endpoints are bounded by config/discovery, status is grouped by class.

use std::sync::{Arc, LazyLock, OnceLock};

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
    pub in_flight: IntGaugeVec,
    pub upstream_response: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_sent_bytes: IntCounterVec,
    pub upstream_received_bytes: IntCounterVec,
    pub upstream_panic: IntGaugeVec,
    pub connections_open: IntGaugeVec,
    pub connections_accepted: IntCounterVec,
    pub restart_required: IntGauge,
    pub discovery_errors: IntCounterVec,
    pub no_route: IntCounter,
    /// `gateway_desync_requests_total` for compliant requests, by mode (fetched once).
    pub desync_compliant: [IntCounter; 3],
    pub desync: IntCounterVec,
    pub upgraded: IntGaugeVec,
    pub upgrades: IntCounterVec,
    pub waf_requests: IntCounterVec,
    pub auth_decisions: IntCounterVec,
    pub jwks_fetches: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
    pub waf_rule_matches: IntCounterVec,
    pub rate_limit_decisions: IntCounterVec,
    pub redis_duration: Histogram,
    pub redis_errors: IntCounterVec,
    pub redis_available: IntGauge,
    pub connections_closed: IntCounterVec,
    pub idempotency: IntCounterVec,
    pub faults_injected: IntCounterVec,
    pub adaptive_limit: IntGaugeVec,
    pub concurrency_queued: IntGaugeVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let desync = m::counter_vec(
        "gateway_desync_requests_total",
        "HTTP/1 requests by the listener's desync mitigation mode, their class (compliant, acceptable, ambiguous, severe), the reason, and what was done (forwarded, forwarded_closed, refused)",
        &["mode", "class", "reason", "action"],
    );
    Metrics {
    requests: m::counter_vec(
        "gateway_requests_total",
        "Requests by route, method (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or other) and response status class",
        &["route", "method", "status"],
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
    in_flight: m::gauge_vec(
        "gateway_in_flight_requests",
        "Requests being served, by listener",
        &["listener"],
    ),
    upstream_response: m::histogram_vec(
        "gateway_upstream_response_duration_seconds",
        "Time from sending an attempt to an endpoint to its response head, by upstream (failed attempts included)",
        &["upstream"],
        m::latency_buckets(),
    ),
    upstream_requests: m::counter_vec(
        "gateway_upstream_requests_total",
        "Requests served by an upstream's endpoints, by the endpoint's locality: same_zone, cross_zone, cross_region, unknown (zone not configured)",
        &["upstream", "locality"],
    ),
    upstream_sent_bytes: m::counter_vec(
        "gateway_upstream_sent_bytes_total",
        "Bytes of HTTP requests sent to an upstream's endpoints (heads and bodies, every attempt), by the endpoint's locality",
        &["upstream", "locality"],
    ),
    upstream_received_bytes: m::counter_vec(
        "gateway_upstream_received_bytes_total",
        "Bytes of HTTP responses received from an upstream's endpoints (heads and bodies), by the endpoint's locality",
        &["upstream", "locality"],
    ),
    upstream_panic: m::gauge_vec(
        "gateway_upstream_panic",
        "1 while the upstream's last pick was made in panic mode (no endpoint available)",
        &["upstream"],
    ),
    connections_open: m::gauge_vec(
        "gateway_connections_open",
        "Client connections open, by listener",
        &["listener"],
    ),
    connections_accepted: m::counter_vec(
        "gateway_connections_accepted_total",
        "Client connections accepted, by listener",
        &["listener"],
    ),
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
    desync_compliant: {
        let c = |mode: &str| desync.with_label_values(&[mode, "compliant", "none", "forwarded"]);
        [c("monitor"), c("defensive"), c("strictest")]
    },
    desync,
    auth_decisions: m::counter_vec(
        "gateway_auth_decisions_total",
        "Authentication decisions, by policy and decision (ok, cached, missing, expired, bad_signature, unknown_kid, wrong_issuer, insufficient_scope, denied, ...)",
        &["policy", "decision"],
    ),
    jwks_fetches: m::counter_vec(
        "gateway_auth_jwks_fetches_total",
        "JWKS fetches, by source (URL or file) and result (ok, error)",
        &["source", "result"],
    ),
    jwks_keys: m::gauge_vec(
        "gateway_auth_jwks_keys",
        "Keys held from each JWKS source (the last good set while the IdP is down)",
        &["source"],
    ),
    waf_requests: m::counter_vec(
        "gateway_waf_requests_total",
        "Requests inspected by a WAF policy, by route, policy and action (pass, block, detect: would have blocked, allow: allow list or rule)",
        &["route", "policy", "action"],
    ),
    waf_rule_matches: m::counter_vec(
        "gateway_waf_rule_matches_total",
        "WAF rule matches, by policy, rule id and group (counted in detect mode too)",
        &["policy", "rule", "group"],
    ),
    upgraded: m::gauge_vec(
        "gateway_upgraded_connections",
        "Upgraded connections (WebSockets) open now, by route",
        &["route"],
    ),
    upgrades: m::counter_vec(
        "gateway_upgrades_total",
        "Connections upgraded (101 Switching Protocols from the upstream), by route",
        &["route"],
    ),
    rate_limit_decisions: m::counter_vec(
        "gateway_rate_limit_decisions_total",
        "Rate-limit decisions by policy: allowed, limited (answered 429), skipped (a key part was missing); local_fallback and limited_locally are parts of allowed/limited decided without Redis",
        &["policy", "result"],
    ),
    redis_duration: m::histogram_vec(
        "gateway_redis_call_duration_seconds",
        "Time of each call to Redis (rate limits, idempotency keys), errors and timeouts included",
        &[],
        m::latency_buckets(),
    )
    .with_label_values::<&str>(&[]),
    redis_errors: m::counter_vec(
        "gateway_redis_errors_total",
        "Failed calls to Redis (rate limits, idempotency keys) by kind (timeout, error)",
        &["kind"],
    ),
    connections_closed: m::counter_vec(
        "gateway_connections_closed_total",
        "Connections the gateway closed to protect itself, by reason (request_head_timeout, per_client_limit, max_connections: refused with every connection busy, shed_idle: an idle one closed to make room)",
        &["reason"],
    ),
    idempotency: m::counter_vec(
        "gateway_idempotency_requests_total",
        "Requests with an Idempotency-Key on routes that handle them, by route and result: forwarded (first of its key), replayed (answered from the stored response), conflict (409, the first still in flight), mismatch (422, same key, other request), missing_key (400), store_error (Redis could not answer); stored and not_stored count what happened to forwarded responses",
        &["route", "result"],
    ),
    faults_injected: m::counter_vec(
        "gateway_faults_injected_total",
        "Requests delayed or aborted by a route's fault injection, by route and kind (delay, abort)",
        &["route", "kind"],
    ),
    concurrency_queued: m::gauge_vec(
        "gateway_concurrency_queued",
        "Requests waiting for a concurrency slot, by scope (route or upstream) and its name",
        &["scope", "name"],
    ),
    adaptive_limit: m::gauge_vec(
        "gateway_upstream_adaptive_concurrency_limit",
        "The adaptive concurrency limit of each upstream that has one: requests in flight beyond it are answered 503",
        &["upstream"],
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

/// Adds one to a gauge (open connections, requests in flight) until dropped.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(g: &IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Methods with their own `method` label value; the rest count as `other`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::PATCH => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

/// A route's metric handles, resolved once per snapshot instead of hashing label
/// values on every request.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// `[method][class]`, created on first use: most routes see few methods.
    by_method: Arc<[[OnceLock<IntCounter>; 6]; 8]>,
    route: Arc<str>,
    pub duration: Histogram,
    /// `gateway_upgraded_connections` and `gateway_upgrades_total` of the route.
    pub upgraded: IntGauge,
    pub upgrades: IntCounter,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        let m = Self {
            by_method: Arc::new(Default::default()),
            route: route.into(),
            duration: METRICS.duration.with_label_values(&[route]),
            upgraded: METRICS.upgraded.with_label_values(&[route]),
            upgrades: METRICS.upgrades.with_label_values(&[route]),
        };
        // The common series exist from the start (at 0), so rates work right away.
        for class in [1, 4, 5] {
            m.counter(0, class);
        }
        m
    }

    fn counter(&self, method: usize, class: usize) -> &IntCounter {
        self.by_method[method][class].get_or_init(|| {
            METRICS
                .requests
                .with_label_values(&[&*self.route, METHODS[method], CLASSES[class]])
        })
    }

    pub fn count(&self, method: &http::Method, status: u16) {
        self.counter(method_index(method), class_index(status))
            .inc();
    }
}

/// An endpoint's place relative to this gateway (shared with the sidecar).
pub use tollgate_config::common::locality::Locality;

/// Traffic counters for one (upstream, locality).
#[derive(Debug, Clone)]
pub struct LocalityMetrics {
    pub requests: IntCounter,
    pub sent_bytes: IntCounter,
    pub received_bytes: IntCounter,
}

/// An upstream's metric handles.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub success: IntCounter,
    pub failure: IntCounter,
    pub response_time: Histogram,
    pub panic: IntGauge,
    pub by_locality: [LocalityMetrics; 4],
}

impl UpstreamMetrics {
    pub fn new(upstream: &str) -> Self {
        let attempts = |o: &str| METRICS.upstream_attempts.with_label_values(&[upstream, o]);
        let locality = |l: &str| LocalityMetrics {
            requests: METRICS.upstream_requests.with_label_values(&[upstream, l]),
            sent_bytes: METRICS
                .upstream_sent_bytes
                .with_label_values(&[upstream, l]),
            received_bytes: METRICS
                .upstream_received_bytes
                .with_label_values(&[upstream, l]),
        };
        Self {
            success: attempts("success"),
            failure: attempts("failure"),
            response_time: METRICS.upstream_response.with_label_values(&[upstream]),
            panic: METRICS.upstream_panic.with_label_values(&[upstream]),
            by_locality: Locality::LABELS.map(locality),
        }
    }
}
