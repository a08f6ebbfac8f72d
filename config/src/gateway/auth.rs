//! `auth:` policies (JWT verification, forward-auth) and `routes[i].auth`.
//!
//! The cryptography is the gateway's (a JOSE crate); this module checks what a user
//! can get wrong before anything runs: one key source per JWT policy, no algorithm
//! that makes a public key a shared secret, header names that are header names, URLs
//! that are URLs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::units::HumanDuration;

/// `auth:` at the top of the file: named policies that routes use.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Bearer-token (JWT) verification policies, by name.
    #[serde(default)]
    pub jwt: BTreeMap<String, JwtFile>,
    /// Forward-auth policies (an authorization service decides), by name.
    #[serde(default)]
    pub forward: BTreeMap<String, ForwardAuthFile>,
    /// OpenID Connect login policies (what ALB's `authenticate-oidc` does), by name.
    #[serde(default)]
    pub oidc: BTreeMap<String, OidcFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The OpenID Provider; its endpoints come from
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The client's secret (`client_secret_basic`); or `client_secret_file`. Neither:
    /// a public client (PKCE only).
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Scopes asked for (`openid` is always added). Default: openid, email, profile.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// Where the provider sends the browser back (`{scheme}://{host}{path}`, to be
    /// registered at the provider). Default `/oauth2/callback`.
    #[serde(default = "default_redirect_path")]
    pub redirect_path: String,
    /// Ends the session (and the provider's, when it has an `end_session_endpoint`).
    /// Default `/oauth2/logout`.
    #[serde(default = "default_logout_path")]
    pub logout_path: String,
    /// Where the browser lands after logout (default `/`).
    #[serde(default)]
    pub post_logout_redirect: Option<String>,
    /// Keys of the session cookie (base64, 32 bytes each: `openssl rand -base64 32`):
    /// the first encrypts, every one decrypts, so a key is rotated by adding the new one
    /// first and removing the old one after `session_timeout`. Every replica needs the
    /// same keys; then any replica reads any session.
    pub session_keys: Vec<String>,
    /// Session cookie name (split into `NAME-0`, `NAME-1`... past 3.5 KiB). Default
    /// `tollgate_session`.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Longest a login lasts, refreshes included (default 7d, as ALB).
    #[serde(default = "default_session_timeout")]
    pub session_timeout: HumanDuration,
    /// Refresh the tokens when they expire within this (default 60s).
    #[serde(default = "default_leeway")]
    pub refresh_before: HumanDuration,
    /// A request without a session: `authenticate` (redirect to the provider,
    /// default), `deny` (401) or `allow` (through, without identity headers).
    #[serde(default)]
    pub on_unauthenticated: OnUnauthenticated,
    /// Claims (of the ID token and userinfo) copied into request headers; those headers
    /// are always removed from the client's request first.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// CA bundle for a provider with a private CA.
    #[serde(default)]
    pub ca: Option<String>,
    /// Deadline of each call to the provider (default 5s).
    #[serde(default = "default_fetch_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUnauthenticated {
    #[default]
    Authenticate,
    Deny,
    Allow,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    /// The `iss` every token must carry; also where `jwks: { discovery: true }` looks.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Where the verification keys come from.
    pub jwks: JwksFile,
    /// Accepted `aud` values: a token must name at least one. Empty: `aud` unchecked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values (default: every asymmetric one). `none` and HMAC
    /// (`HS256`...) are refused: with public keys, HMAC is an algorithm-confusion hole.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf` (default 60s).
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// A token without `exp` is refused (default true).
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Scopes the token's `scope` (space-separated) or `scp` (list) must all contain;
    /// missing ones are a 403 `insufficient_scope`.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Further conditions on claims (each must hold, else 403).
    #[serde(default)]
    pub claims: Vec<ClaimConditionFile>,
    /// Where the token is read, first found wins (default: `Authorization: Bearer`).
    #[serde(default)]
    pub tokens: Vec<TokenSourceFile>,
    /// Claims copied into request headers toward the backend (`sub: x-user-id`;
    /// nested claims as `a.b`). These headers are always removed from the client's
    /// request first, so only the gateway can set them.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Send the token on to the backend (default true); false removes it.
    #[serde(default = "yes")]
    pub forward_token: bool,
    /// A request without any token passes (without identity headers); a bad token is
    /// still refused (default false).
    #[serde(default)]
    pub optional: bool,
    /// Verified tokens remembered (by their SHA-256) until they expire, so a client's
    /// next request skips the signature check (default 10000; 0: off).
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

