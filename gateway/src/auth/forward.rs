//! Forward-auth (Traefik's ForwardAuth, nginx's `auth_request`): an authorization
//! service sees the request's method, URI, host and chosen headers and decides. A 2xx
//! lets the request through, with chosen headers of the answer copied onto it; any
//! other answer goes back to the client as the service wrote it (a 302 to a login
//! page, a 401 with its `WWW-Authenticate`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use tollgate_config::gateway::auth::ForwardAuthPolicy;

use crate::context::Client;

/// Largest denial body passed on; a longer one is cut there.
const MAX_DENY_BODY: usize = 64 * 1024;
/// Decisions remembered at most (then the expired ones go, or all).
const MAX_CACHED: usize = 10_000;

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Vec<(HeaderName, HeaderValue)>),
    Deny {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
}

pub struct ForwardAuth {
    pub policy: ForwardAuthPolicy,
    client: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], (Instant, Decision)>>,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("policy", &self.policy.name)
            .finish_non_exhaustive()
    }
}

/// Hop-by-hop and framing headers of the service's answer: this gateway writes its own.
fn passed_back(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

impl ForwardAuth {
    pub fn new(policy: ForwardAuthPolicy) -> Result<Self, String> {
        let client = super::client::build(policy.ca.as_deref(), policy.timeout)?;
        Ok(Self {
            policy,
            client,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// What a decision is remembered by: the request's method, host and URI (the
    /// service sees them, so its answer may depend on them: an allow for `/public`
    /// must not serve `/admin`), and the `cache_key` headers.
    fn cache_key(&self, req: &RequestHeader) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let host = req
            .headers
            .get(http::header::HOST)
            .map_or(&b""[..], |h| h.as_bytes());
        let uri = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        for part in [req.method.as_str().as_bytes(), host, uri.as_bytes()] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        for name in &self.policy.cache_key {
            ctx.update(name.as_str().as_bytes());
            for v in req.headers.get_all(name) {
                ctx.update(&(v.len() as u64).to_le_bytes());
                ctx.update(v.as_bytes());
            }
            ctx.update(b"\n");
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The service's decision on the request (`Ok((decision, cached))`), or why it
    /// could not be asked.
    pub async fn decide(
        &self,
        req: &RequestHeader,
        client: &Client,
    ) -> Result<(Decision, bool), String> {
        let ttl = self.policy.cache_ttl;
        let key = (!ttl.is_zero()).then(|| self.cache_key(req));
        if let Some(k) = &key {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, d)) = cache.get(k).filter(|(at, _)| at.elapsed() < ttl) {
                let _ = at;
                return Ok((d.clone(), true));
            }
        }
        let decision = self.ask(req, client).await?;
        if let Some(k) = key {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(k, (Instant::now(), decision.clone()));
        }
        Ok((decision, false))
    }

    async fn ask(&self, req: &RequestHeader, client: &Client) -> Result<Decision, String> {
        let p = &self.policy;
        let mut call = self.client.get(&p.url);
        for name in &p.request_headers {
            for v in req.headers.get_all(name) {
                call = call.header(name, v);
            }
        }
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let uri = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        call = call
            .header("x-forwarded-method", req.method.as_str())
            .header(
                "x-forwarded-proto",
                if crate::forwarded::client_used_https(client, req) {
                    "https"
                } else {
                    "http"
                },
            )
            .header("x-forwarded-host", host)
            .header("x-forwarded-uri", uri);
        if let Some(ip) = client.ip {
            call = call.header("x-forwarded-for", ip.to_string());
        }
        let resp = call.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer from {} within {:?}", p.url, p.timeout)
            } else {
                format!("{}: {e}", p.url)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            let headers = p
                .response_headers
                .iter()
                .flat_map(|name| {
                    resp.headers()
                        .get_all(name)
                        .iter()
                        .map(move |v| (name.clone(), v.clone()))
                })
                .collect();
            return Ok(Decision::Allow(headers));
        }
        let headers: Vec<(HeaderName, HeaderValue)> = resp
            .headers()
            .iter()
            .filter(|(n, _)| passed_back(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{}: {e}", p.url))? {
            let room = MAX_DENY_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_DENY_BODY {
                break;
            }
        }
        Ok(Decision::Deny {
            status: status.as_u16(),
            headers,
            body: Bytes::from(body),
        })
    }
}
