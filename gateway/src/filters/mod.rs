//! Route filters: a closed set of typed filters, built from config into each route of
//! the snapshot. Enum dispatch, no boxed future per filter per request; each filter
//! acts only in the phases it needs, and a route records which phases any of its
//! filters needs, so a route without filters pays nothing.
//!
//! The order is fixed here, not by the config file ([`Stage`]), and it is:
//! 1. IP lists: the cheapest check, and a denied address should cost nothing more;
//! 2. WAF: an attack is refused before it is counted or authenticated;
//! 3. rate limits keyed on the client: a flood never pays for signature checks;
//! 4. authentication (JWT, OIDC, forward-auth);
//! 5. rate limits keyed on verified claims;
//! 6. header transforms, last, so they see the request every check let through.
//!
//! Built: the WAF (`crate::waf`; called from `proxy.rs` at its stage, before these
//! filters, because it may read the request body first), rate limits keyed on the
//! client or on verified claims (`crate::ratelimit`), authentication (`crate::auth`:
//! JWT and forward-auth) and header transforms (HSTS).

mod headers;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use tollgate_config::gateway::{HeadersMode, Route};

use crate::context::Client;
use crate::ratelimit::{self, RateLimiter};
pub use headers::Hsts;

/// A filter's verdict on a request.
#[derive(Debug)]
pub enum Verdict {
    Continue,
    Reject(Rejection),
}

/// An answer the gateway gives itself instead of forwarding. Written by
/// [`crate::respond::reject`], the one writer of such answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// Metric label (`gateway_rejected_requests_total{reason}`) and the body's reason.
    pub reason: &'static str,
    /// One line for the client saying why.
    pub detail: Cow<'static, str>,
    pub retry_after: Option<Duration>,
    /// Keep the connection: policy answers (404, 403, 429...) do, so a client shed by a
    /// rate limit does not reconnect and handshake again exactly when load is high.
    /// Closed only where the request's framing is in doubt.
    pub keep_alive: bool,
    /// For redirects.
    pub location: Option<HeaderValue>,
    /// Anything else the answer carries (`RateLimit-Policy`, `RateLimit`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A body of the policy's own (a WAF `deny` with a body) instead of the standard one.
    pub body: Option<bytes::Bytes>,
}

impl Rejection {
    pub fn new(status: u16, reason: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            reason,
            detail: detail.into(),
            retry_after: None,
            keep_alive: true,
            location: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Close the connection after answering (the request's framing is in doubt).
    pub fn close(mut self) -> Self {
        self.keep_alive = false;
        self
    }

    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    pub fn redirect(status: u16, reason: &'static str, location: HeaderValue) -> Self {
        Self {
            location: Some(location),
            ..Self::new(status, reason, "redirecting")
        }
    }
}

/// What request-phase filters see.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    pub req: &'a RequestHeader,
    pub client: &'a Client,
    /// The matched route's name.
    pub route: &'a str,
    /// The verified token's claims, for the stages after authentication.
    pub claims: Option<&'a crate::auth::jwt::Claims>,
}

/// What filters learn about a request and use again in later phases.
#[derive(Debug, Default)]
pub struct FilterState {
    /// `RateLimit-Policy` / `RateLimit` for the response (policies with `headers: all`).
    pub rate_limit: ratelimit::Headers,
    /// What the WAF found, for the access log (none for clean traffic).
    pub waf: Option<crate::waf::Note>,
    /// What the route's authentication decided.
    pub auth: Option<crate::auth::AuthState>,
}

/// Where a filter runs in the order above. Declared in that order: the derived `Ord`
/// is the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    IpList,
    Waf,
    ClientRateLimit,
    Authentication,
    ClaimRateLimit,
    Headers,
}

#[derive(Debug)]
pub enum Filter {
    RateLimit(Arc<RateLimiter>),
    Auth(crate::auth::RouteAuth),
    Hsts(Hsts),
}