/// Exactly one of `file`, `url`, `discovery`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksFile {
    /// A JWKS document on disk (re-read on reload).
    #[serde(default)]
    pub file: Option<String>,
    /// A JWKS URL, fetched in the background.
    #[serde(default)]
    pub url: Option<String>,
    /// Find the JWKS URL at `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// CA bundle for an IdP with a private CA (default: the system's roots).
    #[serde(default)]
    pub ca: Option<String>,
    /// Refetch interval when the answer has no `Cache-Control: max-age` (default 10m).
    #[serde(default = "default_refresh")]
    pub refresh: HumanDuration,
    /// Fetches at most this often, also when a token names an unknown `kid`, and the
    /// retry interval while the IdP is down (default 30s).
    #[serde(default = "default_min_refresh")]
    pub min_refresh: HumanDuration,
    /// One fetch's deadline (default 5s).
    #[serde(default = "default_fetch_timeout")]
    pub timeout: HumanDuration,
}

/// `{ claim: NAME, equals: V }`, `{ claim: NAME, contains: V }` or
/// `{ claim: NAME, in: [V, ...] }`. `contains` is for list claims (or a
/// space-separated string).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimConditionFile {
    pub claim: String,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default, rename = "in")]
    pub in_list: Option<Vec<String>>,
}

/// `{ header: NAME, prefix: "Bearer " }` or `{ cookie: NAME }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceFile {
    #[serde(default)]
    pub header: Option<String>,
    /// Stripped from the header's value (matched without case).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthFile {
    /// The authorization service (`http://` or `https://`); it gets a GET with the
    /// request's method, URI and host in `X-Forwarded-Method`, `X-Forwarded-Uri`,
    /// `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-For`, and the headers
    /// in `request_headers`.
    pub url: String,
    /// CA bundle for an `https://` service with a private CA.
    #[serde(default)]
    pub ca: Option<String>,
    /// Request headers sent to the service (default: authorization, cookie).
    #[serde(default = "default_forward_headers")]
    pub request_headers: Vec<String>,
    /// Headers of a 2xx answer copied onto the request to the backend (removed from
    /// the client's request first, so the client cannot set them).
    #[serde(default)]
    pub response_headers: Vec<String>,
    /// Deadline for the service's answer (default 1s).
    #[serde(default = "default_forward_timeout")]
    pub timeout: HumanDuration,
    /// Remember each decision this long, keyed by the request's method, host and URI
    /// and the `cache_key` headers (default 0: off).
    #[serde(default)]
    pub cache_ttl: HumanDuration,
    /// Request headers a cached decision is keyed by (default: `request_headers`).
    #[serde(default)]
    pub cache_key: Option<Vec<String>>,
    /// When the service cannot be reached or does not answer in time: `deny` (503,
    /// default) or `allow`.
    #[serde(default)]
    pub on_error: OnAuthError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnAuthError {
    #[default]
    Deny,
    Allow,
}

/// `routes[i].auth`: `{ jwt: NAME }`, `{ oidc: NAME }` or `{ forward: NAME }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthFile {
    #[serde(default)]
    pub jwt: Option<String>,
    #[serde(default)]
    pub oidc: Option<String>,
    #[serde(default)]
    pub forward: Option<String>,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_redirect_path() -> String {
    "/oauth2/callback".into()
}
fn default_logout_path() -> String {
    "/oauth2/logout".into()
}
fn default_cookie_name() -> String {
    "tollgate_session".into()
}
fn default_session_timeout() -> HumanDuration {
    HumanDuration::from_secs(7 * 24 * 3600)
}

fn yes() -> bool {
    true
}
fn default_leeway() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_refresh() -> HumanDuration {
    HumanDuration::from_secs(600)
}
fn default_min_refresh() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_fetch_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_forward_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_forward_headers() -> Vec<String> {
    vec!["authorization".into(), "cookie".into()]
}

// ---- validated ----

