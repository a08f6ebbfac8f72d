//! A request's attempts at upstream endpoints: choosing the endpoint and building the
//! peer, feeding passive health (outlier detection) with each outcome, deciding
//! retries, and what the client is told when every attempt failed.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::header::COOKIE;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, RetryType};
use pingora_http::RequestHeader;
use tollgate_config::gateway::{Balance, HashOn};
use tollgate_config::outlier::{count_ejected, now_ms, record_outcome, Active, InFlight};

use crate::balance::{HashKey, Pick, UpstreamRt};
use crate::context::Ctx;
use crate::filters::Rejection;
use crate::metrics::{status_class, Locality, METRICS};
use tollgate_config::telemetry::trace_context::new_span_id;

/// Endpoints tried so far and the attempt in progress.
#[derive(Default)]
pub struct Attempts {
    /// Inline: most requests try one or two endpoints (the context is moved around
    /// inside Pingora's futures: every inline byte is copied several times a request).
    pub tried: smallvec::SmallVec<[SocketAddr; 2]>,
    current: Option<InFlight>,
    /// The endpoint of the latest attempt is in use until the request ends (its
    /// deregistration delay waits for it).
    active: Option<Active>,
    /// The sticky-cookie token of the latest attempt's endpoint.
    pub token: u64,
    pub tries: u32,
    /// The last attempt's failure was already recorded (retry on status).
    retrying_status: bool,
    /// The current (or last) attempt's span: the parent the endpoint is told about.
    pub span_id: u64,
    /// When the current attempt started (upstream response time).
    started: Option<Instant>,
    /// Where the last attempt went.
    pub last: Option<(SocketAddr, Locality)>,
    /// Bytes of request heads sent and response heads received, every attempt.
    pub head_bytes_sent: u64,
    pub head_bytes_received: u64,
    /// Each attempt, when the request's spans are recorded (empty otherwise).
    pub spans: Vec<AttemptSpan>,
}

/// One attempt as its span reports it.
#[derive(Debug)]
pub struct AttemptSpan {
    pub span_id: u64,
    pub address: SocketAddr,
    pub locality: Locality,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub status: u16,
    pub error: Option<String>,
}

impl Attempts {
    pub fn begin(&mut self, pick: &Pick, record_span: bool) {
        self.tries += 1;
        self.tried.push(pick.address);
        self.current = Some(pick.state.begin());
        self.active = Some(pick.state.hold());
        self.token = pick.token;
        self.span_id = new_span_id();
        self.started = Some(Instant::now());
        self.last = Some((pick.address, pick.locality));
        if record_span {
            self.spans.push(AttemptSpan {
                span_id: self.span_id,
                address: pick.address,
                locality: pick.locality,
                start: SystemTime::now(),
                end: None,
                status: 0,
                error: None,
            });
        }
    }

    /// The span of the attempt in progress, when spans are recorded.
    fn open_span(&mut self) -> Option<&mut AttemptSpan> {
        self.spans.last_mut().filter(|s| s.end.is_none())
    }

    /// The attempt got a response head with this status.
    pub fn got_status(&mut self, status: u16) {
        if let Some(s) = self.open_span() {
            s.status = status;
        }
    }

    /// The attempt failed with this error (span status).
    pub fn failed_with(&mut self, e: &Error) {
        if let Some(s) = self.open_span() {
            s.error = Some(e.to_string());
        }
    }

