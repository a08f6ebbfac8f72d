//! Rate-limit policies: what users write under `rate_limits:` (named policies that
//! routes list in `rate_limit:`), and the validated policy the gateway builds its
//! limiters from.
//!
//! ```yaml
//! rate_limits:
//!   per-client: { rate: 100/s, burst: 200, key: client_ip }
//!   per-api-key: { rate: 6000/m, key: [route, "header:x-api-key"] }
//! routes:
//!   - { name: api, upstream: api, rate_limit: [per-client, per-api-key] }
//! ```

use std::collections::BTreeMap;

use http::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::units::{HumanDuration, Rate};

/// One value or a list of them (`key: client_ip` or `key: [route, client_ip]`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Sustained rate: `100/s`, `6000/m`, `10000/h`.
    pub rate: Rate,
    /// Requests admitted at once from a full bucket (default: one second's worth of
    /// `rate`, at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// What is counted: one or several of `client_ip`, `route`, `method`, `path`,
    /// `header:NAME`, `cookie:NAME`, `query:NAME`, `claim:NAME` (a verified JWT claim,
    /// `a.b` for nested ones; the route needs `auth: { jwt: ... }`). Default `client_ip`.
    #[serde(default)]
    pub key: OneOrMany<String>,
    /// A request missing a key component (no such header, cookie or argument) is not
    /// counted by this policy (as AWS WAF does), unless this is true: then it is
    /// counted under an empty value, shared by every such request.
    #[serde(default)]
    pub count_missing: bool,
    /// Where the counters live. `local`: in this gateway's memory (each replica counts
    /// on its own). `redis`: in the top-level `redis`, shared by every replica.
    #[serde(default)]
    pub store: StoreFile,
    /// `store: redis` only: when Redis is slow or down, `fail_open` (the default) limits
    /// locally at the policy's rate divided by `redis.replicas`; `fail_closed` answers 503.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Most keys the local store tracks; beyond it, the keys closest to a full bucket
    /// are forgotten first (which errs toward allowing).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// IETF `RateLimit-Policy` / `RateLimit` response headers: `limited` (on 429
    /// answers, the default), `all` (on every response of the route), `off`.
    #[serde(default)]
    pub headers: HeadersMode,
    /// `gcra` (the default: a token bucket, `burst` at once then evenly spaced) or
    /// `sliding_window` (at most `rate`'s count in any window of `rate`'s length, e.g.
    /// `500/5m`, as AWS WAF's rate-based rules count; no `burst`).
    #[serde(default)]
    pub algorithm: Algorithm,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    Gcra,
    SlidingWindow,
}

fn default_max_keys() -> usize {
    100_000
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreFile {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    FailOpen,
    FailClosed,
}

/// The Redis (or Valkey, ElastiCache) that `store: redis` policies share.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for TLS.
    pub url: String,
    /// Longest wait for one call; past it the request is decided by `on_store_error`.
    #[serde(default = "default_redis_timeout")]
    pub timeout: HumanDuration,
    /// Gateway replicas sharing the limits: while Redis is unreachable, each replica
    /// limits locally at the policy's rate divided by this.
    #[serde(default = "one")]
    pub replicas: u32,
    /// `rediss://` only: PEM CA certificates the server's certificate must chain to
    /// (default: the system trust store). Relative to the config file.
    #[serde(default)]
    pub ca: Option<String>,
    /// Redis Cluster (ElastiCache with cluster mode on, Valkey cluster): `url` is one
    /// node (or the configuration endpoint); the others are discovered, and each call
    /// goes to the node owning its key's slot.
    #[serde(default)]
    pub cluster: bool,
}

fn default_redis_timeout() -> HumanDuration {
    HumanDuration::from_millis(10)
}

fn one() -> u32 {
    1
}