/// Signature algorithms a JWT policy may accept: asymmetric only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jwks {
    pub source: JwksSource,
    pub ca: Option<PathBuf>,
    pub refresh: Duration,
    pub min_refresh: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimCheck {
    Equals(String),
    Contains(String),
    In(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCondition {
    /// Path into the claims: `groups`, or `realm_access.roles`.
    pub claim: Vec<String>,
    pub check: ClaimCheck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Header {
        name: HeaderName,
        /// Lower case; empty for none.
        prefix: String,
    },
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtPolicy {
    pub name: String,
    pub issuer: Option<String>,
    pub jwks: Jwks,
    pub audiences: Vec<String>,
    pub algorithms: Vec<JwtAlgorithm>,
    pub leeway: Duration,
    pub require_exp: bool,
    pub required_scopes: Vec<String>,
    pub claims: Vec<ClaimCondition>,
    pub tokens: Vec<TokenSource>,
    /// (claim path, header), in the file's order.
    pub claims_to_headers: Vec<(Vec<String>, HeaderName)>,
    pub forward_token: bool,
    pub optional: bool,
    pub cache_entries: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAuthPolicy {
    pub name: String,
    pub url: String,
    pub ca: Option<PathBuf>,
    pub request_headers: Vec<HeaderName>,
    pub response_headers: Vec<HeaderName>,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub cache_key: Vec<HeaderName>,
    pub on_error: OnAuthError,
}

#[derive(Clone, PartialEq)]
pub struct OidcPolicy {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// `openid` first.
    pub scopes: Vec<String>,
    pub redirect_path: String,
    pub logout_path: String,
    pub post_logout_redirect: String,
    /// 32-byte keys, the first encrypts.
    pub session_keys: Vec<[u8; 32]>,
    pub cookie_name: String,
    pub session_timeout: Duration,
    pub refresh_before: Duration,
    pub on_unauthenticated: OnUnauthenticated,
    pub claims_to_headers: Vec<(Vec<String>, HeaderName)>,
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
}

/// Secrets stay out of logs and `/config`.
impl std::fmt::Debug for OidcPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcPolicy")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("session_keys", &self.session_keys.len())
            .finish_non_exhaustive()
    }
}

/// A route's authentication: which kind, and the policy's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAuth {
    Jwt(String),
    Oidc(String),
    Forward(String),
}

impl RouteAuth {
    pub fn policy(&self) -> &str {
        match self {
            Self::Jwt(n) | Self::Oidc(n) | Self::Forward(n) => n,
        }
    }
}

/// Every policy, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthPolicies {
    pub jwt: BTreeMap<String, JwtPolicy>,
    pub forward: BTreeMap<String, ForwardAuthPolicy>,
    pub oidc: BTreeMap<String, OidcPolicy>,
}

fn header_name(at: &str, s: &str, p: &mut Problems) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            p.push(at, format!("{s:?} is not a header name"));
            None
        }
    }
}

fn header_names(at: &str, list: &[String], p: &mut Problems) -> Vec<HeaderName> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| header_name(&format!("{at}[{i}]"), s, p))
        .collect()
}

fn http_url(at: &str, url: &str, p: &mut Problems) -> bool {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !ok {
        p.push(
            at,
            format!("{url:?} is not an http:// or https:// URL with a host"),
        );
    }
    ok
}

/// Headers a backend trusts because only the gateway sets them: never the framing or
/// routing ones.
fn settable(at: &str, h: &HeaderName, p: &mut Problems) -> bool {
    const REFUSED: [&str; 6] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
    ];
    if REFUSED.contains(&h.as_str()) {
        p.push(
            at,
            format!("{h} cannot be set from a claim or an auth answer"),
        );
        return false;
    }
    true
}

/// `claims_to_headers`: each claim path and its header, which must be one a backend can
/// be given (not a framing or routing header).
fn claims_to_headers(
    at: &str,
    map: &BTreeMap<String, String>,
    p: &mut Problems,
) -> Vec<(Vec<String>, HeaderName)> {
    map.iter()
        .filter_map(|(claim, header)| {
            let field = format!("{at}.claims_to_headers.{claim}");
            let h = header_name(&field, header, p)?;
            settable(&field, &h, p).then(|| (claim_path(claim), h))
        })
        .collect()
}

fn claim_path(s: &str) -> Vec<String> {
    s.split('.').map(str::to_owned).collect()
}

