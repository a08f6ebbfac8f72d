//! The Pingora `ProxyHttp` implementation: a thin dispatcher over the snapshot.
//!
//! Phases (chart in docs/operations.md):
//! - `request_filter`: load the snapshot once, enforce request limits, match a route,
//!   choose the upstream (weighted split), assign the request id.
//! - `upstream_peer`: pick an endpoint (health, zone, algorithm; not one already tried).
//! - `fail_to_connect` / `error_while_proxy` / `upstream_response_filter`: record the
//!   attempt's outcome for outlier detection and decide whether to retry.
//! - `upstream_request_filter`: forwarding headers.
//! - `logging`: metrics and the final outcome.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, TRANSFER_ENCODING};
use http::HeaderValue;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorSource, ErrorType, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use tollgate_config::admin::Readiness;
use tollgate_config::gateway::{Balance, HashOn, Route, RouteAction};

use crate::balance::{HashKey, UpstreamRt};
use crate::metrics::{status_class, METRICS};
use crate::routing::normalize_host;
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::trace;
use tollgate_config::outlier::{now_ms, InFlight};

pub struct GatewayProxy {
    pub state: Arc<State>,
}

/// Per-request state.
pub struct Ctx {
    started: Instant,
    snap: Option<Arc<Snapshot>>,
    route: Option<usize>,
    upstream: Option<Arc<UpstreamRt>>,
    /// Endpoints tried so far (inline: most requests try one).
    tried: smallvec::SmallVec<[SocketAddr; 4]>,
    attempt: Option<InFlight>,
    tries: u32,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    host: String,
    deadline: Option<Instant>,
    /// The last attempt's failure was already recorded (retry on status).
    retrying_status: bool,
    reject_reason: Option<&'static str>,
    /// Index of the listener the request arrived on.
    listener: Option<usize>,
    tls: bool,
    client_identity: Option<String>,
    /// The connection's peer (after PROXY protocol).
    peer: Option<IpAddr>,
    /// The peer is one of the listener's `trusted_proxies`.
    peer_trusted: bool,
    /// The client: the peer, or what trusted proxies say in `X-Forwarded-For`.
    client_ip: Option<IpAddr>,
    _req: RequestGuard,
}

/// Counts the request as in flight for graceful shutdown until dropped.
struct RequestGuard(Arc<State>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

impl Ctx {
    fn route<'a>(&self, snap: &'a Snapshot) -> Option<&'a Route> {
        self.route.and_then(|i| snap.config.routes.get(i))
    }

    fn route_name(&self) -> &str {
        match (&self.snap, self.route) {
            (Some(s), Some(i)) => s.config.routes.get(i).map_or("", |r| r.name.as_str()),
            _ => "",
        }
    }
}

fn is_idempotent(session: &Session) -> bool {
    let m = &session.req_header().method;
    m.is_idempotent() && !session.as_downstream().retry_buffer_truncated()
}

/// Total request-head size: request target plus every header line.
fn head_size(req: &RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let headers: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    target + headers
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

/// The client address behind trusted proxies: walk `X-Forwarded-For` from the right
/// (the entry our peer added) past every trusted proxy; the first address that is not
/// one is the client. An entry that is not an address stops the walk: nothing left of
/// it can be believed. When every entry is trusted, the leftmost is the client.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// An IP address as text into `buf`, without the formatting machinery for IPv4 (the
/// common case, on every request).
fn write_ip(buf: &mut [u8; 48], ip: IpAddr) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cur, "{v6}");
            let n = usize::try_from(cur.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

pub fn client_behind_proxies<'a>(
    peer: IpAddr,
    xff: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer;
    if !is_trusted(&peer) {
        return client;
    }
    for value in xff.rev() {
        let Ok(list) = value.to_str() else {
            return client;
        };
        for entry in list.rsplit(',') {
            let entry = entry.trim();
            let ip = entry
                .parse::<IpAddr>()
                .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()));
            let Ok(ip) = ip else {
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return client;
            }
        }
    }
    client
}

