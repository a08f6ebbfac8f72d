//! JWKS key sets: read from a file at (re)load, or fetched from a URL (directly or
//! through OIDC discovery) by a background task.
//!
//! - A fetched set is shared by every policy (and every snapshot) naming the same
//!   source: a reload keeps the keys it has instead of starting empty.
//! - Refetched every `max-age` of the answer's `Cache-Control` (kept between
//!   `min_refresh` and a day), else every `refresh`; on a token naming an unknown
//!   `kid`, at once, but never more often than `min_refresh`.
//! - A failed fetch keeps the last good set and is retried after `min_refresh`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::sync::{watch, Notify};
use tollgate_config::gateway::auth::{Jwks, JwksSource};

use crate::metrics::METRICS;

/// Longest a `Cache-Control: max-age` is followed.
const MAX_AGE_CAP: Duration = Duration::from_secs(24 * 3600);

pub struct Key {
    pub kid: Option<String>,
    pub decoding: DecodingKey,
    pub family: AlgorithmFamily,
    /// The JWK's `alg`, when it names one: then only that algorithm may use the key.
    pub alg: Option<Algorithm>,
}

impl Key {
    pub fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
pub struct Keys {
    /// Bumped by every change of the set (verified-token caches start over).
    pub generation: u64,
    pub keys: Vec<Arc<Key>>,
    by_kid: HashMap<String, Arc<Key>>,
    /// A fetch or read has succeeded at least once.
    pub loaded: bool,
}

impl Keys {
    pub fn by_kid(&self, kid: &str) -> Option<&Arc<Key>> {
        self.by_kid.get(kid)
    }
}

pub struct KeySet {
    pub cfg: Jwks,
    /// Metric label: the URL or file.
    pub label: String,
    keys: ArcSwap<Keys>,
    wake: Arc<Notify>,
    /// Counts finished fetch attempts (ok or not), for requests waiting on one.
    attempts: watch::Sender<u64>,
    last_attempt: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("source", &self.label)
            .finish_non_exhaustive()
    }
}

/// Set by `gateway validate`: URL sets are made empty, never fetched.
static OFFLINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// No fetch from now on (a config check reads files, never the network).
pub fn offline() {
    OFFLINE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Live fetched sets, by their settings.
static FETCHED: LazyLock<Mutex<HashMap<Jwks, Weak<KeySet>>>> = LazyLock::new(Default::default);

/// The runtime of the background fetches: one thread for the whole process.
fn runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static RT: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("auth runtime: {e}"))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("auth".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("auth thread: {e}"))?;
        Ok(handle)
    })
    .as_ref()
    .map_err(Clone::clone)
}

impl KeySet {
    fn new(cfg: &Jwks) -> Self {
        let label = match &cfg.source {
            JwksSource::File(p) => p.display().to_string(),
            JwksSource::Url(u) => u.clone(),
            JwksSource::Discovery(iss) => format!(
                "{}/.well-known/openid-configuration",
                iss.trim_end_matches('/')
            ),
        };
        Self {
            cfg: cfg.clone(),
            label,
            keys: ArcSwap::from_pointee(Keys::default()),
            wake: Arc::new(Notify::new()),
            attempts: watch::channel(0).0,
            last_attempt: Mutex::new(None),
        }
    }

