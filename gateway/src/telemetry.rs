//! What a request leaves behind when it ends (`logging`): its metrics, its access-log
//! line and its spans. Lines and spans are handed to bounded queues with `try_send`:
//! a Pingora worker never waits for a disk or a collector.

use std::time::SystemTime;

use pingora_error::Error;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use tollgate_config::telemetry::access_log::JsonLine;
use tollgate_config::telemetry::spans::{attr, attr_int, span, Kind};
use tollgate_config::telemetry::trace_context::{new_span_id, TraceContext};

use crate::attempts;
use crate::context::Ctx;
use crate::state::State;

/// Start the request's trace: continue the caller's (its sampling decision too), or
/// start one sampled at the configured ratio. With tracing off, new traces are marked
/// sampled for the backends' sake, as before tracing existed; nothing is recorded.
pub fn start_trace(ctx: &mut Ctx, req: &RequestHeader) {
    let incoming = crate::forwarded::incoming_traceparent(req);
    let ratio = ctx
        .snap
        .config
        .tracing
        .as_ref()
        .map_or(1.0, |t| t.sample_ratio);
    ctx.trace = TraceContext::from_header(incoming, ratio);
    ctx.record_spans = ctx.trace.sampled && ctx.snap.config.tracing.is_some();
    ctx.span_id = new_span_id();
}

/// The request ended: count it, log it, record its spans.
pub fn finish(state: &State, session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
    attempts::finish(ctx, e);
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let m = ctx
        .route()
        .map_or(&ctx.snap.unrouted_metrics, |r| &r.metrics);
    m.count(&req.method, status);
    m.duration.observe(ctx.started.elapsed().as_secs_f64());

    let proxied = ctx.rejected.is_none() && ctx.attempts.tries > 0;
    let (bytes_in, bytes_out) = (session.body_bytes_read(), session.body_bytes_sent());
    if let (Some(routed), Some((_, locality))) = (ctx.routed.as_ref(), ctx.attempts.last) {
        let lm = &routed.upstream.metrics.by_locality[locality as usize];
        lm.sent_bytes
            .inc_by(ctx.attempts.head_bytes_sent + bytes_in as u64);
        let mut received = ctx.attempts.head_bytes_received;
        if proxied && status != 0 {
            lm.requests.inc();
            received += bytes_out as u64;
        }
        lm.received_bytes.inc_by(received);
    }

    let failed = status == 0 || status >= 500 || ctx.rejected.is_some();
    if let Some(writer) = &state.telemetry.access_log {
        let route_log = ctx.route().map(|r| &r.config.access_log);
        if ctx.snap.config.access_log.wants(route_log, failed) {
            writer.send(access_line(ctx, req, status, bytes_in, bytes_out));
        }
    }
    if ctx.record_spans {
        if let Some(tracer) = &state.telemetry.tracer {
            record_spans(tracer, ctx, req, status, e);
        }
    }
}

/// The request's access-log line: see docs/configuration.md ("Access log") for the
/// fields. Written straight into one string (this runs for every logged request).
fn access_line(
    ctx: &Ctx,
    req: &RequestHeader,
    status: u16,
    bytes_in: usize,
    bytes_out: usize,
) -> String {
    let mut l = JsonLine::new();
    l.time("time", ctx.started_wall);
    if let Some(id) = &ctx.ids.request_id {
        l.bytes("request_id", id.as_bytes());
    }
    let trace_id = ctx.trace.trace_id_hex();
    l.bytes("trace_id", &trace_id);
    if let Some(ip) = ctx.client.ip {
        l.display("client", ip);
    }
    l.str("method", req.method.as_str());
    let routed = ctx.routed.as_ref();
    match routed {
        Some(r) => l.str("host", &r.host),
        None => l.bytes(
            "host",
            req.headers
                .get(http::header::HOST)
                .map_or(&b""[..], |h| h.as_bytes()),
        ),
    };
    let path = if ctx.snap.config.access_log.query {
        req.uri.path_and_query().map_or("/", |pq| pq.as_str())
    } else {
        req.uri.path()
    };
    l.str("path", path);
    let route = ctx.route_name();
    if !route.is_empty() {
        l.str("route", route);
    }
    l.uint("status", u64::from(status))
        .uint("bytes_in", bytes_in as u64)
        .uint("bytes_out", bytes_out as u64)
        .millis("duration_ms", ctx.started.elapsed());
    if let Some(r) = routed {
        l.str("upstream", &r.upstream.cfg.name);
    }
    if let Some((addr, locality)) = ctx.attempts.last {
        l.display("endpoint", addr);
        if let Some(r) = routed {
            let set = r.upstream.set.load();
            l.opt_str("zone", set.find(addr).and_then(|m| m.cfg.zone.as_deref()));
        }
        l.str("locality", locality.label());
    }
    l.uint("attempts", u64::from(ctx.attempts.tries));
    l.bool(
        "cross_zone",
        ctx.attempts.last.is_some_and(|(_, l)| {
            matches!(
                l,
                crate::metrics::Locality::CrossZone | crate::metrics::Locality::CrossRegion
            )
        }),
    );
    l.opt_str("rejection", ctx.rejected);
    l.opt_str("action", ctx.answered);
    l.opt_str("desync", ctx.desync.map(crate::desync::Reason::as_str));
    l.opt_str("auth", ctx.filter_state.auth.as_ref().map(|a| a.decision));
    if let Some(w) = &ctx.filter_state.waf {
        l.str("waf_action", w.action)
            .uint("waf_score", u64::from(w.score));
        if !w.rules.is_empty() {
            l.str("waf_rules", &w.rules);
        }
        if !w.labels.is_empty() {
            l.str("waf_labels", &w.labels);
        }
    }
    l.opt_str("rejection_detail", ctx.rejection_detail.as_deref());
    l.finish()
}