    fn close_span(&mut self) {
        if let Some(s) = self.open_span() {
            s.end = Some(SystemTime::now());
        }
    }

    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Forget the attempt without judging the endpoint (the client's fault, or a
    /// pooled connection the endpoint had already closed).
    pub fn abandon(&mut self) {
        self.current.take();
        self.close_span();
    }

    /// The attempt ended: count it and feed passive health, ejecting the endpoint
    /// when its failures cross the threshold and the upstream's cap allows.
    pub fn end(&mut self, up: &UpstreamRt, ok: bool) {
        let Some(attempt) = self.current.take() else {
            return;
        };
        self.close_span();
        if let Some(t) = self.started.take() {
            up.metrics.response_time.observe(t.elapsed().as_secs_f64());
        }
        let s = attempt.state();
        if ok {
            up.metrics.success.inc();
        } else {
            up.metrics.failure.inc();
        }
        let outlier = up.cfg.outlier.as_ref();
        let census = || count_ejected(up.set.load().members.iter().map(|m| &*m.state), now_ms());
        if let (Some(d), Some(o)) = (record_outcome(s, ok, outlier, census), outlier) {
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
}

/// Whether the request may try again: attempts left and time left.
fn may_retry(ctx: &Ctx) -> bool {
    let (Some(route), Some(routed)) = (ctx.route(), ctx.routed.as_ref()) else {
        return false;
    };
    ctx.attempts.tries < route.config.retry.attempts
        && routed.deadline.is_none_or(|d| Instant::now() < d)
}

fn end(ctx: &mut Ctx, ok: bool) {
    if let Some(r) = ctx.routed.as_ref() {
        ctx.attempts.end(&r.upstream, ok);
    }
}

fn count_retry(ctx: &Ctx, kind: &str) {
    METRICS
        .retries
        .with_label_values(&[ctx.route_name(), kind])
        .inc();
}

/// What the request offers the upstream's consistent hash.
fn hash_key<'a>(up: &UpstreamRt, req: &'a RequestHeader, ctx: &Ctx) -> HashKey<'a> {
    match &up.cfg.balance {
        Balance::ConsistentHash(HashOn::Header(h)) => req
            .headers
            .get(h)
            .map_or(HashKey::None, |v| HashKey::Bytes(v.as_bytes())),
        Balance::ConsistentHash(HashOn::Cookie(name)) => {
            cookie_value(req, name).map_or(HashKey::None, HashKey::Bytes)
        }
        Balance::ConsistentHash(HashOn::ClientIp) => {
            ctx.client.ip.map_or(HashKey::None, HashKey::Ip)
        }
        _ => HashKey::None,
    }
}

/// Choose the endpoint for the next attempt and build its peer, with timeouts capped by
/// what is left of the request's deadline.
pub fn next_peer(
    ctx: &mut Ctx,
    req: &RequestHeader,
    body_empty: bool,
) -> pingora_error::Result<Box<HttpPeer>> {
    let (Some(routed), Some(route)) = (ctx.routed.as_ref(), ctx.route()) else {
        return Error::e_explain(ErrorType::InternalError, "no route chosen");
    };
    let up = routed.upstream.clone();
    let connect = route.config.connect_timeout;
    let read = if ctx.upgrade {
        route.config.upgrade_idle_timeout
    } else {
        route.config.read_timeout
    };
    let mut remaining = None;
    if let Some(d) = routed.deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Error::e_explain(ErrorType::HTTPStatus(504), "request timeout reached");
        }
        remaining = Some(left);
    }
    let sticky = up
        .cfg
        .sticky
        .as_ref()
        .and_then(|st| crate::sticky::requested(st, req));
    let Some(pick) = up.pick(hash_key(&up, req, ctx), &ctx.attempts.tried, sticky) else {
        return Error::e_explain(
            ErrorType::HTTPStatus(503),
            format!("upstream {} has no endpoints", up.cfg.name),
        );
    };
    up.metrics.panic.set(i64::from(pick.panic));
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
    ctx.attempts.begin(&pick, ctx.record_spans);
    ctx.ids.traceparent = Some(ctx.trace.traceparent(ctx.attempts.span_id));
    let cap = |d: Duration| remaining.map_or(d, |r| d.min(r));
    let mut peer = match &up.tls {
        Some(t) => {
            let mut p = HttpPeer::new(pick.address, true, t.sni.clone());
            p.options.verify_cert = t.verify;
            p.options.verify_hostname = t.verify;
            p.options.ca = t.ca.clone();
            p.client_cert_key = t.client_cert_key();
            p
        }
        None => HttpPeer::new(pick.address, false, String::new()),
    };
    if up.cfg.protocol.is_http2() {
        // h2: ALPN offers only h2. h2c: with no TLS, Pingora's connector takes a minimum
        // version of 2 as prior knowledge that the endpoint speaks cleartext HTTP/2.
        peer.options.set_http_version(2, 2);
    }
    peer.options.connection_timeout = Some(cap(connect));
    peer.options.read_timeout = Some(cap(read));
    // A request head without a body fits the socket buffer: a write timer per request
    // (Pingora arms one per write) would cost more than it could catch.
    peer.options.write_timeout = (!body_empty || ctx.upgrade).then(|| cap(read));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    Ok(Box::new(peer))
}

