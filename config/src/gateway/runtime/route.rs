//! Routes: which requests (match) go where (action), with which timeouts and retries,
//! and their validation against the defined upstreams.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::{HeaderName, Method};
use regex::Regex;

use crate::common::retry::{
    validate_attempts, validate_grpc_methods, validate_retry_on, GrpcMethods, RetryConditions,
};
use crate::error::Problems;
use crate::gateway::actions::{
    validate_fixed_response, validate_header_ops, validate_query_match, validate_redirect,
    validate_rewrite, FixedResponse, HeaderOps, QueryMatch, Redirect, Rewrite, Wildcard,
};
use crate::gateway::file::{MatchFile, RetryFile, RouteFile, UpstreamFile};
use crate::gateway::ratelimit::{route_policies, RateLimitFile};

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// For upgraded connections (WebSockets), in place of the read timeout.
    pub upgrade_idle_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// `Strict-Transport-Security` value for responses over HTTPS.
    pub hsts: Option<String>,
    /// Names of the rate-limit policies the route applies, in order.
    pub rate_limits: Vec<String>,
    pub access_log: crate::common::telemetry::RouteAccessLog,
    pub concurrency: Option<Concurrency>,
    pub idempotency: Option<crate::gateway::Idempotency>,
    pub fault: Option<crate::common::fault::Fault>,
    pub rewrite: Option<Rewrite>,
    /// Largest request body accepted (413 beyond).
    pub max_request_body: Option<u64>,
    /// The route's WAF policy, compiled.
    pub waf: Option<RouteWaf>,
    /// The route's authentication policy.
    pub auth: Option<crate::gateway::auth::RouteAuth>,
    /// Transforms of the request sent upstream (empty: none).
    pub request_headers: HeaderOps,
    /// Transforms of the response sent to the client (empty: none).
    pub response_headers: HeaderOps,
}

/// `routes[i].waf`: the policy's name and the policy compiled for this route (its
/// own exclusions included).
#[derive(Debug, Clone)]
pub struct RouteWaf {
    pub name: String,
    pub policy: std::sync::Arc<tollgate_waf::Policy>,
}

/// `routes[i].concurrency`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub max: u32,
    pub queue: u32,
    pub queue_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderMatch>,
    /// Each must hold.
    pub query: Vec<QueryMatch>,
    /// Empty: any client; else the client address is in one of these.
    pub source_ip: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
    /// Any other wildcard pattern (`api-?.example.*`), case-insensitive.
    Pattern(Wildcard),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PathMatch {
    #[default]
    Any,
    Prefix(String),
    Exact(String),
    /// An ALB path pattern over the whole path.
    Pattern(Wildcard),
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

/// What a route does with a matched request.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to one upstream, or split by weight across several.
    Forward(Vec<WeightedUpstream>),
    Redirect(Redirect),
    Fixed(FixedResponse),
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
    /// gRPC methods that may be retried (on UNAVAILABLE, and as idempotent requests).
    pub grpc_methods: GrpcMethods,
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
            grpc_methods: GrpcMethods::default(),
        }
    }
}

impl RetryPolicy {
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
    }
}

/// Check every route; `upstreams` are the defined ones, which routes must name.
pub(super) fn validate_routes(
    files: &[RouteFile],
    upstreams: &BTreeMap<String, UpstreamFile>,
    rate_limits: &BTreeMap<String, RateLimitFile>,
    waf: &crate::gateway::waf::Policies,
    auth: &crate::gateway::auth::AuthFile,
    has_redis: bool,
    p: &mut Problems,
) -> Vec<Route> {
    let mut names = HashSet::new();
    files
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("routes[{i}]");
            if r.name.trim().is_empty() {
                p.push(format!("{at}.name"), "must not be empty");
            }
            if !names.insert(r.name.as_str()) {
                p.push(
                    format!("{at}.name"),
                    format!("duplicate route name {:?}", r.name),
                );
            }
            let mut route = validate_route(&at, r, upstreams, p);
            route.rate_limits = route_policies(&at, &r.rate_limit, rate_limits, p);
            route.waf = r
                .waf
                .as_ref()
                .and_then(|w| waf.for_route(&format!("{at}.waf"), w, p));
            route.auth = r.auth.as_ref().and_then(|a| {
                crate::gateway::auth::validate_route_auth(&format!("{at}.auth"), a, auth, p)
            });
            for name in &route.rate_limits {
                let keyed_on_claims = rate_limits.get(name).is_some_and(|l| {
                    l.key
                        .as_slice()
                        .iter()
                        .any(|k| k.trim_start().starts_with("claim:"))
                });
                if keyed_on_claims && !matches!(route.auth, Some(crate::gateway::auth::RouteAuth::Jwt(_))) {
                    p.push(
                        format!("{at}.rate_limit"),
                        format!("policy {name:?} is keyed on claims: the route needs `auth: {{ jwt: POLICY }}`"),
                    );
                }
            }
            route.idempotency = r.idempotency.as_ref().map(|f| {
                crate::gateway::idempotency::validate_idempotency(
                    &format!("{at}.idempotency"),
                    f,
                    has_redis,
                    route.request_timeout,
                    p,
                )
            });
            route.fault = r
                .fault
                .as_ref()
                .and_then(|f| crate::common::fault::validate_fault(&format!("{at}.fault"), f, p));
            route
        })
        .collect()
}

