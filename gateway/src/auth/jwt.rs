//! Bearer-token verification: the policy (token sources, algorithms, keys by `kid`,
//! time, issuer, audience, scopes, claim conditions) is here; the signature check is
//! `jsonwebtoken`'s (aws-lc-rs).
//!
//! A verified token is remembered by its SHA-256 until it expires (or the key set
//! changes), so a client's next requests cost a hash and a map lookup instead of a
//! signature check (Envoy's `jwt_cache_config` does the same).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, Validation};
use pingora_http::RequestHeader;
use serde_json::{Map, Value};
use tollgate_config::gateway::auth::{ClaimCheck, JwtAlgorithm, JwtPolicy, TokenSource};

use super::jwks::{Key, KeySet};
use super::Identity;

pub type Claims = Map<String, Value>;

/// Why a token was not accepted (the `decision` label and the access log's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Missing,
    Malformed,
    BadAlgorithm(String),
    UnknownKid(String),
    BadSignature,
    Expired,
    NotYetValid,
    NoExpiry,
    WrongIssuer,
    WrongAudience,
    InsufficientScope(Vec<String>),
    ClaimMismatch(String),
    KeysUnavailable,
}

impl Failure {
    pub fn decision(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadAlgorithm(_) => "bad_algorithm",
            Self::UnknownKid(_) => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NoExpiry => "no_expiry",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::ClaimMismatch(_) => "claim_mismatch",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Missing => "no token".into(),
            Self::Malformed => "the token is not a well-formed JWT".into(),
            Self::BadAlgorithm(a) => format!("algorithm {a:?} is not accepted"),
            Self::UnknownKid(k) => format!("no key with kid {k:?}"),
            Self::BadSignature => "the signature does not verify".into(),
            Self::Expired => "the token has expired".into(),
            Self::NotYetValid => "the token is not valid yet".into(),
            Self::NoExpiry => "the token has no exp".into(),
            Self::WrongIssuer => "the token's issuer is not accepted".into(),
            Self::WrongAudience => "the token's audience is not accepted".into(),
            Self::InsufficientScope(s) => format!("scope {} required", s.join(" ")),
            Self::ClaimMismatch(c) => format!("claim {c} does not meet the policy"),
            Self::KeysUnavailable => "the verification keys are not available yet".into(),
        }
    }
}

struct Cached {
    identity: Arc<Identity>,
    generation: u64,
    exp: Option<u64>,
    nbf: Option<u64>,
}

pub struct JwtAuth {
    pub policy: JwtPolicy,
    keys: Arc<KeySet>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("policy", &self.policy.name)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn to_algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// The token of the request under `sources`, first found wins.
pub fn find_token<'a>(sources: &[TokenSource], req: &'a RequestHeader) -> Option<&'a str> {
    sources.iter().find_map(|s| match s {
        TokenSource::Header { name, prefix } => req.headers.get_all(name).iter().find_map(|v| {
            let v = v.to_str().ok()?.trim();
            let head = v.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix)
                .then(|| v.get(prefix.len()..))
                .flatten()
                .map(str::trim)
                .filter(|t| !t.is_empty())
        }),
        TokenSource::Cookie(name) => crate::attempts::cookie_value(req, name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|t| !t.is_empty()),
    })
}

/// The claim at `path` (`["realm_access", "roles"]`).
pub fn claim<'a>(claims: &'a Claims, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(claims.get(first)?, |v, k| v.get(k))
}

/// A claim as one string: strings as they are, numbers and booleans printed, lists
/// joined with commas, objects as JSON.
pub fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(claim_text).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The request headers `claims_to_headers` asks for, from `claims`.
pub fn identity_headers(
    claims_to_headers: &[(Vec<String>, HeaderName)],
    claims: &Claims,
) -> Vec<(HeaderName, HeaderValue)> {
    claims_to_headers
        .iter()
        .filter_map(|(path, header)| {
            let text = claim_text(claim(claims, path)?);
            // Not a header value (a control character): left out, not mangled.
            let v = HeaderValue::from_bytes(text.as_bytes()).ok()?;
            Some((header.clone(), v))
        })
        .collect()
}

fn scalar_eq(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        _ => false,
    }
}

fn contains(v: &Value, want: &str) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|i| scalar_eq(i, want)),
        Value::String(s) => s.split_ascii_whitespace().any(|w| w == want),
        _ => false,
    }
}

/// The token's scopes: `scope` (space-separated, RFC 8693) or `scp` (a list or a
/// string, as Azure AD and Okta write it).
fn has_scope(claims: &Claims, scope: &str) -> bool {
    ["scope", "scp"]
        .iter()
        .filter_map(|k| claims.get(*k))
        .any(|v| contains(v, scope))
}

