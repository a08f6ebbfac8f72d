//! File-layer types: exactly what users write in the sidecar's YAML. Every struct
//! refuses unknown fields; see [`super::runtime`] for the validated form.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::outlier_detection::OutlierFile;
use crate::common::retry::{RetryCondition, RetryOnFile};
use crate::units::{HumanDuration, Percent, Rate};

/// The sidecar's configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarFile {
    /// This pod's availability zone (e.g. `us-east-1a`), for zone-aware routing and the
    /// cross-zone metrics. The environment variable `SIDECAR_ZONE`, when set, takes
    /// precedence (Kubernetes: from the node's `topology.kubernetes.io/zone` label).
    #[serde(default)]
    pub zone: Option<String>,
    /// This pod's region (e.g. `us-east-1`); `SIDECAR_REGION` takes precedence.
    #[serde(default)]
    pub region: Option<String>,
    /// This workload's certificate, key and the trust bundle, as cert-manager or SPIRE
    /// write them. Watched: rotation applies to new connections.
    pub identity: IdentityFile,
    /// mTLS listener for calls into the local app.
    #[serde(default)]
    pub inbound: Option<InboundFile>,
    /// Dependencies the local app calls, each on its own loopback port.
    #[serde(default)]
    pub outbound: BTreeMap<String, DependencyFile>,
    /// Optional HTTP proxy listener: the app sets `HTTP_PROXY` and names the dependency in
    /// the Host header (`http://payments/...`).
    #[serde(default)]
    pub proxy: Option<ProxyListenerFile>,
    /// Transparent interception: the listener that the nftables rules installed by
    /// `sidecar iptables install` redirect the app's outbound TCP to. A connection
    /// whose original destination is one of a dependency's `addresses` goes through
    /// that dependency; any other is passed through or refused (`unknown`).
    #[serde(default)]
    pub intercept: Option<InterceptFile>,
    #[serde(default)]
    pub admin: SidecarAdminFile,
    #[serde(default)]
    pub server: SidecarServerFile,
    /// One JSON line per outbound call (off by default).
    #[serde(default)]
    pub access_log: Option<crate::common::telemetry::AccessLogFile>,
    /// OpenTelemetry traces over OTLP/HTTP (off when absent).
    #[serde(default)]
    pub tracing: Option<crate::common::telemetry::TracingFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// PEM certificate chain (leaf first); its URI SAN is this workload's SPIFFE id.
    pub cert: String,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: String,
    /// PEM CA certificates peers must chain to.
    pub trust_bundle: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundFile {
    /// `IP:PORT` of the mTLS listener, e.g. `0.0.0.0:15001`.
    pub listen: String,
    /// The local app, plain HTTP on loopback, e.g. `127.0.0.1:8080`.
    pub forward_to: String,
    /// Callers allowed in: a SPIFFE id (any path), or `{ id, path_prefix }`.
    /// Empty: any caller with a certificate from the trust bundle.
    #[serde(default)]
    pub allow: Vec<AllowFile>,
    /// Header carrying the verified caller identity to the app; any copy arriving from
    /// outside is removed first.
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
    /// Longest wait for the local app's answer.
    #[serde(default = "default_inbound_timeout")]
    pub timeout: HumanDuration,
    /// How the local app is spoken to: `http1`, `h2c` (cleartext HTTP/2 with prior
    /// knowledge, what gRPC servers speak) or `auto` (default): the HTTP version the
    /// calling app used, so gRPC and other HTTP/2 callers reach the app as h2c and
    /// HTTP/1.1 callers as HTTP/1.1.
    #[serde(default)]
    pub app_protocol: AppProtocolFile,
    /// An upgraded connection (WebSocket) to the app with no bytes either way for this
    /// long is closed. `timeout` bounds only the wait for the `101`.
    #[serde(default = "default_upgrade_idle_timeout")]
    pub upgrade_idle_timeout: HumanDuration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocolFile {
    #[default]
    Auto,
    Http1,
    H2c,
}

fn default_identity_header() -> String {
    "x-client-spiffe-id".into()
}
fn default_inbound_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_upgrade_idle_timeout() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

/// An allow-list entry: `spiffe://...` or `{ id: spiffe://..., path_prefix: /admin }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AllowFile {
    Id(String),
    Rule(AllowRuleFile),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowRuleFile {
    pub id: String,
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// One outbound dependency and its resilience policy.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencyFile {
    /// Loopback `IP:PORT` the app calls, e.g. `127.0.0.1:15101`.
    #[serde(default)]
    pub listen: Option<String>,
    /// With `intercept`: the `IP:PORT`s the app calls this dependency at as if there
    /// were no sidecar (its Service's ClusterIP and port, e.g. `10.96.12.34:8080`);
    /// intercepted connections to them go through this dependency.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Peer sidecars, `HOST:PORT` (IPs, or names re-resolved every `resolve_every`), or
    /// `{ address: HOST:PORT, zone, region }` for zone-aware routing. Optional with
    /// `discover`; with both, the two sets are merged.
    #[serde(default)]
    pub endpoints: Vec<DependencyEndpointFile>,
    /// Or (and) the peer sidecars of a Kubernetes Service, from its EndpointSlices:
    /// `{ kubernetes: { service, namespace, port, kubeconfig } }`. `port` names the
    /// Service port that points at the peers' *inbound* (mTLS) listener, not the app's.
    #[serde(default)]
    pub discover: Option<DependencyDiscoverFile>,
    #[serde(default = "default_resolve_every")]
    pub resolve_every: HumanDuration,
    /// The SPIFFE id the peer must present.
    pub server_identity: String,
    /// `http2` (default, multiplexed) or `http1` between sidecars.
    #[serde(default)]
    pub protocol: PeerProtocol,
    /// Overall deadline, all tries included (504 when it passes).
    #[serde(default = "default_dep_timeout")]
    pub timeout: HumanDuration,
    /// Deadline of each try (default: the overall timeout).
    #[serde(default)]
    pub per_try_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub connect_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub retry: Option<RetryPolicyFile>,
    #[serde(default)]
    pub circuit_breaker: Option<BreakerFile>,
    /// Bulkhead: requests in flight at once; beyond it, 503 at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// Requests allowed to wait for a bulkhead slot (0: none wait).
    #[serde(default)]
    pub queue: u32,
    #[serde(default)]
    pub outlier_detection: Option<OutlierFile>,
    /// Send a second try to another endpoint when the first is slower than this
    /// (idempotent calls only; counted against the retry budget): a duration (`50ms`),
    /// a percentile of the dependency's recent latency (`p95`), or
    /// `{ percentile: p95, min: 10ms, max: 500ms }`.
    #[serde(default)]
    pub hedge_after: Option<HedgeAfterFile>,
    /// Outbound rate limit; beyond it, 429 at once.
    #[serde(default)]
    pub rate_limit: Option<Rate>,
    /// Fault injection for chaos tests.
    #[serde(default)]
    pub fault: Option<crate::common::fault::FaultFile>,
    /// Prefer endpoints in this sidecar's zone while enough of them are healthy (the
    /// gateway's rule); needs the sidecar's `zone` and the endpoints' zones.
    #[serde(default)]
    pub zone_aware: Option<crate::common::locality::ZoneAwareFile>,
    /// An upgraded stream (WebSocket) with no bytes either way for this long is closed.
    /// The timeouts above bound only the wait for the `101`, never the stream.
    #[serde(default = "default_upgrade_idle_timeout")]
    pub upgrade_idle_timeout: HumanDuration,
}

/// Where a dependency's peer sidecars are discovered.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencyDiscoverFile {
    /// The Service whose EndpointSlices list the peer pods, each with its zone (the
    /// gateway's `discover.kubernetes`). `port`: the Service port (name or number) of
    /// the peer sidecars' inbound listener.
    pub kubernetes: KubernetesDiscoverFile,
}

