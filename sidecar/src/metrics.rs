//! The sidecar's metrics.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};
use tollgate_config::metrics as m;

pub struct Metrics {
    pub outbound_requests: IntCounterVec,
    pub outbound_duration: HistogramVec,
    pub inbound_requests: IntCounterVec,
    pub inbound_refused: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub upgrades: IntCounterVec,
    pub upgrades_active: IntGaugeVec,
    pub upgrades_closed: IntCounterVec,
    pub inbound_upgrades: IntCounterVec,
    pub inbound_upgrades_active: IntGauge,
    pub dependency_requests: IntCounterVec,
    pub dependency_sent_bytes: IntCounterVec,
    pub dependency_received_bytes: IntCounterVec,
    pub intercepted: IntCounterVec,
    pub discovery_errors: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    outbound_requests: m::counter_vec(
        "sidecar_outbound_requests_total",
        "Calls to dependencies by outcome (status class, or the sidecar's own error kind)",
        &["dependency", "outcome"],
    ),
    outbound_duration: m::histogram_vec(
        "sidecar_outbound_request_duration_seconds",
        "Time to the response head of calls to dependencies, retries included",
        &["dependency"],
        m::latency_buckets(),
    ),
    inbound_requests: m::counter_vec(
        "sidecar_inbound_requests_total",
        "Calls into the local app by verified caller identity and status class",
        &["caller", "status"],
    ),
    inbound_refused: m::counter_vec(
        "sidecar_inbound_refused_total",
        "Inbound connections or calls refused, by reason",
        &["reason"],
    ),
    breaker_state: m::gauge_vec(
        "sidecar_circuit_breaker_state",
        "Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open",
        &["dependency"],
    ),
    in_flight: m::gauge_vec(
        "sidecar_outbound_in_flight",
        "Calls in flight per dependency",
        &["dependency"],
    ),
    upgrades: m::counter_vec(
        "sidecar_upgrades_total",
        "Upgraded streams (WebSocket) opened to a dependency",
        &["dependency"],
    ),
    upgrades_active: m::gauge_vec(
        "sidecar_upgrades_active",
        "Upgraded streams open to a dependency now",
        &["dependency"],
    ),
    upgrades_closed: m::counter_vec(
        "sidecar_upgrades_closed_total",
        "Upgraded streams to a dependency ended, by reason (closed, idle_timeout, error)",
        &["dependency", "reason"],
    ),
    inbound_upgrades: m::counter_vec(
        "sidecar_inbound_upgrades_total",
        "Upgraded streams (WebSocket) opened into the local app, by caller",
        &["caller"],
    ),
    inbound_upgrades_active: m::gauge(
        "sidecar_inbound_upgrades_active",
        "Upgraded streams into the local app open now",
    ),
    dependency_requests: m::counter_vec(
        "sidecar_dependency_requests_total",
        "Requests sent to a dependency's endpoints (every try and hedge), by locality: same_zone, cross_zone, cross_region, unknown",
        &["dependency", "locality"],
    ),
    dependency_sent_bytes: m::counter_vec(
        "sidecar_dependency_sent_bytes_total",
        "Request body bytes sent to a dependency's endpoints (and upgraded-stream bytes), by locality",
        &["dependency", "locality"],
    ),
    dependency_received_bytes: m::counter_vec(
        "sidecar_dependency_received_bytes_total",
        "Response body bytes received from a dependency's endpoints (and upgraded-stream bytes), by locality",
        &["dependency", "locality"],
    ),
    intercepted: m::counter_vec(
        "sidecar_intercepted_connections_total",
        "Connections redirected to the interception listener, by outcome: dependency, passthrough, refused, not_redirected, error",
        &["outcome"],
    ),
    discovery_errors: m::counter_vec(
        "sidecar_discovery_errors_total",
        "Failed EndpointSlice discovery steps per dependency (API unreachable, watch errors, slices without the port); the last endpoints are kept",
        &["dependency"],
    ),
}
});

pub use tollgate_config::metrics::status_class;

/// Exposes the resilience layers' own counters (kept inside the layers, surviving
/// reloads) at scrape time, labelled by dependency.
pub struct DependencyCollector {
    state: std::sync::Weak<crate::state::State>,
    descs: Vec<prometheus::core::Desc>,
}

type Extract = fn(&crate::outbound::DependencyRt) -> Option<u64>;

