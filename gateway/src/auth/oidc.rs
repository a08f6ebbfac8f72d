//! OpenID Connect login, what ALB's `authenticate-oidc` does: a browser without a
//! session is sent to the provider (authorization code flow with PKCE, `state` and
//! `nonce`), the callback exchanges the code, the ID token is verified like any JWT
//! (keys from the provider's discovery document), and the session lives in a sealed
//! cookie ([`super::session`]): no server-side state, so any replica with the same
//! keys serves any browser. Tokens are refreshed shortly before they expire; the
//! logout path ends the session here and at the provider.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;
use tollgate_config::gateway::auth::{
    Jwks, JwksSource, JwtAlgorithm, JwtPolicy, OidcPolicy, OnUnauthenticated,
};

use super::jwt::{Claims, JwtAuth};
use super::session::{self, Sealer};
use super::Identity;
use crate::context::Client;
use crate::filters::Rejection;

/// How long a login may take at the provider.
const LOGIN_TTL: u64 = 600;
/// A refreshed session is handed to the other requests that carried the same old
/// refresh token for this long (one refresh per session, not one per request).
const REFRESHED_KEPT: Duration = Duration::from_secs(30);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Percent-encoding of a query value (RFC 3986 unreserved characters kept).
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    req.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| tollgate_config::gateway::actions::decode(v).into_owned())
    })
}

#[derive(Debug, Clone, Deserialize)]
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    /// The claims the headers need, and `sub`.
    claims: Claims,
    /// When the tokens expire (unix seconds).
    exp: u64,
    /// When the user logged in (the session ends `session_timeout` after).
    login: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rt: Option<String>,
    /// The ID token, for the provider's logout (`id_token_hint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idt: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Login {
    state: String,
    nonce: String,
    verifier: String,
    /// Where the browser was going.
    back: String,
    exp: u64,
}

#[derive(Debug, Deserialize)]
struct Tokens {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// What the policy makes of a request.
pub enum Outcome {
    Pass {
        identity: Option<Arc<Identity>>,
        set_cookies: Vec<HeaderValue>,
        decision: &'static str,
    },
    Answer {
        rejection: Rejection,
        decision: &'static str,
    },
}

pub struct OidcAuth {
    pub policy: OidcPolicy,
    client: reqwest::Client,
    sealer: Sealer,
    id_tokens: JwtAuth,
    provider: OnceCell<Provider>,
    rng: SystemRandom,
    /// Recent refreshes by the old refresh token's hash; the lock makes one refresh
    /// at a time per policy (refreshes are rare: one per session per token lifetime).
    refreshed: tokio::sync::Mutex<HashMap<[u8; 32], (Instant, Session)>>,
}

impl std::fmt::Debug for OidcAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcAuth")
            .field("policy", &self.policy.name)
            .finish_non_exhaustive()
    }
}

