//! `routes[i].idempotency`: Idempotency-Key handling at the edge
//! (draft-ietf-httpapi-idempotency-key-header). The first `POST`/`PATCH` carrying an
//! `Idempotency-Key` is forwarded and its response stored in Redis; a retry with the
//! same key gets the stored response without reaching the backend.
//!
//! ```yaml
//! routes:
//!   - name: payments
//!     upstream: payments
//!     idempotency: { ttl: 24h, identity: ["header:authorization"] }
//! ```

use std::time::Duration;

use http::Method;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ratelimit::{parse_key_part, KeyPart, OnStoreError, OneOrMany};
use crate::error::Problems;
use crate::units::HumanDuration;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyFile {
    /// How long a stored response answers retries (default 24h).
    #[serde(default = "default_ttl")]
    pub ttl: HumanDuration,
    /// Methods the key applies to (default POST and PATCH; GET, PUT and DELETE are
    /// idempotent by definition).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Refuse (400) a request of those methods that has no `Idempotency-Key`.
    #[serde(default)]
    pub required: bool,
    /// Whose key it is: the key is only matched for the same values of these parts
    /// (`client_ip`, `header:NAME`, `cookie:NAME`, as for rate limits). Default
    /// `[client_ip, "header:authorization"]`; a missing part counts as empty.
    #[serde(default)]
    pub identity: OneOrMany<String>,
    /// A retry that arrives while the first request is still in flight: `conflict`
    /// (409 at once, the default) or `wait` (for the first to finish, at most
    /// `wait_timeout`, then 409).
    #[serde(default)]
    pub in_flight: InFlight,
    #[serde(default = "default_wait")]
    pub wait_timeout: HumanDuration,
    /// Largest response body stored (default 1048576 bytes). A larger response is
    /// passed on but not stored, and its key released: a retry reaches the backend.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// How long a key stays "in flight" when the gateway forwarding its first request
    /// dies before the answer (default: the route's request timeout, else 60s).
    #[serde(default)]
    pub lock_timeout: Option<HumanDuration>,
    /// When Redis cannot answer: `fail_open` (the default: forward without the
    /// guarantee) or `fail_closed` (503).
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InFlight {
    #[default]
    Conflict,
    Wait,
}

fn default_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

fn default_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_methods() -> Vec<String> {
    vec!["POST".into(), "PATCH".into()]
}

fn default_max_response_bytes() -> usize {
    1024 * 1024
}

/// A checked `idempotency`.
#[derive(Debug, Clone, PartialEq)]
pub struct Idempotency {
    pub ttl: Duration,
    pub methods: Vec<Method>,
    pub required: bool,
    pub identity: Vec<KeyPart>,
    pub in_flight: InFlight,
    pub wait_timeout: Duration,
    pub max_response_bytes: usize,
    pub lock_timeout: Duration,
    pub on_store_error: OnStoreError,
}

/// Check `f` (at `at`, e.g. `routes[0].idempotency`).
pub fn validate_idempotency(
    at: &str,
    f: &IdempotencyFile,
    has_redis: bool,
    request_timeout: Option<Duration>,
    p: &mut Problems,
) -> Idempotency {
    if !has_redis {
        p.push(
            at.to_owned(),
            "idempotency stores responses in Redis: it needs a top-level `redis: { url: ... }`",
        );
    }
    let ttl = f.ttl.get();
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 24 * 3600) {
        p.push(format!("{at}.ttl"), "must be between 1s and 30 days");
    }
    let mut methods = Vec::new();
    for (i, m) in f.methods.iter().enumerate() {
        match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
            Ok(m) if methods.contains(&m) => {
                p.push(format!("{at}.methods[{i}]"), format!("{m} is listed twice"))
            }
            Ok(m) => methods.push(m),
            Err(_) => p.push(
                format!("{at}.methods[{i}]"),
                format!("{m:?} is not a method"),
            ),
        }
    }
    if f.methods.is_empty() {
        p.push(format!("{at}.methods"), "must list at least one method");
    }
    let mut identity = Vec::new();
    let parts: Vec<String> = match f.identity.as_slice() {
        [] => vec!["client_ip".into(), "header:authorization".into()],
        parts => parts.to_vec(),
    };
    for (i, s) in parts.iter().enumerate() {
        match parse_key_part(s) {
            Ok(KeyPart::Route | KeyPart::Method | KeyPart::Path | KeyPart::Query(_)) => p.push(
                format!("{at}.identity[{i}]"),
                format!("{s:?} says what is asked, not who asks: use client_ip, header:NAME or cookie:NAME"),
            ),
            Ok(k) if identity.contains(&k) => {
                p.push(format!("{at}.identity[{i}]"), format!("{s:?} is listed twice"))
            }
            Ok(k) => identity.push(k),
            Err(e) => p.push(format!("{at}.identity[{i}]"), e),
        }
    }
    let wait_timeout = f.wait_timeout.get();
    if wait_timeout.is_zero() || wait_timeout > Duration::from_secs(300) {
        p.push(
            format!("{at}.wait_timeout"),
            "must be above 0 and at most 300s",
        );
    }
    if f.max_response_bytes == 0 || f.max_response_bytes > 64 * 1024 * 1024 {
        p.push(
            format!("{at}.max_response_bytes"),
            "must be between 1 and 67108864",
        );
    }
    let lock_timeout = f
        .lock_timeout
        .map(HumanDuration::get)
        .or(request_timeout)
        .unwrap_or(Duration::from_secs(60));
    if lock_timeout < Duration::from_secs(1) {
        p.push(format!("{at}.lock_timeout"), "must be at least 1s");
    }
    Idempotency {
        ttl,
        methods,
        required: f.required,
        identity,
        in_flight: f.in_flight,
        wait_timeout,
        max_response_bytes: f.max_response_bytes,
        lock_timeout,
        on_store_error: f.on_store_error,
    }
}
