//! Upstreams: a set of endpoints (static or discovered from DNS), how one is picked
//! (balance, zone awareness), how their health is judged (active checks, outlier
//! detection), and TLS toward them; with their validation.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use crate::common::outlier_detection::{validate_outlier, Outlier};
use crate::common::{parse_socket_addr, resolve_path};
use crate::error::Problems;
use crate::gateway::file::{
    BalanceFile, DiscoverFile, EndpointFile, HashOnFile, HealthCheckFile, UpstreamFile,
};
pub use crate::gateway::grpc::UpstreamProtocol;

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub balance: Balance,
    pub zone_aware: Option<ZoneAware>,
    pub endpoints: Vec<Endpoint>,
    pub discover: Option<Discover>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    pub tls: Option<UpstreamTls>,
    pub protocol: UpstreamProtocol,
    pub concurrency: Option<super::route::Concurrency>,
    pub adaptive_concurrency: Option<AdaptiveConcurrency>,
    pub sticky: Option<Sticky>,
    pub slow_start: Option<Duration>,
    pub deregistration_delay: Duration,
}

/// `sticky`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// The application's cookie (`app_cookie`), whose presence keeps the client on
    /// its endpoint; `None` for `lb_cookie`.
    pub app_cookie: Option<String>,
    /// The gateway's own cookie, naming the endpoint.
    pub cookie: String,
    pub duration: Duration,
}

/// `adaptive_concurrency`, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConcurrency {
    pub min_limit: u32,
    pub max_limit: u32,
    /// Latency tolerated above the minimum, as a fraction (0.25).
    pub buffer: f64,
    pub interval: Duration,
    pub min_rtt_interval: Duration,
    pub min_rtt_samples: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub sni: String,
    pub ca: Option<PathBuf>,
    pub verify: bool,
    /// The certificate shown to endpoints that ask (upstream mTLS).
    pub client: Option<super::CertPaths>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    ConsistentHash(HashOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
}

pub use crate::common::locality::ZoneAware;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub zone: Option<String>,
    pub region: Option<String>,
    pub weight: u32,
    /// Terminating but still serving (Kubernetes): no new requests while other
    /// endpoints are available, used as a last resort otherwise.
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover {
    pub source: DiscoverSource,
    pub every: Duration,
    pub zone: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverSource {
    Dns { host: String, port: u16 },
    Kubernetes(KubernetesDiscover),
}

pub use crate::common::kubernetes::{KubernetesDiscover, PortRef};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
    /// Inclusive status ranges that count as healthy.
    pub expect: Vec<(u16, u16)>,
    /// `Some(service)`: a gRPC health check of that service instead of `GET path`.
    pub grpc_service: Option<String>,
}

