//! EndpointSlice discovery: for each upstream with `discover: { kubernetes: ... }`, a
//! watch on the Service's EndpointSlices through the Kubernetes API (kube's watcher:
//! list, then watch from the list's resource version; a `410 Gone` re-lists; errors
//! back off and retry). Each pod address comes with its zone and its readiness, which
//! DNS cannot give: that is what makes zone-aware balancing work for pods.
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

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tollgate_config::gateway::{DiscoverSource, Endpoint, KubernetesDiscover, PortRef};

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

async fn client(t: &Target) -> Result<(kube::Client, String), String> {
    let config = match &t.k.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes API (in-cluster or $KUBECONFIG): {e}"))?,
    };
    let namespace =
        t.k.namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    Ok((client, namespace))
}

/// Watch one upstream's Service for as long as the config asks for it.
async fn watch(state: Arc<State>, upstream: String, t: Target) {
    let mut delay = Duration::from_millis(500);
    let (client, namespace) = loop {
        match client(&t).await {
            Ok(c) => break c,
            Err(e) => {
                failed(
                    &upstream,
                    format_args!("upstream {upstream}: {e}; keeping the last endpoints, retrying"),
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &namespace);
    let selector = format!("kubernetes.io/service-name={}", t.k.service);
    let stream =
        watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Slices by name; a re-list fills `pending` and replaces `slices` at its end.
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut pending: Option<BTreeMap<String, EndpointSlice>> = None;
    let mut current: Option<Vec<Endpoint>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let changed = tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(Event::Init)) => {
                    pending = Some(BTreeMap::new());
                    false
                }
                Some(Ok(Event::InitApply(s))) => {
                    pending.get_or_insert_with(BTreeMap::new).insert(slice_name(&s), s);
                    false
                }
                Some(Ok(Event::InitDone)) => {
                    slices = pending.take().unwrap_or_default();
                    true
                }
                Some(Ok(Event::Apply(s))) => {
                    slices.insert(slice_name(&s), s);
                    true
                }
                Some(Ok(Event::Delete(s))) => {
                    slices.remove(&slice_name(&s));
                    true
                }
                Some(Err(e)) => {
                    failed(&upstream, format_args!(
                        "upstream {upstream}: watching EndpointSlices of {namespace}/{}: {e}; keeping the last endpoints",
                        t.k.service
                    ));
                    false
                }
                None => return,
            },
            _ = tick.tick() => false,
        };
        if changed {
            let found = endpoints(&slices, &t, &upstream);
            let (ready, draining) = (
                found.iter().filter(|e| !e.draining).count(),
                found.iter().filter(|e| e.draining).count(),
            );
            tracing::info!(
                upstream = %upstream,
                "Kubernetes discovery: {ready} ready and {draining} terminating endpoints for {namespace}/{}",
                t.k.service
            );
            current = Some(found);
        }
        if let (Some(eps), Some(up)) = (&current, state.snapshot.load().upstreams.get(&upstream)) {
            up.update_discovered(eps.clone());
        }
    }
}

fn slice_name(s: &EndpointSlice) -> String {
    s.metadata.name.clone().unwrap_or_default()
}

/// The endpoints a set of slices describes.
fn endpoints(
    slices: &BTreeMap<String, EndpointSlice>,
    t: &Target,
    upstream: &str,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for s in slices.values() {
        if s.address_type != "IPv4" && s.address_type != "IPv6" {
            continue; // FQDN slices name hosts, not pods
        }
        let ports = s.ports.as_deref().unwrap_or_default();
        let port = match &t.k.port {
            Some(PortRef::Number(n)) => Some(i32::from(*n)),
            Some(PortRef::Name(want)) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(want.as_str()))
                .and_then(|p| p.port),
            None if ports.len() == 1 => ports[0].port,
            None => None,
        }
        .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else {
            failed(upstream, format_args!(
                "upstream {upstream}: EndpointSlice {} has no port {:?} (ports: {:?}); its endpoints are left out",
                slice_name(s),
                t.k.port,
                ports.iter().map(|p| (p.name.clone(), p.port)).collect::<Vec<_>>()
            ));
            continue;
        };
        for e in &s.endpoints {
            let c = e.conditions.as_ref();
            // The API's rules for absent conditions: ready and serving mean "ready"
            // when unset, terminating means "no".
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let draining = if ready && !terminating {
                false
            } else if serving && terminating {
                true
            } else {
                continue;
            };
            for a in &e.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                out.push(Endpoint {
                    address: SocketAddr::new(ip, port),
                    zone: e.zone.clone().or_else(|| t.zone.clone()),
                    region: t.region.clone(),
                    weight: 1,
                    draining,
                });
            }
        }
    }
    // One entry per address; a ready copy wins over a draining one.
    out.sort_by_key(|e| (e.address, e.draining));
    out.dedup_by_key(|e| e.address);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        let eps = endpoints(&slices, &t, "u");
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