impl JwtAuth {
    pub fn new(policy: JwtPolicy, keys: Arc<KeySet>) -> Self {
        Self {
            policy,
            keys,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Check the request's token. `Ok(None)`: no token on an `optional` policy.
    pub async fn verify(
        &self,
        req: &RequestHeader,
    ) -> Result<Option<(Arc<Identity>, bool)>, Failure> {
        let Some(token) = find_token(&self.policy.tokens, req) else {
            return if self.policy.optional {
                Ok(None)
            } else {
                Err(Failure::Missing)
            };
        };
        self.verify_token(token).await.map(Some)
    }

    /// Check one token; true when the answer came from the verified-token cache.
    pub async fn verify_token(&self, token: &str) -> Result<(Arc<Identity>, bool), Failure> {
        let digest: [u8; 32] = {
            let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let now = now_secs();
        let generation = self.keys.keys().generation;
        if self.policy.cache_entries > 0 {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache.get(&digest).filter(|c| c.generation == generation) {
                self.check_times(c.exp, c.nbf, now)?;
                return Ok((c.identity.clone(), true));
            }
        }
        let (claims, generation) = self.verify_signature(token).await?;
        // NumericDate: seconds, possibly with a fraction (RFC 7519); anything else in
        // `exp` or `nbf` makes the token malformed, not "without a limit".
        let date = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .map(Some)
                .ok_or(Failure::Malformed),
        };
        let (exp, nbf) = (date("exp")?, date("nbf")?);
        self.check_times(exp, nbf, now)?;
        self.check_claims(&claims)?;
        let identity = Arc::new(Identity {
            headers: identity_headers(&self.policy.claims_to_headers, &claims),
            claims,
        });
        if self.policy.cache_entries > 0 {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= self.policy.cache_entries {
                let leeway = self.policy.leeway.as_secs();
                cache.retain(|_, c| c.exp.is_none_or(|e| e + leeway > now));
                if cache.len() >= self.policy.cache_entries {
                    cache.clear();
                }
            }
            cache.insert(
                digest,
                Cached {
                    identity: identity.clone(),
                    generation,
                    exp,
                    nbf,
                },
            );
        }
        Ok((identity, false))
    }

    fn check_times(&self, exp: Option<u64>, nbf: Option<u64>, now: u64) -> Result<(), Failure> {
        let leeway = self.policy.leeway.as_secs();
        match exp {
            Some(e) if now >= e.saturating_add(leeway) => return Err(Failure::Expired),
            None if self.policy.require_exp => return Err(Failure::NoExpiry),
            _ => {}
        }
        if nbf.is_some_and(|n| n > now.saturating_add(leeway)) {
            return Err(Failure::NotYetValid);
        }
        Ok(())
    }

    /// The header's algorithm and key, then the signature. Returns the claims and the
    /// key set's generation they were verified under.
    async fn verify_signature(&self, token: &str) -> Result<(Claims, u64), Failure> {
        #[derive(serde::Deserialize)]
        struct Head {
            alg: String,
            #[serde(default)]
            kid: Option<String>,
        }
        let head_b64 = token.split('.').next().ok_or(Failure::Malformed)?;
        let head_json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head_b64.trim_end_matches('='))
            .map_err(|_| Failure::Malformed)?;
        let head: Head = serde_json::from_slice(&head_json).map_err(|_| Failure::Malformed)?;
        let alg = JwtAlgorithm::parse(&head.alg)
            .filter(|a| self.policy.algorithms.contains(a))
            .map(to_algorithm)
            .ok_or_else(|| Failure::BadAlgorithm(head.alg.clone()))?;
        let mut keys = self.keys.keys();
        if !keys.loaded {
            return Err(Failure::KeysUnavailable);
        }
        let candidates: Vec<Arc<Key>> = match &head.kid {
            Some(kid) => {
                if keys.by_kid(kid).is_none() && self.keys.refresh_for_unknown_kid().await {
                    keys = self.keys.keys();
                }
                let key = keys
                    .by_kid(kid)
                    .ok_or_else(|| Failure::UnknownKid(kid.clone()))?;
                vec![key.clone()]
            }
            // No kid: every key that fits the algorithm (a few at most in practice).
            None => keys
                .keys
                .iter()
                .filter(|k| k.accepts(alg))
                .take(8)
                .cloned()
                .collect(),
        };
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut last = Failure::BadAlgorithm(head.alg.clone());
        for key in candidates.iter().filter(|k| k.accepts(alg)) {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation) {
                Ok(data) => return Ok((data.claims, keys.generation)),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
                            Failure::BadSignature
                        }
                        K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                            Failure::BadAlgorithm(head.alg.clone())
                        }
                        _ => Failure::Malformed,
                    };
                }
            }
        }
        Err(last)
    }

    fn check_claims(&self, claims: &Claims) -> Result<(), Failure> {
        let p = &self.policy;
        if let Some(iss) = &p.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(Failure::WrongIssuer);
            }
        }
        if !p.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => p.audiences.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| p.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err(Failure::WrongAudience);
            }
        }
        let missing: Vec<String> = p
            .required_scopes
            .iter()
            .filter(|s| !has_scope(claims, s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Failure::InsufficientScope(p.required_scopes.clone()));
        }
        for c in &p.claims {
            let v = claim(claims, &c.claim);
            let ok = v.is_some_and(|v| match &c.check {
                ClaimCheck::Equals(want) => scalar_eq(v, want),
                ClaimCheck::Contains(want) => contains(v, want),
                ClaimCheck::In(list) => list.iter().any(|w| scalar_eq(v, w)),
            });
            if !ok {
                return Err(Failure::ClaimMismatch(c.claim.join(".")));
            }
        }
        Ok(())
    }

    /// Verified tokens remembered now (tests and admin).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
