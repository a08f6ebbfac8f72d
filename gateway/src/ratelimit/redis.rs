//! The Redis store: cluster-wide GCRA, one key per rate-limit key, decided by one
//! server-side script per request (one round trip), with the Redis server's clock so
//! every gateway replica agrees on time.
//!
//! A Redis Cluster (`redis.cluster`) is reached through the crate's cluster connection,
//! which routes each script to the node owning its key's slot.
//!
//! The connection (a multiplexed, auto-reconnecting `ConnectionManager`) is driven by
//! a runtime of its own on a background thread, so its I/O never depends on a busy
//! Pingora worker. Every call has a deadline (`redis.timeout`); a breaker stops calling
//! a Redis that keeps failing (3 failures in a row open it for a second, then one call
//! probes), so a dead or frozen Redis does not add its timeout to every request. While
//! it is open the caller decides locally (`on_store_error`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tollgate_config::gateway::RedisConfig;

use super::local::{Decision, Limit};
use crate::metrics::METRICS;

/// GCRA on the server's clock. KEYS[1]: the key. ARGV: interval and tolerance in
/// microseconds. Returns {allowed, retry_after_us, remaining, reset_after_us}. The key
/// expires when its bucket is full again: an absent key is a full bucket.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next = tat + interval
local ahead = next - now
if ahead <= tolerance then
  redis.call('SET', KEYS[1], next, 'PX', math.floor(ahead / 1000) + 1)
  return {1, 0, math.floor((tolerance - ahead) / interval), ahead}
end
return {0, ahead - tolerance, math.floor((tolerance - (tat - now)) / interval), tat - now}
"#;

/// The sliding window (`tollgate_config::common::sliding_window`, the same steps) on
/// the server's clock. KEYS[1]: the key. ARGV: window and limit, window in
/// microseconds. The key holds `index current previous` and expires two windows after
/// its last write. Returns {allowed, retry_after_us, remaining, reset_after_us}.
const WINDOW_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local w = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local index = math.floor(now / w)
local elapsed = now - index * w
local c, p = 0, 0
local v = redis.call('GET', KEYS[1])
if v then
  local i, sc, sp = string.match(v, '(%d+) (%d+) (%d+)')
  i, sc, sp = tonumber(i), tonumber(sc), tonumber(sp)
  if i == index then c, p = sc, sp elseif i == index - 1 then p = sc end
end
local left = w - elapsed
local est = p * (1 - elapsed / w) + c
if est + 1 <= limit then
  c = c + 1
  redis.call('SET', KEYS[1], index .. ' ' .. c .. ' ' .. p, 'PX', math.floor(2 * w / 1000) + 1)
  local rem = math.floor(limit - (p * (1 - elapsed / w) + c))
  if rem < 0 then rem = 0 end
  return {1, 0, rem, left + w}
end
local wait
if c + 1 <= limit and p > 0 then
  wait = w * (1 - (limit - 1 - c) / p) - elapsed
else
  local into = 0
  if c > 0 then into = w * (1 - (limit - 1) / c) end
  if into < 0 then into = 0 end
  wait = left + into
end
if wait < 1000 then wait = 1000 end
local reset = left
if c > 0 then reset = left + w end
return {0, math.floor(wait), 0, reset}
"#;

/// Consecutive failures that open the breaker, and how long it stays open.
const BREAKER_FAILURES: u32 = 3;
const BREAKER_OPEN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: not called (breaker open after repeated failures)")]
    BreakerOpen,
    #[error("redis: not connected to the cluster yet")]
    NotConnected,
}

pub struct RedisStore {
    pub config: RedisConfig,
    conn: Connection,
    script: redis::Script,
    window_script: redis::Script,
    failures: AtomicU32,
    /// Breaker open until this many ms after `origin` (0: closed).
    open_until_ms: AtomicU64,
    origin: Instant,
    /// Keeps the connection's runtime alive; stops it when the store is dropped.
    _runtime: RuntimeThread,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact(&self.config.url))
            .finish()
    }
}

/// A single Redis (a multiplexed, auto-reconnecting manager), or a Redis Cluster (a
/// connection routing each call to its key's node, set once the first connect, made
/// in the background, succeeded).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(Arc<std::sync::OnceLock<ClusterConnection>>),
}

/// A handle for one call.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

struct RuntimeThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl RedisStore {
    /// Set up the (lazy) connection; nothing is sent until the first request, so a
    /// Redis that is down at startup or reload does not stop the gateway.
    pub fn new(config: &RedisConfig) -> Result<Arc<Self>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("redis runtime: {e}"))?;
        let conn = if config.cluster {
            Connection::Cluster(cluster(config, &runtime)?)
        } else {
            Connection::Single(single(config, &runtime)?)
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("redis".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                })
            })
            .map_err(|e| format!("redis thread: {e}"))?;
        METRICS.redis_available.set(1);
        Ok(Arc::new(Self {
            config: config.clone(),
            conn,
            script: redis::Script::new(SCRIPT),
            window_script: redis::Script::new(WINDOW_SCRIPT),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            origin: Instant::now(),
            _runtime: RuntimeThread { stop: Some(stop) },
        }))
    }
}

