//! Runtime types: the gateway's validated configuration. Durations are parsed,
//! addresses resolved to socket addresses, regexes compiled, references between
//! routes and upstreams checked. Built from [`super::file`] types by [`validate`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use regex::Regex;

use super::file::*;
use crate::error::Problems;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub zone: Option<String>,
    pub region: Option<String>,
    pub listeners: Vec<Listener>,
    pub admin_address: SocketAddr,
    pub threads: usize,
    pub work_stealing: bool,
    pub drain_delay: Duration,
    pub grace_period: Duration,
    pub max_request_header_bytes: usize,
    pub watch_config: bool,
    pub routes: Vec<Route>,
    pub upstreams: BTreeMap<String, Upstream>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub h2c: bool,
    pub tls: Option<ListenerTls>,
    /// Redirect every request to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub certificates: Vec<CertPaths>,
    pub default_certificate: Option<String>,
    pub min_tls13: bool,
    pub http2: bool,
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub required: bool,
    pub ca: PathBuf,
    pub identity_header: HeaderName,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// `Strict-Transport-Security` value for responses over HTTPS.
    pub hsts: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PathMatch {
    #[default]
    Any,
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub kind: HeaderMatchKind,
}

#[derive(Debug, Clone)]
pub enum HeaderMatchKind {
    Exact(String),
    Regex(Regex),
    Present(bool),
}

/// What a route does with a matched request. Later actions (redirect, fixed response)
/// become new variants.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to one upstream, or split by weight across several.
    Forward(Vec<WeightedUpstream>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedUpstream {
    pub upstream: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, first included.
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    pub on_5xx: bool,
    pub statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    /// Retrying a connect failure is always safe (the request never left), so that is
    /// on by default, once.
    fn default() -> Self {
        Self {
            attempts: 2,
            on_connect_failure: true,
            on_reset: false,
            on_timeout: false,
            on_5xx: false,
            statuses: Vec::new(),
        }
    }
}

impl RetryPolicy {
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
    }
}

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub sni: String,
    pub ca: Option<PathBuf>,
    pub verify: bool,
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

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneAware {
    /// Fraction in 0..=1.
    pub min_local_healthy: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub zone: Option<String>,
    pub region: Option<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover {
    pub host: String,
    pub port: u16,
    pub every: Duration,
    pub zone: Option<String>,
    pub region: Option<String>,
}

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
}

impl HealthCheck {
    pub fn accepts(&self, status: u16) -> bool {
        self.expect
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
    pub max_eject_for: Duration,
    /// Fraction in 0..=1.
    pub max_ejected: f64,
}

/// Values taken from the environment rather than the file.
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    pub zone: Option<String>,
    pub region: Option<String>,
}

impl EnvOverrides {
    pub fn from_process_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            zone: get("GATEWAY_ZONE"),
            region: get("GATEWAY_REGION"),
        }
    }
}

const MAX_RETRY_ATTEMPTS: u32 = 10;

