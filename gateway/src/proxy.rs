//! The Pingora `ProxyHttp` implementation: a dispatcher. Each phase is a few lines
//! calling the module that owns the concern (chart in docs/operations.md):
//!
//! - `request_filter`: start the context (`forwarded`: client, request id, trace) ->
//!   listener guards (`guards`: HTTPS redirect, head size, framing) -> route match
//!   (`routing`) -> the route's filters in their fixed order (`filters`) -> the
//!   route's action (`route`). A rejection is answered by `respond`, the one writer,
//!   and never touches a backend.
//! - `upstream_peer`: the next endpoint and its peer (`attempts`, `balance`).
//! - `fail_to_connect` / `error_while_proxy` / `upstream_response_filter`: the
//!   attempt's outcome for outlier detection and the retry decision (`attempts`).
//! - `upstream_request_filter`: forwarding headers (`forwarded`).
//! - `response_filter`: the request id and the route's response filters.
//! - `logging`: metrics and the final outcome.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use tollgate_config::admin::Readiness;

use crate::attempts;
use crate::context::{Ctx, Routed};
use crate::filters::{Rejection, RequestView, Verdict};
use crate::forwarded::{self, X_REQUEST_ID};
use crate::guards;
use crate::idempotency::Begin;
use crate::respond;
use crate::route::Action;
use crate::state::State;

/// Size of an HTTP/1 message head: its first line (`line` bytes plus the version and
/// separators) and header fields. Cross-zone byte counts use it; HTTP/2 heads are
/// smaller on the wire (HPACK), so this errs high there.
fn head_bytes(line: usize, headers: &http::HeaderMap) -> u64 {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    (line + 13 + fields + 2) as u64
}

fn body_too_large(max: u64) -> Rejection {
    Rejection::new(
        413,
        "body_too_large",
        format!("request body larger than this route accepts ({max} bytes)"),
    )
}

pub struct GatewayProxy {
    pub state: Arc<State>,
}