/// Validated `redis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    pub timeout: std::time::Duration,
    pub replicas: u32,
    /// PEM CA certificates for `rediss://`, read when the config is loaded.
    pub ca_pem: Option<Vec<u8>>,
    pub cluster: bool,
}

pub fn validate_redis(f: &RedisFile, base_dir: &std::path::Path, p: &mut Problems) -> RedisConfig {
    let url = f.url.trim();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        p.push(
            "redis.url",
            format!("{url:?}: expected redis://HOST:PORT or rediss://HOST:PORT"),
        );
    }
    if f.timeout.get().is_zero() {
        p.push("redis.timeout", "must be above 0");
    }
    if f.replicas == 0 {
        p.push("redis.replicas", "must be at least 1");
    }
    let ca_pem = f.ca.as_deref().and_then(|ca| {
        if !url.starts_with("rediss://") {
            p.push("redis.ca", "a CA only applies to TLS: use a rediss:// url");
            return None;
        }
        let path = crate::common::resolve_path(base_dir, ca);
        match std::fs::read(&path) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                p.push(
                    "redis.ca",
                    format!("{}: no PEM certificate in it", path.display()),
                );
                None
            }
            Err(e) => {
                p.push("redis.ca", format!("{}: {e}", path.display()));
                None
            }
        }
    });
    RedisConfig {
        url: url.to_owned(),
        timeout: f.timeout.get(),
        replicas: f.replicas.max(1),
        ca_pem,
        cluster: f.cluster,
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeadersMode {
    Off,
    #[default]
    Limited,
    All,
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    ClientIp,
    Route,
    Method,
    Path,
    Header(HeaderName),
    Cookie(String),
    Query(String),
    /// A claim of the request's verified token (path into nested claims).
    Claim(Vec<String>),
}

/// A validated rate-limit policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    pub name: String,
    pub rate: Rate,
    pub burst: u32,
    pub key: Vec<KeyPart>,
    pub count_missing: bool,
    pub max_keys: usize,
    pub headers: HeadersMode,
    pub store: StoreFile,
    pub on_store_error: OnStoreError,
    pub algorithm: Algorithm,
}

const KEY_HELP: &str =
    "expected client_ip, route, method, path, header:NAME, cookie:NAME, query:NAME or claim:NAME";

pub(crate) fn parse_key_part(s: &str) -> Result<KeyPart, String> {
    let s = s.trim();
    let (kind, arg) = match s.split_once(':') {
        Some((k, a)) => (k.trim(), Some(a.trim())),
        None => (s, None),
    };
    let named = |what: &str| match arg {
        Some(a) if !a.is_empty() => Ok(a.to_owned()),
        _ => Err(format!(
            "{s:?}: `{what}:` needs a name, e.g. {what}:x-api-key"
        )),
    };
    match (kind, arg) {
        ("client_ip", None) => Ok(KeyPart::ClientIp),
        ("route", None) => Ok(KeyPart::Route),
        ("method", None) => Ok(KeyPart::Method),
        ("path", None) => Ok(KeyPart::Path),
        ("header", _) => {
            let n = named("header")?;
            HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map(KeyPart::Header)
                .map_err(|_| format!("{n:?} is not a header name"))
        }
        ("cookie", _) => named("cookie").map(KeyPart::Cookie),
        ("query", _) => named("query").map(KeyPart::Query),
        ("claim", _) => {
            named("claim").map(|c| KeyPart::Claim(c.split('.').map(str::to_owned).collect()))
        }
        _ => Err(format!("unknown key {s:?}: {KEY_HELP}")),
    }
}

