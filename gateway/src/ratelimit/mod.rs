//! Rate limiting: one [`RateLimiter`] per policy (`rate_limits:` in the config),
//! shared by every route that lists it, each request counted under a key made of the
//! policy's parts (client address, route, method, path, a header, a cookie, a query
//! argument). GCRA arithmetic is the one the sidecar uses
//! (`tollgate_config::common::gcra`); the counters live in [`local::LocalStore`], or,
//! for `store: redis`, in Redis ([`redis::RedisStore`]) with a local fallback for when
//! Redis cannot answer (`on_store_error`).
//!
//! A key is hashed with SipHash under a random per-limiter key (so a client cannot
//! aim many keys at one bucket) and only the hash is stored. Redis keys must be the same
//! on every replica, so there the SipHash keys are fixed; the Redis key is
//! `tollgate:rl:{POLICY:HASH}` (the braces keep it in one Redis Cluster slot). A request that lacks a
//! key part (no such header, cookie or argument) is not counted by the policy, as AWS
//! WAF does, unless the policy sets `count_missing`.
//!
//! Limiters live in the snapshot and are carried over by name across reloads while
//! their key is unchanged, so a reload neither refills nor empties anyone's bucket.

pub mod local;
pub mod redis;

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use prometheus::IntCounter;
use tollgate_config::common::gcra::Gcra;
use tollgate_config::common::sliding_window::SlidingWindow;
use tollgate_config::gateway::{
    Algorithm, HeadersMode, KeyPart, OnStoreError, RateLimitPolicy, StoreFile,
};

use crate::filters::{Rejection, RequestView, Verdict};
use crate::metrics::METRICS;
use local::{Decision, Limit, LocalStore};
use redis::RedisStore;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

pub struct RateLimiter {
    pub policy: RateLimitPolicy,
    limit: Limit,
    /// The counters (`store: local`), or the fallback while Redis cannot answer.
    store: Arc<LocalStore>,
    /// `store: redis`: the shared store, and the local rate while it is unreachable.
    redis: Option<(Arc<RedisStore>, Limit)>,
    /// `store: redis`: keys Redis refused, until when, so that a client hammering
    /// past its limit costs no round trip until it may be admitted again.
    refused: LocalStore,
    hasher: std::collections::hash_map::RandomState,
    /// Time origin of the store's arrival times (kept with the store).
    origin: Instant,
    /// `RateLimit-Policy` value, built once.
    policy_header: HeaderValue,
    allowed: IntCounter,
    limited: IntCounter,
    skipped: IntCounter,
    fallback: IntCounter,
    precheck: IntCounter,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policy", &self.policy.name)
            .finish()
    }
}

/// The `RateLimit` header values a response may carry (the most restrictive policy's).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub policy: Option<HeaderValue>,
    pub state: Option<HeaderValue>,
    remaining: u32,
}

impl Headers {
    pub fn write(&self, resp: &mut pingora_http::ResponseHeader) -> pingora_error::Result<()> {
        if let (Some(p), Some(s)) = (&self.policy, &self.state) {
            resp.insert_header(RATELIMIT_POLICY, p.clone())?;
            resp.insert_header(RATELIMIT, s.clone())?;
        }
        Ok(())
    }
}

impl RateLimiter {
    /// The policy counts by verified claims: it runs after authentication.
    pub fn keyed_on_claims(&self) -> bool {
        self.policy
            .key
            .iter()
            .any(|k| matches!(k, KeyPart::Claim(_)))
    }