/// (name, help, is_counter, extractor)
const SERIES: &[(&str, &str, bool, Extract)] = &[
    // Nanoseconds, exposed in seconds: see `Family::Seconds`.
    (
        "sidecar_hedge_after_seconds",
        "The delay after which a try is hedged now (fixed, or the percentile of recent latency)",
        false,
        |d| {
            d.hedge
                .as_ref()
                .map(|h| u64::try_from(h.after().as_nanos()).unwrap_or(u64::MAX))
        },
    ),
    ("sidecar_retries_total", "Retries sent", true, |d| {
        d.retry.as_ref().map(|r| r.stats().snapshot().retries)
    }),
    (
        "sidecar_retry_budget_exhausted_total",
        "Retries not sent because the budget was spent",
        true,
        |d| {
            d.retry
                .as_ref()
                .map(|r| r.stats().snapshot().budget_exhausted)
        },
    ),
    (
        "sidecar_retry_budget_remaining",
        "Retries the budget allows right now",
        false,
        |d| d.retry.as_ref().map(|r| r.budget().snapshot().remaining),
    ),
    (
        "sidecar_bulkhead_rejected_total",
        "Calls refused at max_concurrent",
        true,
        |d| Some(d.bulkhead.stats().snapshot().rejected),
    ),
    (
        "sidecar_circuit_breaker_rejected_total",
        "Calls refused by an open breaker",
        true,
        |d| d.breaker.as_ref().map(|b| b.snapshot().rejected),
    ),
    (
        "sidecar_circuit_breaker_trips_total",
        "Times the breaker opened",
        true,
        |d| d.breaker.as_ref().map(|b| u64::from(b.snapshot().trips)),
    ),
    (
        "sidecar_rate_limited_total",
        "Calls refused by the outbound rate limit",
        true,
        |d| d.rate_limit.as_ref().map(|r| r.snapshot().limited),
    ),
    (
        "sidecar_hedges_total",
        "Hedged second tries sent",
        true,
        |d| d.hedge.as_ref().map(|h| h.stats().snapshot().hedged),
    ),
    (
        "sidecar_hedges_won_total",
        "Hedged tries that answered first",
        true,
        |d| d.hedge.as_ref().map(|h| h.stats().snapshot().won),
    ),
];

enum Family {
    Counter(IntCounterVec),
    Gauge(IntGaugeVec),
    /// A gauge in seconds whose extractor gives nanoseconds (names ending `_seconds`).
    Seconds(prometheus::GaugeVec),
}

impl Family {
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        match self {
            Self::Counter(c) => c.collect(),
            Self::Gauge(g) => g.collect(),
            Self::Seconds(g) => g.collect(),
        }
    }
}

fn families() -> Vec<Family> {
    SERIES
        .iter()
        .filter_map(|(name, help, counter, _)| {
            let opts = prometheus::Opts::new(*name, *help);
            if *counter {
                IntCounterVec::new(opts, &["dependency"])
                    .ok()
                    .map(Family::Counter)
            } else if name.ends_with("_seconds") {
                prometheus::GaugeVec::new(opts, &["dependency"])
                    .ok()
                    .map(Family::Seconds)
            } else {
                IntGaugeVec::new(opts, &["dependency"])
                    .ok()
                    .map(Family::Gauge)
            }
        })
        .collect()
}

impl DependencyCollector {
    pub fn register(state: &std::sync::Arc<crate::state::State>) {
        use prometheus::core::Collector;
        let descs = families()
            .iter()
            .flat_map(|f| match f {
                Family::Counter(c) => c.desc().into_iter().cloned().collect::<Vec<_>>(),
                Family::Gauge(g) => g.desc().into_iter().cloned().collect(),
                Family::Seconds(g) => g.desc().into_iter().cloned().collect(),
            })
            .collect();
        let me = Self {
            state: std::sync::Arc::downgrade(state),
            descs,
        };
        if let Err(e) = prometheus::register(Box::new(me)) {
            tracing::warn!("dependency metrics not registered: {e}");
        }
    }
}

impl prometheus::core::Collector for DependencyCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Some(state) = self.state.upgrade() else {
            return Vec::new();
        };
        let fams = families();
        let snap = state.snapshot.load();
        for (name, dep) in snap.dependencies.iter() {
            for (fam, (_, _, _, extract)) in fams.iter().zip(SERIES) {
                let Some(v) = extract(dep) else { continue };
                match fam {
                    Family::Counter(c) => c.with_label_values(&[name.as_str()]).inc_by(v),
                    Family::Gauge(g) => g
                        .with_label_values(&[name.as_str()])
                        .set(i64::try_from(v).unwrap_or(i64::MAX)),
                    Family::Seconds(g) => g.with_label_values(&[name.as_str()]).set(v as f64 / 1e9),
                }
            }
        }
        fams.iter().flat_map(Family::collect).collect()
    }
}