/// Safe to send again: an idempotent method, or a gRPC method the route lists as safe
/// (`retry.grpc_methods`), with the whole body still at hand.
fn is_idempotent(session: &Session, ctx: &Ctx) -> bool {
    let m = &session.req_header().method;
    (m.is_idempotent() || crate::grpc::safe_to_repeat(ctx))
        && !session.as_downstream().retry_buffer_truncated()
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    /// Boxed: Pingora moves the context with its request futures several times per
    /// request, and a pointer is cheaper to move than the ~400-byte context (measured
    /// with callgrind: 87.8k -> 86.5k instructions per request, allocation included).
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(&self.state))
    }

    /// No downstream modules. Pingora's default adds its response-compression module,
    /// disabled, which still builds a context and runs its filters on every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        let limits = &ctx.snap.config;
        // HTTP/1 keep-alive: idle at most client_idle_timeout between requests, and a
        // connection past keepalive_duration closes after this answer (ALB's two).
        session.set_keepalive(Some(limits.client_idle_timeout.as_secs().max(1)));
        if crate::connection::age().is_some_and(|age| age > limits.keepalive_duration) {
            session.set_keepalive(None);
        }
        if self.state.health.get() == Readiness::Draining {
            // Tell keep-alive clients to reconnect (elsewhere) before the listeners close.
            session.set_keepalive(None);
        }
        let snap = ctx.snap.clone();
        ctx.ids = forwarded::ids(session.req_header());
        crate::telemetry::start_trace(ctx, session.req_header());
        ctx.client = forwarded::client(session, &snap);
        if let Some(g) = ctx
            .client
            .listener
            .and_then(|i| snap.listener_in_flight.get(i))
        {
            ctx.listener_in_flight = Some(crate::metrics::GaugeGuard::new(g));
        }
        if let Verdict::Reject(r) = guards::check(session, &snap, &ctx.client) {
            respond::reject(session, ctx, &r).await?;
            return Ok(true);
        }
        let (desync, reason) = guards::desync(session, &snap, &ctx.client);
        ctx.desync = reason;
        match desync {
            guards::Desync::Forward => {}
            guards::Desync::ForwardAndClose => {
                session.set_keepalive(None);
                ctx.close_upstream = true;
            }
            guards::Desync::Refuse(r) => {
                respond::reject(session, ctx, &r).await?;
                return Ok(true);
            }
        }

        ctx.upgrade = session.is_upgrade_req();
        if !ctx.upgrade && !session.is_body_empty() {
            // Each wait for the next piece of the body (nginx's client_body_timeout).
            session.set_read_timeout(Some(snap.config.request_body_timeout));
        }
        if !snap.auth.oidc.is_empty() {
            if let Some((r, decision, _)) = snap
                .auth
                .oidc_own_path(session.req_header(), &ctx.client)
                .await
            {
                ctx.filter_state.auth = Some(crate::auth::AuthState {
                    decision,
                    ..Default::default()
                });
                respond::reject(session, ctx, &r).await?;
                return Ok(true);
            }
        }
        let req = session.req_header();
        let host = guards::request_host(req);
        let found = snap.router.find(
            &snap.config.routes,
            &crate::routing::MatchRequest {
                host: &host,
                path: req.uri.path(),
                query: req.uri.query(),
                method: &req.method,
                headers: &req.headers,
                client_ip: ctx.client.ip,
            },
        );
        let Some((index, route)) = found.and_then(|i| Some((i, snap.routes.get(i)?))) else {
            crate::metrics::METRICS.no_route.inc();
            let detail = format!("no route for host {host:?} path {:?}", req.uri.path());
            respond::reject(session, ctx, &Rejection::new(404, "no_route", detail)).await?;
            return Ok(true);
        };
        ctx.matched = Some(index);
        if let Some(waf) = &route.config.waf {
            if let Some(r) = crate::waf::on_request(session, ctx, waf).await? {
                respond::reject(session, ctx, &r).await?;
                return Ok(true);
            }
        }
        let view = RequestView {
            req: session.req_header(),
            client: &ctx.client,
            route: &route.config.name,
            claims: None,
        };
        if let Verdict::Reject(r) = route.filters.on_request(&view, &mut ctx.filter_state).await {
            respond::reject(session, ctx, &r).await?;
            return Ok(true);
        }

        if let Some(max) = route.config.max_request_body {
            let declared = session
                .req_header()
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                // Closed: the body is not read.
                let r = body_too_large(max).close();
                respond::reject(session, ctx, &r).await?;
                return Ok(true);
            }
        }
        if let Some(fault) = &route.fault {
            let injected = fault.cfg.decide(&session.req_header().headers);
            if let Some(delay) = injected.delay {
                fault.delayed.inc();
                tokio::time::sleep(delay).await;
            }
            if let Some(status) = injected.abort {
                fault.aborted.inc();
                let r = Rejection::new(
                    status,
                    "fault_injected",
                    "fault injected by the route's `fault` setting",
                );
                respond::reject(session, ctx, &r).await?;
                return Ok(true);
            }
        }
        if let Some(idem) = &route.idempotency {
            match idem.begin(session, &ctx.client, &route.config.name).await? {
                Begin::Skip => {}
                Begin::Forward(pending) => ctx.idempotency = Some(pending),
                Begin::Replay(stored) => {
                    respond::replay(session, ctx, &stored).await?;
                    return Ok(true);
                }
                Begin::Reject(r) => {
                    respond::reject(session, ctx, &r).await?;
                    return Ok(true);
                }
            }
        }
        if let Some(limit) = &route.concurrency {
            match limit.acquire().await {
                Some(slot) => ctx.concurrency_slot = Some(slot),
                None => {
                    let detail = format!(
                        "route {} has {} requests in flight, its limit",
                        route.config.name, limit.cfg.max
                    );
                    let r = Rejection::new(503, "concurrency_limited", detail)
                        .retry_after(std::time::Duration::from_secs(1));
                    respond::reject(session, ctx, &r).await?;
                    return Ok(true);
                }
            }
        }
        match &route.action {
            Action::Forward(forward) => {
                if ctx.upgrade {
                    // Once upgraded, the client's bytes are the "body": an idle WebSocket
                    // waits up to the route's upgrade_idle, not the body timeout.
                    session.set_read_timeout(Some(route.config.upgrade_idle_timeout));
                }
                let Some(upstream) = forward.pick().cloned() else {
                    return Error::e_explain(ErrorType::InternalError, "route has no upstream");
                };
                if let Some(r) = crate::concurrency::upstream_slots(ctx, &upstream).await {
                    respond::reject(session, ctx, &r).await?;
                    return Ok(true);
                }
                ctx.routed = Some(Routed {
                    host,
                    upstream,
                    // An upgraded stream lives as long as it is used.
                    deadline: route
                        .config
                        .request_timeout
                        .filter(|_| !ctx.upgrade)
                        .map(|t| ctx.started + t),
                });
                crate::grpc::begin(ctx, session.req_header());
                if route.config.retry.attempts > 1 && is_idempotent(session, ctx) {
                    session.as_downstream_mut().enable_retry_buffering();
                }
                Ok(false)
            }
            Action::Redirect(r) => {
                let location = crate::transform::redirect_location(
                    r,
                    session.req_header(),
                    &host,
                    ctx.client.tls,
                );
                respond::redirect(session, ctx, r.status, &location).await?;
                Ok(true)
            }
            Action::Fixed(f) => {
                respond::fixed(session, ctx, f).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        let body_empty = session.is_body_empty();
        attempts::next_peer(ctx, session.req_header(), body_empty)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        forwarded::upstream_headers(ctx, session.req_header(), upstream_request)?;
        crate::grpc::upstream_request(ctx, upstream_request)?;
        if ctx.close_upstream {
            upstream_request.insert_header(http::header::CONNECTION, "close")?;
        }
        if ctx.snap.config.drop_invalid_header_fields {
            forwarded::drop_invalid_header_fields(upstream_request);
        }
        if let (Some(route), Some(routed)) = (ctx.route(), ctx.routed.as_ref()) {
            if let Some(auth) = route.filters.auth() {
                auth.upstream_request(ctx.filter_state.auth.as_ref(), upstream_request)?;
            }
            if let Some(rw) = &route.config.rewrite {
                crate::transform::rewrite(rw, upstream_request)?;
            }
            let ops = &route.config.request_headers;
            if !ops.is_empty() {
                crate::transform::request_headers(ops, ctx, &routed.host, upstream_request)?;
            }
        }
        ctx.attempts.head_bytes_sent += head_bytes(
            upstream_request.method.as_str().len()
                + upstream_request
                    .uri
                    .path_and_query()
                    .map_or(1, |p| p.as_str().len()),
            &upstream_request.headers,
        );
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if status == 101 {
            if !ctx.upgrade {
                // The backend switched protocols nobody asked it to: what follows on
                // that connection is not HTTP the client expects.
                let mut e = Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "101 Switching Protocols for a request that did not ask to upgrade",
                );
                e.as_up();
                return Err(e);
            }
            if let Some(route) = ctx.route() {
                route.metrics.upgrades.inc();
                ctx.upgraded = Some(crate::metrics::GaugeGuard::new(&route.metrics.upgraded));
            }
        }
        if let Some(p) = ctx.adaptive.as_ref().filter(|_| status < 500) {
            p.answered();
        }
        ctx.attempts.head_bytes_received += head_bytes(
            upstream_response.get_reason_phrase().map_or(3, str::len),
            &upstream_response.headers,
        );
        let idempotent = is_idempotent(session, ctx);
        attempts::on_response_status(ctx, status, &upstream_response.headers, idempotent)
    }

    /// gRPC's outcome is in the trailers (passed on to the client as they are).
    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        upstream_trailers: &mut http::HeaderMap,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        attempts::on_trailers(ctx, upstream_trailers);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if let Some(p) = &mut ctx.idempotency {
            // As the backend sent it, before this gateway adds its own headers.
            p.on_head(upstream_response);
        }
        if let Some(id) = &ctx.ids.request_id {
            forwarded::response_header(ctx, upstream_response, X_REQUEST_ID, id.clone())?;
        }
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        if let Some(st) = ctx
            .routed
            .as_ref()
            .and_then(|r| r.upstream.cfg.sticky.as_ref())
        {
            let token = ctx.attempts.token;
            crate::sticky::on_response(
                st,
                token,
                ctx.client.tls,
                session.req_header(),
                upstream_response,
            )?;
        }
        route
            .filters
            .on_response(&ctx.client, &ctx.filter_state, upstream_response)?;
        let ops = &route.config.response_headers;
        if !ops.is_empty() {
            let host = ctx.routed.as_ref().map_or("", |r| r.host.as_str());
            crate::transform::response_headers(ops, ctx, host, upstream_response)?;
        }
        Ok(())
    }

    /// The body's pace: after the first `request_body_timeout` it must keep arriving at
    /// `min_request_body_rate` on average (each wait is bounded by the read timeout).
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if ctx.waf_stream.is_some() {
            if let Some(r) =
                crate::waf::on_body_chunk(ctx, session.req_header(), body.as_ref(), end_of_stream)
            {
                let mut e =
                    Error::explain(ErrorType::Custom("waf"), "request body refused by the WAF");
                e.as_down();
                ctx.waf_block = Some(r);
                return Err(e);
            }
        }
        let rate = ctx.snap.config.min_request_body_rate;
        let max = ctx.route().and_then(|r| r.config.max_request_body);
        if (rate == 0 && max.is_none()) || ctx.upgrade {
            return Ok(());
        }
        let (started, bytes) = ctx
            .body_progress
            .get_or_insert_with(|| (std::time::Instant::now(), 0));
        *bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if let Some(max) = max.filter(|&m| *bytes > m) {
            // A chunked body past the route's limit (a declared one was refused before
            // the upstream was contacted).
            let mut e = Error::explain(
                ErrorType::HTTPStatus(413),
                format!("request body over the route's max_request_body ({max} bytes)"),
            );
            e.as_down();
            return Err(e);
        }
        if rate == 0 || end_of_stream {
            return Ok(());
        }
        let allowed = ctx.snap.config.request_body_timeout
            + std::time::Duration::from_secs_f64(*bytes as f64 / rate as f64);
        if started.elapsed() > allowed {
            let mut e = Error::explain(
                ErrorType::ReadTimedout,
                format!(
                    "request body slower than {rate} bytes/s (server.limits.min_request_body_rate)"
                ),
            );
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.idempotency.is_some() {
            let Some(idem) = ctx.route().and_then(|r| r.idempotency.clone()) else {
                return Ok(None);
            };
            if let Some(p) = &mut ctx.idempotency {
                p.on_body(body.as_ref(), idem.cfg.max_response_bytes);
            }
            if end_of_stream {
                if let Some(p) = ctx.idempotency.take() {
                    // Off to Redis as this last chunk goes out (a duplicate arriving
                    // meanwhile looks again for 100 ms before its 409).
                    tokio::spawn(idem.finish(*p, true));
                }
            }
        }
        Ok(None)
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Box<Ctx>,
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
        ctx: &mut Box<Ctx>,
        e: Box<Error>,
    ) -> Box<Error> {
        attempts::on_connect_failure(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        client_reused: bool,
    ) -> Box<Error> {
        let idempotent = is_idempotent(session, ctx);
        attempts::on_proxy_error(ctx, e, peer, idempotent, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        let rejection = ctx
            .waf_block
            .take()
            .or_else(|| attempts::failure_rejection(e));
        match rejection.as_ref() {
            Some(r) if session.response_written().is_none() => {
                let _ = respond::reject(session, ctx, r).await;
            }
            _ => session.set_keepalive(None),
        }
        FailToProxy {
            error_code: rejection.map_or(0, |r| r.status),
            can_reuse_downstream: false,
        }
    }

    /// A client that went away before its answer is not a gateway failure: it is
    /// counted (`status="error"` in `gateway_requests_total`) and logged at debug, so
    /// ERROR lines stay about the gateway and its upstreams.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Box<Ctx>, e: &Error) -> bool {
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

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<Ctx>) {
        crate::telemetry::finish(&self.state, session, e, ctx);
        if let Some(pending) = ctx.idempotency.take() {
            // The answer never completed (its last chunk would have finished it).
            if let Some(idem) = ctx.route().and_then(|r| r.idempotency.clone()) {
                idem.finish(*pending, false).await;
            }
        }
    }
}