fn validate_route(
    at: &str,
    r: &RouteFile,
    upstreams: &BTreeMap<String, UpstreamFile>,
    p: &mut Problems,
) -> Route {
    let matcher = validate_match(at, &r.matcher, p);
    let action = match (&r.redirect, &r.fixed_response) {
        (Some(_), Some(_)) => {
            p.push(
                format!("{at}.fixed_response"),
                "set one action: `upstream`/`split`, `redirect` or `fixed_response`",
            );
            RouteAction::Forward(Vec::new())
        }
        (Some(red), None) => {
            if r.upstream.is_some() || r.split.is_some() {
                p.push(
                    format!("{at}.redirect"),
                    "set one action: `upstream`/`split`, `redirect` or `fixed_response`",
                );
            }
            RouteAction::Redirect(validate_redirect(&format!("{at}.redirect"), red, p))
        }
        (None, Some(f)) => {
            if r.upstream.is_some() || r.split.is_some() {
                p.push(
                    format!("{at}.fixed_response"),
                    "set one action: `upstream`/`split`, `redirect` or `fixed_response`",
                );
            }
            RouteAction::Fixed(validate_fixed_response(
                &format!("{at}.fixed_response"),
                f,
                p,
            ))
        }
        (None, None) => RouteAction::Forward(validate_targets(at, r, upstreams, p)),
    };
    let forwards = matches!(action, RouteAction::Forward(_));
    for (set, field) in [
        (r.rewrite.is_some(), "rewrite"),
        (r.request_headers.is_some(), "request_headers"),
    ] {
        if set && !forwards {
            p.push(
                format!("{at}.{field}"),
                "applies to forwarded requests only; this route answers itself",
            );
        }
    }
    let matched_prefix = match &matcher.path {
        PathMatch::Prefix(pre) => Some(pre.as_str()),
        _ => r.matcher.path_prefix.as_deref(),
    };
    let rewrite = r
        .rewrite
        .as_ref()
        .map(|rw| validate_rewrite(&format!("{at}.rewrite"), rw, matched_prefix, p));
    let request_headers = r
        .request_headers
        .as_ref()
        .map(|h| validate_header_ops(&format!("{at}.request_headers"), h, p))
        .unwrap_or_default();
    let response_headers = r
        .response_headers
        .as_ref()
        .map(|h| validate_header_ops(&format!("{at}.response_headers"), h, p))
        .unwrap_or_default();
    let retry = match &r.retry {
        None => RetryPolicy::default(),
        Some(rf) => validate_retry(at, rf, p),
    };
    let connect_timeout = r.timeouts.connect.get();
    let read_timeout = r.timeouts.read.get();
    let upgrade_idle_timeout = r.timeouts.upgrade_idle.get();
    if upgrade_idle_timeout.is_zero() {
        p.push(format!("{at}.timeouts.upgrade_idle"), "must be above 0");
    }
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
    Route {
        hsts,
        name: r.name.clone(),
        matcher,
        action,
        rewrite,
        max_request_body: r.max_request_body.map(|b| b.get()),
        waf: None,
        auth: None,
        request_headers,
        response_headers,
        connect_timeout,
        read_timeout,
        upgrade_idle_timeout,
        request_timeout,
        retry,
        rate_limits: Vec::new(),
        access_log: crate::common::telemetry::validate_route_access_log(r.access_log.as_ref()),
        idempotency: None,
        fault: None,
        concurrency: r
            .concurrency
            .as_ref()
            .map(|c| validate_concurrency(&format!("{at}.concurrency"), c, p)),
    }
}

