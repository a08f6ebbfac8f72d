//! Edge authentication, the filters' authentication stage: JWT verification
//! ([`jwt`], keys from [`jwks`]) and forward-auth ([`forward`]).
//!
//! A route with a policy always removes, from the client's request, the headers the
//! policy sets toward the backend (claims copied into headers, headers of the auth
//! service's answer), so a backend can trust them: only this gateway writes them.
//! Answers: 401 with `WWW-Authenticate` (RFC 6750) for a missing or bad token, 403
//! for a token that lacks a scope or fails a claim condition, the service's own
//! answer for a forward-auth denial, 503 when the decision cannot be made (no keys
//! yet, the service unreachable with `on_error: deny`). Every decision is counted in
//! `gateway_auth_decisions_total{policy,decision}` and logged as `auth`.

pub mod client;
pub mod forward;
pub mod jwks;
pub mod jwt;
pub mod oidc;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use prometheus::IntCounter;
use tollgate_config::gateway::auth::{AuthPolicies, OnAuthError, TokenSource};

use crate::filters::{FilterState, Rejection, RequestView, Verdict};
use crate::metrics::METRICS;
use forward::{Decision, ForwardAuth};
use jwt::{Failure, JwtAuth};
use oidc::OidcAuth;

/// Who a verified token says the client is.
#[derive(Debug)]
pub struct Identity {
    pub claims: jwt::Claims,
    /// `claims_to_headers`, resolved.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the route's authentication decided, kept for the upstream request, the
/// claim-keyed rate limits and the access log.
#[derive(Debug, Default)]
pub struct AuthState {
    pub identity: Option<Arc<Identity>>,
    /// Headers of a forward-auth service's 2xx, for the upstream request.
    pub granted: Vec<(HeaderName, HeaderValue)>,
    /// `Set-Cookie`s for the response (an OIDC session refreshed on the way).
    pub set_cookies: Vec<HeaderValue>,
    pub decision: &'static str,
}

/// The policies of a snapshot, built once and shared by the routes naming them.
#[derive(Debug, Default)]
pub struct Policies {
    pub jwt: HashMap<String, Arc<JwtAuth>>,
    pub forward: HashMap<String, Arc<ForwardAuth>>,
    pub oidc: HashMap<String, Arc<OidcAuth>>,
}

impl Policies {
    /// An OIDC policy's callback or logout path: its answer and decision, before any
    /// route is matched.
    pub async fn oidc_own_path(
        &self,
        req: &RequestHeader,
        client: &crate::context::Client,
    ) -> Option<(Rejection, &'static str, &str)> {
        let path = req.uri.path();
        let (name, policy) = self
            .oidc
            .iter()
            .find(|(_, o)| o.policy.redirect_path == path || o.policy.logout_path == path)?;
        let (r, decision) = policy.own_path(req, client).await?;
        METRICS
            .auth_decisions
            .with_label_values(&[name, decision])
            .inc();
        Some((r, decision, name))
    }

    pub fn build(cfg: &AuthPolicies) -> Result<Self, String> {
        let mut out = Self::default();
        for (name, p) in &cfg.jwt {
            let keys = jwks::KeySet::get(&p.jwks).map_err(|e| format!("auth.jwt.{name}: {e}"))?;
            out.jwt
                .insert(name.clone(), Arc::new(JwtAuth::new(p.clone(), keys)));
        }
        for (name, p) in &cfg.forward {
            let f = ForwardAuth::new(p.clone()).map_err(|e| format!("auth.forward.{name}: {e}"))?;
            out.forward.insert(name.clone(), Arc::new(f));
        }
        for (name, p) in &cfg.oidc {
            let o = OidcAuth::new(p.clone()).map_err(|e| format!("auth.oidc.{name}: {e}"))?;
            out.oidc.insert(name.clone(), Arc::new(o));
        }
        Ok(out)
    }
}

/// Counters resolved once per policy: the hot decisions cost no label lookup.
#[derive(Debug)]
pub struct Counted {
    policy: String,
    ok: IntCounter,
    cached: IntCounter,
}

impl Counted {
    fn new(policy: &str) -> Self {
        let c = |d: &str| METRICS.auth_decisions.with_label_values(&[policy, d]);
        Self {
            policy: policy.to_owned(),
            ok: c("ok"),
            cached: c("cached"),
        }
    }

