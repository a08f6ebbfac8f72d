//! EndpointSlice discovery for upstreams with `discover: { kubernetes: ... }`: the
//! watch itself is shared with the sidecar (`tollgate_config::common::kubernetes`);
//! here, which upstreams want one, and how a pod becomes an endpoint.
//!
//! - `ready`: a normal endpoint.
//! - `serving` and `terminating` (a pod shutting down that still answers): kept, but
//!   drained: no new requests while other endpoints are available (as kube-proxy does).
//! - anything else: left out.
//!
//! While the API server cannot be reached, the last known endpoints stay. A supervisor
//! starts and stops watches as reloads add, change or remove upstreams; each watch
//! re-applies its current set every second, so a reload that rebuilt the upstream at
//! the wrong moment cannot lose an update.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tollgate_config::common::kubernetes::{self, Discovered};
use tollgate_config::gateway::{DiscoverSource, Endpoint, KubernetesDiscover};

use crate::metrics::METRICS;
use crate::state::State;

/// What a watch needs to know: the target and the defaults for endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    k: KubernetesDiscover,
    zone: Option<String>,
    region: Option<String>,
}

/// Start, restart and stop watches to match the current config, forever.
pub async fn supervise(state: Arc<State>) {
    let mut running: HashMap<String, (Target, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let snap = state.snapshot.load_full();
        let mut wanted: HashMap<String, Target> = HashMap::new();
        for (name, up) in &snap.upstreams {
            if let Some(d) = &up.cfg.discover {
                if let DiscoverSource::Kubernetes(k) = &d.source {
                    wanted.insert(
                        name.clone(),
                        Target {
                            k: k.clone(),
                            zone: d.zone.clone(),
                            region: d.region.clone(),
                        },
                    );
                }
            }
        }
        running.retain(|name, (target, task)| {
            let keep = wanted.get(name) == Some(target) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, target) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(name) {
                let task = tokio::spawn(watch(state.clone(), slot.key().clone(), target.clone()));
                slot.insert((target, task));
            }
        }
    }
}

fn failed(upstream: &str, msg: std::fmt::Arguments<'_>) {
    METRICS
        .discovery_errors
        .with_label_values(&[upstream])
        .inc();
    tollgate_config::telemetry::warn_every(&format!("kubernetes:{upstream}"), msg);
}

/// Watch one upstream's Service for as long as the config asks for it, giving each
/// discovered pod the upstream's default zone and region where the slice has none.
async fn watch(state: Arc<State>, upstream: String, t: Target) {
    let report = |msg: std::fmt::Arguments<'_>| failed(&upstream, msg);
    let apply = |found: &[Discovered], _changed: bool| {
        let eps: Vec<Endpoint> = found.iter().map(|d| endpoint(d, &t)).collect();
        if let Some(up) = state.snapshot.load().upstreams.get(&upstream) {
            up.update_discovered(eps);
        }
    };
    kubernetes::watch(t.k.clone(), format!("upstream {upstream}"), report, apply).await;
}

fn endpoint(d: &Discovered, t: &Target) -> Endpoint {
    Endpoint {
        address: d.address,
        zone: d.zone.clone().or_else(|| t.zone.clone()),
        region: t.region.clone(),
        weight: 1,
        draining: d.draining,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use std::collections::BTreeMap;
    use tollgate_config::gateway::PortRef;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn conditions_ports_and_zones_follow_the_api_rules() {
        let t = Target {
            k: KubernetesDiscover {
                service: "web".into(),
                namespace: None,
                port: Some(PortRef::Name("http".into())),
                kubeconfig: None,
            },
            zone: Some("default-zone".into()),
            region: Some("r1".into()),
        };
        let mut slices = BTreeMap::new();
        slices.insert(
            "a".into(),
            slice(serde_json::json!({
                "metadata": { "name": "web-a" },
                "addressType": "IPv4",
                "ports": [{ "name": "metrics", "port": 9090 }, { "name": "http", "port": 8080 }],
                "endpoints": [
                    { "addresses": ["10.0.0.1"], "conditions": { "ready": true }, "zone": "z1" },
                    { "addresses": ["10.0.0.2"], "conditions": { "ready": false, "serving": true, "terminating": true }, "zone": "z1" },
                    { "addresses": ["10.0.0.3"], "conditions": { "ready": false, "serving": false, "terminating": true } },
                    { "addresses": ["10.0.0.4"], "conditions": { "ready": false } },
                    { "addresses": ["10.0.0.5"] }
                ]
            })),
        );
        slices.insert(
            "fqdn".into(),
            slice(serde_json::json!({
                "metadata": { "name": "web-fqdn" },
                "addressType": "FQDN",
                "endpoints": [{ "addresses": ["db.example.com"] }]
            })),
        );
        let eps: Vec<Endpoint> = kubernetes::endpoints(&slices, &t.k, "u", &|_| {})
            .iter()
            .map(|d| endpoint(d, &t))
            .collect();
        let got: Vec<_> = eps
            .iter()
            .map(|e| (e.address.to_string(), e.zone.clone().unwrap(), e.draining))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.1:8080".into(), "z1".into(), false),
                ("10.0.0.2:8080".into(), "z1".into(), true),
                // No conditions: ready; no zone: the configured default.
                ("10.0.0.5:8080".into(), "default-zone".into(), false),
            ]
        );
        assert!(eps.iter().all(|e| e.region.as_deref() == Some("r1")));
    }
}