/// The server span (the request as the gateway served it) and one client span per
/// attempt at an endpoint, with OpenTelemetry's HTTP semantic-convention attributes.
fn record_spans(
    tracer: &tollgate_config::telemetry::spans::Tracer,
    ctx: &mut Ctx,
    req: &RequestHeader,
    status: u16,
    e: Option<&Error>,
) {
    let end = SystemTime::now();
    let route = ctx.route_name().to_owned();
    let method = req.method.as_str().to_owned();
    let mut attrs = vec![
        attr("http.request.method", method.clone()),
        attr("url.path", req.uri.path()),
        attr("url.scheme", if ctx.client.tls { "https" } else { "http" }),
        attr(
            "network.protocol.version",
            match req.version {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        ),
    ];
    if let Some(r) = &ctx.routed {
        attrs.push(attr("server.address", r.host.clone()));
    }
    if !route.is_empty() {
        attrs.push(attr("http.route", route.clone()));
    }
    if status != 0 {
        attrs.push(attr_int("http.response.status_code", i64::from(status)));
    }
    if let Some(ip) = ctx.client.ip {
        attrs.push(attr("client.address", ip.to_string()));
    }
    if let Some(id) = ctx.ids.request_id.as_ref().and_then(|v| v.to_str().ok()) {
        attrs.push(attr("http.request.header.x-request-id", id));
    }
    if let Some(reason) = ctx.rejected {
        attrs.push(attr("tollgate.rejection", reason));
    }
    let error = if status >= 500 || status == 0 {
        Some(e.map_or_else(|| format!("status {status}"), ToString::to_string))
    } else {
        None
    };
    if let Some(err) = &error {
        attrs.push(attr(
            "error.type",
            if status == 0 {
                err.clone()
            } else {
                status.to_string()
            },
        ));
    }
    let name = if route.is_empty() {
        method.clone()
    } else {
        format!("{method} {route}")
    };
    let trace = ctx.trace;
    tracer.record(span(
        trace.trace_id,
        ctx.span_id,
        trace.parent_span_id,
        name,
        Kind::Server,
        ctx.started_wall,
        end,
        attrs,
        error,
    ));

    let upstream = ctx.routed.as_ref().map(|r| r.upstream.clone());
    for (n, a) in std::mem::take(&mut ctx.attempts.spans)
        .into_iter()
        .enumerate()
    {
        let mut attrs = vec![
            attr("http.request.method", method.clone()),
            attr("server.address", a.address.ip().to_string()),
            attr_int("server.port", i64::from(a.address.port())),
            attr("tollgate.locality", a.locality.label()),
        ];
        if let Some(up) = &upstream {
            attrs.push(attr("tollgate.upstream", up.cfg.name.clone()));
            if let Some(z) = up.zone_of(a.address) {
                attrs.push(attr("tollgate.endpoint.zone", z));
            }
        }
        if n > 0 {
            attrs.push(attr_int("http.request.resend_count", n as i64));
        }
        if a.status != 0 {
            attrs.push(attr_int("http.response.status_code", i64::from(a.status)));
        }
        let error = a
            .error
            .or_else(|| (a.status >= 500).then(|| format!("status {}", a.status)));
        if let Some(err) = &error {
            attrs.push(attr("error.type", err.clone()));
        }
        tracer.record(span(
            trace.trace_id,
            a.span_id,
            ctx.span_id,
            method.clone(),
            Kind::Client,
            a.start,
            a.end.unwrap_or(end),
            attrs,
            error,
        ));
    }
}