pub use crate::common::kubernetes::{KubernetesDiscoverFile, PortRefFile};

/// When to hedge: `50ms` (fixed), `p95` (a percentile of recent latency, default floor
/// and ceiling), or `{ percentile: p95, min: 10ms, max: 500ms }`.
///
/// Deserialized by hand rather than `untagged`: a string is a duration or `pNN`, a map
/// is [`HedgeAdaptiveFile`] with its own unknown-field errors, and a bad value says
/// which forms are accepted instead of "did not match any variant".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum HedgeAfterFile {
    Fixed(HumanDuration),
    Percentile(PercentileFile),
    Adaptive(HedgeAdaptiveFile),
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HedgeAdaptiveFile {
    /// `p50` .. `p99.9` of the latency of the dependency's recent successful tries.
    pub percentile: PercentileFile,
    /// Never hedge sooner than this (default 10ms).
    #[serde(default = "default_hedge_min")]
    pub min: HumanDuration,
    /// Never wait longer than this; also the delay used until enough tries have been
    /// seen to estimate the percentile (default 500ms).
    #[serde(default = "default_hedge_max")]
    pub max: HumanDuration,
}

pub fn default_hedge_min() -> HumanDuration {
    HumanDuration::from_millis(10)
}
pub fn default_hedge_max() -> HumanDuration {
    HumanDuration::from_millis(500)
}