impl OidcAuth {
    pub fn new(policy: OidcPolicy) -> Result<Self, String> {
        let client = super::client::build(policy.ca.as_deref(), policy.timeout)?;
        let sealer = Sealer::new(&policy.session_keys)?;
        let jwt = JwtPolicy {
            name: policy.name.clone(),
            issuer: Some(policy.issuer.clone()),
            jwks: Jwks {
                source: JwksSource::Discovery(policy.issuer.clone()),
                ca: policy.ca.clone(),
                refresh: Duration::from_secs(600),
                min_refresh: Duration::from_secs(30),
                timeout: policy.timeout,
            },
            audiences: vec![policy.client_id.clone()],
            algorithms: JwtAlgorithm::ALL.to_vec(),
            leeway: Duration::from_secs(60),
            require_exp: true,
            required_scopes: Vec::new(),
            claims: Vec::new(),
            tokens: Vec::new(),
            claims_to_headers: policy.claims_to_headers.clone(),
            forward_token: true,
            optional: false,
            cache_entries: 0,
        };
        let keys = super::jwks::KeySet::get(&jwt.jwks)?;
        Ok(Self {
            id_tokens: JwtAuth::new(jwt, keys),
            policy,
            client,
            sealer,
            provider: OnceCell::new(),
            rng: SystemRandom::new(),
            refreshed: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The headers this policy sets toward the backend.
    pub fn owned_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.policy.claims_to_headers.iter().map(|(_, h)| h)
    }

    async fn provider(&self) -> Result<&Provider, String> {
        self.provider
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.policy.issuer);
                let resp = self
                    .client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("{url}: status {}", resp.status()));
                }
                resp.json::<Provider>()
                    .await
                    .map_err(|e| format!("{url}: {e}"))
            })
            .await
    }

    fn random(&self) -> Result<String, String> {
        let mut b = [0u8; 32];
        self.rng.fill(&mut b).map_err(|_| "no randomness")?;
        Ok(b64(&b))
    }

    /// One login cookie per login in progress, named after its `state`: logins started
    /// in two tabs at once both complete.
    fn state_cookie(&self, state: &str) -> String {
        let tag: String = state.chars().take(12).collect();
        format!("{}_login_{tag}", self.policy.cookie_name)
    }

    /// Cookie attributes; `Secure` when the browser uses HTTPS (here, or at a trusted
    /// TLS-terminating proxy in front).
    fn attrs(&self, https: bool, max_age: u64) -> String {
        let secure = if https { "; Secure" } else { "" };
        format!("Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }

    /// `{scheme}://{host}` of the request, as the browser sees it.
    fn origin(req: &RequestHeader, client: &Client) -> String {
        let https = crate::forwarded::client_used_https(client, req);
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        format!("{}://{host}", if https { "https" } else { "http" })
    }

    /// The callback or the logout path: answered here whatever route the path would
    /// match (as ALB answers `/oauth2/idpresponse`), so a policy on `/app/` still gets
    /// its callback at `/oauth2/callback`. `None` for any other path.
    pub async fn own_path(
        &self,
        req: &RequestHeader,
        client: &Client,
    ) -> Option<(Rejection, &'static str)> {
        let path = req.uri.path();
        if path == self.policy.redirect_path {
            return Some(match self.callback(req, client).await {
                Ok((location, cookies)) => (redirect(&location, cookies), "login_done"),
                Err(e) => {
                    tracing::warn!(policy = %self.policy.name, "OIDC login failed: {e}");
                    let r = Rejection::new(
                        401,
                        "auth_login_failed",
                        format!("{}: login failed: {e}", self.policy.name),
                    );
                    (r, "login_failed")
                }
            });
        }
        if path == self.policy.logout_path {
            return Some((self.logout(req, client).await, "logout"));
        }
        None
    }

    pub async fn on_request(&self, req: &RequestHeader, client: &Client) -> Outcome {
        if let Some((rejection, decision)) = self.own_path(req, client).await {
            return Outcome::Answer {
                rejection,
                decision,
            };
        }
        let (sealed, pieces) = session::read_split(req, &self.policy.cookie_name);
        let session = sealed
            .and_then(|s| self.sealer.open(&self.policy.cookie_name, &s))
            .and_then(|plain| serde_json::from_slice::<Session>(&plain).ok());
        let now = now();
        let mut decision = "missing";
        if let Some(s) = session {
            if now >= s.login + self.policy.session_timeout.as_secs() {
                decision = "session_timeout";
            } else if now + self.policy.refresh_before.as_secs() < s.exp {
                return self.pass(&s, Vec::new(), "ok");
            } else {
                match self.refresh(&s).await {
                    Ok(fresh) => {
                        let cookies = self.session_cookies(&fresh, req, client, pieces);
                        return match cookies {
                            Ok(c) => self.pass(&fresh, c, "refreshed"),
                            Err(e) => self.fail(e),
                        };
                    }
                    // Not expired yet: the session stands; the next request tries again.
                    Err(_) if now < s.exp => return self.pass(&s, Vec::new(), "ok"),
                    Err(e) => {
                        tracing::info!(policy = %self.policy.name, "session not refreshed: {e}");
                        decision = "expired";
                    }
                }
            }
        }
        match self.policy.on_unauthenticated {
            OnUnauthenticated::Allow => Outcome::Pass {
                identity: None,
                set_cookies: Vec::new(),
                decision: "anonymous",
            },
            OnUnauthenticated::Deny => Outcome::Answer {
                rejection: Rejection::new(
                    401,
                    "auth_required",
                    format!("{}: log in first", self.policy.name),
                ),
                decision,
            },
            OnUnauthenticated::Authenticate => match self.login(req, client).await {
                Ok(r) => Outcome::Answer {
                    rejection: r,
                    decision: "login_redirect",
                },
                Err(e) => self.fail(e),
            },
        }
    }

    fn fail(&self, e: String) -> Outcome {
        tracing::warn!(policy = %self.policy.name, "OIDC: {e}");
        Outcome::Answer {
            rejection: Rejection::new(
                503,
                "auth_unavailable",
                format!("{}: {e}", self.policy.name),
            )
            .retry_after(Duration::from_secs(1)),
            decision: "error",
        }
    }

    fn pass(&self, s: &Session, set: Vec<String>, decision: &'static str) -> Outcome {
        let identity = Identity {
            headers: super::jwt::identity_headers(&self.policy.claims_to_headers, &s.claims),
            claims: s.claims.clone(),
        };
        Outcome::Pass {
            identity: Some(Arc::new(identity)),
            set_cookies: set
                .iter()
                .filter_map(|c| HeaderValue::from_str(c).ok())
                .collect(),
            decision,
        }
    }

    /// To the provider, remembering (sealed) where the browser was going.
    async fn login(&self, req: &RequestHeader, client: &Client) -> Result<Rejection, String> {
        let provider = self.provider().await?;
        let login = Login {
            state: self.random()?,
            nonce: self.random()?,
            verifier: self.random()?,
            back: req
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
            exp: now() + LOGIN_TTL,
        };
        let challenge =
            b64(ring::digest::digest(&ring::digest::SHA256, login.verifier.as_bytes()).as_ref());
        let redirect_uri = format!("{}{}", Self::origin(req, client), self.policy.redirect_path);
        let sep = if provider.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={challenge}&code_challenge_method=S256",
            provider.authorization_endpoint,
            pct(&self.policy.client_id),
            pct(&redirect_uri),
            pct(&self.policy.scopes.join(" ")),
            login.state,
            login.nonce,
        );
        let name = self.state_cookie(&login.state);
        let plain = serde_json::to_vec(&login).map_err(|e| e.to_string())?;
        let sealed = self.sealer.seal(&name, &plain)?;
        let cookie = format!(
            "{name}={sealed}; {}",
            self.attrs(crate::forwarded::client_used_https(client, req), LOGIN_TTL)
        );
        Ok(redirect(&location, vec![cookie]))
    }

    /// The provider sent the browser back: check `state`, exchange the code, verify
    /// the ID token and its `nonce`, start the session.
    async fn callback(
        &self,
        req: &RequestHeader,
        client: &Client,
    ) -> Result<(String, Vec<String>), String> {
        if let Some(err) = query_param(req, "error") {
            let why = query_param(req, "error_description").unwrap_or_default();
            return Err(format!("the provider answered {err}: {why}"));
        }
        let state = query_param(req, "state").ok_or("no state")?;
        let name = self.state_cookie(&state);
        let login: Login = crate::attempts::cookie_value(req, &name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| self.sealer.open(&name, v))
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or("no login in progress (its cookie is missing or not ours)")?;
        if login.exp < now() {
            return Err("the login took too long".into());
        }
        if state != login.state {
            return Err("state does not match the login in progress".into());
        }
        let code = query_param(req, "code").ok_or("no code")?;
        let provider = self.provider().await?;
        let redirect_uri = format!("{}{}", Self::origin(req, client), self.policy.redirect_path);
        let tokens = self
            .token_call(
                provider,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &redirect_uri),
                    ("code_verifier", &login.verifier),
                ],
            )
            .await?;
        let id_token = tokens
            .id_token
            .clone()
            .ok_or("no id_token in the token answer")?;
        let (identity, _) = self
            .id_tokens
            .verify_token(&id_token)
            .await
            .map_err(|f| format!("ID token: {}", f.describe()))?;
        if identity.claims.get("nonce").and_then(Value::as_str) != Some(login.nonce.as_str()) {
            return Err("ID token nonce does not match the login".into());
        }
        let mut claims = identity.claims.clone();
        self.add_userinfo(provider, &tokens, &mut claims).await;
        let now = now();
        let session = Session {
            claims: self.kept_claims(&claims),
            exp: tokens
                .expires_in
                .map(|s| now + s)
                .or_else(|| claims.get("exp").and_then(Value::as_u64))
                .unwrap_or(now + 300),
            login: now,
            rt: tokens.refresh_token,
            idt: Some(id_token),
        };
        let mut cookies = self.session_cookies(&session, req, client, 0)?;
        cookies.push(session::expire(&name));
        // A path on this host only: `//evil.example` and `/\evil.example` are other
        // hosts to a browser.
        let back = if login.back.starts_with('/')
            && !login.back.starts_with("//")
            && !login.back.starts_with("/\\")
        {
            login.back
        } else {
            "/".into()
        };
        Ok((back, cookies))
    }

    /// Claims of the userinfo endpoint added to those of the ID token (for the same
    /// `sub` only; the ID token's own win). Best effort: the ID token suffices.
    async fn add_userinfo(&self, provider: &Provider, tokens: &Tokens, claims: &mut Claims) {
        let (Some(url), Some(at)) = (&provider.userinfo_endpoint, &tokens.access_token) else {
            return;
        };
        let info = async {
            let resp = self.client.get(url).bearer_auth(at).send().await.ok()?;
            resp.status().is_success().then_some(())?;
            resp.json::<Claims>().await.ok()
        }
        .await;
        if let Some(info) = info {
            if info.get("sub") == claims.get("sub") {
                for (k, v) in info {
                    claims.entry(k).or_insert(v);
                }
            }
        }
    }

    /// `sub` and the claims the headers use: what the cookie carries.
    fn kept_claims(&self, claims: &Claims) -> Claims {
        let mut kept = Claims::new();
        for key in std::iter::once("sub").chain(
            self.policy
                .claims_to_headers
                .iter()
                .filter_map(|(path, _)| path.first().map(String::as_str)),
        ) {
            if let Some(v) = claims.get(key) {
                kept.insert(key.to_owned(), v.clone());
            }
        }
        kept
    }

    fn session_cookies(
        &self,
        s: &Session,
        req: &RequestHeader,
        client: &Client,
        had: usize,
    ) -> Result<Vec<String>, String> {
        let remaining = (s.login + self.policy.session_timeout.as_secs()).saturating_sub(now());
        let plain = serde_json::to_vec(s).map_err(|e| e.to_string())?;
        let name = &self.policy.cookie_name;
        let sealed = self.sealer.seal(name, &plain)?;
        let https = crate::forwarded::client_used_https(client, req);
        session::set_cookies(name, &sealed, &self.attrs(https, remaining), had)
    }

    async fn token_call(
        &self,
        provider: &Provider,
        form: &[(&str, &str)],
    ) -> Result<Tokens, String> {
        let mut call = self.client.post(&provider.token_endpoint);
        let mut form: Vec<(&str, &str)> = form.to_vec();
        match &self.policy.client_secret {
            // client_secret_basic: both parts form-encoded first (RFC 6749 2.3.1).
            Some(secret) => {
                call = call.basic_auth(pct(&self.policy.client_id), Some(pct(secret)));
            }
            None => form.push(("client_id", &self.policy.client_id)),
        }
        let resp = call
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!(
                "token endpoint answered {status}: {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        resp.json::<Tokens>()
            .await
            .map_err(|e| format!("token endpoint: {e}"))
    }

    /// New tokens for a session about to expire. Requests carrying the same session
    /// while one refresh runs get its result.
    async fn refresh(&self, s: &Session) -> Result<Session, String> {
        let rt = s.rt.as_deref().ok_or("no refresh token")?;
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, rt.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| "digest")?;
        let mut recent = self.refreshed.lock().await;
        recent.retain(|_, (at, _)| at.elapsed() < REFRESHED_KEPT);
        if let Some((_, fresh)) = recent.get(&key) {
            return Ok(fresh.clone());
        }
        let provider = self.provider().await?;
        let tokens = self
            .token_call(
                provider,
                &[("grant_type", "refresh_token"), ("refresh_token", rt)],
            )
            .await?;
        let mut claims = s.claims.clone();
        let mut id_exp = None;
        if let Some(idt) = &tokens.id_token {
            let (identity, _) = self
                .id_tokens
                .verify_token(idt)
                .await
                .map_err(|f| format!("refreshed ID token: {}", f.describe()))?;
            if identity.claims.get("sub") != claims.get("sub") {
                return Err("the refreshed ID token names another subject".into());
            }
            id_exp = identity.claims.get("exp").and_then(Value::as_u64);
            claims.extend(self.kept_claims(&identity.claims));
        }
        let now = now();
        let fresh = Session {
            claims,
            exp: tokens
                .expires_in
                .map(|e| now + e)
                .or(id_exp)
                .unwrap_or(now + 300),
            login: s.login,
            rt: tokens.refresh_token.or_else(|| s.rt.clone()),
            idt: tokens.id_token.or_else(|| s.idt.clone()),
        };
        recent.insert(key, (Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// End the session here (every cookie piece) and at the provider when it can.
    async fn logout(&self, req: &RequestHeader, client: &Client) -> Rejection {
        let (sealed, pieces) = session::read_split(req, &self.policy.cookie_name);
        let session = sealed
            .and_then(|s| self.sealer.open(&self.policy.cookie_name, &s))
            .and_then(|p| serde_json::from_slice::<Session>(&p).ok());
        let cookies: Vec<String> = (0..pieces.max(1))
            .map(|i| session::expire(&format!("{}-{i}", self.policy.cookie_name)))
            .collect();
        let after = if self.policy.post_logout_redirect.starts_with('/') {
            format!(
                "{}{}",
                Self::origin(req, client),
                self.policy.post_logout_redirect
            )
        } else {
            self.policy.post_logout_redirect.clone()
        };
        let location = match self
            .provider()
            .await
            .ok()
            .and_then(|p| p.end_session_endpoint.clone())
        {
            Some(end) => {
                let sep = if end.contains('?') { '&' } else { '?' };
                let mut l = format!(
                    "{end}{sep}client_id={}&post_logout_redirect_uri={}",
                    pct(&self.policy.client_id),
                    pct(&after)
                );
                if let Some(idt) = session.and_then(|s| s.idt) {
                    l.push_str(&format!("&id_token_hint={}", pct(&idt)));
                }
                l
            }
            None => after,
        };
        redirect(&location, cookies)
    }
}

/// A 302 to `location` setting `cookies`.
fn redirect(location: &str, cookies: Vec<String>) -> Rejection {
    let mut r = match HeaderValue::from_str(location) {
        Ok(l) => Rejection::redirect(302, "auth_redirect", l),
        Err(_) => Rejection::new(502, "auth_unavailable", "the provider's URL is not usable"),
    };
    r.headers.extend(
        cookies
            .iter()
            .filter_map(|c| HeaderValue::from_str(c).ok())
            .map(|v| (http::header::SET_COOKIE, v)),
    );
    r.headers.push((
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    r
}