    /// The set for `cfg`: a file is read now (its errors fail the load); a URL's set
    /// is the one already fetched for the same settings, or a new one whose first fetch
    /// is waited for (up to the fetch timeout: a gateway whose IdP is down still
    /// starts, and answers 503 until the keys arrive).
    pub fn get(cfg: &Jwks) -> Result<Arc<KeySet>, String> {
        if let JwksSource::File(path) = &cfg.source {
            let set = KeySet::new(cfg);
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let keys = parse_jwks(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            set.install(keys);
            METRICS
                .jwks_fetches
                .with_label_values(&[&set.label, "ok"])
                .inc();
            return Ok(Arc::new(set));
        }
        if OFFLINE.load(std::sync::atomic::Ordering::Relaxed) {
            super::client::build(cfg.ca.as_deref(), cfg.timeout)?;
            return Ok(Arc::new(KeySet::new(cfg)));
        }
        let mut live = FETCHED.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, w| w.strong_count() > 0);
        if let Some(set) = live.get(cfg).and_then(Weak::upgrade) {
            return Ok(set);
        }
        let client = super::client::build(cfg.ca.as_deref(), cfg.timeout)?;
        let set = Arc::new(KeySet::new(cfg));
        live.insert(cfg.clone(), Arc::downgrade(&set));
        drop(live);
        let mut first = set.attempts.subscribe();
        runtime()?.spawn(refresh_loop(Arc::downgrade(&set), client));
        // Blocking (a load runs on its own thread), bounded by the fetch's own timeout.
        let (tx, rx) = std::sync::mpsc::channel();
        runtime()?.spawn(async move {
            let _ = first.changed().await;
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(cfg.timeout + Duration::from_millis(200));
        Ok(set)
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<Keys>> {
        self.keys.load()
    }

    fn install(&self, keys: Vec<Arc<Key>>) {
        let old = self.keys.load();
        let by_kid = keys
            .iter()
            .filter_map(|k| Some((k.kid.clone()?, k.clone())))
            .collect();
        METRICS
            .jwks_keys
            .with_label_values(&[&self.label])
            .set(keys.len() as i64);
        self.keys.store(Arc::new(Keys {
            generation: old.generation + 1,
            keys,
            by_kid,
            loaded: true,
        }));
    }

    /// A token named a `kid` the set lacks: fetch now unless a fetch ran within
    /// `min_refresh`, and wait for it (up to the fetch timeout). True when a fetch ran.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        if matches!(self.cfg.source, JwksSource::File(_)) {
            return false;
        }
        let due = self
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|t| t.elapsed() >= self.cfg.min_refresh);
        if !due {
            return false;
        }
        let mut done = self.attempts.subscribe();
        self.wake.notify_one();
        tokio::time::timeout(self.cfg.timeout, done.changed())
            .await
            .is_ok()
    }

    /// One fetch; the delay until the next.
    async fn fetch(&self, client: &reqwest::Client) -> Duration {
        *self
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let result = fetch_keys(client, &self.cfg.source).await;
        let next = match result {
            Ok((keys, max_age)) => {
                let changed = {
                    let old = self.keys.load();
                    !old.loaded || key_ids(&old.keys) != key_ids(&keys)
                };
                if changed {
                    tracing::info!(source = %self.label, keys = keys.len(), "JWKS loaded");
                    self.install(keys);
                }
                METRICS
                    .jwks_fetches
                    .with_label_values(&[&self.label, "ok"])
                    .inc();
                max_age
                    .unwrap_or(self.cfg.refresh)
                    .clamp(self.cfg.min_refresh, MAX_AGE_CAP)
            }
            Err(e) => {
                METRICS
                    .jwks_fetches
                    .with_label_values(&[&self.label, "error"])
                    .inc();
                let held = self.keys.load().keys.len();
                tracing::warn!(source = %self.label, "JWKS fetch failed, keeping the {held} key(s) held: {e}");
                self.cfg.min_refresh
            }
        };
        self.attempts.send_modify(|n| *n += 1);
        next
    }
}

/// What identifies a set's content for "did it change": kids and key material.
fn key_ids(keys: &[Arc<Key>]) -> Vec<(Option<String>, Vec<u8>)> {
    keys.iter()
        .map(|k| {
            let material = match k.decoding.kind() {
                jsonwebtoken::DecodingKeyKind::SecretOrDer(b) => b.clone(),
                jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } => {
                    [n.as_slice(), e.as_slice()].concat()
                }
            };
            (k.kid.clone(), material)
        })
        .collect()
}

async fn refresh_loop(set: Weak<KeySet>, client: reqwest::Client) {
    loop {
        let Some(s) = set.upgrade() else { return };
        let wait = s.fetch(&client).await;
        let wake = s.wake.clone();
        let min = s.cfg.min_refresh;
        // Not held while sleeping: the set goes when the last policy using it does.
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {
                // An unknown kid: at most one fetch per min_refresh (the caller checked
                // the time; this guards against a burst of wakes).
                let since = set.upgrade().and_then(|s| *s.last_attempt.lock().unwrap_or_else(PoisonError::into_inner));
                if let Some(t) = since {
                    tokio::time::sleep(min.saturating_sub(t.elapsed())).await;
                }
            }
        }
    }
}