/// Check every policy; returns them by name.
pub fn validate_policies(
    file: &BTreeMap<String, RateLimitFile>,
    redis: Option<&RedisFile>,
    p: &mut Problems,
) -> BTreeMap<String, RateLimitPolicy> {
    let mut out = BTreeMap::new();
    for (name, f) in file {
        let at = format!("rate_limits.{name}");
        let before = p.len();
        if f.rate.count == 0 || f.rate.per.is_zero() {
            p.push(format!("{at}.rate"), "must be above 0 (e.g. 100/s)");
        }
        let burst = f
            .burst
            .unwrap_or_else(|| (f.rate.per_second().ceil() as u32).max(1));
        if burst == 0 {
            p.push(format!("{at}.burst"), "must be at least 1");
        }
        if f.algorithm == Algorithm::SlidingWindow {
            if f.burst.is_some() {
                p.push(
                    format!("{at}.burst"),
                    "a sliding window has no burst: it admits up to rate's count in any window of rate's length",
                );
            }
            if f.rate.count > 2_000_000 {
                p.push(
                    format!("{at}.rate"),
                    "a sliding window counts at most 2000000 per window",
                );
            }
            if f.rate.per < std::time::Duration::from_secs(1) {
                p.push(format!("{at}.rate"), "a sliding window is at least 1s long");
            }
        }
        if f.store == StoreFile::Redis && redis.is_none() {
            p.push(
                format!("{at}.store"),
                "store: redis needs a top-level `redis: { url: ... }`",
            );
        }
        if f.max_keys == 0 {
            p.push(format!("{at}.max_keys"), "must be at least 1");
        }
        let parts = f.key.as_slice();
        let mut key = Vec::new();
        if parts.is_empty() {
            key.push(KeyPart::ClientIp);
        }
        for (i, s) in parts.iter().enumerate() {
            let field = match &f.key {
                OneOrMany::One(_) => format!("{at}.key"),
                OneOrMany::Many(_) => format!("{at}.key[{i}]"),
            };
            match parse_key_part(s) {
                Ok(k) if key.contains(&k) => p.push(field, format!("{s:?} is listed twice")),
                Ok(k) => key.push(k),
                Err(e) => p.push(field, e),
            }
        }
        if p.len() == before {
            out.insert(
                name.clone(),
                RateLimitPolicy {
                    name: name.clone(),
                    rate: f.rate,
                    burst,
                    key,
                    count_missing: f.count_missing,
                    max_keys: f.max_keys,
                    headers: f.headers,
                    store: f.store,
                    on_store_error: f.on_store_error,
                    algorithm: f.algorithm,
                },
            );
        }
    }
    out
}

/// The policies a route names, checked against those defined.
pub fn route_policies(
    at: &str,
    names: &OneOrMany<String>,
    defined: &BTreeMap<String, RateLimitFile>,
    p: &mut Problems,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, n) in names.as_slice().iter().enumerate() {
        let field = match names {
            OneOrMany::One(_) => format!("{at}.rate_limit"),
            OneOrMany::Many(_) => format!("{at}.rate_limit[{i}]"),
        };
        if !defined.contains_key(n) {
            let list = defined.keys().cloned().collect::<Vec<_>>().join(", ");
            p.push(
                field,
                format!("rate limit {n:?} is not defined (defined: {list})"),
            );
        } else if out.contains(n) {
            p.push(field, format!("{n:?} is listed twice"));
        } else {
            out.push(n.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_parts_parse_with_clear_errors() {
        assert_eq!(parse_key_part("client_ip"), Ok(KeyPart::ClientIp));
        assert_eq!(
            parse_key_part("header:X-Api-Key"),
            Ok(KeyPart::Header(HeaderName::from_static("x-api-key")))
        );
        assert_eq!(
            parse_key_part(" cookie: session "),
            Ok(KeyPart::Cookie("session".into()))
        );
        assert!(parse_key_part("header:")
            .unwrap_err()
            .contains("needs a name"));
        assert!(parse_key_part("ip")
            .unwrap_err()
            .contains("expected client_ip"));
        assert!(parse_key_part("header:bad name")
            .unwrap_err()
            .contains("not a header name"));
        assert!(parse_key_part("path:x")
            .unwrap_err()
            .contains("unknown key"));
    }
}
