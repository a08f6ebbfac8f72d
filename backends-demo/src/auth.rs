//! Edge-authentication test peers: signing keys with their JWKS, an identity
//! provider's key endpoint whose set can be rotated or taken down, and a small
//! forward-auth service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A private key that signs tokens, and its public half as a JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    key: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    /// A fresh key for `alg` (RS*/PS*: RSA 2048; ES256/ES384; EdDSA: Ed25519).
    pub fn generate(kid: &str, alg: Algorithm) -> anyhow::Result<Self> {
        use rcgen::{KeyPair, RsaKeySize};
        let key = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let pair = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)?;
                EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let curve = if alg == Algorithm::ES256 {
                    &rcgen::PKCS_ECDSA_P256_SHA256
                } else {
                    &rcgen::PKCS_ECDSA_P384_SHA384
                };
                EncodingKey::from_ec_pem(KeyPair::generate_for(curve)?.serialize_pem().as_bytes())?
            }
            Algorithm::EdDSA => {
                // jsonwebtoken's JWK export takes only PKCS#8 v1 Ed25519 keys; rcgen
                // writes v2 (with the public key), so the JWK is written here.
                let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
                let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes())?;
                let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                                  "x": b64(pair.public_key_raw()) });
                return Ok(Self::with_jwk(kid, alg, key, jwk));
            }
            other => anyhow::bail!("{other:?} is not a public-key algorithm"),
        };
        let jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg)?)?;
        Ok(Self::with_jwk(kid, alg, key, jwk))
    }

    fn with_jwk(kid: &str, alg: Algorithm, key: EncodingKey, mut jwk: Value) -> Self {
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), json!(kid));
            o.insert("use".into(), json!("sig"));
        }
        Self {
            kid: kid.to_owned(),
            alg,
            key,
            jwk,
        }
    }

    /// A token with `claims`, signed, naming this key's `kid`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }

    /// The public key as published (the JWK's JSON): what an algorithm-confusion
    /// forger uses as an HMAC secret.
    pub fn public_jwk_text(&self) -> String {
        self.jwk.to_string()
    }
}

/// A JWKS document of `keys`.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// A token "signed" with HS256 using `secret` (an attacker using the public key as
/// the HMAC secret), naming `kid`.
pub fn hs256(claims: &Value, kid: &str, secret: &[u8]) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret)?,
    )?)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct IdpState {
    jwks: String,
    up: bool,
    cache_control: Option<String>,
}

/// An identity provider's key endpoints: `/.well-known/openid-configuration` (naming
/// `/jwks.json`) and `/jwks.json`. The set can be replaced and the server "taken
/// down" (every answer a 503).
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<IdpState>>,
    fetches: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn spawn(jwks: String) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(IdpState {
            jwks,
            up: true,
            cache_control: None,
        }));
        let fetches = Arc::new(AtomicU64::new(0));
        let (s, f) = (state.clone(), fetches.clone());
        let task = crate::serve_in_process(
            listener,
            move |req: http::Request<hyper::body::Incoming>| {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    let st = s.lock().unwrap_or_else(PoisonError::into_inner);
                    let resp = Response::builder().header("content-type", "application/json");
                    if !st.up {
                        return resp
                            .status(StatusCode::SERVICE_UNAVAILABLE)
                            .body(Full::new(Bytes::from_static(b"down")))
                            .unwrap_or_default();
                    }
                    match req.uri().path() {
                        "/.well-known/openid-configuration" => {
                            let doc = json!({
                                "issuer": format!("http://{addr}"),
                                "jwks_uri": format!("http://{addr}/jwks.json"),
                            });
                            resp.body(Full::new(Bytes::from(doc.to_string())))
                                .unwrap_or_default()
                        }
                        "/jwks.json" => {
                            f.fetch_add(1, Ordering::Relaxed);
                            let resp = match &st.cache_control {
                                Some(cc) => resp.header("cache-control", cc.as_str()),
                                None => resp,
                            };
                            resp.body(Full::new(Bytes::from(st.jwks.clone())))
                                .unwrap_or_default()
                        }
                        _ => Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::new()))
                            .unwrap_or_default(),
                    }
                }
            },
        );
        Ok(Self {
            addr,
            state,
            fetches,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_jwks(&self, jwks: String) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .jwks = jwks;
    }

    pub fn set_up(&self, up: bool) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).up = up;
    }

    pub fn set_cache_control(&self, cc: Option<&str>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cache_control = cc.map(str::to_owned);
    }

    /// `/jwks.json` answers given so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A forward-auth service: `Authorization: Bearer allow-NAME` is allowed (200 with
/// `x-auth-user: NAME`), `Bearer slow` answers after 3 s, anything else is a 401 with
/// `WWW-Authenticate: Basic realm="svc"` and the body `denied by svc`. It records what
/// it was sent.
pub struct AuthService {
    pub addr: SocketAddr,
    calls: Arc<AtomicU64>,
    last: Arc<Mutex<Option<http::HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AuthService {
    pub async fn spawn() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind auth service")?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(None));
        let (c, l) = (calls.clone(), last.clone());
        let task = crate::serve_in_process(
            listener,
            move |req: http::Request<hyper::body::Incoming>| {
                let (c, l) = (c.clone(), l.clone());
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    *l.lock().unwrap_or_else(PoisonError::into_inner) = Some(req.headers().clone());
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    if auth == "Bearer slow" {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                    match auth.strip_prefix("Bearer allow-") {
                        Some(user) => Response::builder()
                            .header("x-auth-user", user)
                            .header("x-not-copied", "1")
                            .body(Full::new(Bytes::new()))
                            .unwrap_or_default(),
                        None => Response::builder()
                            .status(StatusCode::UNAUTHORIZED)
                            .header("www-authenticate", "Basic realm=\"svc\"")
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(b"denied by svc")))
                            .unwrap_or_default(),
                    }
                }
            },
        );
        Ok(Self {
            addr,
            calls,
            last,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/check", self.addr)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The headers of the last call.
    pub fn last_headers(&self) -> Option<http::HeaderMap> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}
