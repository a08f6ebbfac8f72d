//! EndpointSlice discovery for dependencies with `discover: { kubernetes: ... }`: the
//! watch itself is shared with the gateway (`tollgate_config::common::kubernetes`);
//! here, which dependencies want one, and which pods become endpoints.
//!
//! - Ready pods are the endpoints, each with its slice's zone (the sidecar's own zone
//!   places them, so zone-aware routing works as with zoned static endpoints).
//! - Terminating pods that still serve are left out while any ready pod remains; when
//!   none does (a rollout's last old pod, or a whole Service scaling down), they are
//!   used rather than failing every call. The sidecar has no per-endpoint drain, so
//!   this is the gateway's "no new requests while others are available", coarser.
//! - Static `endpoints` of the same dependency are kept and merged with these.
//!
//! While the API server cannot be reached, the last known endpoints stay; errors are
//! counted (`sidecar_discovery_errors_total{dependency}`) and warned at most once a
//! second per dependency. A supervisor starts and stops watches as reloads add, change
//! or remove discovery; each watch re-applies its set every second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tollgate_config::common::kubernetes::{self, Discovered, KubernetesDiscover};

use crate::metrics::METRICS;
use crate::outbound::locality::Located;
use crate::state::State;

/// Start, restart and stop watches to match the current config, forever.
pub async fn supervise(state: Arc<State>) {
    let mut running: HashMap<String, (KubernetesDiscover, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let snap = state.snapshot.load_full();
        let wanted: HashMap<&String, &KubernetesDiscover> = snap
            .dependencies
            .iter()
            .filter_map(|(name, dep)| dep.cfg.discover.as_ref().map(|k| (name, k)))
            .collect();
        running.retain(|name, (k, task)| {
            let keep = wanted.get(name) == Some(&&*k) && !task.is_finished();
            if !keep {
                task.abort();
                // Discovery removed by a reload: its endpoints go with it (a changed
                // target keeps them until the new watch reports).
                if !wanted.contains_key(name) {
                    if let Some(dep) = snap.dependencies.get(name) {
                        dep.endpoints.update_discovered(Vec::new());
                    }
                }
            }
            keep
        });
        for (name, k) in wanted {
            if !running.contains_key(name) {
                let task = tokio::spawn(watch(state.clone(), name.clone(), k.clone()));
                running.insert(name.clone(), (k.clone(), task));
            }
        }
    }
}

fn failed(dependency: &str, msg: std::fmt::Arguments<'_>) {
    METRICS
        .discovery_errors
        .with_label_values(&[dependency])
        .inc();
    tollgate_config::telemetry::warn_every(&format!("kubernetes:{dependency}"), msg);
}

/// Watch one dependency's Service for as long as the config asks for it.
async fn watch(state: Arc<State>, dependency: String, k: KubernetesDiscover) {
    let report = |msg: std::fmt::Arguments<'_>| failed(&dependency, msg);
    let apply = |found: &[Discovered], _changed: bool| {
        if let Some(dep) = state.snapshot.load().dependencies.get(&dependency) {
            let eps = endpoints(found);
            let n = eps.len();
            if dep.endpoints.update_discovered(eps) {
                tracing::info!(dependency = %dependency, "{n} endpoints discovered");
            }
        }
    };
    kubernetes::watch(k, format!("dependency {dependency}"), report, apply).await;
}

/// The endpoints calls go to: the ready pods, or the terminating ones when no pod is
/// ready. Slices carry zones, not regions: a discovered pod is in this sidecar's region.
fn endpoints(found: &[Discovered]) -> Vec<Located> {
    let any_ready = found.iter().any(|d| !d.draining);
    found
        .iter()
        .filter(|d| !d.draining || !any_ready)
        .map(|d| Located {
            address: d.address,
            zone: d.zone.clone(),
            region: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(addr: &str, zone: &str, draining: bool) -> Discovered {
        Discovered {
            address: addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")),
            zone: Some(zone.into()),
            draining,
        }
    }

    fn addrs(eps: &[Located]) -> Vec<String> {
        eps.iter().map(|e| e.address.to_string()).collect()
    }

    #[test]
    fn terminating_pods_are_used_only_when_no_pod_is_ready() {
        let found = [
            d("10.0.0.1:15001", "a", false),
            d("10.0.0.2:15001", "b", true),
        ];
        let eps = endpoints(&found);
        assert_eq!(addrs(&eps), ["10.0.0.1:15001"]);
        assert_eq!(eps[0].zone.as_deref(), Some("a"));
        assert_eq!(eps[0].region, None);

        let all_terminating = [
            d("10.0.0.1:15001", "a", true),
            d("10.0.0.2:15001", "b", true),
        ];
        assert_eq!(
            addrs(&endpoints(&all_terminating)),
            ["10.0.0.1:15001", "10.0.0.2:15001"]
        );
        assert!(endpoints(&[]).is_empty());
    }
}
