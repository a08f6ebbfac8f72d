//! Route matching.
//!
//! Most specific wins, decided in this order:
//! 1. host: exact host, then wildcard suffixes (`*.example.com`, longest first), then
//!    other host patterns (`api-?.example.*`, most literal characters first), then
//!    routes without host;
//! 2. within a host group, path: exact path, then prefixes and path patterns by their
//!    literal characters (`/api/*/users` counts 10, before the prefix `/api/`), then no
//!    path condition;
//! 3. then routes with more method, header, query and source-IP conditions;
//! 4. then the order in the file.
//!
//! The first route (in that order) whose every condition holds takes the request.

use std::collections::HashMap;
use std::net::IpAddr;

use http::HeaderMap;
use http::Method;
use tollgate_config::gateway::actions::Wildcard;
use tollgate_config::gateway::{HeaderMatchKind, HostMatch, PathMatch, Route, RouteMatch};

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<usize>>,
    /// (".example.com", routes) sorted by suffix length, longest first.
    suffix: Vec<(String, Vec<usize>)>,
    /// Other host patterns, most literal characters first.
    patterns: Vec<(Wildcard, Vec<usize>)>,
    any_host: Vec<usize>,
}

/// What route conditions look at.
pub struct MatchRequest<'a> {
    /// Normalized ([`normalize_host`]).
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The client's address after trusted proxies.
    pub client_ip: Option<IpAddr>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        let mut r = Router::default();
        for (i, route) in routes.iter().enumerate() {
            match &route.matcher.host {
                Some(HostMatch::Exact(h)) => r.exact.entry(h.clone()).or_default().push(i),
                Some(HostMatch::Suffix(s)) => match r.suffix.iter_mut().find(|(k, _)| k == s) {
                    Some((_, v)) => v.push(i),
                    None => r.suffix.push((s.clone(), vec![i])),
                },
                Some(HostMatch::Pattern(w)) => match r.patterns.iter_mut().find(|(k, _)| k == w) {
                    Some((_, v)) => v.push(i),
                    None => r.patterns.push((w.clone(), vec![i])),
                },
                None => r.any_host.push(i),
            }
        }
        let by_specificity = |v: &mut Vec<usize>| {
            // Stable sort keeps file order among equals.
            v.sort_by_key(|&i| std::cmp::Reverse(specificity(&routes[i].matcher)));
        };
        r.exact.values_mut().for_each(by_specificity);
        r.suffix.iter_mut().for_each(|(_, v)| by_specificity(v));
        by_specificity(&mut r.any_host);
        r.patterns.iter_mut().for_each(|(_, v)| by_specificity(v));
        r.suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        r.patterns
            .sort_by_key(|(w, _)| std::cmp::Reverse(w.literal_len));
        r
    }

    /// Index of the route for this request, if any.
    pub fn find(&self, routes: &[Route], req: &MatchRequest<'_>) -> Option<usize> {
        let host = req.host;
        let hit = |group: &[usize]| {
            group
                .iter()
                .copied()
                .find(|&i| matches_rest(&routes[i].matcher, req))
        };
        if let Some(g) = self.exact.get(host) {
            if let Some(i) = hit(g) {
                return Some(i);
            }
        }
        for (suffix, g) in &self.suffix {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(i) = hit(g) {
                    return Some(i);
                }
            }
        }
        for (pattern, g) in &self.patterns {
            if pattern.is_match(host) {
                if let Some(i) = hit(g) {
                    return Some(i);
                }
            }
        }
        hit(&self.any_host)
    }
}

fn specificity(m: &RouteMatch) -> (u8, usize, usize) {
    let (kind, len) = match &m.path {
        PathMatch::Exact(p) => (2, p.len()),
        PathMatch::Prefix(p) => (1, p.len()),
        PathMatch::Pattern(w) => (1, w.literal_len),
        PathMatch::Any => (0, 0),
    };
    (
        kind,
        len,
        usize::from(!m.methods.is_empty())
            + m.headers.len()
            + m.query.len()
            + usize::from(!m.source_ip.is_empty()),
    )
}

fn matches_rest(m: &RouteMatch, req: &MatchRequest<'_>) -> bool {
    let path = req.path;
    let path_ok = match &m.path {
        PathMatch::Any => true,
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        PathMatch::Pattern(w) => w.is_match(path),
    };
    path_ok
        && (m.methods.is_empty() || m.methods.contains(req.method))
        && (m.source_ip.is_empty()
            || req
                .client_ip
                .is_some_and(|ip| m.source_ip.iter().any(|n| n.contains(&ip))))
        && m.query.iter().all(|q| q.matches(req.query))
        && m.headers.iter().all(|h| {
            let v = req.headers.get(&h.name);
            match &h.kind {
                HeaderMatchKind::Present(want) => v.is_some() == *want,
                HeaderMatchKind::Exact(x) => v.is_some_and(|v| v.as_bytes() == x.as_bytes()),
                HeaderMatchKind::Regex(re) => v
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| re.is_match(v)),
            }
        })
}