impl<'de> Deserialize<'de> for HedgeAfterFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HedgeAfterFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a duration (50ms), a percentile (p95), or { percentile: p95, min: 10ms, max: 500ms }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v.trim_start().starts_with(['p', 'P']) {
                    v.parse().map(HedgeAfterFile::Percentile).map_err(E::custom)
                } else {
                    v.parse().map(HedgeAfterFile::Fixed).map_err(|e| {
                        E::custom(format!(
                            "{e}; or a percentile of recent latency such as p95"
                        ))
                    })
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                HedgeAdaptiveFile::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(HedgeAfterFile::Adaptive)
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentile written `p50` .. `p99.9`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct PercentileFile(f64);

impl PercentileFile {
    /// The percentile as a fraction (`p95` is 0.95).
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl std::str::FromStr for PercentileFile {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, String> {
        let s = input.trim();
        s.strip_prefix(['p', 'P'])
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|v| (50.0..=99.9).contains(v))
            .map(Self)
            .ok_or_else(|| {
                format!("{input:?} is not a percentile: expected p50 .. p99.9, e.g. p95")
            })
    }
}

impl std::fmt::Display for PercentileFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl Serialize for PercentileFile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PercentileFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for PercentileFile {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percentile".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": r"^[pP][0-9.]+$", "description": "A percentile from p50 to p99.9, e.g. p95" })
    }
}

/// A peer sidecar: `HOST:PORT`, or `{ address: HOST:PORT, zone, region }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DependencyEndpointFile {
    Address(String),
    Located(LocatedEndpointFile),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocatedEndpointFile {
    /// `HOST:PORT`; a name's addresses all get this zone.
    pub address: String,
    /// The endpoint's availability zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// The endpoint's region (default: the sidecar's own).
    #[serde(default)]
    pub region: Option<String>,
}

impl DependencyEndpointFile {
    pub fn address(&self) -> &str {
        match self {
            Self::Address(a) => a,
            Self::Located(l) => &l.address,
        }
    }
}