impl HealthCheck {
    pub fn accepts(&self, status: u16) -> bool {
        self.expect
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Check one upstream; `None` when it has a problem (all of them are in `p`).
/// `zone` is the gateway's own, which zone awareness needs.
pub(super) fn validate_upstream(
    name: &str,
    u: &UpstreamFile,
    zone: Option<&str>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Upstream> {
    let at = format!("upstreams.{name}");
    let before = p.len();
    if name.trim().is_empty() {
        p.push(at.clone(), "upstream name must not be empty");
    }
    let balance = validate_balance(&at, u.balance, u.hash_on.as_ref(), p);
    let zone_aware = u.zone_aware.as_ref().map(|z| {
        if zone.is_none() {
            p.push(
                format!("{at}.zone_aware"),
                "needs the gateway's own zone: set top-level `zone:` or GATEWAY_ZONE",
            );
        }
        ZoneAware {
            min_local_healthy: z.min_local_healthy.fraction(),
        }
    });
    if u.endpoints.is_empty() && u.discover.is_none() {
        p.push(
            format!("{at}.endpoints"),
            "needs at least one endpoint or a `discover` block",
        );
    }
    let endpoints = validate_endpoints(&at, &u.endpoints, p);
    let discover = u
        .discover
        .as_ref()
        .and_then(|d| validate_discover(&at, d, base_dir, p));
    let health_check = u
        .health_check
        .as_ref()
        .map(|h| validate_health_check(&format!("{at}.health_check"), h, p));
    let outlier = u
        .outlier_detection
        .as_ref()
        .map(|o| validate_outlier(&format!("{at}.outlier_detection"), o, p));
    let tls = u.tls.as_ref().map(|t| {
        if t.sni.trim().is_empty() {
            p.push(format!("{at}.tls.sni"), "must not be empty");
        }
        let client = match (&t.client_cert, &t.client_key) {
            (Some(cert), Some(key)) => Some(super::CertPaths {
                cert: resolve_path(base_dir, cert),
                key: resolve_path(base_dir, key),
            }),
            (None, None) => None,
            (Some(_), None) => {
                p.push(
                    format!("{at}.tls.client_key"),
                    "client_cert needs client_key",
                );
                None
            }
            (None, Some(_)) => {
                p.push(
                    format!("{at}.tls.client_cert"),
                    "client_key needs client_cert",
                );
                None
            }
        };
        UpstreamTls {
            sni: t.sni.trim().to_owned(),
            ca: t.ca.as_deref().map(|c| resolve_path(base_dir, c)),
            verify: t.verify,
            client,
        }
    });
    match (u.protocol, &tls) {
        (UpstreamProtocol::H2, None) => p.push(
            format!("{at}.protocol"),
            "h2 is HTTP/2 over TLS (negotiated with ALPN): set `tls`, or use h2c for cleartext HTTP/2",
        ),
        (UpstreamProtocol::H2c, Some(_)) => p.push(
            format!("{at}.protocol"),
            "h2c is cleartext HTTP/2: with `tls` use h2",
        ),
        _ => {}
    }
    let concurrency = u
        .concurrency
        .as_ref()
        .map(|c| super::route::validate_concurrency(&format!("{at}.concurrency"), c, p));
    let adaptive_concurrency = u.adaptive_concurrency.as_ref().map(|a| {
        let at = format!("{at}.adaptive_concurrency");
        if a.min_limit == 0 || a.min_limit > a.max_limit || a.max_limit > 1_000_000 {
            p.push(
                format!("{at}.min_limit"),
                "need 1 <= min_limit <= max_limit <= 1000000",
            );
        }
        let interval = a.interval.get();
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
            p.push(format!("{at}.interval"), "must be between 10ms and 60s");
        }
        let min_rtt_interval = a.min_rtt_interval.get();
        if min_rtt_interval < interval * 10 {
            p.push(
                format!("{at}.min_rtt_interval"),
                "must be at least ten intervals",
            );
        }
        if a.min_rtt_samples == 0 || a.min_rtt_samples > 10_000 {
            p.push(
                format!("{at}.min_rtt_samples"),
                "must be between 1 and 10000",
            );
        }
        AdaptiveConcurrency {
            min_limit: a.min_limit.max(1),
            max_limit: a.max_limit.max(a.min_limit.max(1)),
            buffer: a.buffer.fraction(),
            interval,
            min_rtt_interval,
            min_rtt_samples: a.min_rtt_samples.max(1),
        }
    });
    let sticky = u.sticky.as_ref().and_then(|st| {
        let at = format!("{at}.sticky");
        let valid = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        let duration = st.duration.get();
        if duration < Duration::from_secs(1) || duration > Duration::from_secs(7 * 24 * 3600) {
            p.push(format!("{at}.duration"), "must be between 1s and 7d");
        }
        if matches!(balance, Balance::ConsistentHash(_)) {
            p.push(
                at.clone(),
                "consistent_hash is already sticky by its key; use round_robin or least_request",
            );
        }
        let cookie = st.cookie.as_deref().map(str::trim);
        if let Some(c) = cookie.filter(|c| !valid(c)) {
            p.push(
                format!("{at}.cookie"),
                format!("{c:?} is not a cookie name"),
            );
            return None;
        }
        Some(match (st.kind, cookie) {
            (crate::gateway::file::StickyKind::LbCookie, c) => Sticky {
                app_cookie: None,
                cookie: c.unwrap_or("tollgate_sticky").to_owned(),
                duration,
            },
            (crate::gateway::file::StickyKind::AppCookie, Some(c)) => Sticky {
                app_cookie: Some(c.to_owned()),
                cookie: format!("tollgate_sticky_{c}"),
                duration,
            },
            (crate::gateway::file::StickyKind::AppCookie, None) => {
                p.push(
                    format!("{at}.cookie"),
                    "app_cookie needs the application's cookie name (e.g. JSESSIONID)",
                );
                return None;
            }
        })
    });
    let slow_start = u.slow_start.map(|d| d.get());
    if let Some(d) = slow_start {
        if d < Duration::from_secs(1) || d > Duration::from_secs(900) {
            p.push(format!("{at}.slow_start"), "must be between 1s and 900s");
        }
        if matches!(balance, Balance::ConsistentHash(_)) {
            p.push(
                format!("{at}.slow_start"),
                "applies to round_robin and least_request only",
            );
        }
    }
    let deregistration_delay = u.deregistration_delay.get();
    if deregistration_delay > Duration::from_secs(3600) {
        p.push(
            format!("{at}.deregistration_delay"),
            "must be at most 3600s",
        );
    }
    if p.len() != before {
        return None;
    }
    Some(Upstream {
        sticky,
        slow_start,
        deregistration_delay,
        concurrency,
        adaptive_concurrency,
        name: name.to_owned(),
        balance,
        zone_aware,
        endpoints,
        discover,
        health_check,
        protocol: u.protocol,
        outlier,
        tls,
    })
}

fn validate_balance(
    at: &str,
    balance: BalanceFile,
    hash_on: Option<&HashOnFile>,
    p: &mut Problems,
) -> Balance {
    match (balance, hash_on) {
        (BalanceFile::ConsistentHash, None) => {
            p.push(
                format!("{at}.hash_on"),
                "consistent_hash needs `hash_on` (header, cookie or client_ip)",
            );
            Balance::RoundRobin
        }
        (BalanceFile::ConsistentHash, Some(h)) => match (&h.header, &h.cookie, h.client_ip) {
            (Some(hn), None, false) => match HeaderName::from_bytes(hn.as_bytes()) {
                Ok(hn) => Balance::ConsistentHash(HashOn::Header(hn)),
                Err(_) => {
                    p.push(format!("{at}.hash_on.header"), "not a valid header name");
                    Balance::RoundRobin
                }
            },
            (None, Some(c), false) => Balance::ConsistentHash(HashOn::Cookie(c.clone())),
            (None, None, true) => Balance::ConsistentHash(HashOn::ClientIp),
            _ => {
                p.push(
                    format!("{at}.hash_on"),
                    "set exactly one of `header`, `cookie`, `client_ip: true`",
                );
                Balance::RoundRobin
            }
        },
        (_, Some(_)) => {
            p.push(
                format!("{at}.hash_on"),
                "only used with `balance: consistent_hash`",
            );
            Balance::RoundRobin
        }
        (BalanceFile::RoundRobin, None) => Balance::RoundRobin,
        (BalanceFile::LeastRequest, None) => Balance::LeastRequest,
    }
}

fn validate_endpoints(at: &str, files: &[EndpointFile], p: &mut Problems) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in files.iter().enumerate() {
        let eat = format!("{at}.endpoints[{i}]");
        match parse_socket_addr(&e.address) {
            Ok(a) => {
                if !seen.insert(a) {
                    p.push(
                        format!("{eat}.address"),
                        format!("endpoint {a} is listed twice"),
                    );
                }
                if e.weight == 0 || e.weight > 10_000 {
                    p.push(format!("{eat}.weight"), "must be between 1 and 10000");
                }
                endpoints.push(Endpoint {
                    address: a,
                    zone: e.zone.clone(),
                    region: e.region.clone(),
                    weight: e.weight,
                    draining: false,
                });
            }
            Err(err) => p.push(
                format!("{eat}.address"),
                format!("{err}; for host names use `discover: {{ dns: NAME:PORT }}`"),
            ),
        }
    }
    endpoints
}

fn validate_discover(
    at: &str,
    d: &DiscoverFile,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Discover> {
    let source = match (&d.dns, &d.kubernetes) {
        (Some(dns), None) => match dns.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() => match port.parse::<u16>() {
                Ok(port) if port > 0 => DiscoverSource::Dns {
                    host: h.to_owned(),
                    port,
                },
                _ => {
                    p.push(format!("{at}.discover.dns"), "port must be 1..65535");
                    return None;
                }
            },
            _ => {
                p.push(format!("{at}.discover.dns"), "expected NAME:PORT");
                return None;
            }
        },
        (None, Some(k)) => {
            let kat = format!("{at}.discover.kubernetes");
            DiscoverSource::Kubernetes(crate::common::kubernetes::validate(&kat, k, base_dir, p))
        }
        _ => {
            p.push(
                format!("{at}.discover"),
                "set exactly one of `dns` and `kubernetes`",
            );
            return None;
        }
    };
    if d.every.get() < Duration::from_millis(100) {
        p.push(format!("{at}.discover.every"), "must be at least 100ms");
    }
    Some(Discover {
        source,
        every: d.every.get(),
        zone: d.zone.clone(),
        region: d.region.clone(),
    })
}

fn validate_health_check(hat: &str, h: &HealthCheckFile, p: &mut Problems) -> HealthCheck {
    if !h.path.starts_with('/') {
        p.push(format!("{hat}.path"), "must start with /");
    }
    if h.interval.get() < Duration::from_millis(10) {
        p.push(format!("{hat}.interval"), "must be at least 10ms");
    }
    if h.timeout.get().is_zero() {
        p.push(format!("{hat}.timeout"), "must be above 0");
    }
    if h.healthy == 0 {
        p.push(format!("{hat}.healthy"), "must be at least 1");
    }
    if h.unhealthy == 0 {
        p.push(format!("{hat}.unhealthy"), "must be at least 1");
    }
    let mut expect = Vec::new();
    for (i, e) in h.expect.iter().enumerate() {
        match parse_status_range(e) {
            Some(r) => expect.push(r),
            None => p.push(
                format!("{hat}.expect[{i}]"),
                format!("{e:?} is not a status (200) or class (2xx)"),
            ),
        }
    }
    if expect.is_empty() {
        expect.push((200, 399));
    }
    HealthCheck {
        path: h.path.clone(),
        host: h.host.clone(),
        interval: h.interval.get(),
        timeout: h.timeout.get(),
        healthy: h.healthy,
        unhealthy: h.unhealthy,
        expect,
        grpc_service: h.grpc.as_ref().map(|g| g.service.clone()),
    }
}

fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    if let Some(class) = s.strip_suffix("xx") {
        let c: u16 = class.parse().ok()?;
        return (1..=5).contains(&c).then_some((c * 100, c * 100 + 99));
    }
    let code: u16 = s.parse().ok()?;
    (100..600).contains(&code).then_some((code, code))
}
