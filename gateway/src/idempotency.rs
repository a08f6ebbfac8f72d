//! Idempotency keys at the edge (`routes[i].idempotency`, after
//! draft-ietf-httpapi-idempotency-key-header): the first `POST`/`PATCH` with an
//! `Idempotency-Key` is forwarded and its response stored in Redis; a retry with the
//! same key gets that response, marked `Idempotent-Replayed: true`, without reaching
//! the backend. Every gateway replica sharing the Redis sees the same keys.
//!
//! One Redis hash per key, `tollgate:idem:{SHA256}` (the hash covers the route, the
//! client's identity parts and the key, so one client can neither read nor block
//! another's), holding:
//! - `fp`: the request's fingerprint (method, target, content type, body), so the same
//!   key on another request is refused (422);
//! - `owner`: a random token of the request being forwarded, while it is in flight
//!   (the hash expires after `lock_timeout` if that gateway dies), so a retry arriving
//!   meanwhile gets 409 (or waits);
//! - `resp`: the stored response, once there is one; the hash then lives `ttl`.
//!
//! Only answers below 500 that arrived whole and fit `max_response_bytes` are stored;
//! otherwise the key is released and a retry reaches the backend again, which is what
//! the client asked for. The body is part of the fingerprint when it has a declared
//! length of at most 64 KiB: it is read before the backend is contacted (Pingora's
//! retry buffer then sends it on). Larger or unframed bodies are fingerprinted by
//! their length only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use prometheus::IntCounter;
use ring::digest::{Context as Digest, SHA256};
use tollgate_config::gateway::{Idempotency, InFlight, OnStoreError};

use crate::filters::{Rejection, RequestView};
use crate::metrics::METRICS;
use crate::ratelimit::redis::{RedisStore, StoreError};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Bodies read before forwarding, at most: what Pingora's retry buffer holds.
const PRE_READ_LIMIT: u64 = 64 * 1024;
/// Longest key accepted (the draft's keys are UUIDs; Stripe allows 255).
const MAX_KEY_LEN: usize = 255;
/// How often a `wait` retry looks again.
const POLL: Duration = Duration::from_millis(50);
/// How long a duplicate looks again before its 409, in `conflict` mode: the first
/// request's answer may be on its way to Redis as the duplicate arrives.
const CONFLICT_GRACE: Duration = Duration::from_millis(100);

/// KEYS[1]; ARGV: fingerprint, owner token, lock ms. Returns {"new"}, {"mismatch"},
/// {"pending"} or {"done", RESPONSE}.
const BEGIN: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'fp', 'resp')
if not v[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'owner', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'new'}
end
if v[1] ~= ARGV[1] then return {'mismatch'} end
if v[2] then return {'done', v[2]} end
return {'pending'}
"#;

/// KEYS[1]; ARGV: owner token, response, ttl ms. Stores the response if the key is
/// still this request's (it may have expired and been taken by a retry).
const FINISH: &str = r#"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'resp', ARGV[2])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// KEYS[1]; ARGV: owner token. Forgets the key if it is still this request's.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"#;

/// A route's idempotency handling.
pub struct IdempotencyRt {
    pub cfg: Idempotency,
    redis: Arc<RedisStore>,
    begin: redis::Script,
    finish: redis::Script,
    release: redis::Script,
    counters: Counters,
}

impl std::fmt::Debug for IdempotencyRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyRt")
            .field("cfg", &self.cfg)
            .finish()
    }
}

struct Counters {
    forwarded: IntCounter,
    replayed: IntCounter,
    conflict: IntCounter,
    mismatch: IntCounter,
    missing_key: IntCounter,
    store_error: IntCounter,
    stored: IntCounter,
    not_stored: IntCounter,
}

/// What to do with a request.
pub enum Begin {
    /// Not concerned (another method, or no key and none required).
    Skip,
    /// The first of its key: forward it and store its answer.
    Forward(Box<Pending>),
    /// Answer from the stored response.
    Replay(Stored),
    Reject(Rejection),
}