/// Normalize the request's host for matching: lower case, no port, no trailing dot.
pub fn normalize_host(raw: &str) -> String {
    if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        let inner = raw.split_once(']').map_or(raw, |(a, _)| a);
        let mut h = String::with_capacity(inner.len() + 1);
        h.push_str(inner);
        h.push(']');
        h.make_ascii_lowercase();
        return h;
    }
    let h = raw.rsplit_once(':').map_or(raw, |(h, _)| h);
    // One allocation, on every request.
    let mut h = h.trim_end_matches('.').to_owned();
    h.make_ascii_lowercase();
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;
    use tollgate_config::gateway::{from_str, EnvOverrides};

    fn routes(yaml_routes: &str) -> Vec<Route> {
        let src = format!(
            "listeners: [{{ name: h, address: 127.0.0.1:1 }}]\nupstreams: {{ u: {{ endpoints: [{{ address: 127.0.0.1:2 }}] }} }}\nroutes:\n{yaml_routes}"
        );
        from_str(Path::new("t.yaml"), &src, &EnvOverrides::default())
            .unwrap()
            .config
            .routes
    }

    fn find(
        routes: &[Route],
        host: &str,
        path: &str,
        method: Method,
        hdr: &[(&str, &str)],
    ) -> Option<String> {
        let mut h = HeaderMap::new();
        for (k, v) in hdr {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let host = normalize_host(host);
        let req = MatchRequest {
            host: &host,
            path,
            query,
            method: &method,
            headers: &h,
            client_ip: Some("10.1.2.3".parse().unwrap()),
        };
        Router::new(routes)
            .find(routes, &req)
            .map(|i| routes[i].name.clone())
    }

    #[test]
    fn most_specific_wins() {
        let r = routes(
            r#"
  - { name: catch-all, upstream: u }
  - { name: wild, upstream: u, match: { host: "*.example.com" } }
  - { name: wild-deep, upstream: u, match: { host: "*.eu.example.com" } }
  - { name: api, upstream: u, match: { host: api.example.com, path_prefix: /v1/ } }
  - { name: api-users, upstream: u, match: { host: api.example.com, path_prefix: /v1/users } }
  - { name: api-exact, upstream: u, match: { host: api.example.com, path_exact: /v1/health } }
  - { name: api-post, upstream: u, match: { host: api.example.com, path_prefix: /v1/, methods: [POST] } }
  - { name: canary, upstream: u, match: { path_prefix: /v1/, headers: [{ name: x-canary, exact: "1" }] } }
"#,
        );
        let g = |host, path| find(&r, host, path, Method::GET, &[]);
        assert_eq!(
            g("api.example.com", "/v1/users/7").as_deref(),
            Some("api-users")
        );
        assert_eq!(g("API.example.com:8080", "/v1/x").as_deref(), Some("api"));
        assert_eq!(
            g("api.example.com", "/v1/health").as_deref(),
            Some("api-exact")
        );
        assert_eq!(
            find(&r, "api.example.com", "/v1/x", Method::POST, &[]).as_deref(),
            Some("api-post")
        );
        assert_eq!(g("api.example.com", "/other").as_deref(), Some("wild"));
        assert_eq!(g("x.eu.example.com", "/").as_deref(), Some("wild-deep"));
        assert_eq!(
            g("example.com", "/").as_deref(),
            Some("catch-all"),
            "*.x does not match x"
        );
        assert_eq!(
            find(&r, "other.org", "/v1/a", Method::GET, &[("x-canary", "1")]).as_deref(),
            Some("canary")
        );
        assert_eq!(g("other.org", "/v1/a").as_deref(), Some("catch-all"));
    }

    #[test]
    fn no_match_is_none() {
        let r = routes("  - { name: a, upstream: u, match: { host: a.com } }\n");
        assert_eq!(find(&r, "b.com", "/", Method::GET, &[]), None);
    }

    #[test]
    fn header_conditions() {
        let r = routes(
            r#"
  - { name: re, upstream: u, match: { headers: [{ name: x-user, regex: "^vip-" }] } }
  - { name: absent, upstream: u, match: { headers: [{ name: x-user, present: false }] } }
"#,
        );
        assert_eq!(
            find(&r, "h", "/", Method::GET, &[("x-user", "vip-1")]).as_deref(),
            Some("re")
        );
        assert_eq!(
            find(&r, "h", "/", Method::GET, &[]).as_deref(),
            Some("absent")
        );
        assert_eq!(find(&r, "h", "/", Method::GET, &[("x-user", "joe")]), None);
    }

    #[test]
    fn alb_wildcards_query_and_source_ip_conditions() {
        let r = routes(
            r#"
  - { name: any, upstream: u }
  - { name: pattern-host, upstream: u, match: { host: "api-?.example.*" } }
  - { name: path-pattern, upstream: u, match: { path: "/api/*/users" } }
  - { name: short-prefix, upstream: u, match: { path_prefix: /api/ } }
  - { name: long-prefix, upstream: u, match: { path_prefix: /api/v1/users/admin } }
  - { name: beta, upstream: u, match: { path_prefix: /api/, query: [{ key: "ver*", value: beta }] } }
  - { name: office, upstream: u, match: { path_prefix: /api/, source_ip: [10.0.0.0/8] } }
  - { name: elsewhere, upstream: u, match: { path_prefix: /api/, source_ip: [192.0.2.0/24] } }
"#,
        );
        let g = |host, path| find(&r, host, path, Method::GET, &[]);
        assert_eq!(
            g("API-7.Example.org", "/x").as_deref(),
            Some("pattern-host")
        );
        assert_eq!(g("api-77.example.org", "/x").as_deref(), Some("any"));
        assert_eq!(g("h", "/api/v2/users").as_deref(), Some("path-pattern"));
        assert_eq!(
            g("h", "/api/v1/users/admin/x").as_deref(),
            Some("long-prefix"),
            "more literal characters win"
        );
        assert_eq!(g("h", "/api/x?Version=BETA").as_deref(), Some("beta"));
        assert_eq!(
            g("h", "/api/x?version=stable").as_deref(),
            Some("office"),
            "client 10.1.2.3"
        );
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Example.COM:443"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
    }
}