/// Check a parsed file and build the runtime config, collecting every problem found.
/// Relative certificate paths are taken relative to `base_dir` (the config's directory).
pub fn validate(
    file: GatewayFile,
    env: &EnvOverrides,
    base_dir: &Path,
) -> Result<GatewayConfig, Problems> {
    let mut p = Problems::default();

    let zone = env.zone.clone().or(file.zone);
    let region = env.region.clone().or(file.region);

    // Listeners.
    if file.listeners.is_empty() {
        p.push("listeners", "at least one listener is required");
    }
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if !names.insert(l.name.as_str()) {
            p.push(
                format!("{at}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        match parse_socket_addr(&l.address) {
            Ok(a) => {
                if !addrs.insert(a) {
                    p.push(
                        format!("{at}.address"),
                        format!("address {a} is used twice"),
                    );
                }
                let tls = l
                    .tls
                    .as_ref()
                    .and_then(|t| validate_listener_tls(&at, t, base_dir, &mut p));
                if l.redirect_https && tls.is_some() {
                    p.push(
                        format!("{at}.redirect_https"),
                        "is for plain HTTP listeners",
                    );
                }
                let trusted_proxies = l
                    .trusted_proxies
                    .iter()
                    .enumerate()
                    .filter_map(|(j, c)| match parse_cidr(c) {
                        Ok(net) => Some(net),
                        Err(e) => {
                            p.push(format!("{at}.trusted_proxies[{j}]"), e);
                            None
                        }
                    })
                    .collect();
                listeners.push(Listener {
                    name: l.name.clone(),
                    address: a,
                    h2c: l.h2c,
                    tls,
                    redirect_https: l.redirect_https.then_some(l.https_port.unwrap_or(0)),
                    proxy_protocol: l.proxy_protocol,
                    trusted_proxies,
                });
            }
            Err(e) => p.push(format!("{at}.address"), e),
        }
    }
    // A redirect without an explicit port goes to the first TLS listener's port (443
    // when there is none: behind a load balancer that terminates TLS).
    let https_port = listeners
        .iter()
        .find(|l| l.tls.is_some())
        .map_or(443, |l| l.address.port());
    for l in &mut listeners {
        if l.redirect_https == Some(0) {
            l.redirect_https = Some(https_port);
        }
    }
    let admin_address = match parse_socket_addr(&file.admin.address) {
        Ok(a) => {
            if addrs.contains(&a) {
                p.push("admin.address", format!("{a} is also a traffic listener"));
            }
            a
        }
        Err(e) => {
            p.push("admin.address", e);
            SocketAddr::from(([127, 0, 0, 1], 9901))
        }
    };

    let threads = match file.server.threads {
        Some(0) => {
            p.push("server.threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let max_request_header_bytes = file.server.limits.max_request_header_bytes;
    if !(1024..=1024 * 1024).contains(&max_request_header_bytes) {
        p.push(
            "server.limits.max_request_header_bytes",
            "must be between 1024 and 1048576",
        );
    }

    // Upstreams first, so routes can be checked against them.
    let mut upstreams = BTreeMap::new();
    for (name, u) in &file.upstreams {
        if let Some(up) = validate_upstream(name, u, zone.as_deref(), base_dir, &mut p) {
            upstreams.insert(name.clone(), up);
        }
    }
    let defined = || {
        file.upstreams
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    for (i, r) in file.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if r.name.trim().is_empty() {
            p.push(format!("{at}.name"), "must not be empty");
        }
        if !route_names.insert(r.name.as_str()) {
            p.push(
                format!("{at}.name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        let matcher = validate_match(&at, &r.matcher, &mut p);
        let targets = match (&r.upstream, &r.split) {
            (Some(u), None) => vec![WeightedUpstream {
                upstream: u.clone(),
                weight: 1,
            }],
            (None, Some(split)) => {
                if split.is_empty() {
                    p.push(format!("{at}.split"), "must list at least one upstream");
                }
                if split.iter().all(|s| s.weight == 0) && !split.is_empty() {
                    p.push(format!("{at}.split"), "at least one weight must be above 0");
                }
                split
                    .iter()
                    .map(|s| WeightedUpstream {
                        upstream: s.upstream.clone(),
                        weight: s.weight,
                    })
                    .collect()
            }
            (Some(_), Some(_)) => {
                p.push(
                    format!("{at}.split"),
                    "set either `upstream` or `split`, not both",
                );
                Vec::new()
            }
            (None, None) => {
                p.push(at.clone(), "needs `upstream` or `split`");
                Vec::new()
            }
        };
        for (j, t) in targets.iter().enumerate() {
            if !file.upstreams.contains_key(&t.upstream) {
                let field = if r.split.is_some() {
                    format!("{at}.split[{j}].upstream")
                } else {
                    format!("{at}.upstream")
                };
                p.push(
                    field,
                    format!(
                        "upstream {:?} is not defined (defined: {})",
                        t.upstream,
                        defined()
                    ),
                );
            }
        }
        let retry = match &r.retry {
            None => RetryPolicy::default(),
            Some(rf) => validate_retry(&at, rf, &mut p),
        };
        let connect_timeout = r.timeouts.connect.get();
        let read_timeout = r.timeouts.read.get();
        if connect_timeout.is_zero() {
            p.push(format!("{at}.timeouts.connect"), "must be above 0");
        }
        if read_timeout.is_zero() {
            p.push(format!("{at}.timeouts.read"), "must be above 0");
        }
        let request_timeout = r.timeouts.request.map(|d| d.get());
        if request_timeout.is_some_and(|d| d.is_zero()) {
            p.push(format!("{at}.timeouts.request"), "must be above 0");
        }
        let hsts = r.hsts.as_ref().map(|h| {
            let mut v = format!("max-age={}", h.max_age.get().as_secs());
            if h.include_subdomains {
                v.push_str("; includeSubDomains");
            }
            if h.preload {
                v.push_str("; preload");
            }
            v
        });
        routes.push(Route {
            hsts,
            name: r.name.clone(),
            matcher,
            action: RouteAction::Forward(targets),
            connect_timeout,
            read_timeout,
            request_timeout,
            retry,
        });
    }

    if !p.is_empty() {
        return Err(p);
    }
    Ok(GatewayConfig {
        zone,
        region,
        listeners,
        admin_address,
        threads,
        work_stealing: file.server.work_stealing,
        drain_delay: file.server.shutdown.drain_delay.get(),
        grace_period: file.server.shutdown.grace_period.get(),
        max_request_header_bytes,
        watch_config: file.server.watch_config,
        routes,
        upstreams,
    })
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`10.1.2.3`, a /32 or /128).
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    match t.parse::<ipnet::IpNet>() {
        // `10.1.2.3/8` is almost certainly a typo for `10.0.0.0/8`: say so.
        Ok(net) if net.addr() != net.network() => Err(format!(
            "{s:?} has host bits set; did you mean {}/{}?",
            net.network(),
            net.prefix_len()
        )),
        Ok(net) => Ok(net),
        Err(_) => Err(format!(
            "{s:?} is not a CIDR or IP address (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"
        )),
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP:PORT address (e.g. 0.0.0.0:8080, [::1]:8080)"))
}

fn validate_match(at: &str, m: &MatchFile, p: &mut Problems) -> RouteMatch {
    let host = m.host.as_ref().and_then(|h| {
        let h = h.trim().to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        if let Some(rest) = h.strip_prefix("*.") {
            if valid(rest) {
                return Some(HostMatch::Suffix(format!(".{rest}")));
            }
        } else if valid(&h) {
            return Some(HostMatch::Exact(h));
        }
        p.push(
            format!("{at}.match.host"),
            format!("{h:?} is not a host name or a wildcard like *.example.com"),
        );
        None
    });
    let path = match (&m.path_prefix, &m.path_exact) {
        (Some(_), Some(_)) => {
            p.push(
                format!("{at}.match.path_exact"),
                "set either `path_prefix` or `path_exact`, not both",
            );
            PathMatch::Any
        }
        (Some(pre), None) if pre.starts_with('/') => {
            if pre == "/" {
                PathMatch::Any
            } else {
                PathMatch::Prefix(pre.clone())
            }
        }
        (None, Some(ex)) if ex.starts_with('/') => PathMatch::Exact(ex.clone()),
        (Some(_), None) => {
            p.push(format!("{at}.match.path_prefix"), "must start with /");
            PathMatch::Any
        }
        (None, Some(_)) => {
            p.push(format!("{at}.match.path_exact"), "must start with /");
            PathMatch::Any
        }
        (None, None) => PathMatch::Any,
    };
    let mut methods = Vec::new();
    for (i, name) in m.methods.iter().enumerate() {
        match Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes()) {
            Ok(mt) => methods.push(mt),
            Err(_) => p.push(
                format!("{at}.match.methods[{i}]"),
                format!("{name:?} is not an HTTP method"),
            ),
        }
    }
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let hat = format!("{at}.match.headers[{i}]");
        let name = match HeaderName::from_bytes(h.name.trim().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                p.push(
                    format!("{hat}.name"),
                    format!("{:?} is not a header name", h.name),
                );
                continue;
            }
        };
        let kind = match (&h.exact, &h.regex, h.present) {
            (Some(v), None, None) => HeaderMatchKind::Exact(v.clone()),
            (None, Some(r), None) => match Regex::new(r) {
                Ok(re) => HeaderMatchKind::Regex(re),
                Err(e) => {
                    p.push(format!("{hat}.regex"), format!("invalid regex: {e}"));
                    continue;
                }
            },
            (None, None, Some(b)) => HeaderMatchKind::Present(b),
            _ => {
                p.push(hat, "set exactly one of `exact`, `regex`, `present`");
                continue;
            }
        };
        headers.push(HeaderMatch { name, kind });
    }
    RouteMatch {
        host,
        path,
        methods,
        headers,
    }
}

fn validate_retry(at: &str, r: &RetryFile, p: &mut Problems) -> RetryPolicy {
    let mut policy = RetryPolicy {
        attempts: r.attempts,
        on_connect_failure: false,
        on_reset: false,
        on_timeout: false,
        on_5xx: false,
        statuses: Vec::new(),
    };
    if !(1..=MAX_RETRY_ATTEMPTS).contains(&r.attempts) {
        p.push(
            format!("{at}.retry.attempts"),
            format!("must be between 1 (no retry) and {MAX_RETRY_ATTEMPTS}"),
        );
    }
    for (i, on) in r.on.iter().enumerate() {
        match on {
            RetryOnFile::Status(s) if (500..600).contains(s) || *s == 429 || *s == 408 => {
                policy.statuses.push(*s)
            }
            RetryOnFile::Status(s) => p.push(
                format!("{at}.retry.on[{i}]"),
                format!("status {s} is not retryable (use a 5xx, 408 or 429)"),
            ),
            RetryOnFile::Name(n) => match n.as_str() {
                "connect-failure" => policy.on_connect_failure = true,
                "reset" => policy.on_reset = true,
                "timeout" => policy.on_timeout = true,
                "5xx" => policy.on_5xx = true,
                other => p.push(
                    format!("{at}.retry.on[{i}]"),
                    format!(
                        "unknown retry condition {other:?} (expected connect-failure, reset, timeout, 5xx or a status code)"
                    ),
                ),
            },
        }
    }
    policy
}

fn validate_upstream(
    name: &str,
    u: &UpstreamFile,
    zone: Option<&str>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Upstream> {
    let at = format!("upstreams.{name}");
    let before = p_len(p);
    if name.trim().is_empty() {
        p.push(at.clone(), "upstream name must not be empty");
    }
    let balance = match (u.balance, &u.hash_on) {
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
    };
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
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in u.endpoints.iter().enumerate() {
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
                });
            }
            Err(err) => p.push(
                format!("{eat}.address"),
                format!("{err}; for host names use `discover: {{ dns: NAME:PORT }}`"),
            ),
        }
    }
    let discover = u.discover.as_ref().and_then(|d| {
        let (host, port) = match d.dns.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() => match port.parse::<u16>() {
                Ok(port) if port > 0 => (h.to_owned(), port),
                _ => {
                    p.push(format!("{at}.discover.dns"), "port must be 1..65535");
                    return None;
                }
            },
            _ => {
                p.push(format!("{at}.discover.dns"), "expected NAME:PORT");
                return None;
            }
        };
        if d.every.get() < Duration::from_millis(100) {
            p.push(format!("{at}.discover.every"), "must be at least 100ms");
        }
        Some(Discover {
            host,
            port,
            every: d.every.get(),
            zone: d.zone.clone(),
            region: d.region.clone(),
        })
    });
    let health_check = u.health_check.as_ref().map(|h| {
        let hat = format!("{at}.health_check");
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
        }
    });
    let outlier = u
        .outlier_detection
        .as_ref()
        .map(|o| validate_outlier(&format!("{at}.outlier_detection"), o, p));
    let tls = u.tls.as_ref().map(|t| {
        if t.sni.trim().is_empty() {
            p.push(format!("{at}.tls.sni"), "must not be empty");
        }
        UpstreamTls {
            sni: t.sni.trim().to_owned(),
            ca: t.ca.as_ref().map(|c| {
                let pb = PathBuf::from(c);
                if pb.is_absolute() {
                    pb
                } else {
                    base_dir.join(pb)
                }
            }),
            verify: t.verify,
        }
    });
    if p_len(p) != before {
        return None;
    }
    Some(Upstream {
        name: name.to_owned(),
        balance,
        zone_aware,
        endpoints,
        discover,
        health_check,
        outlier,
        tls,
    })
}

