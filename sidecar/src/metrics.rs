//! The sidecar's metrics.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use tollgate_config::metrics as m;

pub struct Metrics {
    pub outbound_requests: IntCounterVec,
    pub outbound_duration: HistogramVec,
    pub inbound_requests: IntCounterVec,
    pub inbound_refused: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub in_flight: IntGaugeVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
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
});

pub use tollgate_config::metrics::status_class;

/// Exposes the resilience layers' own counters (kept inside the layers, surviving
/// reloads) at scrape time, labelled by dependency.
pub struct DependencyCollector {
    state: std::sync::Weak<crate::state::State>,
    descs: Vec<prometheus::core::Desc>,
}

fn family_vecs() -> (
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    IntGaugeVec,
    IntCounterVec,
) {
    let opts = |n: &str, h: &str| prometheus::Opts::new(n, h);
    let l = &["dependency"];
    #[allow(clippy::expect_used)] // constant, valid names
    (
        IntCounterVec::new(opts("sidecar_retries_total", "Retries sent"), l).expect("valid"),
        IntCounterVec::new(
            opts(
                "sidecar_retry_budget_exhausted_total",
                "Retries not sent because the budget was spent",
            ),
            l,
        )
        .expect("valid"),
        IntCounterVec::new(
            opts(
                "sidecar_bulkhead_rejected_total",
                "Calls refused at max_concurrent",
            ),
            l,
        )
        .expect("valid"),
        IntCounterVec::new(
            opts(
                "sidecar_circuit_breaker_rejected_total",
                "Calls refused by an open breaker",
            ),
            l,
        )
        .expect("valid"),
        IntGaugeVec::new(
            opts(
                "sidecar_retry_budget_remaining",
                "Retries the budget allows right now",
            ),
            l,
        )
        .expect("valid"),
        IntCounterVec::new(
            opts(
                "sidecar_circuit_breaker_trips_total",
                "Times the breaker opened",
            ),
            l,
        )
        .expect("valid"),
    )
}

impl DependencyCollector {
    pub fn register(state: &std::sync::Arc<crate::state::State>) {
        let (a, b, c, d, e, f) = family_vecs();
        use prometheus::core::Collector;
        let descs = [a.desc(), b.desc(), c.desc(), d.desc(), e.desc(), f.desc()]
            .into_iter()
            .flatten()
            .cloned()
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
        let (retries, exhausted, bulkhead, breaker_rej, remaining, trips) = family_vecs();
        for (name, d) in state.snapshot.load().dependencies.iter() {
            let l = &[name.as_str()];
            if let Some(r) = &d.retry {
                let s = r.stats().snapshot();
                retries.with_label_values(l).inc_by(s.retries);
                exhausted.with_label_values(l).inc_by(s.budget_exhausted);
                remaining
                    .with_label_values(l)
                    .set(r.budget().snapshot().remaining as i64);
            }
            bulkhead
                .with_label_values(l)
                .inc_by(d.bulkhead.stats().snapshot().rejected);
            if let Some(b) = &d.breaker {
                let s = b.snapshot();
                breaker_rej.with_label_values(l).inc_by(s.rejected);
                trips.with_label_values(l).inc_by(u64::from(s.trips));
            }
        }
        [
            retries.collect(),
            exhausted.collect(),
            bulkhead.collect(),
            breaker_rej.collect(),
            remaining.collect(),
            trips.collect(),
        ]
        .concat()
    }
}
