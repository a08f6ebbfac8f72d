//! Kubernetes EndpointSlice discovery, shared by the gateway (upstreams) and the
//! sidecar (dependencies): the config (`discover: { kubernetes: ... }`), and a watch on
//! a Service's EndpointSlices through the API server (kube's watcher: list, then watch
//! from the list's resource version; a `410 Gone` re-lists; errors back off and retry).
//! Each pod address comes with its zone and its readiness, which DNS cannot give: that
//! is what makes zone-aware balancing work for pods.
//!
//! - `ready`: a normal endpoint.
//! - `serving` and `terminating` (a pod shutting down that still answers): reported as
//!   draining (the gateway sends it nothing new while others are available, as
//!   kube-proxy does; the sidecar leaves it out while a ready one remains).
//! - anything else: left out.
//!
//! While the API server cannot be reached, the last known endpoints stay.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::resolve_path;
use crate::error::Problems;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesDiscoverFile {
    /// The Service whose EndpointSlices (label `kubernetes.io/service-name`) are watched.
    pub service: String,
    /// Default: the gateway pod's own namespace (in-cluster), or the kubeconfig
    /// context's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service port, by name (`http`) or number (the pods' port). Default: the
    /// slice's only port.
    #[serde(default)]
    pub port: Option<PortRefFile>,
    /// A kubeconfig file (outside a cluster). Default: the pod's service account, or
    /// `$KUBECONFIG`.
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PortRefFile {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubernetesDiscover {
    pub service: String,
    pub namespace: Option<String>,
    pub port: Option<PortRef>,
    pub kubeconfig: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// Check `discover.kubernetes` (`kat` is its field path).
pub fn validate(
    kat: &str,
    k: &KubernetesDiscoverFile,
    base_dir: &Path,
    p: &mut Problems,
) -> KubernetesDiscover {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !name_ok(&k.service) {
        p.push(
            format!("{kat}.service"),
            "must be a Service name: lower-case letters, digits and -",
        );
    }
    if let Some(ns) = k.namespace.as_deref().filter(|n| !name_ok(n)) {
        p.push(
            format!("{kat}.namespace"),
            format!("{ns:?} is not a namespace name"),
        );
    }
    let port = match &k.port {
        Some(PortRefFile::Number(0)) => {
            p.push(format!("{kat}.port"), "must be 1..65535 or a port name");
            None
        }
        Some(PortRefFile::Number(n)) => Some(PortRef::Number(*n)),
        Some(PortRefFile::Name(n)) if n.trim().is_empty() => {
            p.push(format!("{kat}.port"), "must not be empty");
            None
        }
        Some(PortRefFile::Name(n)) => Some(PortRef::Name(n.trim().to_owned())),
        None => None,
    };
    KubernetesDiscover {
        service: k.service.clone(),
        namespace: k.namespace.clone(),
        port,
        kubeconfig: k.kubeconfig.as_deref().map(|c| resolve_path(base_dir, c)),
    }
}

/// One pod address a Service's EndpointSlices list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub address: SocketAddr,
    /// The slice's zone for it (`topology.kubernetes.io/zone` of its node).
    pub zone: Option<String>,
    /// Serving but terminating: finish what it has, send it nothing new.
    pub draining: bool,
}

async fn client(k: &KubernetesDiscover) -> Result<(kube::Client, String), String> {
    let config = match &k.kubeconfig {
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
    let namespace = k
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    Ok((client, namespace))
}

/// Watch `k`'s Service for as long as the future runs. `report` gets each problem
/// (the caller rate-limits and counts it); `apply` gets the current endpoints after
/// every change and again every second (so a caller that rebuilt its endpoint set at
/// the wrong moment cannot lose an update). `name` only appears in messages.
pub async fn watch(
    k: KubernetesDiscover,
    name: String,
    report: impl Fn(std::fmt::Arguments<'_>),
    mut apply: impl FnMut(&[Discovered], bool),
) {
    let mut delay = Duration::from_millis(500);
    let (client, namespace) = loop {
        match client(&k).await {
            Ok(c) => break c,
            Err(e) => {
                report(format_args!(
                    "{name}: {e}; keeping the last endpoints, retrying"
                ));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &namespace);
    let selector = format!("kubernetes.io/service-name={}", k.service);
    let stream =
        watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Slices by name; a re-list fills `pending` and replaces `slices` at its end.
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut pending: Option<BTreeMap<String, EndpointSlice>> = None;
    let mut current: Option<Vec<Discovered>> = None;
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
                    report(format_args!(
                        "{name}: watching EndpointSlices of {namespace}/{}: {e}; keeping the last endpoints",
                        k.service
                    ));
                    false
                }
                None => return,
            },
            _ = tick.tick() => false,
        };
        if changed {
            let found = endpoints(&slices, &k, &name, &report);
            let (ready, draining) = (
                found.iter().filter(|e| !e.draining).count(),
                found.iter().filter(|e| e.draining).count(),
            );
            tracing::info!(
                "Kubernetes discovery for {name}: {ready} ready and {draining} terminating endpoints of {namespace}/{}",
                k.service
            );
            current = Some(found);
        }
        if let Some(eps) = &current {
            apply(eps, changed);
        }
    }
}

fn slice_name(s: &EndpointSlice) -> String {
    s.metadata.name.clone().unwrap_or_default()
}

/// The endpoints a set of slices describes.
pub fn endpoints(
    slices: &BTreeMap<String, EndpointSlice>,
    k: &KubernetesDiscover,
    name: &str,
    report: &impl Fn(std::fmt::Arguments<'_>),
) -> Vec<Discovered> {
    let mut out: Vec<Discovered> = Vec::new();
    for s in slices.values() {
        if s.address_type != "IPv4" && s.address_type != "IPv6" {
            continue; // FQDN slices name hosts, not pods
        }
        let ports = s.ports.as_deref().unwrap_or_default();
        let port = match &k.port {
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
            report(format_args!(
                "{name}: EndpointSlice {} has no port {:?} (ports: {:?}); its endpoints are left out",
                slice_name(s),
                k.port,
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
                out.push(Discovered {
                    address: SocketAddr::new(ip, port),
                    zone: e.zone.clone(),
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
