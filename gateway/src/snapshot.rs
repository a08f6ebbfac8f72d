//! The running configuration as one immutable snapshot: validated config, route table,
//! live upstreams. A request loads it once and uses it to its end; a reload builds a
//! whole new one off the hot path and swaps it in.

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_config::gateway::{GatewayConfig, Listener, Loaded};

use crate::balance::UpstreamRt;
use crate::metrics::RouteMetrics;
use crate::routing::Router;

#[derive(Debug)]
pub struct Snapshot {
    pub config: GatewayConfig,
    pub router: Router,
    pub upstreams: HashMap<String, Arc<UpstreamRt>>,
    /// Metric handles per route (same order as `config.routes`), and for unrouted requests.
    pub route_metrics: Vec<RouteMetrics>,
    pub unrouted_metrics: RouteMetrics,
    /// Fingerprint of the config text.
    pub version: String,
    pub loaded_at_unix: i64,
}

impl Snapshot {
    /// The listener a connection arrived on, from its local address.
    pub fn listener_index(&self, local: std::net::SocketAddr) -> Option<usize> {
        self.config
            .listeners
            .iter()
            .position(|l: &Listener| listens_on(l.address, local))
    }

    /// Build a snapshot, carrying over live endpoint state (health, ejections, in-flight,
    /// discovered endpoints) from `previous` for upstreams and endpoints that remain.
    pub fn build(loaded: Loaded, previous: Option<&Snapshot>) -> Snapshot {
        let config = loaded.config;
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, cfg)| {
                let prev = previous.and_then(|p| p.upstreams.get(name));
                let rt = UpstreamRt::new(
                    cfg.clone(),
                    config.zone.clone(),
                    config.region.clone(),
                    prev.map(|p| p.as_ref()),
                );
                (name.clone(), Arc::new(rt))
            })
            .collect();
        Snapshot {
            router: Router::new(&config.routes),
            route_metrics: config
                .routes
                .iter()
                .map(|r| RouteMetrics::new(&r.name))
                .collect(),
            unrouted_metrics: RouteMetrics::new("none"),
            upstreams,
            config,
            version: loaded.version,
            loaded_at_unix: tollgate_config::metrics::unix_now(),
        }
    }
}

/// Whether a listener bound to `bound` accepted a connection whose local address is
/// `local` (a wildcard address accepts on every interface).
pub fn listens_on(bound: std::net::SocketAddr, local: std::net::SocketAddr) -> bool {
    bound.port() == local.port() && (bound.ip().is_unspecified() || bound.ip() == local.ip())
}
