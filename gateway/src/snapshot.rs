//! The running configuration as one immutable snapshot: validated config, route table,
//! live upstreams, certificates. A request loads it once and uses it to its end; a
//! reload builds a whole new one off the hot path and swaps it in.
//!
//! [`Snapshot::build`] is the one place files named by the config are read
//! (certificates, CA bundles): it fails as a whole, so a reload is one transaction —
//! every listener's certificates, every upstream's TLS and the routes change together
//! with one `ArcSwap::store`, or nothing changes.

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_config::gateway::{GatewayConfig, Listener, Loaded};

use crate::balance::UpstreamRt;
use crate::metrics::RouteMetrics;
use crate::ratelimit::redis::RedisStore;
use crate::ratelimit::RateLimiter;
use crate::route::RouteRt;
use crate::routing::Router;
use crate::tls::{ListenerCerts, TlsError};

#[derive(Debug)]
pub struct Snapshot {
    pub config: GatewayConfig,
    pub router: Router,
    pub upstreams: HashMap<String, Arc<UpstreamRt>>,
    /// Certificates of the TLS listeners, by listener name.
    pub certs: HashMap<String, Arc<ListenerCerts>>,
    /// Rate limiters by policy name (their counters carried over across reloads).
    pub rate_limiters: HashMap<String, Arc<RateLimiter>>,
    /// The Redis that `store: redis` policies share.
    pub redis: Option<Arc<RedisStore>>,
    /// Authentication policies (routes hold theirs; OIDC callback and logout paths are
    /// answered before routing).
    pub auth: crate::auth::Policies,
    /// The routes as requests use them (same order as `config.routes`).
    pub routes: Vec<RouteRt>,
    /// Metric handles for requests that matched no route.
    pub unrouted_metrics: RouteMetrics,
    /// `gateway_in_flight_requests` per listener (same order as `config.listeners`).
    pub listener_in_flight: Vec<prometheus::IntGauge>,
    /// Fingerprint of the config text.
    pub version: String,
    pub loaded_at_unix: i64,
}

/// Why a validated config could not be turned into a running snapshot.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("listener {listener}: {source}")]
    Listener { listener: String, source: TlsError },
    #[error("upstream {upstream}: tls: {source}")]
    Upstream { upstream: String, source: TlsError },
    #[error("route {route}: {reason}")]
    Route { route: String, reason: String },
    #[error("{reason}")]
    Redis { reason: String },
    #[error("{reason}")]
    Auth { reason: String },
}

impl BuildError {
    /// The listener whose certificates were refused, if that is what failed.
    pub fn listener(&self) -> Option<&str> {
        match self {
            BuildError::Listener { listener, .. } => Some(listener),
            BuildError::Upstream { .. }
            | BuildError::Route { .. }
            | BuildError::Redis { .. }
            | BuildError::Auth { .. } => None,
        }
    }
}

impl Snapshot {
    /// The listener a connection arrived on, from its local address.
    pub fn listener_index(&self, local: std::net::SocketAddr) -> Option<usize> {
        self.config
            .listeners
            .iter()
            .position(|l: &Listener| listens_on(l.address, local))
    }