    /// A limiter for `policy`, keeping `previous`'s counters when it counted the same
    /// keys in a store of the same size.
    pub fn build(
        policy: &RateLimitPolicy,
        previous: Option<&RateLimiter>,
        redis: Option<&Arc<RedisStore>>,
    ) -> Self {
        let limit_of = |rate, burst| match policy.algorithm {
            Algorithm::Gcra => Limit::Gcra(Gcra::from_rate(rate, burst)),
            Algorithm::SlidingWindow => Limit::Window(SlidingWindow::from_rate(rate)),
        };
        let limit = limit_of(policy.rate, policy.burst);
        let redis = match (policy.store, redis) {
            (StoreFile::Redis, Some(r)) => {
                // While Redis is away each replica takes its share of the policy.
                let n = r.config.replicas.max(1);
                let rate = tollgate_config::units::Rate {
                    count: policy.rate.count.div_ceil(u64::from(n)),
                    per: policy.rate.per,
                };
                Some((r.clone(), limit_of(rate, policy.burst.div_ceil(n))))
            }
            _ => None,
        };
        let (store, hasher, origin) = match previous {
            Some(p)
                if p.policy.key == policy.key
                    && p.policy.max_keys == policy.max_keys
                    && p.policy.algorithm == policy.algorithm =>
            {
                (p.store.clone(), p.hasher.clone(), p.origin)
            }
            _ => (
                Arc::new(LocalStore::new(policy.max_keys)),
                std::collections::hash_map::RandomState::new(),
                Instant::now(),
            ),
        };
        let m = |result: &str| {
            METRICS
                .rate_limit_decisions
                .with_label_values(&[policy.name.as_str(), result])
        };
        Self {
            policy_header: policy_header(&policy.name, &limit),
            limit,
            store,
            hasher,
            origin,
            allowed: m("allowed"),
            limited: m("limited"),
            skipped: m("skipped"),
            fallback: m("local_fallback"),
            precheck: m("limited_locally"),
            refused: LocalStore::new(if redis.is_some() { policy.max_keys } else { 1 }),
            redis,
            policy: policy.clone(),
        }
    }

    /// Count the request; reject it when over the limit.
    pub async fn on_request(&self, view: &RequestView<'_>, headers: &mut Headers) -> Verdict {
        let Some(key) = self.key(view) else {
            self.skipped.inc();
            return Verdict::Continue;
        };
        let d = match &self.redis {
            None => self.store.check(key, &self.limit, self.origin.elapsed()),
            Some((redis, local)) => {
                let now = self.origin.elapsed();
                if let Some(until) = self.refused.refused_until(key, now) {
                    // Refused by Redis moments ago, and still: no round trip needed.
                    self.precheck.inc();
                    Decision {
                        allowed: false,
                        retry_after: until - now,
                        remaining: 0,
                        reset_after: until - now,
                    }
                } else {
                    let redis_key = format!("tollgate:rl:{{{}:{key:016x}}}", self.policy.name);
                    match redis.check(&redis_key, &self.limit).await {
                        Ok(d) => {
                            if !d.allowed {
                                self.refused.refuse_until(key, now + d.retry_after, now);
                            }
                            d
                        }
                        Err(_) if self.policy.on_store_error == OnStoreError::FailOpen => {
                            self.fallback.inc();
                            self.store.check(key, local, self.origin.elapsed())
                        }
                        Err(e) => {
                            return Verdict::Reject(
                                Rejection::new(
                                    503,
                                    "rate_limit_store_unavailable",
                                    format!(
                                        "rate limit {} cannot be checked: {e}",
                                        self.policy.name
                                    ),
                                )
                                .retry_after(std::time::Duration::from_secs(1)),
                            )
                        }
                    }
                }
            }
        };
        let state = state_header(&self.policy.name, &d);
        if !d.allowed {
            self.limited.inc();
            let mut r = Rejection::new(
                429,
                "rate_limited",
                format!("rate limit {} exceeded", self.policy.name),
            )
            .retry_after(d.retry_after);
            if self.policy.headers != HeadersMode::Off {
                r.headers
                    .push((RATELIMIT_POLICY, self.policy_header.clone()));
                r.headers.extend(state.map(|s| (RATELIMIT, s)));
            }
            return Verdict::Reject(r);
        }
        self.allowed.inc();
        if self.policy.headers == HeadersMode::All
            && (headers.state.is_none() || d.remaining < headers.remaining)
        {
            *headers = Headers {
                policy: Some(self.policy_header.clone()),
                state,
                remaining: d.remaining,
            };
        }
        Verdict::Continue
    }

