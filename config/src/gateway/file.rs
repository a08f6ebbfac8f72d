//! File-layer types: exactly what users write in the gateway's YAML.
//! Every struct refuses unknown fields. Runtime code never sees these types;
//! see [`super::runtime`] for the validated form.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::grpc::{GrpcHealthCheckFile, UpstreamProtocol};
pub use crate::common::outlier_detection::OutlierFile;
pub use crate::common::retry::{RetryCondition, RetryOnFile};
use crate::units::HumanDuration;

/// The gateway's configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// This replica's availability zone (e.g. `us-east-1a`). The environment variable
    /// `GATEWAY_ZONE`, when set, takes precedence (Kubernetes: from the node's
    /// `topology.kubernetes.io/zone` label via the downward API).
    #[serde(default)]
    pub zone: Option<String>,
    /// This replica's region (e.g. `us-east-1`); `GATEWAY_REGION` takes precedence.
    #[serde(default)]
    pub region: Option<String>,
    /// Where the gateway accepts traffic. Changing this set needs a restart.
    pub listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    /// Named rate-limit policies that routes list in `rate_limit`.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, super::ratelimit::RateLimitFile>,
    /// WAF policies, by name; a route uses one with `waf: NAME` (see docs/waf.md).
    #[serde(default)]
    pub waf: BTreeMap<String, tollgate_waf::PolicySpec>,
    /// Authentication policies (JWT, forward-auth) that routes use with `auth:`.
    #[serde(default)]
    pub auth: super::auth::AuthFile,
    /// The Redis that `store: redis` rate limits share.
    #[serde(default)]
    pub redis: Option<super::ratelimit::RedisFile>,
    /// One JSON line per request (off by default).
    #[serde(default)]
    pub access_log: Option<crate::common::telemetry::AccessLogFile>,
    /// OpenTelemetry traces over OTLP/HTTP (off when absent).
    #[serde(default)]
    pub tracing: Option<crate::common::telemetry::TracingFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: String,
    /// `IP:PORT`, e.g. `0.0.0.0:8080` or `[::]:8080`.
    pub address: String,
    /// Also accept cleartext HTTP/2 (h2c, prior knowledge) on this listener.
    #[serde(default)]
    pub h2c: bool,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<ListenerTlsFile>,
    /// Answer every request with a 308 to the same host and path over HTTPS.
    #[serde(default)]
    pub redirect_https: bool,
    /// Port in the redirect's URL (default: the first TLS listener's port).
    #[serde(default)]
    pub https_port: Option<u16>,
    /// Every connection starts with a PROXY protocol v1 or v2 header (sent by an L4
    /// load balancer such as AWS NLB or HAProxy); its source address is the client's.
    /// Connections without a valid header are closed.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Peers (CIDRs or single addresses) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed. From anyone else these headers are replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// HTTP/1 desync (request smuggling) mitigation, as ALB's: `monitor`, `defensive`
    /// (the default) or `strictest`. Severe requests are refused in every mode.
    #[serde(default)]
    pub desync_mitigation: DesyncMode,
}

/// How a listener treats requests by their desync class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesyncMode {
    /// Forward compliant, acceptable and ambiguous requests as they are; count them.
    Monitor,
    /// Forward ambiguous requests, then close the client and upstream connections.
    #[default]
    Defensive,
    /// Forward only compliant requests.
    Strictest,
}

impl DesyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DesyncMode::Monitor => "monitor",
            DesyncMode::Defensive => "defensive",
            DesyncMode::Strictest => "strictest",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// Certificates to serve; each is chosen by SNI from its DNS SANs (exact and
    /// wildcard). Files are watched: a renewed certificate applies to new handshakes.
    pub certificates: Vec<CertificateFile>,
    /// The certificate (by one of its DNS names) for clients that send no SNI or an
    /// unknown name. Default: the first certificate.
    #[serde(default)]
    pub default_certificate: Option<String>,
    /// Oldest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Offer HTTP/2 through ALPN (default true).
    #[serde(default = "yes")]
    pub http2: bool,
    /// Verify client certificates (mTLS at the edge).
    #[serde(default)]
    pub client_auth: Option<ClientAuthFile>,
}