/// A forwarded request whose answer is being captured.
pub struct Pending {
    redis_key: String,
    token: String,
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    too_large: bool,
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl IdempotencyRt {
    pub fn build(cfg: Idempotency, route: &str, redis: Arc<RedisStore>) -> Self {
        let m = |result: &str| METRICS.idempotency.with_label_values(&[route, result]);
        Self {
            counters: Counters {
                forwarded: m("forwarded"),
                replayed: m("replayed"),
                conflict: m("conflict"),
                mismatch: m("mismatch"),
                missing_key: m("missing_key"),
                store_error: m("store_error"),
                stored: m("stored"),
                not_stored: m("not_stored"),
            },
            cfg,
            redis,
            begin: redis::Script::new(BEGIN),
            finish: redis::Script::new(FINISH),
            release: redis::Script::new(RELEASE),
        }
    }

    /// Look the request's key up (reading a small body first, to fingerprint it).
    pub async fn begin(
        &self,
        session: &mut Session,
        client: &crate::context::Client,
        route: &str,
    ) -> pingora_error::Result<Begin> {
        let req = session.req_header();
        if !self.cfg.methods.contains(&req.method) {
            return Ok(Begin::Skip);
        }
        let key = match req.headers.get(IDEMPOTENCY_KEY).map(parse_key) {
            None if self.cfg.required => {
                self.counters.missing_key.inc();
                return Ok(Begin::Reject(Rejection::new(
                    400,
                    "idempotency_key_missing",
                    format!(
                        "{} requests on this route need an Idempotency-Key header",
                        req.method
                    ),
                )));
            }
            None => return Ok(Begin::Skip),
            Some(Err(why)) => {
                self.counters.missing_key.inc();
                return Ok(Begin::Reject(Rejection::new(
                    400,
                    "idempotency_key_invalid",
                    why,
                )));
            }
            Some(Ok(k)) => k.to_owned(),
        };
        let redis_key = {
            let mut d = DigestHasher(Digest::new(&SHA256));
            let view = RequestView {
                req,
                client,
                route,
                claims: None,
            };
            crate::ratelimit::hash_key(&self.cfg.identity, true, &view, &mut d);
            std::hash::Hasher::write(&mut d, route.as_bytes());
            std::hash::Hasher::write(&mut d, &[0]);
            std::hash::Hasher::write(&mut d, key.as_bytes());
            format!("tollgate:idem:{{{}}}", hex(d.0.finish().as_ref()))
        };
        let fingerprint = fingerprint(session).await?;
        let token = format!("{:032x}", rand::random::<u128>());
        let deadline = tokio::time::Instant::now()
            + match self.cfg.in_flight {
                InFlight::Wait => self.cfg.wait_timeout,
                InFlight::Conflict => CONFLICT_GRACE,
            };
        loop {
            let mut conn = match self.redis.connection() {
                Ok(c) => c,
                Err(e) => return Ok(self.store_failed(&e)),
            };
            let mut call = self.begin.key(&redis_key);
            call.arg(&fingerprint[..])
                .arg(&token)
                .arg(millis(self.cfg.lock_timeout));
            let answer = self
                .redis
                .guarded(call.invoke_async::<Vec<Vec<u8>>>(&mut conn))
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => return Ok(self.store_failed(&e)),
            };
            match answer.first().map(Vec::as_slice) {
                Some(b"new") => {
                    self.counters.forwarded.inc();
                    return Ok(Begin::Forward(Box::new(Pending {
                        redis_key,
                        token,
                        status: 0,
                        headers: Vec::new(),
                        body: Vec::new(),
                        too_large: false,
                    })));
                }
                Some(b"done") => match answer.get(1).and_then(|b| decode(b)) {
                    Some(stored) => {
                        self.counters.replayed.inc();
                        return Ok(Begin::Replay(stored));
                    }
                    None => {
                        tracing::warn!(key = %redis_key, "stored idempotent response unreadable: forwarding without it");
                        return Ok(Begin::Skip);
                    }
                },
                Some(b"mismatch") => {
                    self.counters.mismatch.inc();
                    return Ok(Begin::Reject(Rejection::new(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used for a different request",
                    )));
                }
                _ if tokio::time::Instant::now() + POLL <= deadline => {
                    tokio::time::sleep(POLL).await;
                }
                _ => {
                    self.counters.conflict.inc();
                    return Ok(Begin::Reject(
                        Rejection::new(
                            409,
                            "idempotency_key_in_flight",
                            "a request with this Idempotency-Key is still being processed",
                        )
                        .retry_after(Duration::from_secs(1)),
                    ));
                }
            }
        }
    }