    /// Build a snapshot: load every certificate and CA file, carry over live endpoint
    /// state (health, ejections, in-flight, discovered endpoints) from `previous` for
    /// upstreams and endpoints that remain. Any unusable file fails the whole build.
    pub fn build(loaded: Loaded, previous: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
        let config = loaded.config;
        let mut certs = HashMap::new();
        for l in &config.listeners {
            let Some(t) = &l.tls else { continue };
            let lc = ListenerCerts::build(&l.name, t).map_err(|source| BuildError::Listener {
                listener: l.name.clone(),
                source,
            })?;
            // The client CA is read by the TLS acceptor at startup (a change needs a
            // restart); check it here so `validate` and reloads refuse a broken one.
            if let Some(auth) = &t.client_auth {
                crate::tls::client_verifier(&l.name, auth).map_err(|source| {
                    BuildError::Listener {
                        listener: l.name.clone(),
                        source,
                    }
                })?;
            }
            certs.insert(l.name.clone(), Arc::new(lc));
        }
        // A listener removed from the file keeps running until a restart: it keeps
        // serving the certificates it has.
        if let Some(p) = previous {
            for (name, lc) in &p.certs {
                certs.entry(name.clone()).or_insert_with(|| lc.clone());
            }
        }
        let mut upstreams = HashMap::new();
        for (name, cfg) in &config.upstreams {
            let prev = previous.and_then(|p| p.upstreams.get(name));
            let rt = UpstreamRt::new(
                cfg.clone(),
                config.zone.clone(),
                config.region.clone(),
                prev.map(|p| p.as_ref()),
            )
            .map_err(|source| BuildError::Upstream {
                upstream: name.clone(),
                source,
            })?;
            upstreams.insert(name.clone(), Arc::new(rt));
        }
        // One connection for every policy; kept across reloads while the settings stay.
        let redis = match (&config.redis, previous.and_then(|p| p.redis.as_ref())) {
            (Some(c), Some(prev)) if prev.config == *c => Some(prev.clone()),
            (Some(c), _) => {
                Some(RedisStore::new(c).map_err(|reason| BuildError::Redis { reason })?)
            }
            (None, _) => None,
        };
        let rate_limiters: HashMap<String, Arc<RateLimiter>> = config
            .rate_limits
            .iter()
            .map(|(name, policy)| {
                let prev = previous.and_then(|p| p.rate_limiters.get(name));
                let l = RateLimiter::build(policy, prev.map(|p| p.as_ref()), redis.as_ref());
                (name.clone(), Arc::new(l))
            })
            .collect();
        let auth = crate::auth::Policies::build(&config.auth)
            .map_err(|reason| BuildError::Auth { reason })?;
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let prev = previous.and_then(|p| p.routes.iter().find(|x| x.config.name == r.name));
                RouteRt::build(r, &upstreams, &rate_limiters, &auth, redis.as_ref(), prev)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot {
            router: Router::new(&config.routes),
            routes,
            unrouted_metrics: RouteMetrics::new("none"),
            listener_in_flight: config
                .listeners
                .iter()
                .map(|l| {
                    crate::metrics::METRICS
                        .in_flight
                        .with_label_values(&[&l.name])
                })
                .collect(),
            upstreams,
            certs,
            rate_limiters,
            redis,
            auth,
            config,
            version: loaded.version,
            loaded_at_unix: tollgate_config::metrics::unix_now(),
        })
    }

    /// How many server certificates the TLS listeners serve.
    pub fn certificate_count(&self) -> usize {
        self.certs
            .values()
            .map(|c| c.table.load().certs.len())
            .sum()
    }
}

/// Whether a listener bound to `bound` accepted a connection whose local address is
/// `local` (a wildcard address accepts on every interface).
pub fn listens_on(bound: std::net::SocketAddr, local: std::net::SocketAddr) -> bool {
    bound.port() == local.port() && (bound.ip().is_unspecified() || bound.ip() == local.ip())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    fn load(yaml: &str) -> Loaded {
        tollgate_config::gateway::from_str(Path::new("t.yaml"), yaml, &Default::default()).unwrap()
    }

    fn with_ca(ca: &Path) -> String {
        format!(
            "listeners: [{{ name: h, address: 127.0.0.1:1 }}]\nroutes: [{{ name: r, upstream: u }}]\nupstreams:\n  u:\n    endpoints: [{{ address: 127.0.0.1:2 }}]\n    tls: {{ sni: a.internal, ca: {} }}\n",
            ca.display()
        )
    }

    /// Regression (issue 14): the build could not fail, and an upstream whose CA file
    /// became unreadable after the config check was built without TLS (cleartext).
    #[test]
    fn an_upstream_whose_tls_cannot_load_fails_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\ntrunc").unwrap();
        let err = Snapshot::build(load(&with_ca(&ca)), None).unwrap_err();
        assert!(matches!(err, BuildError::Upstream { .. }), "{err}");
        assert!(err.to_string().contains("ca.crt"), "{err}");

        backends_demo::pki::TestCa::new("ca")
            .unwrap()
            .write_bundle(&ca)
            .unwrap();
        let snap = Snapshot::build(load(&with_ca(&ca)), None).unwrap();
        assert!(snap.upstreams["u"].tls.is_some());
        // A refresh of the endpoint set (DNS discovery) keeps the loaded TLS.
        let up = &snap.upstreams["u"];
        up.update_discovered(vec![tollgate_config::gateway::Endpoint {
            address: "127.0.0.1:3".parse().unwrap(),
            zone: None,
            region: None,
            weight: 1,
            draining: false,
        }]);
        assert!(up.tls.is_some());
    }
}