/// The upstream answered: retry on a status the route retries (idempotent requests
/// only; for gRPC, a trailers-only status of a listed method), else record the outcome.
/// A gRPC status still to come in the trailers leaves the attempt open until then.
pub fn on_response_status(
    ctx: &mut Ctx,
    status: u16,
    headers: &http::HeaderMap,
    idempotent: bool,
) -> pingora_error::Result<()> {
    ctx.attempts.got_status(status);
    let grpc = match (ctx.grpc, http::StatusCode::from_u16(status)) {
        (Some(_), Ok(s)) => crate::grpc::head(s, headers),
        _ => crate::grpc::GrpcHead::NotGrpc,
    };
    let policy = ctx.route().map(|r| &r.config.retry);
    let (wanted, kind) = match (grpc, ctx.grpc) {
        (crate::grpc::GrpcHead::Status(code), Some(call)) => (
            policy.is_some_and(|p| crate::grpc::retries_status(p, call, code)),
            "grpc",
        ),
        _ => (
            policy.is_some_and(|p| p.retries_status(status)) && idempotent,
            status_class(status),
        ),
    };
    if wanted && may_retry(ctx) {
        end(ctx, false);
        ctx.attempts.retrying_status = true;
        count_retry(ctx, kind);
        let mut e = Error::explain(
            ErrorType::HTTPStatus(status),
            format!("upstream answered {status} ({kind}), retrying on another endpoint"),
        );
        e.set_retry(true);
        return Err(e);
    }
    match grpc {
        crate::grpc::GrpcHead::Status(code) => end(ctx, !crate::grpc::is_failure_code(code)),
        crate::grpc::GrpcHead::InTrailers => {
            if let Some(c) = ctx.grpc.as_mut() {
                c.awaiting_trailers = true;
            }
        }
        crate::grpc::GrpcHead::NotGrpc => end(ctx, status < 500),
    }
    Ok(())
}

/// A gRPC call's trailers arrived: the attempt's outcome is their `grpc-status`.
pub fn on_trailers(ctx: &mut Ctx, trailers: &http::HeaderMap) {
    if let Some(c) = ctx.grpc.as_mut().filter(|c| c.awaiting_trailers) {
        c.awaiting_trailers = false;
        end(ctx, !crate::grpc::trailers_failed(trailers));
    }
}

/// Connecting failed. The request never left: safe to retry whatever the method.
pub fn on_connect_failure(ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
    ctx.attempts.failed_with(&e);
    end(ctx, false);
    let retry = ctx
        .route()
        .is_some_and(|r| r.config.retry.on_connect_failure)
        && may_retry(ctx);
    if retry {
        count_retry(ctx, "connect-failure");
    }
    e.set_retry(retry);
    e
}

/// An error while proxying: judge the endpoint and decide whether to retry.
pub fn on_proxy_error(
    ctx: &mut Ctx,
    e: Box<Error>,
    peer: &HttpPeer,
    idempotent: bool,
    client_reused: bool,
) -> Box<Error> {
    use pingora_core::upstreams::peer::Peer;
    let mut e = e.more_context(format!("endpoint {}", peer.address()));
    if std::mem::take(&mut ctx.attempts.retrying_status) {
        // Our own retry-on-status error: already counted, keep the retry decision.
        e.set_retry(true);
        return e;
    }
    // A pooled connection the upstream had already closed: the request was not
    // processed, so retrying does not count against the route's attempts.
    if client_reused && matches!(e.retry, RetryType::ReusedOnly) && idempotent {
        ctx.attempts.failed_with(&e);
        ctx.attempts.abandon();
        ctx.attempts.tries = ctx.attempts.tries.saturating_sub(1);
        ctx.attempts.tried.pop();
        e.set_retry(true);
        return e;
    }
    if *e.esource() == ErrorSource::Downstream {
        // The client went away or sent garbage: not the endpoint's fault.
        ctx.attempts.abandon();
        e.set_retry(false);
        return e;
    }
    ctx.attempts.failed_with(&e);
    end(ctx, false);
    let policy = ctx.route().map(|r| &r.config.retry);
    let (kind, wanted) = match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            ("timeout", policy.is_some_and(|p| p.on_timeout))
        }
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            ("reset", policy.is_some_and(|p| p.on_reset))
        }
        _ => ("error", false),
    };
    let retry = wanted && idempotent && may_retry(ctx);
    if retry {
        count_retry(ctx, kind);
    }
    e.set_retry(retry);
    e
}