/// The manager of a single Redis, driven by `runtime`; lazy: nothing is sent until
/// the first call.
fn single(
    config: &RedisConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<ConnectionManager, String> {
    let client = match &config.ca_pem {
        None => redis::Client::open(config.url.as_str()),
        Some(pem) => redis::Client::build_with_tls(
            config.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
    }
    .map_err(|e| format!("redis.url {}: {e}", redact(&config.url)))?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(100))))
        .set_response_timeout(Some(config.timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let _enter = runtime.enter();
    ConnectionManager::new_lazy_with_config(client, cfg)
        .map_err(|e| format!("redis {}: {e}", redact(&config.url)))
}

/// A Redis Cluster connection, made in the background on `runtime` (retried every
/// half second until it succeeds): until then calls fail fast, as with a dead Redis.
fn cluster(
    config: &RedisConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<Arc<std::sync::OnceLock<ClusterConnection>>, String> {
    let mut builder = redis::cluster::ClusterClient::builder(vec![config.url.as_str()])
        .connection_timeout(config.timeout.max(Duration::from_millis(100)))
        .response_timeout(config.timeout);
    if let Some(pem) = &config.ca_pem {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
    }
    let client = builder
        .build()
        .map_err(|e| format!("redis.url {}: {e}", redact(&config.url)))?;
    let slot = Arc::new(std::sync::OnceLock::new());
    let (url, filled) = (redact(&config.url), slot.clone());
    runtime.spawn(async move {
        loop {
            match client.get_async_connection().await {
                Ok(c) => {
                    let _ = filled.set(c);
                    tracing::info!(redis = %url, "connected to the Redis Cluster");
                    return;
                }
                Err(e) => {
                    crate::trace::warn_sampled(
                        "redis_cluster",
                        &format!("redis cluster {url}: {e}"),
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(slot)
}

impl RedisStore {
    /// One step of `limit` for `key` in Redis.
    pub async fn check(&self, key: &str, limit: &Limit) -> Result<Decision, StoreError> {
        let mut conn = self.connection()?;
        let call = match limit {
            Limit::Gcra(gcra) => {
                let mut c = self.script.key(key);
                c.arg(micros(gcra.interval())).arg(micros(gcra.tolerance()));
                c
            }
            Limit::Window(w) => {
                let mut c = self.window_script.key(key);
                c.arg(micros(w.window())).arg(w.limit());
                c
            }
        };
        let (allowed, retry_us, remaining, reset_us) = self
            .guarded(call.invoke_async::<(i64, i64, i64, i64)>(&mut conn))
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            retry_after: from_micros(retry_us),
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset_after: from_micros(reset_us),
        })
    }

    /// A connection handle for one call (cheap: the connection is multiplexed), or
    /// an error while a cluster connection is still being made.
    pub fn connection(&self) -> Result<Conn, StoreError> {
        match &self.conn {
            Connection::Single(c) => Ok(Conn::Single(c.clone())),
            Connection::Cluster(slot) => slot
                .get()
                .cloned()
                .map(Conn::Cluster)
                .ok_or(StoreError::NotConnected),
        }
    }

    /// Run `call` (built on [`Self::connection`]) under the store's deadline and
    /// breaker, timing it: every Redis call goes through here.
    pub async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let open_until = self.open_until_ms.load(Ordering::Relaxed);
        if open_until > now_ms {
            return Err(StoreError::BreakerOpen);
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(self.config.timeout)),
        };
        METRICS
            .redis_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(v) => {
                self.succeeded(open_until);
                Ok(v)
            }
            Err(e) => {
                self.failed(now_ms, &e);
                Err(e)
            }
        }
    }

    fn succeeded(&self, was_open_until: u64) {
        if self.failures.swap(0, Ordering::Relaxed) >= BREAKER_FAILURES || was_open_until > 0 {
            self.open_until_ms.store(0, Ordering::Relaxed);
            METRICS.redis_available.set(1);
            tracing::info!(redis = %redact(&self.config.url), "redis answers again: cluster-wide rate limits resumed");
        }
    }

    fn failed(&self, now_ms: u64, e: &StoreError) {
        METRICS
            .redis_errors
            .with_label_values(&[match e {
                StoreError::Timeout(_) => "timeout",
                _ => "error",
            }])
            .inc();
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= BREAKER_FAILURES {
            let until = now_ms + BREAKER_OPEN.as_millis() as u64;
            let was = self.open_until_ms.swap(until, Ordering::Relaxed);
            if was == 0 {
                METRICS.redis_available.set(0);
                tracing::warn!(
                    redis = %redact(&self.config.url),
                    "redis failing ({e}): rate limits decided locally; retrying every {BREAKER_OPEN:?}"
                );
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redact("redis://:secret@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(super::redact("rediss://u:p@h:6380"), "rediss://***@h:6380");
        assert_eq!(super::redact("redis://h:6379"), "redis://h:6379");
    }
}