fn default_resolve_every() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_dep_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_max_concurrent() -> u32 {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeerProtocol {
    #[default]
    Http2,
    Http1,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyFile {
    /// Total tries including the first.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Exponential backoff range with full jitter, `MIN..MAX` (e.g. `25ms..250ms`).
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// Retries may add at most this share to the request rate.
    #[serde(default = "default_budget")]
    pub budget: Percent,
    /// ...but always allow this many retries per second.
    #[serde(default = "default_min_retries")]
    pub min_per_second: u32,
    /// Conditions: `5xx`, a status code, `reset`, `connect-failure`, `timeout`.
    #[serde(default = "default_retry_conditions")]
    pub on: Vec<RetryOnFile>,
    /// Request bodies up to this many bytes are buffered so they can be replayed;
    /// larger ones are not retried.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// gRPC methods safe to repeat, `/package.Service/Method` or `/package.Service/*`:
    /// retried on UNAVAILABLE (as gRPC's own retry policy does) and on the `on:`
    /// conditions, like an idempotent request. Other gRPC calls (all POSTs) are
    /// retried only when they provably never reached the dependency.
    #[serde(default)]
    pub grpc_methods: Vec<String>,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> String {
    "25ms..250ms".into()
}
fn default_budget() -> Percent {
    Percent::new_const(20.0)
}
fn default_min_retries() -> u32 {
    10
}
fn default_retry_conditions() -> Vec<RetryOnFile> {
    vec![
        RetryCondition::Status5xx.into(),
        RetryCondition::Reset.into(),
        RetryCondition::ConnectFailure.into(),
    ]
}
fn default_max_body() -> usize {
    64 * 1024
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// Open when this share of calls in the window failed (5xx, timeouts, connection errors).
    #[serde(default = "default_failure_rate")]
    pub failure_rate: Percent,
    /// Calls slower than this count as slow...
    #[serde(default)]
    pub slow_call: Option<HumanDuration>,
    /// ...and the breaker opens when this share of calls is slow.
    #[serde(default)]
    pub slow_call_rate: Option<Percent>,
    /// No verdict before this many calls in the window.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Sliding window length.
    #[serde(default = "default_window")]
    pub window: HumanDuration,
    /// Open this long before letting probes through; doubles on each trip in a row.
    #[serde(default = "default_open_for")]
    pub open_for: HumanDuration,
    #[serde(default = "default_max_open_for")]
    pub max_open_for: HumanDuration,
    /// Calls let through while half-open; all must succeed to close.
    #[serde(default = "default_probes")]
    pub half_open_probes: u32,
    /// Record what the breaker would do, never reject (safe roll-out of thresholds).
    #[serde(default)]
    pub observe_only: bool,
}

fn default_failure_rate() -> Percent {
    Percent::new_const(50.0)
}
fn default_min_requests() -> u32 {
    20
}
fn default_window() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_open_for() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_max_open_for() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_probes() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterceptFile {
    /// IPv4 listener the redirect points at: `127.0.0.1:PORT` (nftables `redirect`
    /// sends locally made connections to 127.0.0.1), e.g. `127.0.0.1:15006`.
    pub listen: String,
    /// IPv6 listener (`[::1]:PORT`, same port) for the `ip6` table's redirect; without
    /// it, install the rules with `--no-ipv6`.
    #[serde(default)]
    pub listen_v6: Option<String>,
    /// What to do with a connection to an address no dependency lists:
    /// `passthrough` (default: connect to the original destination and copy bytes
    /// both ways, untouched) or `refuse` (close it).
    #[serde(default)]
    pub unknown: UnknownDestinationFile,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnknownDestinationFile {
    #[default]
    Passthrough,
    Refuse,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyListenerFile {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarAdminFile {
    #[serde(default = "default_admin")]
    pub address: String,
}

impl Default for SidecarAdminFile {
    fn default() -> Self {
        Self {
            address: default_admin(),
        }
    }
}

fn default_admin() -> String {
    "127.0.0.1:15000".into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarServerFile {
    #[serde(default)]
    pub shutdown: crate::gateway::file::ShutdownFile,
    /// Worker threads (default 1: a sidecar should stay small).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Log level or filter (`info`, `warn,sidecar=debug`); `RUST_LOG` wins when set.
    #[serde(default)]
    pub log_level: Option<String>,
}