/// The request ended (`logging`): an attempt still open ended with the response,
/// a success unless it errored on the upstream side.
pub fn finish(ctx: &mut Ctx, e: Option<&Error>) {
    if ctx.attempts.in_progress() {
        if let Some(e) = e.filter(|e| *e.esource() == ErrorSource::Upstream) {
            ctx.attempts.failed_with(e);
            end(ctx, false);
        } else if e.is_none() && ctx.grpc.is_some_and(|c| c.awaiting_trailers) {
            // A gRPC response that ended without its trailers: the server broke the
            // call (its status never came).
            end(ctx, false);
        } else {
            ctx.attempts.abandon();
        }
    }
}

/// What the client is told when proxying failed; `None` when there is nobody to tell
/// (the client went away). Always with the connection closed: Pingora 0.9 does not
/// reuse a client connection after a failed proxy attempt (`proxy_to_upstream` reports
/// no reuse and `FailToProxy::can_reuse_downstream` is not consulted on that path), so
/// the answer says `Connection: close` rather than promise a keep-alive it will break.
pub fn failure_rejection(e: &Error) -> Option<Rejection> {
    let r = match e.etype() {
        ErrorType::HTTPStatus(503) => {
            Rejection::new(503, "upstream_unavailable", "upstream unavailable")
                .retry_after(Duration::from_secs(1))
        }
        ErrorType::HTTPStatus(504) => Rejection::new(504, "upstream_timeout", "upstream timed out"),
        ErrorType::HTTPStatus(413) if *e.esource() == ErrorSource::Downstream => Rejection::new(
            413,
            "body_too_large",
            "request body larger than this route accepts",
        ),
        ErrorType::HTTPStatus(c) => Rejection::new(*c, "upstream_failure", "upstream unavailable"),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if *e.esource() != ErrorSource::Downstream =>
        {
            Rejection::new(504, "upstream_timeout", "upstream timed out")
        }
        _ => match e.esource() {
            ErrorSource::Upstream => {
                Rejection::new(502, "upstream_failure", "upstream connection failed")
            }
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    return None
                }
                ErrorType::ReadTimedout => Rejection::new(
                    408,
                    "request_body_timeout",
                    "the request body did not arrive in time",
                ),
                _ => Rejection::new(400, "bad_request", "bad request"),
            },
            ErrorSource::Internal | ErrorSource::Unset => {
                Rejection::new(500, "internal_error", "internal error")
            }
        },
    };
    Some(r.close())
}

pub(crate) fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(COOKIE)
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
    fn failures_map_to_statuses_and_connection_fate() {
        let r = |t: ErrorType, s: ErrorSource| failure_rejection(&Error::create(t, s, None, None));
        let unavailable = r(ErrorType::HTTPStatus(503), ErrorSource::Internal).unwrap();
        assert_eq!(
            (unavailable.status, unavailable.retry_after),
            (503, Some(Duration::from_secs(1)))
        );
        assert!(!unavailable.keep_alive);
        assert_eq!(
            r(ErrorType::ReadTimedout, ErrorSource::Upstream)
                .unwrap()
                .status,
            504
        );
        assert_eq!(
            r(ErrorType::ConnectRefused, ErrorSource::Upstream)
                .unwrap()
                .status,
            502
        );
        assert!(r(ErrorType::ConnectionClosed, ErrorSource::Downstream).is_none());
        assert_eq!(
            r(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream)
                .unwrap()
                .status,
            400
        );
    }
}