/// `concurrency` of a route or an upstream.
pub(super) fn validate_concurrency(
    at: &str,
    c: &crate::gateway::file::ConcurrencyFile,
    p: &mut Problems,
) -> Concurrency {
    if !(1..=1_000_000).contains(&c.max) {
        p.push(format!("{at}.max"), "must be between 1 and 1000000");
    }
    if c.queue > 1_000_000 {
        p.push(format!("{at}.queue"), "must be at most 1000000");
    }
    let t = c.queue_timeout.get();
    if t.is_zero() || t > Duration::from_secs(60) {
        p.push(
            format!("{at}.queue_timeout"),
            "must be above 0 and at most 60s",
        );
    }
    Concurrency {
        max: c.max.max(1),
        queue: c.queue,
        queue_timeout: t,
    }
}

/// `upstream: NAME` or `split: [...]`, each naming a defined upstream.
fn validate_targets(
    at: &str,
    r: &RouteFile,
    upstreams: &BTreeMap<String, UpstreamFile>,
    p: &mut Problems,
) -> Vec<WeightedUpstream> {
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
            p.push(at, "needs `upstream` or `split`");
            Vec::new()
        }
    };
    for (j, t) in targets.iter().enumerate() {
        if !upstreams.contains_key(&t.upstream) {
            let field = if r.split.is_some() {
                format!("{at}.split[{j}].upstream")
            } else {
                format!("{at}.upstream")
            };
            let defined = upstreams.keys().cloned().collect::<Vec<_>>().join(", ");
            p.push(
                field,
                format!(
                    "upstream {:?} is not defined (defined: {defined})",
                    t.upstream
                ),
            );
        }
    }
    targets
}

fn validate_match(at: &str, m: &MatchFile, p: &mut Problems) -> RouteMatch {
    let host = m.host.as_ref().and_then(|h| {
        let h = h.trim().to_ascii_lowercase();
        let valid = |s: &str, wild: bool| {
            !s.is_empty()
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || c == '.' || (wild && "*?".contains(c))
                })
        };
        if let Some(rest) = h.strip_prefix("*.").filter(|r| valid(r, false)) {
            return Some(HostMatch::Suffix(format!(".{rest}")));
        }
        if valid(&h, false) {
            return Some(HostMatch::Exact(h));
        }
        if valid(&h, true) {
            if let Ok(w) = Wildcard::new(&h, true) {
                return Some(HostMatch::Pattern(w));
            }
        }
        p.push(
            format!("{at}.match.host"),
            format!("{h:?} is not a host name or a wildcard like *.example.com or api-?.example.*"),
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
    let path = match (&m.path, path) {
        (None, path) => path,
        (Some(_), PathMatch::Prefix(_) | PathMatch::Exact(_)) => {
            p.push(
                format!("{at}.match.path"),
                "set one of `path`, `path_prefix`, `path_exact`",
            );
            PathMatch::Any
        }
        (Some(pat), _) if !pat.starts_with('/') && !pat.starts_with('*') => {
            p.push(format!("{at}.match.path"), "must start with / (or *)");
            PathMatch::Any
        }
        (Some(pat), _) if !Wildcard::has_wildcard(pat) => PathMatch::Exact(pat.clone()),
        (Some(pat), _) => match Wildcard::new(pat, false) {
            Ok(w) => PathMatch::Pattern(w),
            Err(e) => {
                p.push(format!("{at}.match.path"), e);
                PathMatch::Any
            }
        },
    };
    let query = m
        .query
        .iter()
        .enumerate()
        .filter_map(|(i, q)| validate_query_match(&format!("{at}.match.query[{i}]"), q, p))
        .collect();
    let mut source_ip = Vec::new();
    for (i, c) in m.source_ip.iter().enumerate() {
        match super::listener::parse_cidr(c) {
            Ok(net) => source_ip.push(net),
            Err(e) => p.push(format!("{at}.match.source_ip[{i}]"), e),
        }
    }
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
        query,
        source_ip,
    }
}

fn validate_retry(at: &str, r: &RetryFile, p: &mut Problems) -> RetryPolicy {
    validate_attempts(&format!("{at}.retry.attempts"), r.attempts, p);
    let RetryConditions {
        connect_failure,
        reset,
        timeout,
        status_5xx,
        statuses,
    } = validate_retry_on(&format!("{at}.retry.on"), &r.on, p);
    RetryPolicy {
        attempts: r.attempts,
        on_connect_failure: connect_failure,
        on_reset: reset,
        on_timeout: timeout,
        on_5xx: status_5xx,
        statuses,
        grpc_methods: validate_grpc_methods(
            &format!("{at}.retry.grpc_methods"),
            &r.grpc_methods,
            p,
        ),
    }
}