    /// The request's key under this policy, or `None` when a part is missing (and the
    /// policy does not count such requests).
    fn key(&self, view: &RequestView<'_>) -> Option<u64> {
        if self.redis.is_some() {
            // The same key on every replica.
            #[allow(deprecated)]
            let h = std::hash::SipHasher::new_with_keys(0x746f_6c6c_6761_7465, 0x726c_6b65_7973);
            self.key_with(view, h)
        } else {
            self.key_with(view, self.hasher.build_hasher())
        }
    }

    fn key_with(&self, view: &RequestView<'_>, mut h: impl Hasher) -> Option<u64> {
        hash_key(&self.policy.key, self.policy.count_missing, view, &mut h).then(|| h.finish())
    }

    /// Keys the store tracks now (admin and tests).
    pub fn tracked_keys(&self) -> usize {
        self.store.len()
    }
}

/// Feed the request's values of `parts` into `h`, each one framed (index, length) so
/// that different values never hash alike by concatenation. False when a part is
/// missing and `count_missing` is not set (the request has no key). Rate limits and
/// idempotency keys both key requests this way.
pub fn hash_key(
    parts: &[KeyPart],
    count_missing: bool,
    view: &RequestView<'_>,
    h: &mut impl Hasher,
) -> bool {
    for (i, part) in parts.iter().enumerate() {
        h.write_usize(i);
        let value: Option<&[u8]> = match part {
            KeyPart::ClientIp => {
                match view.client.ip {
                    Some(ip) => ip.hash(h),
                    None if count_missing => {}
                    None => return false,
                }
                continue;
            }
            KeyPart::Route => Some(view.route.as_bytes()),
            KeyPart::Method => Some(view.req.method.as_str().as_bytes()),
            KeyPart::Path => Some(view.req.uri.path().as_bytes()),
            KeyPart::Header(name) => view.req.headers.get(name).map(HeaderValue::as_bytes),
            KeyPart::Cookie(name) => cookie(view.req, name),
            KeyPart::Query(name) => query_arg(view.req, name),
            KeyPart::Claim(path) => {
                let text = view
                    .claims
                    .and_then(|c| crate::auth::jwt::claim(c, path))
                    .map(crate::auth::jwt::claim_text);
                match text {
                    Some(t) => {
                        h.write_usize(t.len());
                        h.write(t.as_bytes());
                    }
                    None if count_missing => h.write_u8(0xff),
                    None => return false,
                }
                continue;
            }
        };
        match value {
            Some(v) => {
                h.write_usize(v.len());
                h.write(v);
            }
            None if count_missing => h.write_u8(0xff),
            None => return false,
        }
    }
    true
}

/// `RateLimit-Policy: "NAME";q=BURST;w=SECONDS` (draft-ietf-httpapi-ratelimit-headers):
/// for GCRA the quota is the burst, refilled over `burst x interval`; for a sliding
/// window, the count per window.
fn policy_header(name: &str, limit: &Limit) -> HeaderValue {
    let window = limit.span().as_secs_f64().ceil().max(1.0) as u64;
    let v = format!("\"{}\";q={};w={window}", sf_string(name), limit.quota());
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("\"limit\""))
}

/// `RateLimit: "NAME";r=REMAINING;t=SECONDS_UNTIL_FULL`.
fn state_header(name: &str, d: &Decision) -> Option<HeaderValue> {
    let t = crate::respond::ceil_secs(d.reset_after);
    let v = format!("\"{}\";r={};t={t}", sf_string(name), d.remaining);
    HeaderValue::from_str(&v).ok()
}

/// A policy name as the inside of a structured-field string (RFC 8941 3.3.3).
fn sf_string(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    crate::attempts::cookie_value(req, name)
}

/// The first value of query argument `name`, as sent (not percent-decoded).
fn query_arg<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests;