impl GatewayProxy {
    /// Answer the request ourselves with a short body saying why.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        reason: &'static str,
        body: String,
    ) -> Result<()> {
        ctx.reject_reason = Some(reason);
        METRICS.rejected.with_label_values(&[reason]).inc();
        let mut resp = ResponseHeader::build(status, Some(4))?;
        resp.insert_header(CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
        if let Some(id) = &ctx.request_id {
            resp.insert_header("x-request-id", id.clone())?;
        }
        if status == 429 || status == 503 {
            resp.insert_header(RETRY_AFTER, "1")?;
        }
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await
    }

    /// 308 to the same host and path over HTTPS.
    async fn redirect_https(&self, session: &mut Session, ctx: &mut Ctx, port: u16) -> Result<()> {
        let req = session.req_header();
        let raw_host = req
            .uri
            .host()
            .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let host = normalize_host(raw_host);
        if host.is_empty() {
            return self
                .respond(
                    session,
                    ctx,
                    400,
                    "no_host",
                    "a Host header is required\n".into(),
                )
                .await;
        }
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = if port == 443 {
            format!("https://{host}{pq}")
        } else {
            format!("https://{host}:{port}{pq}")
        };
        ctx.reject_reason = Some("redirect_https");
        let mut resp = ResponseHeader::build(308, Some(4))?;
        resp.insert_header(http::header::LOCATION, location.as_str())?;
        resp.insert_header(CONTENT_LENGTH, "0")?;
        if let Some(id) = &ctx.request_id {
            resp.insert_header("x-request-id", id.clone())?;
        }
        session.write_response_header(Box::new(resp), true).await
    }

    /// The current attempt ended; feed passive health.
    fn end_attempt(&self, ctx: &mut Ctx, ok: bool) {
        let Some(attempt) = ctx.attempt.take() else {
            return;
        };
        let Some(up) = ctx.upstream.as_ref() else {
            return;
        };
        let outlier = up.cfg.outlier.as_ref();
        let s = attempt.state();
        if ok {
            up.metrics.success.inc();
        } else {
            up.metrics.failure.inc();
        }
        if ok {
            s.record_success(outlier);
            return;
        }
        if !s.record_failure(outlier) {
            return;
        }
        let Some(o) = outlier else { return };
        let set = up.set.load();
        let now = now_ms();
        let ejected = set
            .members
            .iter()
            .filter(|m| m.state.is_ejected(now))
            .count();
        if tollgate_config::outlier::may_eject(ejected, set.members.len(), o.max_ejected) {
            let d = s.eject(o);
            METRICS
                .ejections
                .with_label_values(&[up.cfg.name.as_str()])
                .inc();
            tracing::warn!(
                upstream = %up.cfg.name,
                endpoint = %s.address,
                "endpoint ejected for {d:?} after {} consecutive failures",
                o.consecutive_failures
            );
        }
    }

    fn may_retry(&self, ctx: &Ctx) -> bool {
        let Some(snap) = ctx.snap.as_ref() else {
            return false;
        };
        let Some(route) = ctx.route(snap) else {
            return false;
        };
        ctx.tries < route.retry.attempts && ctx.deadline.is_none_or(|d| Instant::now() < d)
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        self.state.request_started();
        Ctx {
            started: Instant::now(),
            snap: None,
            route: None,
            upstream: None,
            tried: smallvec::SmallVec::new(),
            attempt: None,
            tries: 0,
            request_id: None,
            traceparent: None,
            host: String::new(),
            deadline: None,
            retrying_status: false,
            reject_reason: None,
            listener: None,
            tls: false,
            client_identity: None,
            peer: None,
            peer_trusted: false,
            client_ip: None,
            _req: RequestGuard(self.state.clone()),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = self.state.snapshot.load_full();
        ctx.snap = Some(snap.clone());
        if self.state.health.get() == Readiness::Draining {
            // Tell keep-alive clients to reconnect (elsewhere) before the listeners close.
            session.set_keepalive(None);
        }
        let req = session.req_header();
        ctx.request_id = Some(match req.headers.get("x-request-id") {
            Some(v) if valid_request_id(v) => v.clone(),
            _ => trace::new_request_id(),
        });
        ctx.traceparent = Some(trace::child_traceparent(
            req.headers.get("traceparent").map(HeaderValue::as_bytes),
        ));

        if let Some(local) = session.server_addr().and_then(|a| a.as_inet()).copied() {
            ctx.listener = snap.listener_index(local);
        }
        if let Some(ssl) = session.digest().and_then(|d| d.ssl_digest.as_ref()) {
            ctx.tls = true;
            ctx.client_identity = ssl
                .extension
                .get::<crate::tls::ClientCert>()
                .and_then(|c| c.identity.clone());
        }
        let listener = ctx.listener.and_then(|i| snap.config.listeners.get(i));
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = ctx.peer;
        if let (Some(peer), Some(l)) = (ctx.peer, listener) {
            if !l.trusted_proxies.is_empty() {
                ctx.peer_trusted = l.trusted_proxies.iter().any(|n| n.contains(&peer));
                ctx.client_ip = Some(client_behind_proxies(
                    peer,
                    req.headers.get_all("x-forwarded-for").iter(),
                    &l.trusted_proxies,
                ));
            }
        }
        // Behind a trusted TLS-terminating proxy, `X-Forwarded-Proto: https` means the
        // client already used HTTPS: do not redirect it again.
        let https = ctx.tls
            || (ctx.peer_trusted
                && req
                    .headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")));
        if let (Some(port), false) = (listener.and_then(|l| l.redirect_https), https) {
            self.redirect_https(session, ctx, port).await?;
            return Ok(true);
        }

        let limit = snap.config.max_request_header_bytes;
        if head_size(req) > limit {
            let body = format!("request header fields too large (limit {limit} bytes)\n");
            self.respond(session, ctx, 431, "header_too_large", body)
                .await?;
            return Ok(true);
        }
        // Request smuggling defence: Transfer-Encoding together with Content-Length is
        // ambiguous framing; refuse it rather than guess (RFC 9112 6.3 allows either).
        if req.headers.contains_key(TRANSFER_ENCODING) {
            let both = session.as_downstream().as_http1().is_some_and(|h1| {
                contains_ignore_case(&h1.get_headers_raw_bytes(), b"\ncontent-length:")
            });
            if both {
                let body = "both Content-Length and Transfer-Encoding: ambiguous framing\n".into();
                self.respond(session, ctx, 400, "ambiguous_framing", body)
                    .await?;
                return Ok(true);
            }
        }

        let req = session.req_header();
        let raw_host = req
            .uri
            .host()
            .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        ctx.host = normalize_host(raw_host);
        let found = snap.router.find(
            &snap.config.routes,
            &ctx.host,
            req.uri.path(),
            &req.method,
            &req.headers,
        );
        let Some(idx) = found else {
            METRICS.no_route.inc();
            let body = format!(
                "no route for host {:?} path {:?}\n",
                ctx.host,
                req.uri.path()
            );
            self.respond(session, ctx, 404, "no_route", body).await?;
            return Ok(true);
        };
        ctx.route = Some(idx);
        let Some(route) = snap.config.routes.get(idx) else {
            return Error::e_explain(ErrorType::InternalError, "route index out of range");
        };
        let RouteAction::Forward(targets) = &route.action;
        let upstream = pick_weighted(targets.iter().map(|t| (t.upstream.as_str(), t.weight)));
        ctx.upstream = upstream.and_then(|n| snap.upstreams.get(n)).cloned();
        if ctx.upstream.is_none() {
            return Error::e_explain(ErrorType::InternalError, "route has no upstream");
        }
        ctx.deadline = route.request_timeout.map(|t| ctx.started + t);
        if route.retry.attempts > 1 && is_idempotent(session) {
            session.as_downstream_mut().enable_retry_buffering();
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(snap), Some(up)) = (ctx.snap.clone(), ctx.upstream.clone()) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
        };
        let Some(route) = ctx.route(&snap) else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let mut remaining = None;
        if let Some(d) = ctx.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Error::e_explain(ErrorType::HTTPStatus(504), "request timeout reached");
            }
            remaining = Some(left);
        }
        ctx.tries += 1;
        let key = match &up.cfg.balance {
            Balance::ConsistentHash(HashOn::Header(h)) => session
                .req_header()
                .headers
                .get(h)
                .map_or(HashKey::None, |v| HashKey::Bytes(v.as_bytes())),
            Balance::ConsistentHash(HashOn::Cookie(name)) => {
                cookie_value(session.req_header(), name).map_or(HashKey::None, HashKey::Bytes)
            }
            Balance::ConsistentHash(HashOn::ClientIp) => {
                ctx.client_ip.map_or(HashKey::None, HashKey::Ip)
            }
            _ => HashKey::None,
        };
        let Some(pick) = up.pick(key, &ctx.tried) else {
            return Error::e_explain(
                ErrorType::HTTPStatus(503),
                format!("upstream {} has no endpoints", up.cfg.name),
            );
        };
        if pick.panic {
            METRICS
                .panic_picks
                .with_label_values(&[up.cfg.name.as_str()])
                .inc();
            crate::trace::warn_sampled(
                &up.cfg.name,
                "no healthy endpoint: panic mode, sending to all endpoints",
            );
        }
        ctx.tried.push(pick.address);
        ctx.attempt = Some(pick.state.begin());
        let cap = |d: Duration| remaining.map_or(d, |r| d.min(r));
        let mut peer = match &up.tls {
            Some(t) => {
                let mut p = HttpPeer::new(pick.address, true, t.sni.clone());
                p.options.verify_cert = t.verify;
                p.options.verify_hostname = t.verify;
                p.options.ca = t.ca.clone();
                p
            }
            None => HttpPeer::new(pick.address, false, String::new()),
        };
        peer.options.connection_timeout = Some(cap(route.connect_timeout));
        peer.options.read_timeout = Some(cap(route.read_timeout));
        // A request head without a body fits the socket buffer: a write timer per
        // request (Pingora arms one per write) would cost more than it could catch.
        if session.is_body_empty() {
            peer.options.write_timeout = None;
        } else {
            peer.options.write_timeout = Some(cap(route.read_timeout));
        }
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Forwarding headers from a trusted proxy are extended; from anyone else they
        // are replaced, so a client cannot plant an address or a scheme.
        if let Some(peer) = ctx.peer {
            let mut buf = [0u8; 48];
            let ip = write_ip(&mut buf, peer);
            let prev = upstream_request.headers.get_all(X_FORWARDED_FOR);
            let xff = if ctx.peer_trusted && prev.iter().next().is_some() {
                let mut joined = Vec::with_capacity(64);
                for v in prev {
                    joined.extend_from_slice(v.as_bytes());
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(ip);
                HeaderValue::from_bytes(&joined)
            } else {
                HeaderValue::from_bytes(ip)
            };
            if let Ok(v) = xff {
                upstream_request.insert_header(X_FORWARDED_FOR, v)?;
            }
        } else if !ctx.peer_trusted {
            upstream_request.remove_header(X_FORWARDED_FOR);
        }
        if !(ctx.peer_trusted && upstream_request.headers.contains_key(X_FORWARDED_PROTO)) {
            let proto = HeaderValue::from_static(if ctx.tls { "https" } else { "http" });
            upstream_request.insert_header(X_FORWARDED_PROTO, proto)?;
        }
        // The client identity header is ours: never pass one the client made up.
        let client_auth = ctx
            .snap
            .as_ref()
            .and_then(|s| ctx.listener.and_then(|i| s.config.listeners.get(i)))
            .and_then(|l| l.tls.as_ref())
            .and_then(|t| t.client_auth.as_ref());
        if let Some(auth) = client_auth {
            upstream_request.remove_header(&auth.identity_header);
            if let Some(id) = &ctx.client_identity {
                upstream_request.insert_header(auth.identity_header.clone(), id.as_str())?;
            }
        }
        if !ctx.host.is_empty() {
            let host = session
                .req_header()
                .headers
                .get(HOST)
                .cloned()
                .or_else(|| HeaderValue::from_str(&ctx.host).ok());
            if let Some(h) = host {
                upstream_request.insert_header("x-forwarded-host", h)?;
            }
        }
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header("x-request-id", id.clone())?;
        }
        if let Some(tp) = &ctx.traceparent {
            upstream_request.insert_header("traceparent", tp.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        let retry_it = ctx
            .snap
            .as_ref()
            .and_then(|s| ctx.route(s))
            .is_some_and(|r| r.retry.retries_status(status))
            && is_idempotent(session)
            && self.may_retry(ctx);
        if retry_it {
            self.end_attempt(ctx, false);
            ctx.retrying_status = true;
            METRICS
                .retries
                .with_label_values(&[ctx.route_name(), status_class(status)])
                .inc();
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                format!("upstream answered {status}, retrying on another endpoint"),
            );
            e.set_retry(true);
            return Err(e);
        }
        self.end_attempt(ctx, status < 500);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            upstream_response.insert_header("x-request-id", id.clone())?;
        }
        if ctx.tls {
            if let Some(hsts) = ctx
                .snap
                .as_ref()
                .and_then(|s| ctx.route(s))
                .and_then(|r| r.hsts.as_ref())
            {
                upstream_response.insert_header("strict-transport-security", hsts.as_str())?;
            }
        }
        Ok(())
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Ctx,
        _error: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        // Retries are counted in gateway_retries_total; a log line per retry would
        // flood the log exactly when an outage is already loud.
        true
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.end_attempt(ctx, false);
        let on = ctx
            .snap
            .as_ref()
            .and_then(|s| ctx.route(s))
            .is_some_and(|r| r.retry.on_connect_failure);
        // The request never left: safe to retry whatever the method.
        let retry = on && self.may_retry(ctx);
        if retry {
            METRICS
                .retries
                .with_label_values(&[ctx.route_name(), "connect-failure"])
                .inc();
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("endpoint {}", peer.address()));
        if std::mem::take(&mut ctx.retrying_status) {
            // Our own retry-on-status error: already counted, keep the retry decision.
            e.set_retry(true);
            return e;
        }
        let idempotent = is_idempotent(session);
        // A pooled connection the upstream had already closed: the request was not
        // processed, so retrying does not count against the route's attempts.
        if client_reused && matches!(e.retry, RetryType::ReusedOnly) && idempotent {
            ctx.attempt.take();
            ctx.tries = ctx.tries.saturating_sub(1);
            ctx.tried.pop();
            e.set_retry(true);
            return e;
        }
        if *e.esource() == ErrorSource::Downstream {
            // The client went away or sent garbage: not the endpoint's fault.
            ctx.attempt.take();
            e.set_retry(false);
            return e;
        }
        self.end_attempt(ctx, false);
        let policy = ctx
            .snap
            .as_ref()
            .and_then(|s| ctx.route(s))
            .map(|r| r.retry.clone());
        let (kind, wanted) = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                ("timeout", policy.as_ref().is_some_and(|p| p.on_timeout))
            }
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                ("reset", policy.as_ref().is_some_and(|p| p.on_reset))
            }
            _ => ("error", false),
        };
        let retry = wanted && idempotent && self.may_retry(ctx);
        if retry {
            METRICS
                .retries
                .with_label_values(&[ctx.route_name(), kind])
                .inc();
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (code, why) = match e.etype() {
            ErrorType::HTTPStatus(c) => (*c, "upstream unavailable"),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if *e.esource() != ErrorSource::Downstream =>
            {
                (504, "upstream timed out")
            }
            _ => match e.esource() {
                ErrorSource::Upstream => (502, "upstream connection failed"),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, "")
                    }
                    _ => (400, "bad request"),
                },
                ErrorSource::Internal | ErrorSource::Unset => (500, "internal error"),
            },
        };
        if code > 0 && session.response_written().is_none() {
            let body = format!("{why}\n");
            let reason = match code {
                504 => "upstream_timeout",
                502 => "upstream_failure",
                503 => "upstream_unavailable",
                400 => "bad_request",
                _ => "internal_error",
            };
            let _ = self.respond(session, ctx, code, reason, body).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client that went away before its answer is not a gateway failure: it is
    /// counted (`status="error"` in `gateway_requests_total`) and logged at debug, so
    /// ERROR lines stay about the gateway and its upstreams.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        let client_gone = *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            );
        if client_gone {
            tracing::debug!("client went away: {e}");
        }
        client_gone
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // An attempt still open here ended with the response: success unless it errored
        // on the upstream side.
        if ctx.attempt.is_some() {
            let upstream_failed = e.is_some_and(|e| *e.esource() == ErrorSource::Upstream);
            if upstream_failed {
                self.end_attempt(ctx, false);
            } else {
                ctx.attempt.take();
            }
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let Some(snap) = ctx.snap.as_ref() else {
            return;
        };
        let m = ctx
            .route
            .and_then(|i| snap.route_metrics.get(i))
            .unwrap_or(&snap.unrouted_metrics);
        m.count(status);
        m.duration.observe(ctx.started.elapsed().as_secs_f64());
    }
}