impl Filter {
    fn stage(&self) -> Stage {
        match self {
            Filter::RateLimit(l) if l.keyed_on_claims() => Stage::ClaimRateLimit,
            Filter::RateLimit(_) => Stage::ClientRateLimit,
            Filter::Auth(_) => Stage::Authentication,
            Filter::Hsts(_) => Stage::Headers,
        }
    }

    /// Async only because a rate limit may ask Redis; the other filters never await.
    async fn on_request(&self, view: &RequestView<'_>, state: &mut FilterState) -> Verdict {
        match self {
            Filter::RateLimit(l) => {
                let view = RequestView {
                    claims: state
                        .auth
                        .as_ref()
                        .and_then(|a| a.identity.as_deref())
                        .map(|i| &i.claims),
                    ..*view
                };
                l.on_request(&view, &mut state.rate_limit).await
            }
            Filter::Auth(a) => a.on_request(view, state).await,
            Filter::Hsts(_) => Verdict::Continue,
        }
    }

    fn on_response(
        &self,
        client: &Client,
        state: &FilterState,
        resp: &mut ResponseHeader,
    ) -> pingora_error::Result<()> {
        match self {
            Filter::RateLimit(_) => state.rate_limit.write(resp),
            Filter::Auth(a) => a.on_response(state.auth.as_ref(), resp),
            Filter::Hsts(h) => h.on_response(client, resp),
        }
    }

    fn has_request_phase(&self) -> bool {
        match self {
            Filter::RateLimit(_) | Filter::Auth(_) => true,
            Filter::Hsts(_) => false,
        }
    }

    fn has_response_phase(&self) -> bool {
        match self {
            Filter::RateLimit(l) => l.policy.headers == HeadersMode::All,
            Filter::Auth(a) => a.has_response_phase(),
            Filter::Hsts(_) => true,
        }
    }
}

/// A route's filters, in [`Stage`] order, with which phases any of them needs.
#[derive(Debug, Default)]
pub struct Filters {
    list: Vec<Filter>,
    request: bool,
    response: bool,
}

impl Filters {
    /// The route's filters; `limiters` are the snapshot's, by policy name (validation
    /// guarantees every name a route lists is there).
    pub fn build(
        route: &Route,
        limiters: &HashMap<String, Arc<RateLimiter>>,
        auth: &crate::auth::Policies,
    ) -> Self {
        let mut list = Vec::new();
        if let Some(a) = &route.auth {
            list.extend(crate::auth::RouteAuth::build(a, auth).map(Filter::Auth));
        }
        for name in &route.rate_limits {
            list.extend(limiters.get(name).cloned().map(Filter::RateLimit));
        }
        if let Some(h) = &route.hsts {
            list.extend(Hsts::build(h).map(Filter::Hsts));
        }
        Self::from_list(list)
    }

    fn from_list(mut list: Vec<Filter>) -> Self {
        // Stable: filters of one stage keep the order the config gives them.
        list.sort_by_key(Filter::stage);
        Self {
            request: list.iter().any(Filter::has_request_phase),
            response: list.iter().any(Filter::has_response_phase),
            list,
        }
    }

    /// The route's authentication filter, if it has one.
    pub fn auth(&self) -> Option<&crate::auth::RouteAuth> {
        self.list.iter().find_map(|f| match f {
            Filter::Auth(a) => Some(a),
            _ => None,
        })
    }

    /// The request head, through every filter until one rejects it.
    pub async fn on_request(&self, view: &RequestView<'_>, state: &mut FilterState) -> Verdict {
        if self.request {
            for f in &self.list {
                if let Verdict::Reject(r) = f.on_request(view, state).await {
                    return Verdict::Reject(r);
                }
            }
        }
        Verdict::Continue
    }

    /// The response head on its way to the client.
    pub fn on_response(
        &self,
        client: &Client,
        state: &FilterState,
        resp: &mut ResponseHeader,
    ) -> pingora_error::Result<()> {
        if self.response {
            for f in &self.list {
                f.on_response(client, state, resp)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