/// A TLS protocol version, written as a string (`"1.2"`). Older versions are never
/// offered, so they cannot be named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    /// PEM chain, leaf first (intermediates follow).
    pub cert: String,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1; ECDSA, RSA or Ed25519).
    pub key: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthFile {
    /// `required` (default) or `optional`.
    #[serde(default)]
    pub mode: ClientAuthMode,
    /// PEM CA certificates client certificates must chain to.
    pub ca: String,
    /// Header carrying the verified client identity to backends (any copy sent by the
    /// client is removed first).
    #[serde(default = "default_client_identity_header")]
    pub identity_header: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// No valid client certificate, no connection.
    #[default]
    Required,
    /// A certificate, if sent, must be valid.
    Optional,
}

fn default_client_identity_header() -> String {
    "x-client-cert-identity".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`, `/config`, `/upstreams`,
    /// `POST /reload`). Keep it on loopback or a private network.
    #[serde(default = "default_admin_address")]
    pub address: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Worker threads (default: number of CPUs). Needs a restart.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Let idle worker threads take tasks from busy ones (default false: each
    /// connection stays on the thread that accepted it, cheaper per request). Needs a
    /// restart.
    #[serde(default)]
    pub work_stealing: bool,
    #[serde(default)]
    pub shutdown: ShutdownFile,
    #[serde(default)]
    pub limits: LimitsFile,
    /// Watch the config file and reload on change (SIGHUP and `POST /reload` always work).
    #[serde(default = "yes")]
    pub watch_config: bool,
    /// Send header names to backends (and responses to clients) with the letter case
    /// they arrived with, for peers that wrongly depend on it (header names are
    /// case-insensitive, RFC 9110). Off: names go out lower-case, which costs less per
    /// request. Headers the gateway adds are lower-case either way.
    #[serde(default)]
    pub preserve_header_case: bool,
    /// Log level or filter (`info`, `warn,gateway=debug`); `RUST_LOG` wins when set.
    #[serde(default)]
    pub log_level: Option<String>,
    /// Unix socket a binary upgrade hands the listening sockets over (`gateway upgrade`);
    /// default `/tmp/tollgate-gateway-<admin port>.sock`, relative to the config's directory.
    #[serde(default)]
    pub upgrade_socket: Option<String>,
}

/// What a file without a `server:` section gets: the same defaults as each field's.
impl Default for ServerFile {
    fn default() -> Self {
        Self {
            threads: None,
            work_stealing: false,
            shutdown: ShutdownFile::default(),
            limits: LimitsFile::default(),
            watch_config: true,
            preserve_header_case: false,
            log_level: None,
            upgrade_socket: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    /// After SIGTERM, keep serving (with `/readyz` at 503) this long so load balancers
    /// stop sending new connections.
    #[serde(default = "default_drain_delay")]
    pub drain_delay: HumanDuration,
    /// Then stop accepting and give in-flight requests at most this long to finish.
    #[serde(default = "default_grace_period")]
    pub grace_period: HumanDuration,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        Self {
            drain_delay: default_drain_delay(),
            grace_period: default_grace_period(),
        }
    }
}

fn default_drain_delay() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_grace_period() -> HumanDuration {
    HumanDuration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest request head (request line + headers) accepted; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Longest request target (path and query); longer gets 414 (ALB: 16 KiB).
    #[serde(default = "default_max_field_bytes")]
    pub max_request_line_bytes: usize,
    /// Longest single header field (name and value); longer gets 431 (ALB: 16 KiB).
    #[serde(default = "default_max_field_bytes")]
    pub max_header_field_bytes: usize,
    /// HTTP/1: a kept-alive client connection idle this long is closed (ALB's idle
    /// timeout, 60s).
    #[serde(default = "default_client_idle_timeout")]
    pub client_idle_timeout: HumanDuration,
    /// HTTP/1: a client connection older than this is closed after its current request
    /// (`Connection: close`), so clients spread again over replicas (ALB: 3600s).
    #[serde(default = "default_keepalive_duration")]
    pub keepalive_duration: HumanDuration,
    /// Remove request headers whose names are not letters, digits and hyphens before
    /// forwarding (`X_Forwarded_For` cannot pose as `X-Forwarded-For` to a backend
    /// that folds `_` into `-`), as ALB's `drop_invalid_header_fields`.
    #[serde(default)]
    pub drop_invalid_header_fields: bool,
    /// The whole request head must arrive within this time (HTTP/1: from the first byte
    /// on a new or kept-alive connection); a client that trickles it is disconnected.
    #[serde(default = "default_request_head_timeout")]
    pub request_head_timeout: HumanDuration,
    /// Connections one client address may hold at once (0: no limit). Beyond it new
    /// connections are closed at once. Mind clients that share an address (NAT, a CDN
    /// without PROXY protocol).
    #[serde(default)]
    pub max_connections_per_client: u32,
    /// Client connections the gateway holds at once, over every listener. At the
    /// limit a new connection takes the place of the oldest idle keep-alive one (then
    /// of the oldest still sending its first request head); if every connection is
    /// busy it is closed at once. Default: half the process's open-file limit, so the
    /// other half stays for upstream connections; 0: no limit.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// HTTP/1: the longest wait for the next piece of a request body (nginx's
    /// `client_body_timeout`); past it the request is answered 408 and the connection
    /// closed.
    #[serde(default = "default_request_body_timeout")]
    pub request_body_timeout: HumanDuration,
    /// After its first `request_body_timeout`, a request body must keep arriving at
    /// least this many bytes per second on average (Apache's `MinRate`), or it gets 408;
    /// 0 turns it off. A client trickling a byte now and then cannot hold a request.
    #[serde(default = "default_min_request_body_rate")]
    pub min_request_body_rate: u64,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            max_request_header_bytes: default_max_header_bytes(),
            max_request_line_bytes: default_max_field_bytes(),
            max_header_field_bytes: default_max_field_bytes(),
            client_idle_timeout: default_client_idle_timeout(),
            keepalive_duration: default_keepalive_duration(),
            drop_invalid_header_fields: false,
            request_head_timeout: default_request_head_timeout(),
            max_connections_per_client: 0,
            max_connections: None,
            request_body_timeout: default_request_body_timeout(),
            min_request_body_rate: default_min_request_body_rate(),
        }
    }
}

fn default_request_body_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_min_request_body_rate() -> u64 {
    500
}

fn default_request_head_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_field_bytes() -> usize {
    16 * 1024
}

fn default_client_idle_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_keepalive_duration() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

fn yes() -> bool {
    true
}

/// A route: which requests (match) go where (upstream or split), and how
/// (timeouts, retries).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    /// Conditions; all must hold. An empty match takes every request.
    #[serde(rename = "match", default)]
    pub matcher: MatchFile,
    /// Forward to this upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Or split traffic across upstreams by weight (canary releases).
    #[serde(default)]
    pub split: Option<Vec<SplitFile>>,
    /// Or answer with a redirect (instead of `upstream` / `split`).
    #[serde(default)]
    pub redirect: Option<super::actions::RedirectFile>,
    /// Or answer with a fixed status and body (instead of `upstream` / `split`).
    #[serde(default)]
    pub fixed_response: Option<super::actions::FixedResponseFile>,
    /// Path and host rewrites on the way to the upstream.
    #[serde(default)]
    pub rewrite: Option<super::actions::RewriteFile>,
    /// Header transforms on the request sent to the upstream.
    #[serde(default)]
    pub request_headers: Option<super::actions::HeaderOpsFile>,
    /// Header transforms on the response sent to the client.
    #[serde(default)]
    pub response_headers: Option<super::actions::HeaderOpsFile>,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub retry: Option<RetryFile>,
    /// Add `Strict-Transport-Security` to responses served over HTTPS.
    #[serde(default)]
    pub hsts: Option<HstsFile>,
    /// Rate-limit policies (names under `rate_limits`) every request must pass, in order.
    #[serde(default)]
    pub rate_limit: super::ratelimit::OneOrMany<String>,
    /// This route's access logging, over the top-level `access_log`.
    #[serde(default)]
    pub access_log: Option<crate::common::telemetry::RouteAccessLogFile>,
    /// At most this many of the route's requests in flight at once (per gateway);
    /// the next ones wait in a bounded queue, then get 503.
    #[serde(default)]
    pub concurrency: Option<ConcurrencyFile>,
    /// Idempotency-Key handling: retried writes answered from a stored response.
    #[serde(default)]
    pub idempotency: Option<super::idempotency::IdempotencyFile>,
    /// Fault injection for game days: delay and/or abort a share of requests.
    #[serde(default)]
    pub fault: Option<crate::common::fault::FaultFile>,
    /// The WAF policy (a name under `waf`) every request of the route passes, with
    /// optional exclusions for this route only.
    #[serde(default)]
    pub waf: Option<RouteWafFile>,
    /// Largest request body accepted (`10MiB`); larger gets 413. Default: no limit.
    #[serde(default)]
    pub max_request_body: Option<crate::units::ByteSize>,
    /// Authentication every request of the route needs: `{ jwt: POLICY }` or
    /// `{ forward: POLICY }` (policies under `auth`).
    #[serde(default)]
    pub auth: Option<super::auth::RouteAuthFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyFile {
    /// Requests in flight at once.
    pub max: u32,
    /// Requests that may wait for a slot (default 0: refuse at once).
    #[serde(default)]
    pub queue: u32,
    /// How long a queued request waits before it is refused.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: HumanDuration,
}

fn default_queue_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HstsFile {
    #[serde(default = "default_hsts_max_age")]
    pub max_age: HumanDuration,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

fn default_hsts_max_age() -> HumanDuration {
    HumanDuration::from_secs(365 * 24 * 3600)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    /// Exact host (`api.example.com`), a wildcard suffix (`*.example.com`), or an ALB
    /// wildcard pattern (`api-?.example.*`); case-insensitive.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_exact: Option<String>,
    /// An ALB path pattern: the whole path, `*` any run of characters, `?` one
    /// (`/api/*/users`); case-sensitive.
    #[serde(default)]
    pub path: Option<String>,
    /// Query-string conditions; each must hold (each is met by any one parameter).
    #[serde(default)]
    pub query: Vec<super::actions::QueryMatchFile>,
    /// The client's address (after trusted proxies) is in one of these CIDRs.
    #[serde(default)]
    pub source_ip: Vec<String>,
    /// Any of these methods (e.g. `[GET, HEAD]`).
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchFile>,
}

/// A header condition: exactly one of `exact`, `regex`, `present`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchFile {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    pub upstream: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// TCP connect to an endpoint.
    #[serde(default = "default_connect_timeout")]
    pub connect: HumanDuration,
    /// Longest wait for the next bytes from the upstream (time to first byte included).
    #[serde(default = "default_read_timeout")]
    pub read: HumanDuration,
    /// Whole request, all tries included (optional).
    #[serde(default)]
    pub request: Option<HumanDuration>,
    /// An upgraded connection (WebSocket) is closed after this long without bytes in
    /// a direction; `read` and `request` do not apply to it once upgraded.
    #[serde(default = "default_upgrade_idle_timeout")]
    pub upgrade_idle: HumanDuration,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            read: default_read_timeout(),
            request: None,
            upgrade_idle: default_upgrade_idle_timeout(),
        }
    }
}

fn default_upgrade_idle_timeout() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Total tries including the first (`1` = no retry). Each retry goes to a
    /// different endpoint when there is one.
    pub attempts: u32,
    /// When to retry: `connect-failure` (any method: the request never left),
    /// `reset`, `timeout`, `5xx`, or a status code like `502`/`503` (idempotent methods
    /// only).
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOnFile>,
    /// gRPC methods safe to repeat, `/package.Service/Method` or `/package.Service/*`:
    /// retried on a trailers-only UNAVAILABLE and on the `on:` conditions, like an
    /// idempotent request. Other gRPC calls (all POSTs) are retried only when they never
    /// left (`connect-failure`). As the sidecar's `retry.grpc_methods`.
    #[serde(default)]
    pub grpc_methods: Vec<String>,
}

fn default_retry_on() -> Vec<RetryOnFile> {
    vec![RetryCondition::ConnectFailure.into()]
}

/// A set of endpoints and how to pick one.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    #[serde(default)]
    pub balance: BalanceFile,
    /// For `consistent_hash`: what to hash.
    #[serde(default)]
    pub hash_on: Option<HashOnFile>,
    /// Prefer endpoints in the gateway's own zone while enough of them are healthy.
    #[serde(default)]
    pub zone_aware: Option<ZoneAwareFile>,
    #[serde(default)]
    pub endpoints: Vec<EndpointFile>,
    /// Or (and) discover endpoints from DNS, re-resolved periodically.
    #[serde(default)]
    pub discover: Option<DiscoverFile>,
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierFile>,
    /// Connect to the endpoints over TLS.
    #[serde(default)]
    pub tls: Option<UpstreamTlsFile>,
    /// HTTP version toward the endpoints: `http1` (default), `h2` (over `tls`, ALPN)
    /// or `h2c` (cleartext prior knowledge). gRPC needs `h2` or `h2c`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// At most this many requests in flight to the upstream at once (per gateway),
    /// whatever route they come from; then a bounded queue, then 503.
    #[serde(default)]
    pub concurrency: Option<ConcurrencyFile>,
    /// A limit on requests in flight that follows the upstream's latency: it shrinks
    /// when latency rises above the minimum seen, so a slow backend sheds load before
    /// it falls over. Off by default.
    #[serde(default)]
    pub adaptive_concurrency: Option<AdaptiveConcurrencyFile>,
    /// Sticky sessions: a client's requests keep going to the same endpoint while it is
    /// available (ALB's `lb_cookie` and `app_cookie` stickiness).
    #[serde(default)]
    pub sticky: Option<StickyFile>,
    /// A new or recovered endpoint's share of traffic ramps up linearly over this long
    /// (ALB: 30s to 900s; off by default). Round robin and least request only.
    #[serde(default)]
    pub slow_start: Option<HumanDuration>,
    /// An endpoint removed by a reload or by discovery gets no new requests, and its
    /// requests in flight (WebSockets included) get this long to finish (default 300s,
    /// as ALB; it ends early when nothing is in flight).
    #[serde(default = "default_deregistration_delay")]
    pub deregistration_delay: HumanDuration,
}

fn default_deregistration_delay() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// `routes[i].waf`: a policy name, or `{ policy: NAME, exclusions: [...] }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RouteWafFile {
    Name(String),
    WithExclusions(RouteWafPolicyFile),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteWafPolicyFile {
    pub policy: String,
    /// Added to the policy's own exclusions, for this route only.
    #[serde(default)]
    pub exclusions: Vec<tollgate_waf::spec::ExclusionSpec>,
}

/// `sticky`: which cookie keeps a client on its endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StickyFile {
    /// `lb_cookie`: the gateway issues a cookie naming the endpoint. `app_cookie`: the
    /// client stays on its endpoint while it carries the application's cookie `cookie`.
    #[serde(rename = "type")]
    pub kind: StickyKind,
    /// For `lb_cookie`, the gateway's cookie name (default `tollgate_sticky`); for
    /// `app_cookie`, the application's cookie (required), e.g. `JSESSIONID`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// How long the gateway's cookie lasts (default 1d; ALB: 1s to 7d).
    #[serde(default = "default_sticky_duration")]
    pub duration: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StickyKind {
    LbCookie,
    AppCookie,
}

fn default_sticky_duration() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConcurrencyFile {
    /// The limit never goes below this (default 3), nor above `max_limit` (default 1000).
    #[serde(default = "default_min_limit")]
    pub min_limit: u32,
    #[serde(default = "default_max_limit")]
    pub max_limit: u32,
    /// Latency tolerated above the minimum round-trip time before the limit shrinks
    /// (default 25%).
    #[serde(default = "default_buffer")]
    pub buffer: crate::units::Percent,
    /// How often the limit is recomputed from the latencies seen (default 100ms).
    #[serde(default = "default_sample_interval")]
    pub interval: HumanDuration,
    /// How often the minimum round-trip time is measured again, with the limit held at
    /// `min_limit` for `min_rtt_samples` requests (default 30s and 25).
    #[serde(default = "default_min_rtt_interval")]
    pub min_rtt_interval: HumanDuration,
    #[serde(default = "default_min_rtt_samples")]
    pub min_rtt_samples: u32,
}

fn default_min_limit() -> u32 {
    3
}

fn default_max_limit() -> u32 {
    1000
}

fn default_buffer() -> crate::units::Percent {
    crate::units::Percent::new_const(25.0)
}

fn default_sample_interval() -> HumanDuration {
    HumanDuration::from_millis(100)
}

fn default_min_rtt_interval() -> HumanDuration {
    HumanDuration::from_millis(30_000)
}

fn default_min_rtt_samples() -> u32 {
    25
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// Name sent as SNI and checked against the endpoint's certificate.
    pub sni: String,
    /// PEM CA certificates the endpoints' certificates must chain to (default: the
    /// system's trust store).
    #[serde(default)]
    pub ca: Option<String>,
    /// Verify the endpoint's certificate and name (default true; turn off only for tests).
    #[serde(default = "yes")]
    pub verify: bool,
    /// A certificate chain (PEM) shown to the endpoints when they ask for one (upstream
    /// mTLS: a service behind a sidecar, a backend that checks its callers). With
    /// `client_key`; both are read again when either file changes.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// The private key (PEM) of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Power of two random choices on in-flight requests (weighted).
    LeastRequest,
    /// Ring hash on `hash_on`: the same key keeps its endpoint while it is up.
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashOnFile {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub client_ip: bool,
}

/// Shared with the sidecar's dependencies.
pub use crate::common::locality::ZoneAwareFile;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    /// `IP:PORT`.
    pub address: String,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverFile {
    /// `NAME:PORT` resolved with the system resolver (a Kubernetes headless Service name
    /// yields one address per ready pod). Set exactly one of `dns` and `kubernetes`.
    #[serde(default)]
    pub dns: Option<String>,
    /// A Kubernetes Service's EndpointSlices, watched through the API server: each pod
    /// with its zone and readiness.
    #[serde(default)]
    pub kubernetes: Option<KubernetesDiscoverFile>,
    /// How often DNS is asked again (the Kubernetes watch is pushed to).
    #[serde(default = "default_discover_every")]
    pub every: HumanDuration,
    /// Zone given to discovered endpoints that come without one (DNS never has one).
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
}

pub use crate::common::kubernetes::{KubernetesDiscoverFile, PortRefFile};

fn default_discover_every() -> HumanDuration {
    HumanDuration::from_secs(5)
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    #[serde(default = "default_hc_path")]
    pub path: String,
    /// Host header sent with the check (default: the endpoint address).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_hc_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_hc_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive successes to become healthy.
    #[serde(default = "default_hc_healthy")]
    pub healthy: u32,
    /// Consecutive failures to become unhealthy.
    #[serde(default = "default_hc_unhealthy")]
    pub unhealthy: u32,
    /// Statuses that count as healthy: codes (`200`) or classes (`2xx`). Default 2xx and 3xx.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Check with `grpc.health.v1.Health/Check` (over HTTP/2: h2 with `tls`, h2c
    /// without) instead of `GET path`; `path` and `expect` do not apply.
    #[serde(default)]
    pub grpc: Option<GrpcHealthCheckFile>,
}

fn default_hc_path() -> String {
    "/healthz".into()
}
fn default_hc_interval() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_hc_timeout() -> HumanDuration {
    HumanDuration::from_millis(500)
}
fn default_hc_healthy() -> u32 {
    2
}
fn default_hc_unhealthy() -> u32 {
    3
}