fn pick_weighted<'a>(
    mut targets: impl ExactSizeIterator<Item = (&'a str, u32)> + Clone,
) -> Option<&'a str> {
    if targets.len() == 1 {
        return targets.next().map(|(n, _)| n);
    }
    let total: u64 = targets.clone().map(|(_, w)| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut r = rand::random_range(0..total);
    for (name, w) in targets {
        if r < u64::from(w) {
            return Some(name);
        }
        r -= u64::from(w);
    }
    None
}

fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq] == *name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1; session=xyz; b=2")
            .unwrap();
        assert_eq!(cookie_value(&req, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie_value(&req, "sess"), None);
    }

    #[test]
    fn weighted_split_respects_zero_weights() {
        for _ in 0..100 {
            let t = [("a", 0u32), ("b", 5)];
            assert_eq!(pick_weighted(t.iter().copied()), Some("b"));
        }
    }

    fn client(peer: &str, xff: &[&'static str], trusted: &[&str]) -> String {
        let values: Vec<HeaderValue> = xff.iter().map(|v| HeaderValue::from_static(v)).collect();
        let nets: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_behind_proxies(peer.parse().unwrap(), values.iter(), &nets).to_string()
    }

    #[test]
    fn client_address_behind_trusted_proxies() {
        let cdn = ["10.0.0.0/8"];
        // Untrusted peer: its X-Forwarded-For is ignored.
        assert_eq!(client("203.0.113.9", &["1.2.3.4"], &cdn), "203.0.113.9");
        // Trusted peer: the rightmost entry that is not a trusted proxy.
        assert_eq!(client("10.0.0.2", &["1.2.3.4"], &cdn), "1.2.3.4");
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, 1.2.3.4, 10.9.9.9"], &cdn),
            "1.2.3.4"
        );
        // Several header lines count as one list, in order.
        assert_eq!(
            client("10.0.0.2", &["1.2.3.4", "10.1.1.1"], &cdn),
            "1.2.3.4"
        );
        // Garbage stops the walk at the last believable address.
        assert_eq!(
            client("10.0.0.2", &["1.2.3.4, nonsense, 10.1.1.1"], &cdn),
            "10.1.1.1"
        );
        assert_eq!(client("10.0.0.2", &["nonsense"], &cdn), "10.0.0.2");
        // All trusted: the leftmost. No header: the peer.
        assert_eq!(
            client("10.0.0.2", &["10.3.3.3, 10.1.1.1"], &cdn),
            "10.3.3.3"
        );
        assert_eq!(client("10.0.0.2", &[], &cdn), "10.0.0.2");
        // Ports and IPv6.
        assert_eq!(
            client("10.0.0.2", &["[2001:db8::5]:443"], &cdn),
            "2001:db8::5"
        );
        assert_eq!(client("::1", &["2001:db8::5"], &["::1/128"]), "2001:db8::5");
    }

    #[test]
    fn ips_are_written_like_display() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.255",
            "192.168.9.99",
            "255.255.255.255",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:192.0.2.1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(write_ip(&mut buf, parsed), parsed.to_string().as_bytes());
        }
    }

    #[test]
    fn request_ids_are_validated() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
    }
}
