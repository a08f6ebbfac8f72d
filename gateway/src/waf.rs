//! The WAF in the request pipeline: the route's policy (compiled at load by
//! `tollgate_config::gateway::waf`, engine in the `tollgate-waf` crate) applied to each
//! request after the listener guards and before rate limits and authentication (an
//! attack is refused before it is counted or authenticated).
//!
//! Bodies: a body the policy wants whose declared length fits the pre-read
//! (`body.limit`, at most 64 KiB: what Pingora keeps to send on) is read before the
//! upstream is contacted and inspected with the head, so a block stops it there. A
//! chunked or larger body is inspected as it streams: the head at once, then head and
//! body when `body.limit` bytes have arrived or the body ends; a block then cuts the
//! request, whose first bytes the upstream may already have received. A declared
//! length over `body.limit` with `over_limit: block` is refused at once (413).

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use tollgate_config::gateway::RouteWaf;
use tollgate_waf::{Action, Body, Outcome, Request, Scratch};

use crate::context::Ctx;
use crate::filters::Rejection;
use crate::metrics::METRICS;

/// What Pingora keeps of a request body to send on after it was read early.
const PRE_READ_MAX: usize = 64 * 1024;

thread_local! {
    /// The engine's reusable buffers: one per worker thread.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// The WAF's result for the access log.
#[derive(Debug, Default)]
pub struct Note {
    /// `pass`, `block`, `detect` (would have blocked), `allow` (allow list or rule).
    pub action: &'static str,
    pub score: u32,
    /// `rule@argument`, comma-separated.
    pub rules: String,
    pub labels: String,
}

/// A body being collected for inspection as it streams.
#[derive(Debug)]
pub struct Streaming {
    buf: Vec<u8>,
    done: bool,
}

fn headers_of(req: &RequestHeader) -> smallvec::SmallVec<[(&str, &[u8]); 16]> {
    req.headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect()
}

fn inspect(
    waf: &RouteWaf,
    req: &RequestHeader,
    client: Option<IpAddr>,
    body: Option<Body<'_>>,
) -> Outcome {
    let headers = headers_of(req);
    let r = Request {
        method: req.method.as_str(),
        target: req.raw_path(),
        authority: req.uri.authority().map(|a| a.as_str().as_bytes()),
        headers: &headers,
        client_ip: client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        body,
    };
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => waf.policy.inspect(&r, &mut s),
        // Never nested in practice; a fresh scratch rather than a panic.
        Err(_) => waf.policy.inspect(&r, &mut Scratch::new()),
    })
}

fn wants_body(waf: &RouteWaf, req: &RequestHeader, client: Option<IpAddr>) -> bool {
    let headers = headers_of(req);
    let r = Request {
        method: req.method.as_str(),
        target: req.raw_path(),
        authority: None,
        headers: &headers,
        client_ip: client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        body: None,
    };
    waf.policy.wants_body(&r)
}

/// Inspect a request when its route has a WAF: `Some` is the answer to give instead
/// of forwarding it.
pub async fn on_request(
    session: &mut Session,
    ctx: &mut Ctx,
    waf: &RouteWaf,
) -> pingora_error::Result<Option<Rejection>> {
    let client = ctx.client.ip;
    let body_empty = session.is_body_empty();
    let req = session.req_header();
    let declared = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    let chunked = req.headers.contains_key(TRANSFER_ENCODING);
    let limit = waf.policy.body_limit();
    let pre_read = declared.filter(|&n| !chunked && n <= limit.min(PRE_READ_MAX));
    let outcome = if body_empty || !wants_body(waf, req, client) {
        inspect(waf, req, client, None)
    } else if let Some(n) = pre_read {
        // Kept by Pingora and sent on to the upstream before anything else.
        session.enable_retry_buffering();
        let mut body = Vec::with_capacity(n);
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                break;
            }
        }
        let truncated = body.len() > limit;
        body.truncate(limit);
        inspect(
            waf,
            session.req_header(),
            client,
            Some(Body {
                bytes: &body,
                truncated,
            }),
        )
    } else if declared.is_some_and(|n| n > limit) && waf_blocks_over_limit(waf, req, client) {
        // `over_limit: block`: refused before a byte of the body is read.
        inspect(
            waf,
            req,
            client,
            Some(Body {
                bytes: &[],
                truncated: true,
            }),
        )
    } else {
        // Streamed: the head now, the body as it arrives (request_body_filter).
        ctx.waf_stream = Some(Streaming {
            buf: Vec::with_capacity(limit.min(PRE_READ_MAX)),
            done: false,
        });
        inspect(waf, req, client, None)
    };
    Ok(decide(ctx, waf, &outcome))
}

