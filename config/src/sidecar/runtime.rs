//! Runtime types: the sidecar's validated configuration.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use super::file::*;
use crate::common::outlier_detection::validate_outlier;
pub use crate::common::outlier_detection::Outlier;
pub use crate::common::retry::GrpcMethods;
use crate::common::retry::{
    validate_attempts, validate_grpc_methods, validate_retry_on, RetryConditions,
};
use crate::common::{parse_socket_addr, resolve_path};
use crate::error::Problems;
use crate::units::{parse_duration, Rate};

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// This sidecar's zone and region (`SIDECAR_ZONE`/`SIDECAR_REGION` first).
    pub zone: Option<String>,
    pub region: Option<String>,
    pub identity: IdentityPaths,
    pub inbound: Option<Inbound>,
    pub dependencies: BTreeMap<String, Dependency>,
    pub proxy_listen: Option<SocketAddr>,
    pub intercept: Option<Intercept>,
    pub admin_address: SocketAddr,
    pub threads: usize,
    pub drain_delay: Duration,
    pub grace_period: Duration,
    pub access_log: crate::common::telemetry::AccessLog,
    pub tracing: Option<crate::common::telemetry::Tracing>,
    /// `server.log_level`, checked.
    pub log_level: Option<String>,
}

/// The transparent-interception listener(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercept {
    pub listen: SocketAddr,
    pub listen_v6: Option<SocketAddr>,
    /// Connections to addresses no dependency lists are refused (else passed through).
    pub refuse_unknown: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trust_bundle: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub listen: SocketAddr,
    pub forward_to: SocketAddr,
    pub allow: Vec<AllowRule>,
    pub identity_header: HeaderName,
    pub timeout: Duration,
    pub app_protocol: AppProtocol,
    pub upgrade_idle_timeout: Duration,
}

/// The HTTP version spoken to the local app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocol {
    /// The calling app's version (see the sidecar crate's `inbound` module).
    Auto,
    Http1,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
}

impl AppProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Http1 => "http1",
            Self::H2c => "h2c",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub id: String,
    /// `None`: any path.
    pub path_prefix: Option<String>,
}