async fn fetch_keys(
    client: &reqwest::Client,
    source: &JwksSource,
) -> Result<(Vec<Arc<Key>>, Option<Duration>), String> {
    let url = match source {
        JwksSource::Url(u) => u.clone(),
        JwksSource::Discovery(issuer) => {
            let at = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let (body, _) = get(client, &at).await?;
            let doc: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("{at}: not JSON: {e}"))?;
            doc.get("jwks_uri")
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("{at}: no jwks_uri"))?
                .to_owned()
        }
        JwksSource::File(_) => return Err("a file is read at load".into()),
    };
    let (body, max_age) = get(client, &url).await?;
    let keys = parse_jwks(&body).map_err(|e| format!("{url}: {e}"))?;
    Ok((keys, max_age))
}

async fn get(
    client: &reqwest::Client,
    url: &str,
) -> Result<(bytes::Bytes, Option<Duration>), String> {
    let resp = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((body, max_age))
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as 0 (then
/// `min_refresh` applies).
pub fn max_age(v: &str) -> Option<Duration> {
    v.split(',').find_map(|d| {
        let d = d.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        let secs = d.strip_prefix("max-age=")?.trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(secs))
    })
}

/// The verification keys of a JWKS document. Keys meant for encryption, symmetric
/// keys (`kty: oct`: a shared secret has no place in a published set) and keys this
/// gateway cannot use are skipped; a document with no usable key is an error.
pub fn parse_jwks(text: &[u8]) -> Result<Vec<Arc<Key>>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, v) in doc.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(v) {
            Ok(j) => j,
            Err(e) => {
                skipped.push(format!("key {i}: {e}"));
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            AlgorithmParameters::OctetKey(_) => {
                skipped.push(format!("key {i}: symmetric (kty oct) keys are refused"));
                continue;
            }
            _ => {
                skipped.push(format!("key {i}: unsupported key type"));
                continue;
            }
        };
        // `KeyAlgorithm` prints as its JOSE name (`RS256`, `EdDSA`); the encryption
        // ones (`RSA-OAEP`) do not parse as signature algorithms.
        let alg = match jwk
            .common
            .key_algorithm
            .map(|a| format!("{a:?}").parse::<Algorithm>())
        {
            None => None,
            Some(Ok(a)) if a.family() == family => Some(a),
            Some(_) => {
                skipped.push(format!("key {i}: its alg does not fit its key type"));
                continue;
            }
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(decoding) => keys.push(Arc::new(Key {
                kid: jwk.common.key_id.clone(),
                decoding,
                family,
                alg,
            })),
            Err(e) => skipped.push(format!("key {i}: {e}")),
        }
    }
    if !skipped.is_empty() {
        tracing::warn!("JWKS keys skipped: {}", skipped.join("; "));
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable signature key{}",
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join("; "))
            }
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cache_control_max_age_is_read_and_no_store_means_now() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age("Max-Age=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped_and_a_set_needs_one_usable_key() {
        let ec = r#"{"kty":"EC","crv":"P-256","kid":"ec","alg":"ES256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let oct = r#"{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}"#;
        let enc = r#"{"kty":"EC","crv":"P-256","kid":"enc","use":"enc",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let keys = parse_jwks(format!(r#"{{"keys":[{ec},{oct},{enc}]}}"#).as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ec"));
        assert!(keys[0].accepts(Algorithm::ES256));
        assert!(
            !keys[0].accepts(Algorithm::ES384),
            "the JWK names ES256 only"
        );
        assert!(!keys[0].accepts(Algorithm::RS256));
        let only_secret = format!(r#"{{"keys":[{oct}]}}"#);
        let e = parse_jwks(only_secret.as_bytes()).map(|_| ()).unwrap_err();
        assert!(
            e.contains("no usable signature key") && e.contains("symmetric"),
            "{e}"
        );
        assert!(parse_jwks(b"{}").is_err());
    }
}