/// Whether the policy refuses a body over its limit (asked with an empty, truncated
/// body: `protocol.body_over_limit`).
fn waf_blocks_over_limit(waf: &RouteWaf, req: &RequestHeader, client: Option<IpAddr>) -> bool {
    let o = inspect(
        waf,
        req,
        client,
        Some(Body {
            bytes: &[],
            truncated: true,
        }),
    );
    o.matches
        .iter()
        .any(|m| &*m.rule_id == "protocol.body_over_limit")
        && o.is_blocked()
}

/// A piece of a streamed body: inspect head and body once `body.limit` bytes have
/// arrived or the body ends. `Some` cuts the request with that answer.
pub fn on_body_chunk(
    ctx: &mut Ctx,
    req: &RequestHeader,
    chunk: Option<&Bytes>,
    end: bool,
) -> Option<Rejection> {
    let waf = ctx.route()?.config.waf.clone()?;
    let limit = waf.policy.body_limit();
    let s = ctx.waf_stream.as_mut()?;
    if s.done {
        return None;
    }
    if let Some(c) = chunk {
        let room = limit.saturating_sub(s.buf.len());
        s.buf.extend_from_slice(&c[..c.len().min(room)]);
        if c.len() > room {
            s.done = true;
        }
    }
    if !(s.done || end) {
        return None;
    }
    s.done = true;
    let truncated = s.buf.len() >= limit && !end;
    let buf = std::mem::take(&mut s.buf);
    let outcome = inspect(
        &waf,
        req,
        ctx.client.ip,
        Some(Body {
            bytes: &buf,
            truncated,
        }),
    );
    decide(ctx, &waf, &outcome)
}

/// Count, log and remember the outcome; the rejection when it blocks.
fn decide(ctx: &mut Ctx, waf: &RouteWaf, o: &Outcome) -> Option<Rejection> {
    let action = match (&o.action, o.detect_only) {
        (Action::Block(_), _) => "block",
        (_, true) => "detect",
        (Action::Allow, _) => "allow",
        (Action::Pass, false) => "pass",
    };
    let route = ctx.route_name().to_owned();
    METRICS
        .waf_requests
        .with_label_values(&[route.as_str(), waf.name.as_str(), action])
        .inc();
    for m in &o.matches {
        METRICS
            .waf_rule_matches
            .with_label_values(&[waf.name.as_str(), &m.rule_id, m.group.name()])
            .inc();
    }
    if !o.matches.is_empty() || !o.labels.is_empty() {
        let rules = o
            .matches
            .iter()
            .map(|m| format!("{}@{}", m.rule_id, m.argument))
            .collect::<Vec<_>>()
            .join(",");
        let labels = o.labels.iter().map(|l| &**l).collect::<Vec<_>>().join(",");
        if action == "block" || action == "detect" {
            let id = ctx
                .ids
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::warn!(
                target: "tollgate::waf",
                route = %route,
                policy = %waf.name,
                action,
                score = o.score,
                request_id = id,
                matches = %serde_json::to_string(&o.matches).unwrap_or_default(),
                labels = %labels,
                "WAF {action}"
            );
        }
        ctx.filter_state.waf = Some(Note {
            action,
            score: o.score,
            rules,
            labels,
        });
    } else if action != "pass" {
        ctx.filter_state.waf = Some(Note {
            action,
            score: o.score,
            ..Note::default()
        });
    }
    let Action::Block(deny) = &o.action else {
        return None;
    };
    let first = o.matches.first().map_or("a custom rule", |m| &*m.rule_id);
    let mut r = Rejection::new(
        deny.status,
        "waf",
        format!("blocked by the web application firewall ({first})"),
    );
    r.body = deny.body.as_ref().map(|b| Bytes::from(b.to_string()));
    for (n, v) in deny.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers.push((n, v));
        }
    }
    Some(r)
}