    fn count(&self, decision: &str) {
        match decision {
            "ok" => self.ok.inc(),
            "cached" => self.cached.inc(),
            d => METRICS
                .auth_decisions
                .with_label_values(&[&self.policy, d])
                .inc(),
        }
    }
}

/// A route's authentication filter.
#[derive(Debug)]
pub enum RouteAuth {
    Jwt(Arc<JwtAuth>, Counted),
    Forward(Arc<ForwardAuth>, Counted),
    Oidc(Arc<OidcAuth>, Counted),
}

/// `Bearer realm="..."` parameters, quoted.
fn bearer(realm: &str, params: &[(&str, &str)]) -> HeaderValue {
    let q = |s: &str| s.replace(['\\', '"'], "");
    let mut v = format!("Bearer realm=\"{}\"", q(realm));
    for (k, val) in params {
        v.push_str(&format!(", {k}=\"{}\"", q(val)));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

fn jwt_rejection(policy: &str, f: &Failure) -> Rejection {
    let www = http::header::WWW_AUTHENTICATE;
    let detail = format!("{}: {}", policy, f.describe());
    let mut r = match f {
        Failure::Missing => {
            let mut r = Rejection::new(401, "auth_required", detail);
            r.headers.push((www, bearer(policy, &[])));
            r
        }
        Failure::InsufficientScope(scopes) => {
            let mut r = Rejection::new(403, "auth_forbidden", detail);
            let scope = scopes.join(" ");
            r.headers.push((
                www,
                bearer(
                    policy,
                    &[("error", "insufficient_scope"), ("scope", &scope)],
                ),
            ));
            r
        }
        Failure::ClaimMismatch(_) => Rejection::new(403, "auth_forbidden", detail),
        Failure::KeysUnavailable => {
            Rejection::new(503, "auth_unavailable", detail).retry_after(Duration::from_secs(1))
        }
        other => {
            let mut r = Rejection::new(401, "auth_invalid_token", detail);
            // A fixed description per kind: nothing the client sent is echoed here.
            let description = match other {
                Failure::Expired => "the token has expired",
                Failure::NotYetValid => "the token is not valid yet",
                _ => "the token is not accepted",
            };
            r.headers.push((
                www,
                bearer(
                    policy,
                    &[
                        ("error", "invalid_token"),
                        ("error_description", description),
                    ],
                ),
            ));
            r
        }
    };
    r.keep_alive = true;
    r
}

impl RouteAuth {
    pub fn build(
        cfg: &tollgate_config::gateway::auth::RouteAuth,
        policies: &Policies,
    ) -> Option<Self> {
        use tollgate_config::gateway::auth::RouteAuth as Cfg;
        match cfg {
            Cfg::Jwt(n) => policies
                .jwt
                .get(n)
                .map(|p| Self::Jwt(p.clone(), Counted::new(n))),
            Cfg::Forward(n) => policies
                .forward
                .get(n)
                .map(|p| Self::Forward(p.clone(), Counted::new(n))),
            Cfg::Oidc(n) => policies
                .oidc
                .get(n)
                .map(|p| Self::Oidc(p.clone(), Counted::new(n))),
        }
    }

    pub async fn on_request(&self, view: &RequestView<'_>, state: &mut FilterState) -> Verdict {
        match self {
            Self::Jwt(auth, counted) => {
                let (decision, verdict, identity) = match auth.verify(view.req).await {
                    Ok(Some((id, cached))) => (
                        if cached { "cached" } else { "ok" },
                        Verdict::Continue,
                        Some(id),
                    ),
                    Ok(None) => ("anonymous", Verdict::Continue, None),
                    Err(f) => (
                        f.decision(),
                        Verdict::Reject(jwt_rejection(&auth.policy.name, &f)),
                        None,
                    ),
                };
                counted.count(decision);
                state.auth = Some(AuthState {
                    identity,
                    decision,
                    ..AuthState::default()
                });
                verdict
            }
            Self::Oidc(auth, counted) => match auth.on_request(view.req, view.client).await {
                oidc::Outcome::Pass {
                    identity,
                    set_cookies,
                    decision,
                } => {
                    counted.count(decision);
                    state.auth = Some(AuthState {
                        identity,
                        set_cookies,
                        decision,
                        ..AuthState::default()
                    });
                    Verdict::Continue
                }
                oidc::Outcome::Answer {
                    rejection,
                    decision,
                } => {
                    counted.count(decision);
                    state.auth = Some(AuthState {
                        decision,
                        ..AuthState::default()
                    });
                    Verdict::Reject(rejection)
                }
            },
            Self::Forward(auth, counted) => {
                let (decision, verdict, granted) = match auth.decide(view.req, view.client).await {
                    Ok((Decision::Allow(headers), cached)) => (
                        if cached { "cached" } else { "ok" },
                        Verdict::Continue,
                        headers,
                    ),
                    Ok((
                        Decision::Deny {
                            status,
                            headers,
                            body,
                        },
                        _,
                    )) => {
                        let mut r = Rejection::new(
                            status,
                            "auth_denied",
                            format!(
                                "{}: the authorization service answered {status}",
                                auth.policy.name
                            ),
                        );
                        r.headers = headers;
                        r.body = Some(body);
                        ("denied", Verdict::Reject(r), Vec::new())
                    }
                    Err(e) => {
                        tracing::warn!(policy = %auth.policy.name, "forward-auth: {e}");
                        match auth.policy.on_error {
                            OnAuthError::Allow => ("error_allowed", Verdict::Continue, Vec::new()),
                            OnAuthError::Deny => {
                                let r = Rejection::new(
                                    503,
                                    "auth_unavailable",
                                    format!("{}: {e}", auth.policy.name),
                                )
                                .retry_after(Duration::from_secs(1));
                                ("error", Verdict::Reject(r), Vec::new())
                            }
                        }
                    }
                };
                counted.count(decision);
                state.auth = Some(AuthState {
                    granted,
                    decision,
                    ..AuthState::default()
                });
                verdict
            }
        }
    }

    /// The response to the client: a refreshed session's cookies.
    pub fn on_response(
        &self,
        state: Option<&AuthState>,
        resp: &mut pingora_http::ResponseHeader,
    ) -> pingora_error::Result<()> {
        for c in state.map_or(&[][..], |s| s.set_cookies.as_slice()) {
            resp.append_header(http::header::SET_COOKIE, c.clone())?;
        }
        Ok(())
    }

    pub fn has_response_phase(&self) -> bool {
        matches!(self, Self::Oidc(..))
    }

    /// The request toward the backend: the headers this policy owns removed from what
    /// the client sent, then set from the decision; the token removed when the policy
    /// does not forward it.
    pub fn upstream_request(
        &self,
        state: Option<&AuthState>,
        req: &mut RequestHeader,
    ) -> pingora_error::Result<()> {
        let set: &[(HeaderName, HeaderValue)] = match self {
            Self::Jwt(auth, _) => {
                for (_, h) in &auth.policy.claims_to_headers {
                    req.remove_header(h);
                }
                if !auth.policy.forward_token {
                    remove_tokens(&auth.policy.tokens, req)?;
                }
                state
                    .and_then(|s| s.identity.as_deref())
                    .map_or(&[], |i| i.headers.as_slice())
            }
            Self::Forward(auth, _) => {
                for h in &auth.policy.response_headers {
                    req.remove_header(h);
                }
                state.map_or(&[], |s| s.granted.as_slice())
            }
            Self::Oidc(auth, _) => {
                for h in auth.owned_headers() {
                    req.remove_header(h);
                }
                state
                    .and_then(|s| s.identity.as_deref())
                    .map_or(&[], |i| i.headers.as_slice())
            }
        };
        for (name, value) in set {
            req.append_header(name.clone(), value.clone())?;
        }
        Ok(())
    }
}

/// Remove the token from every place the policy reads one: a header source's header
/// entirely, a cookie source's cookie from `Cookie` (the other cookies stay).
fn remove_tokens(sources: &[TokenSource], req: &mut RequestHeader) -> pingora_error::Result<()> {
    for s in sources {
        match s {
            TokenSource::Header { name, .. } => {
                req.remove_header(name);
            }
            TokenSource::Cookie(name) => {
                let kept: Vec<String> = req
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty() && c.split('=').next() != Some(name.as_str()))
                    .map(str::to_owned)
                    .collect();
                req.remove_header(&http::header::COOKIE);
                if !kept.is_empty() {
                    req.insert_header(http::header::COOKIE, kept.join("; "))?;
                }
            }
        }
    }
    Ok(())
}