pub fn validate(file: &AuthFile, base_dir: &Path, p: &mut Problems) -> AuthPolicies {
    let mut out = AuthPolicies::default();
    for (name, f) in &file.jwt {
        if let Some(policy) = validate_jwt(name, f, base_dir, p) {
            out.jwt.insert(name.clone(), policy);
        }
    }
    for (name, f) in &file.forward {
        if let Some(policy) = validate_forward(name, f, base_dir, p) {
            out.forward.insert(name.clone(), policy);
        }
    }
    for (name, f) in &file.oidc {
        if let Some(policy) = validate_oidc(name, f, base_dir, p) {
            out.oidc.insert(name.clone(), policy);
        }
    }
    let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, f) in &file.oidc {
        for path in [&f.redirect_path, &f.logout_path] {
            if let Some(other) = paths.insert(path, name) {
                if other != name.as_str() {
                    p.push(
                        format!("auth.oidc.{name}"),
                        format!("path {path} is also policy {other}'s: each policy needs its own"),
                    );
                }
            }
        }
    }
    out
}

fn validate_oidc(
    name: &str,
    f: &OidcFile,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<OidcPolicy> {
    use base64::Engine as _;
    let at = format!("auth.oidc.{name}");
    let before = p.len();
    http_url(&format!("{at}.issuer"), &f.issuer, p);
    if f.client_id.trim().is_empty() {
        p.push(format!("{at}.client_id"), "must not be empty");
    }
    let client_secret = match (&f.client_secret, &f.client_secret_file) {
        (Some(_), Some(_)) => {
            p.push(
                format!("{at}.client_secret"),
                "set `client_secret` or `client_secret_file`, not both",
            );
            None
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(file)) => {
            let path = crate::common::resolve_path(base_dir, file);
            match std::fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Ok(_) => {
                    p.push(
                        format!("{at}.client_secret_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                }
                Err(e) => {
                    p.push(
                        format!("{at}.client_secret_file"),
                        format!("{}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    };
    for (field, path) in [
        ("redirect_path", &f.redirect_path),
        ("logout_path", &f.logout_path),
    ] {
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            p.push(
                format!("{at}.{field}"),
                format!("{path:?} is not a path (it starts with /)"),
            );
        }
    }
    if f.redirect_path == f.logout_path {
        p.push(
            format!("{at}.logout_path"),
            "must differ from redirect_path",
        );
    }
    if f.session_keys.is_empty() {
        p.push(
            format!("{at}.session_keys"),
            "at least one key (base64 of 32 random bytes: `openssl rand -base64 32`)",
        );
    }
    let session_keys: Vec<[u8; 32]> = f
        .session_keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(k.trim()));
            match bytes
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            {
                Some(key) => Some(key),
                None => {
                    p.push(
                        format!("{at}.session_keys[{i}]"),
                        "not base64 of 32 bytes (`openssl rand -base64 32`)",
                    );
                    None
                }
            }
        })
        .collect();
    let cookie_ok = !f.cookie_name.is_empty()
        && f.cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !cookie_ok {
        p.push(format!("{at}.cookie_name"), "letters, digits, - _ . only");
    }
    if f.session_timeout.get() < Duration::from_secs(60) {
        p.push(format!("{at}.session_timeout"), "must be at least 1m");
    }
    if f.timeout.get().is_zero() {
        p.push(format!("{at}.timeout"), "must be above 0");
    }
    let mut scopes = vec!["openid".to_owned()];
    scopes.extend(f.scopes.iter().filter(|s| s.as_str() != "openid").cloned());
    let claims_to_headers = claims_to_headers(&at, &f.claims_to_headers, p);
    if p.len() > before {
        return None;
    }
    Some(OidcPolicy {
        name: name.to_owned(),
        issuer: f.issuer.trim_end_matches('/').to_owned(),
        client_id: f.client_id.clone(),
        client_secret,
        scopes,
        redirect_path: f.redirect_path.clone(),
        logout_path: f.logout_path.clone(),
        post_logout_redirect: f.post_logout_redirect.clone().unwrap_or_else(|| "/".into()),
        session_keys,
        cookie_name: f.cookie_name.clone(),
        session_timeout: f.session_timeout.get(),
        refresh_before: f.refresh_before.get(),
        on_unauthenticated: f.on_unauthenticated,
        claims_to_headers,
        ca: f
            .ca
            .as_deref()
            .map(|c| crate::common::resolve_path(base_dir, c)),
        timeout: f.timeout.get(),
    })
}

fn validate_jwt(name: &str, f: &JwtFile, base_dir: &Path, p: &mut Problems) -> Option<JwtPolicy> {
    let at = format!("auth.jwt.{name}");
    let before = p.len();
    let j = &f.jwks;
    let sources =
        usize::from(j.file.is_some()) + usize::from(j.url.is_some()) + usize::from(j.discovery);
    let source = match (&j.file, &j.url, j.discovery) {
        _ if sources != 1 => {
            p.push(
                format!("{at}.jwks"),
                "set exactly one of `file`, `url` or `discovery: true`",
            );
            None
        }
        (Some(file), _, _) => Some(JwksSource::File(crate::common::resolve_path(
            base_dir, file,
        ))),
        (_, Some(url), _) => {
            http_url(&format!("{at}.jwks.url"), url, p).then(|| JwksSource::Url(url.clone()))
        }
        _ => match &f.issuer {
            Some(iss) if http_url(&format!("{at}.issuer"), iss, p) => {
                Some(JwksSource::Discovery(iss.clone()))
            }
            Some(_) => None,
            None => {
                p.push(
                    format!("{at}.issuer"),
                    "`jwks: { discovery: true }` needs the issuer's URL here",
                );
                None
            }
        },
    };
    if j.min_refresh.get() < Duration::from_secs(1) {
        p.push(format!("{at}.jwks.min_refresh"), "must be at least 1s");
    }
    if j.refresh.get() < j.min_refresh.get() {
        p.push(
            format!("{at}.jwks.refresh"),
            "must not be shorter than min_refresh",
        );
    }
    if j.timeout.get().is_zero() {
        p.push(format!("{at}.jwks.timeout"), "must be above 0");
    }
    let algorithms = match &f.algorithms {
        None => JwtAlgorithm::ALL.to_vec(),
        Some(list) => {
            if list.is_empty() {
                p.push(format!("{at}.algorithms"), "must not be empty");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let field = format!("{at}.algorithms[{i}]");
                    let parsed = JwtAlgorithm::parse(a.trim());
                    if parsed.is_none() {
                        let why = if a.trim().eq_ignore_ascii_case("none") {
                            "`none` is an unsigned token: refused".to_owned()
                        } else if a.trim().to_ascii_uppercase().starts_with("HS") {
                            format!(
                                "{a}: HMAC algorithms are refused: with published keys, an HMAC \
                                 check lets anyone holding the public key sign tokens \
                                 (algorithm confusion)"
                            )
                        } else {
                            let all: Vec<&str> =
                                JwtAlgorithm::ALL.iter().map(|a| a.name()).collect();
                            format!("unknown algorithm {a:?} (accepted: {})", all.join(", "))
                        };
                        p.push(field, why);
                    }
                    parsed
                })
                .collect()
        }
    };
    let claims = f
        .claims
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let field = format!("{at}.claims[{i}]");
            if c.claim.trim().is_empty() {
                p.push(format!("{field}.claim"), "must not be empty");
            }
            let check = match (&c.equals, &c.contains, &c.in_list) {
                (Some(v), None, None) => ClaimCheck::Equals(v.clone()),
                (None, Some(v), None) => ClaimCheck::Contains(v.clone()),
                (None, None, Some(v)) if !v.is_empty() => ClaimCheck::In(v.clone()),
                _ => {
                    p.push(
                        field,
                        "set exactly one of `equals`, `contains` or a non-empty `in`",
                    );
                    return None;
                }
            };
            Some(ClaimCondition {
                claim: claim_path(c.claim.trim()),
                check,
            })
        })
        .collect();
    let mut tokens: Vec<TokenSource> = f
        .tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let field = format!("{at}.tokens[{i}]");
            match (&t.header, &t.cookie) {
                (Some(h), None) => Some(TokenSource::Header {
                    name: header_name(&format!("{field}.header"), h, p)?,
                    prefix: t.prefix.clone().unwrap_or_default().to_ascii_lowercase(),
                }),
                (None, Some(c)) if t.prefix.is_none() && !c.trim().is_empty() => {
                    Some(TokenSource::Cookie(c.trim().to_owned()))
                }
                _ => {
                    p.push(
                        field,
                        "set `header` (with an optional `prefix`) or `cookie`",
                    );
                    None
                }
            }
        })
        .collect();
    if f.tokens.is_empty() {
        tokens.push(TokenSource::Header {
            name: http::header::AUTHORIZATION,
            prefix: "bearer ".into(),
        });
    }
    let claims_to_headers = claims_to_headers(&at, &f.claims_to_headers, p);
    if p.len() > before {
        return None;
    }
    Some(JwtPolicy {
        name: name.to_owned(),
        issuer: f.issuer.clone(),
        jwks: Jwks {
            source: source?,
            ca: j
                .ca
                .as_deref()
                .map(|c| crate::common::resolve_path(base_dir, c)),
            refresh: j.refresh.get(),
            min_refresh: j.min_refresh.get(),
            timeout: j.timeout.get(),
        },
        audiences: f.audiences.clone(),
        algorithms,
        leeway: f.leeway.get(),
        require_exp: f.require_exp,
        required_scopes: f.required_scopes.clone(),
        claims,
        tokens,
        claims_to_headers,
        forward_token: f.forward_token,
        optional: f.optional,
        cache_entries: f.cache_entries,
    })
}