    fn store_failed(&self, e: &StoreError) -> Begin {
        self.counters.store_error.inc();
        crate::trace::warn_sampled(
            "idempotency_store",
            &format!("idempotency keys cannot be checked: {e}"),
        );
        match self.cfg.on_store_error {
            OnStoreError::FailOpen => Begin::Skip,
            OnStoreError::FailClosed => Begin::Reject(
                Rejection::new(
                    503,
                    "idempotency_store_unavailable",
                    format!("idempotency keys cannot be checked: {e}"),
                )
                .retry_after(Duration::from_secs(1)),
            ),
        }
    }

    /// The answer is complete (`whole`: its body arrived to the end): store it, or
    /// release the key so a retry is forwarded again. Called as the last body chunk
    /// goes to the client (so a retry right after it finds the answer), or at the end
    /// of the request for answers that never completed.
    pub async fn finish(self: Arc<Self>, p: Pending, whole: bool) {
        let mut conn = match self.redis.connection() {
            Ok(c) => c,
            Err(e) => {
                self.counters.not_stored.inc();
                crate::trace::warn_sampled(
                    "idempotency_store",
                    &format!("an idempotent response could not be stored: {e}"),
                );
                return;
            }
        };
        let storable = whole && (100..500).contains(&p.status) && !p.too_large;
        let result = if storable {
            let blob = encode(p.status, &p.headers, &p.body);
            let mut call = self.finish.key(&p.redis_key);
            call.arg(&p.token).arg(blob).arg(millis(self.cfg.ttl));
            self.redis
                .guarded(call.invoke_async::<i64>(&mut conn))
                .await
        } else {
            let mut call = self.release.key(&p.redis_key);
            call.arg(&p.token);
            self.redis
                .guarded(call.invoke_async::<i64>(&mut conn))
                .await
        };
        match result {
            Ok(1) if storable => self.counters.stored.inc(),
            Ok(_) => self.counters.not_stored.inc(),
            Err(e) => {
                self.counters.not_stored.inc();
                crate::trace::warn_sampled(
                    "idempotency_store",
                    &format!("an idempotent response could not be stored: {e}"),
                );
            }
        }
    }
}