impl Inbound {
    /// Whether `caller` may call `path`. An empty allow-list admits any authenticated caller.
    pub fn allows(&self, caller: &str, path: &str) -> bool {
        self.allow.is_empty()
            || self.allow.iter().any(|r| {
                r.id == caller && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub name: String,
    pub listen: Option<SocketAddr>,
    /// Original destinations (intercepted) that mean this dependency.
    pub addresses: Vec<SocketAddr>,
    /// Static endpoints (resolved every `resolve_every`); may be empty with `discover`.
    pub endpoints: Vec<HostPort>,
    /// EndpointSlice discovery of the peer sidecars, merged with `endpoints`.
    pub discover: Option<KubernetesDiscover>,
    pub resolve_every: Duration,
    pub server_identity: String,
    pub http2: bool,
    pub timeout: Duration,
    pub per_try_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: Option<Retry>,
    pub breaker: Option<Breaker>,
    pub max_concurrent: u32,
    pub queue: u32,
    pub outlier: Option<Outlier>,
    pub hedge_after: Option<HedgeAfter>,
    pub rate_limit: Option<Rate>,
    pub fault: Option<Fault>,
    /// Upgraded streams (WebSocket) are closed after this long without a byte.
    pub upgrade_idle_timeout: Duration,
    pub zone_aware: Option<ZoneAware>,
    /// This sidecar's zone and region, copied here so a dependency's runtime needs
    /// nothing else to place its endpoints.
    pub own_zone: Option<String>,
    pub own_region: Option<String>,
}

pub use crate::common::kubernetes::{KubernetesDiscover, PortRef};
pub use crate::common::locality::ZoneAware;

/// Values taken from the environment rather than the file.
#[derive(Debug, Clone, Default)]
pub struct SidecarEnv {
    pub zone: Option<String>,
    pub region: Option<String>,
}

impl SidecarEnv {
    pub fn from_process_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            zone: get("SIDECAR_ZONE"),
            region: get("SIDECAR_REGION"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
    /// Where the endpoint is (every address of a name).
    pub zone: Option<String>,
    pub region: Option<String>,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Fraction of the request rate retries may add.
    pub budget: f64,
    pub min_per_second: u32,
    pub on_5xx: bool,
    pub statuses: Vec<u16>,
    pub on_reset: bool,
    pub on_connect_failure: bool,
    pub on_timeout: bool,
    pub max_body_bytes: usize,
    /// gRPC methods that may be retried (on UNAVAILABLE, and as idempotent requests).
    pub grpc_methods: GrpcMethods,
}

impl Retry {
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
    }
}

/// When a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeAfter {
    Fixed(Duration),
    /// `quantile` (0.5 ..= 0.999) of the recent successful tries' latency, clamped to
    /// `min ..= max`; `max` until enough tries have been seen.
    Percentile {
        quantile: f64,
        min: Duration,
        max: Duration,
    },
}

impl HedgeAfter {
    /// How the setting reads in the status view: `50ms`, `p95`.
    pub fn label(&self) -> String {
        match self {
            Self::Fixed(d) => crate::units::format_duration(*d),
            Self::Percentile { quantile, .. } => format!("p{}", quantile * 100.0),
        }
    }
}

fn validate_hedge_after(at: &str, h: &HedgeAfterFile, p: &mut Problems) -> HedgeAfter {
    let field = format!("{at}.hedge_after");
    let (quantile, min, max) = match *h {
        HedgeAfterFile::Fixed(d) => {
            if d.get().is_zero() {
                p.push(field, "must be above 0");
            }
            return HedgeAfter::Fixed(d.get());
        }
        HedgeAfterFile::Percentile(q) => (q, default_hedge_min(), default_hedge_max()),
        HedgeAfterFile::Adaptive(a) => (a.percentile, a.min, a.max),
    };
    let (min, max) = (min.get(), max.get());
    if max.is_zero() {
        p.push(format!("{field}.max"), "must be above 0");
    } else if min > max {
        p.push(format!("{field}.min"), "must not exceed `max`");
    }
    HedgeAfter::Percentile {
        quantile: quantile.fraction(),
        min,
        max,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    pub failure_rate: f64,
    pub slow_call: Option<Duration>,
    pub slow_call_rate: Option<f64>,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub half_open_probes: u32,
    pub observe_only: bool,
}

pub use crate::common::fault::Fault;

fn addr(s: &str, field: String, p: &mut Problems) -> Option<SocketAddr> {
    parse_socket_addr(s)
        .map_err(|e| p.push(field, e.to_string()))
        .ok()
}

fn spiffe_ok(id: &str) -> bool {
    id.strip_prefix("spiffe://").is_some_and(|rest| {
        !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
    })
}

/// Check a parsed file; relative identity paths are taken relative to `base_dir`
/// (the config file's directory).
pub fn validate(
    file: SidecarFile,
    env: &SidecarEnv,
    base_dir: &Path,
) -> Result<SidecarConfig, Problems> {
    let mut p = Problems::default();
    let zone = env.zone.clone().or(file.zone.clone());
    let region = env.region.clone().or(file.region.clone());
    for (field, v) in [("zone", &zone), ("region", &region)] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            p.push(field, "must not be empty");
        }
    }
    let path = |s: &str| resolve_path(base_dir, s);
    let identity = IdentityPaths {
        cert: path(&file.identity.cert),
        key: path(&file.identity.key),
        trust_bundle: path(&file.identity.trust_bundle),
    };
    let mut bound: HashSet<SocketAddr> = HashSet::new();
    let mut claim = |a: SocketAddr, field: String, p: &mut Problems| {
        if !bound.insert(a) {
            p.push(field, format!("address {a} is used twice"));
        }
    };

    let admin_address = addr(&file.admin.address, "admin.address".into(), &mut p)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 15000)));
    claim(admin_address, "admin.address".into(), &mut p);

    let inbound = file.inbound.as_ref().and_then(|i| {
        let listen = addr(&i.listen, "inbound.listen".into(), &mut p)?;
        claim(listen, "inbound.listen".into(), &mut p);
        let forward_to = addr(&i.forward_to, "inbound.forward_to".into(), &mut p)?;
        let mut allow = Vec::new();
        for (n, a) in i.allow.iter().enumerate() {
            let (id, path_prefix) = match a {
                AllowFile::Id(id) => (id.clone(), None),
                AllowFile::Rule(r) => (r.id.clone(), r.path_prefix.clone()),
            };
            if !spiffe_ok(&id) {
                p.push(
                    format!("inbound.allow[{n}]"),
                    format!("{id:?} is not a SPIFFE id (spiffe://trust-domain/path)"),
                );
            }
            if path_prefix
                .as_deref()
                .is_some_and(|pp| !pp.starts_with('/'))
            {
                p.push(
                    format!("inbound.allow[{n}].path_prefix"),
                    "must start with /",
                );
            }
            allow.push(AllowRule { id, path_prefix });
        }
        let identity_header = match HeaderName::from_bytes(i.identity_header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                p.push("inbound.identity_header", "not a valid header name");
                return None;
            }
        };
        let upgrade_idle_timeout = i.upgrade_idle_timeout.get();
        if upgrade_idle_timeout.is_zero() {
            p.push("inbound.upgrade_idle_timeout", "must be above 0");
        }
        Some(Inbound {
            upgrade_idle_timeout,
            listen,
            forward_to,
            allow,
            identity_header,
            timeout: i.timeout.get(),
            app_protocol: match i.app_protocol {
                AppProtocolFile::Auto => AppProtocol::Auto,
                AppProtocolFile::Http1 => AppProtocol::Http1,
                AppProtocolFile::H2c => AppProtocol::H2c,
            },
        })
    });

    let proxy_listen = file.proxy.as_ref().and_then(|x| {
        let a = addr(&x.listen, "proxy.listen".into(), &mut p)?;
        claim(a, "proxy.listen".into(), &mut p);
        Some(a)
    });

    let intercept = file.intercept.as_ref().and_then(|i| {
        let listen = addr(&i.listen, "intercept.listen".into(), &mut p)?;
        claim(listen, "intercept.listen".into(), &mut p);
        if !listen.is_ipv4() {
            p.push(
                "intercept.listen",
                "must be an IPv4 address (127.0.0.1:PORT); IPv6 goes in listen_v6",
            );
        }
        let listen_v6 = i.listen_v6.as_ref().and_then(|l| {
            let a = addr(l, "intercept.listen_v6".into(), &mut p)?;
            claim(a, "intercept.listen_v6".into(), &mut p);
            if !a.is_ipv6() || a.port() != listen.port() {
                p.push(
                    "intercept.listen_v6",
                    format!(
                        "must be an IPv6 address on the same port as listen, e.g. [::1]:{}",
                        listen.port()
                    ),
                );
            }
            Some(a)
        });
        Some(Intercept {
            listen,
            listen_v6,
            refuse_unknown: i.unknown == UnknownDestinationFile::Refuse,
        })
    });

    let mut intercepted: HashSet<SocketAddr> = HashSet::new();
    let mut dependencies = BTreeMap::new();
    for (name, d) in &file.outbound {
        let at = format!("outbound.{name}");
        let listen = d.listen.as_ref().and_then(|l| {
            let a = addr(l, format!("{at}.listen"), &mut p)?;
            claim(a, format!("{at}.listen"), &mut p);
            Some(a)
        });
        let mut addresses = Vec::new();
        for (n, a) in d.addresses.iter().enumerate() {
            let field = format!("{at}.addresses[{n}]");
            let Some(a) = addr(a, field.clone(), &mut p) else {
                continue;
            };
            if a.ip().is_unspecified() || a.port() == 0 {
                p.push(field, format!("{a} is not an address an app can call"));
            } else if a.ip().is_loopback() {
                p.push(
                    field,
                    "loopback destinations are never intercepted; use `listen`",
                );
            } else if !intercepted.insert(a) {
                p.push(field, format!("address {a} is listed by two dependencies"));
            } else {
                addresses.push(a);
            }
        }
        if !addresses.is_empty() && intercept.is_none() && file.intercept.is_none() {
            p.push(
                format!("{at}.addresses"),
                "needs a top-level `intercept` listener (and the rules of `sidecar iptables install`)",
            );
        }
        if d.listen.is_none() && d.addresses.is_empty() && proxy_listen.is_none() {
            p.push(
                format!("{at}.listen"),
                "needs `listen`, `addresses` (with `intercept`), or a top-level `proxy` listener to reach it by Host",
            );
        }
        let discover = d.discover.as_ref().map(|x| {
            crate::common::kubernetes::validate(
                &format!("{at}.discover.kubernetes"),
                &x.kubernetes,
                base_dir,
                &mut p,
            )
        });
        if d.endpoints.is_empty() && discover.is_none() {
            p.push(
                format!("{at}.endpoints"),
                "needs `endpoints` or `discover`: at least one HOST:PORT, or `discover: { kubernetes: { service: NAME, port: PORT } }`",
            );
        }
        let mut endpoints = Vec::new();
        for (n, ep) in d.endpoints.iter().enumerate() {
            let e = ep.address();
            let (ep_zone, ep_region) = match ep {
                DependencyEndpointFile::Address(_) => (None, None),
                DependencyEndpointFile::Located(l) => (l.zone.clone(), l.region.clone()),
            };
            match e.rsplit_once(':') {
                Some((h, port)) if !h.is_empty() => match port.parse::<u16>() {
                    Ok(port) if port > 0 => endpoints.push(HostPort {
                        host: h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                        port,
                        zone: ep_zone,
                        region: ep_region,
                    }),
                    _ => p.push(format!("{at}.endpoints[{n}]"), "port must be 1..65535"),
                },
                _ => p.push(
                    format!("{at}.endpoints[{n}]"),
                    format!("{e:?} is not HOST:PORT"),
                ),
            }
        }
        if !spiffe_ok(&d.server_identity) {
            p.push(
                format!("{at}.server_identity"),
                format!("{:?} is not a SPIFFE id", d.server_identity),
            );
        }
        let timeout = d.timeout.get();
        if timeout.is_zero() {
            p.push(format!("{at}.timeout"), "must be above 0");
        }
        let per_try_timeout = d.per_try_timeout.map_or(timeout, |t| t.get());
        if per_try_timeout.is_zero() || per_try_timeout > timeout {
            p.push(
                format!("{at}.per_try_timeout"),
                "must be above 0 and at most `timeout`",
            );
        }
        let connect_timeout = d
            .connect_timeout
            .map_or(Duration::from_secs(1).min(per_try_timeout), |t| t.get());
        let retry = d.retry.as_ref().map(|r| validate_retry(&at, r, &mut p));
        let breaker = d.circuit_breaker.as_ref().map(|b| {
            let bat = format!("{at}.circuit_breaker");
            if b.slow_call.is_some() != b.slow_call_rate.is_some() {
                p.push(
                    bat.clone(),
                    "set both `slow_call` and `slow_call_rate`, or neither",
                );
            }
            if b.window.get() < Duration::from_millis(100) {
                p.push(format!("{bat}.window"), "must be at least 100ms");
            }
            if b.half_open_probes == 0 {
                p.push(format!("{bat}.half_open_probes"), "must be at least 1");
            }
            if b.open_for.get().is_zero() || b.max_open_for < b.open_for {
                p.push(
                    format!("{bat}.open_for"),
                    "must be above 0 and at most max_open_for",
                );
            }
            Breaker {
                failure_rate: b.failure_rate.fraction(),
                slow_call: b.slow_call.map(|d| d.get()),
                slow_call_rate: b.slow_call_rate.map(|r| r.fraction()),
                min_requests: b.min_requests.max(1),
                window: b.window.get(),
                open_for: b.open_for.get(),
                max_open_for: b.max_open_for.get(),
                half_open_probes: b.half_open_probes,
                observe_only: b.observe_only,
            }
        });
        if d.max_concurrent == 0 {
            p.push(format!("{at}.max_concurrent"), "must be at least 1");
        }
        let outlier = d
            .outlier_detection
            .as_ref()
            .map(|o| validate_outlier(&format!("{at}.outlier_detection"), o, &mut p));
        let fault = d
            .fault
            .as_ref()
            .and_then(|f| crate::common::fault::validate_fault(&format!("{at}.fault"), f, &mut p));
        let hedge_after = d
            .hedge_after
            .as_ref()
            .map(|h| validate_hedge_after(&at, h, &mut p));
        let zone_aware = d.zone_aware.as_ref().map(|z| {
            if zone.is_none() {
                p.push(
                    format!("{at}.zone_aware"),
                    "needs the sidecar's own zone: set top-level `zone:` or SIDECAR_ZONE",
                );
            }
            // Discovered endpoints carry the zones of their EndpointSlices.
            if discover.is_none()
                && !endpoints.is_empty()
                && endpoints.iter().all(|e| e.zone.is_none())
            {
                p.push(
                    format!("{at}.zone_aware"),
                    "no endpoint has a zone: write endpoints as { address: HOST:PORT, zone: ZONE }",
                );
            }
            ZoneAware::from(z)
        });
        if d.upgrade_idle_timeout.get().is_zero() {
            p.push(format!("{at}.upgrade_idle_timeout"), "must be above 0");
        }
        if d.rate_limit.is_some_and(|r| r.count == 0) {
            p.push(format!("{at}.rate_limit"), "must allow at least 1 request");
        }
        dependencies.insert(
            name.clone(),
            Dependency {
                name: name.clone(),
                listen,
                addresses,
                endpoints,
                discover,
                resolve_every: d.resolve_every.get().max(Duration::from_millis(100)),
                server_identity: d.server_identity.clone(),
                http2: d.protocol == PeerProtocol::Http2,
                timeout,
                per_try_timeout,
                connect_timeout,
                retry,
                breaker,
                max_concurrent: d.max_concurrent.max(1),
                queue: d.queue,
                outlier,
                hedge_after,
                rate_limit: d.rate_limit,
                fault,
                upgrade_idle_timeout: d.upgrade_idle_timeout.get(),
                zone_aware,
                own_zone: zone.clone(),
                own_region: region.clone(),
            },
        );
    }

    let threads = match file.server.threads {
        Some(0) => {
            p.push("server.threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => 1,
    };
    let access_log =
        crate::common::telemetry::validate_access_log(file.access_log.as_ref(), base_dir, &mut p);
    let tracing =
        crate::common::telemetry::validate_tracing(file.tracing.as_ref(), "sidecar", &mut p);
    let log_level = crate::telemetry::validate_log_level(
        "server.log_level",
        file.server.log_level.as_deref(),
        &mut p,
    );
    if !p.is_empty() {
        return Err(p);
    }
    Ok(SidecarConfig {
        zone,
        region,
        log_level,
        access_log,
        tracing,
        identity,
        inbound,
        dependencies,
        proxy_listen,
        intercept,
        admin_address,
        threads,
        drain_delay: file.server.shutdown.drain_delay.get(),
        grace_period: file.server.shutdown.grace_period.get(),
    })
}

fn validate_retry(at: &str, r: &RetryPolicyFile, p: &mut Problems) -> Retry {
    let rat = format!("{at}.retry");
    validate_attempts(&format!("{rat}.attempts"), r.attempts, p);
    let (backoff_min, backoff_max) = match r.backoff.split_once("..") {
        Some((a, b)) => match (parse_duration(a), parse_duration(b)) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            (Ok(_), Ok(_)) => {
                p.push(format!("{rat}.backoff"), "MIN must not exceed MAX");
                (Duration::ZERO, Duration::ZERO)
            }
            (Err(e), _) | (_, Err(e)) => {
                p.push(format!("{rat}.backoff"), e.to_string());
                (Duration::ZERO, Duration::ZERO)
            }
        },
        None => {
            p.push(
                format!("{rat}.backoff"),
                "expected MIN..MAX, e.g. 25ms..250ms",
            );
            (Duration::ZERO, Duration::ZERO)
        }
    };
    let RetryConditions {
        connect_failure,
        reset,
        timeout,
        status_5xx,
        statuses,
    } = validate_retry_on(&format!("{rat}.on"), &r.on, p);
    Retry {
        attempts: r.attempts,
        backoff_min,
        backoff_max,
        budget: r.budget.fraction(),
        min_per_second: r.min_per_second,
        on_5xx: status_5xx,
        statuses,
        on_reset: reset,
        on_connect_failure: connect_failure,
        on_timeout: timeout,
        max_body_bytes: r.max_body_bytes,
        grpc_methods: validate_grpc_methods(&format!("{rat}.grpc_methods"), &r.grpc_methods, p),
    }
}