fn validate_forward(
    name: &str,
    f: &ForwardAuthFile,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<ForwardAuthPolicy> {
    let at = format!("auth.forward.{name}");
    let before = p.len();
    http_url(&format!("{at}.url"), &f.url, p);
    if f.timeout.get().is_zero() {
        p.push(format!("{at}.timeout"), "must be above 0");
    }
    let request_headers = header_names(&format!("{at}.request_headers"), &f.request_headers, p);
    let response_headers: Vec<HeaderName> =
        header_names(&format!("{at}.response_headers"), &f.response_headers, p)
            .into_iter()
            .filter(|h| settable(&format!("{at}.response_headers"), h, p))
            .collect();
    let cache_key = match &f.cache_key {
        Some(k) => header_names(&format!("{at}.cache_key"), k, p),
        None => request_headers.clone(),
    };
    if p.len() > before {
        return None;
    }
    Some(ForwardAuthPolicy {
        name: name.to_owned(),
        url: f.url.clone(),
        ca: f
            .ca
            .as_deref()
            .map(|c| crate::common::resolve_path(base_dir, c)),
        request_headers,
        response_headers,
        timeout: f.timeout.get(),
        cache_ttl: f.cache_ttl.get(),
        cache_key,
        on_error: f.on_error,
    })
}

/// `routes[i].auth`, checked against the defined policies.
pub fn validate_route_auth(
    at: &str,
    f: &RouteAuthFile,
    policies: &AuthFile,
    p: &mut Problems,
) -> Option<RouteAuth> {
    let undefined = |kind: &str, n: &str, defined: Vec<&String>| {
        let defined: Vec<&str> = defined.into_iter().map(String::as_str).collect();
        format!(
            "{kind} policy {n:?} is not defined under `auth.{kind}` (defined: {})",
            if defined.is_empty() {
                "none".to_owned()
            } else {
                defined.join(", ")
            }
        )
    };
    match (&f.jwt, &f.forward, &f.oidc) {
        (None, None, Some(n)) => {
            if !policies.oidc.contains_key(n) {
                p.push(
                    format!("{at}.oidc"),
                    undefined("oidc", n, policies.oidc.keys().collect()),
                );
            }
            Some(RouteAuth::Oidc(n.clone()))
        }
        (Some(n), None, None) => {
            if !policies.jwt.contains_key(n) {
                p.push(
                    format!("{at}.jwt"),
                    undefined("jwt", n, policies.jwt.keys().collect()),
                );
            }
            Some(RouteAuth::Jwt(n.clone()))
        }
        (None, Some(n), None) => {
            if !policies.forward.contains_key(n) {
                p.push(
                    format!("{at}.forward"),
                    undefined("forward", n, policies.forward.keys().collect()),
                );
            }
            Some(RouteAuth::Forward(n.clone()))
        }
        _ => {
            p.push(
                at,
                "set exactly one of `jwt: POLICY`, `oidc: POLICY` or `forward: POLICY`",
            );
            None
        }
    }
}