impl Pending {
    /// The response head, as the backend sent it.
    pub fn on_head(&mut self, resp: &ResponseHeader) {
        self.status = resp.status.as_u16();
        self.headers = resp
            .headers
            .iter()
            .filter(|(n, _)| !NOT_STORED.contains(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
    }

    pub fn on_body(&mut self, chunk: Option<&Bytes>, max: usize) {
        if let Some(c) = chunk.filter(|_| !self.too_large) {
            if self.body.len() + c.len() > max {
                self.too_large = true;
                self.body = Vec::new();
            } else {
                self.body.extend_from_slice(c);
            }
        }
    }
}

/// Headers a replay does not repeat: hop-by-hop ones, the length (recomputed), and
/// the request id (the replay carries its own).
const NOT_STORED: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::CONTENT_LENGTH,
    crate::forwarded::X_REQUEST_ID,
];

/// The key as sent: an RFC 8941 string (`"abc"`, as the draft says) or a bare token
/// (as Stripe's clients send); 1 to 255 visible ASCII characters.
fn parse_key(v: &HeaderValue) -> Result<&str, String> {
    let s = v
        .to_str()
        .map_err(|_| "Idempotency-Key must be visible ASCII".to_owned())?
        .trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    if s.is_empty() || s.len() > MAX_KEY_LEN {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters"
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("Idempotency-Key must be visible ASCII".to_owned());
    }
    Ok(s)
}

/// SHA-256 of what makes two requests "the same": method, target, content type, and
/// the body when it is small enough to read before forwarding (its length otherwise).
async fn fingerprint(session: &mut Session) -> pingora_error::Result<Vec<u8>> {
    let req = session.req_header();
    let mut d = Digest::new(&SHA256);
    d.update(req.method.as_str().as_bytes());
    d.update(b"\0");
    d.update(
        req.uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    d.update(b"\0");
    if let Some(ct) = req.headers.get(http::header::CONTENT_TYPE) {
        d.update(ct.as_bytes());
    }
    d.update(b"\0");
    let length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    match length {
        Some(n) if n <= PRE_READ_LIMIT && !chunked => {
            // Kept by Pingora and sent on to the backend before anything else.
            session.enable_retry_buffering();
            d.update(b"body\0");
            while let Some(chunk) = session.read_request_body().await? {
                d.update(&chunk);
            }
        }
        Some(n) => d.update(format!("length:{n}").as_bytes()),
        None => d.update(b"unframed"),
    }
    Ok(d.finish().as_ref().to_vec())
}

/// `TGI1`, status (u16), header count (u16), then each header as name length (u16),
/// name, value length (u32), value; then the body.
fn encode(status: u16, headers: &[(HeaderName, HeaderValue)], body: &[u8]) -> Vec<u8> {
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 6)
        .sum();
    let mut b = Vec::with_capacity(8 + size + body.len());
    b.extend_from_slice(b"TGI1");
    b.extend_from_slice(&status.to_be_bytes());
    b.extend_from_slice(&(headers.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for (n, v) in headers.iter().take(usize::from(u16::MAX)) {
        b.extend_from_slice(&(n.as_str().len() as u16).to_be_bytes());
        b.extend_from_slice(n.as_str().as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b.extend_from_slice(body);
    b
}

fn decode(b: &[u8]) -> Option<Stored> {
    let mut r = Reader(b);
    if r.take(4)? != b"TGI1" {
        return None;
    }
    let status = r.u16()?;
    let count = r.u16()?;
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let n = usize::from(r.u16()?);
        let name = HeaderName::from_bytes(r.take(n)?).ok()?;
        let n = r.u32()? as usize;
        let value = HeaderValue::from_bytes(r.take(n)?).ok()?;
        headers.push((name, value));
    }
    Some(Stored {
        status,
        headers,
        body: Bytes::copy_from_slice(r.0),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A `Hasher` feeding SHA-256, so identity parts are read by the same code as rate
/// limit keys ([`crate::ratelimit::hash_key`]).
struct DigestHasher(Digest);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stored_responses_read_back_as_written() {
        let headers = vec![
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("set-cookie"),
                HeaderValue::from_static("a=1"),
            ),
            (
                HeaderName::from_static("set-cookie"),
                HeaderValue::from_static("b=2"),
            ),
        ];
        let blob = encode(201, &headers, b"{\"id\":7}");
        let s = decode(&blob).unwrap();
        assert_eq!(s.status, 201);
        assert_eq!(s.headers, headers);
        assert_eq!(&s.body[..], b"{\"id\":7}");
        assert_eq!(
            decode(&blob[..blob.len() - 8]).map(|s| s.body.len()),
            Some(0)
        );
        assert!(decode(&blob[..10]).is_none());
        assert!(decode(b"XXXX").is_none());
    }

    #[test]
    fn keys_are_strings_or_tokens_of_visible_ascii() {
        let k = |s: &'static str| parse_key(&HeaderValue::from_static(s)).map(str::to_owned);
        assert_eq!(k("\"8e03978e-40d5\"").as_deref(), Ok("8e03978e-40d5"));
        assert_eq!(k("abc").as_deref(), Ok("abc"));
        assert!(k("\"\"").is_err());
        assert!(parse_key(&HeaderValue::from_str(&"a".repeat(256)).unwrap()).is_err());
        assert!(parse_key(&HeaderValue::from_bytes(b"\xff").unwrap()).is_err());
    }
}