fn p_len(p: &Problems) -> usize {
    p.len()
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

/// Shared by the gateway's upstreams and the sidecar's dependencies.
pub(crate) fn validate_outlier(at: &str, o: &OutlierFile, p: &mut Problems) -> Outlier {
    if o.consecutive_failures == 0 {
        p.push(format!("{at}.consecutive_failures"), "must be at least 1");
    }
    if o.eject_for.get().is_zero() {
        p.push(format!("{at}.eject_for"), "must be above 0");
    }
    if o.max_eject_for < o.eject_for {
        p.push(format!("{at}.max_eject_for"), "must be at least eject_for");
    }
    Outlier {
        consecutive_failures: o.consecutive_failures,
        eject_for: o.eject_for.get(),
        max_eject_for: o.max_eject_for.get(),
        max_ejected: o.max_ejected.fraction(),
    }
}

fn validate_listener_tls(
    at: &str,
    t: &ListenerTlsFile,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<ListenerTls> {
    let tat = format!("{at}.tls");
    let path = |s: &str| {
        let pb = PathBuf::from(s);
        if pb.is_absolute() {
            pb
        } else {
            base_dir.join(pb)
        }
    };
    if t.certificates.is_empty() {
        p.push(
            format!("{tat}.certificates"),
            "at least one certificate is required",
        );
    }
    let min_tls13 = match t.min_version.trim() {
        "1.2" => false,
        "1.3" => true,
        other => {
            p.push(
                format!("{tat}.min_version"),
                format!("{other:?} is not supported: use \"1.2\" or \"1.3\" (older versions are never offered)"),
            );
            false
        }
    };
    let client_auth = t.client_auth.as_ref().and_then(|c| {
        let required = match c.mode.as_str() {
            "required" => true,
            "optional" => false,
            other => {
                p.push(
                    format!("{tat}.client_auth.mode"),
                    format!("{other:?}: expected required or optional"),
                );
                return None;
            }
        };
        let identity_header = match HeaderName::from_bytes(c.identity_header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                p.push(
                    format!("{tat}.client_auth.identity_header"),
                    "not a header name",
                );
                return None;
            }
        };
        Some(ClientAuth {
            required,
            ca: path(&c.ca),
            identity_header,
        })
    });
    Some(ListenerTls {
        certificates: t
            .certificates
            .iter()
            .map(|c| CertPaths {
                cert: path(&c.cert),
                key: path(&c.key),
            })
            .collect(),
        default_certificate: t.default_certificate.clone(),
        min_tls13,
        http2: t.http2,
        client_auth,
    })
}
