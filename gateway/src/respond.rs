//! The one writer of every answer the gateway gives itself (no route, guards,
//! filters, redirects, upstream failures): the same small body everywhere, saying
//! why and carrying the request id, `Retry-After` where the rejection has one, and
//! the connection kept open unless the rejection says its framing is in doubt.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::HeaderValue;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::context::Ctx;
use crate::filters::Rejection;
use crate::forwarded::X_REQUEST_ID;
use crate::metrics::METRICS;

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Answer the request with `r`, count it, and remember why for the metrics.
pub async fn reject(
    session: &mut Session,
    ctx: &mut Ctx,
    r: &Rejection,
) -> pingora_error::Result<()> {
    ctx.rejected = Some(r.reason);
    ctx.rejection_detail = Some(r.detail.to_string());
    METRICS.rejected.with_label_values(&[r.reason]).inc();
    if crate::grpc::is_grpc(&session.req_header().headers) {
        return grpc(session, ctx, r).await;
    }
    let id = ctx.ids.request_id.as_ref();
    let body = r.body.clone().unwrap_or_else(|| body(r, id));
    let mut resp = ResponseHeader::build(r.status, Some(6 + r.headers.len()))?;
    resp.insert_header(CONTENT_TYPE, TEXT_PLAIN)?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    if let Some(id) = id {
        resp.insert_header(X_REQUEST_ID, id.clone())?;
    }
    if let Some(after) = r.retry_after {
        // "0" would invite an immediate retry.
        resp.insert_header(RETRY_AFTER, ceil_secs(after).max(1))?;
    }
    if let Some(location) = &r.location {
        resp.insert_header(LOCATION, location.clone())?;
    }
    add_headers(&mut resp, &r.headers)?;
    if !r.keep_alive {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// A rejection's own headers: the first of each name replaces this writer's (a
/// forward-auth denial's `Content-Type`), repeats are added (several `Set-Cookie`).
fn add_headers(
    resp: &mut ResponseHeader,
    headers: &[(http::HeaderName, HeaderValue)],
) -> pingora_error::Result<()> {
    for (i, (name, value)) in headers.iter().enumerate() {
        if headers[..i].iter().any(|(n, _)| n == name) {
            resp.append_header(name.clone(), value.clone())?;
        } else {
            resp.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}

/// A gRPC caller is answered in gRPC (a bare HTTP 503 is "UNAVAILABLE: Received http2
/// header with status: 503" to it): HTTP 200, trailers-only, the rejection's status as a
/// `grpc-status` and its detail as `grpc-message`. The rejection's own headers
/// (`RateLimit`...) and the request id go along.
async fn grpc(session: &mut Session, ctx: &Ctx, r: &Rejection) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(200, Some(5 + r.headers.len()))?;
    for (name, value) in crate::grpc::answer_headers(r.status, r.reason, &r.detail, r.retry_after) {
        resp.insert_header(name, value)?;
    }
    resp.insert_header(CONTENT_LENGTH, 0)?;
    if let Some(id) = &ctx.ids.request_id {
        resp.insert_header(X_REQUEST_ID, id.clone())?;
    }
    add_headers(&mut resp, &r.headers)?;
    if !r.keep_alive {
        session.set_keepalive(None);
    }
    // As one task: `write_response_header`'s end-of-stream flag does not reach an HTTP/2
    // client in Pingora 0.9 (the stream would end with a separate empty DATA frame, or a
    // reset), and a trailers-only answer is one HEADERS frame that ends the stream.
    let task = pingora_core::protocols::http::HttpTask::Header(Box::new(resp), true);
    session.write_response_tasks(vec![task]).await.map(|_| ())
}

/// Answer with a route's `fixed_response`: its status, content type and body, and
/// the request id.
pub async fn fixed(
    session: &mut Session,
    ctx: &mut Ctx,
    f: &tollgate_config::gateway::actions::FixedResponse,
) -> pingora_error::Result<()> {
    ctx.answered = Some("fixed_response");
    let mut resp = ResponseHeader::build(f.status, Some(3))?;
    resp.insert_header(CONTENT_TYPE, f.content_type.clone())?;
    resp.insert_header(CONTENT_LENGTH, f.body.len())?;
    if let Some(id) = &ctx.ids.request_id {
        resp.insert_header(X_REQUEST_ID, id.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(f.body.clone()), true)
        .await
}

/// Answer with a route's `redirect` to `location`.
pub async fn redirect(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    location: &str,
) -> pingora_error::Result<()> {
    let Ok(location) = HeaderValue::from_str(location) else {
        let r = Rejection::new(
            400,
            "bad_request",
            "request target not usable in a redirect",
        );
        return reject(session, ctx, &r).await;
    };
    ctx.answered = Some("redirect");
    let r = Rejection::redirect(status, "redirect", location);
    let body = body(&r, ctx.ids.request_id.as_ref());
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(CONTENT_TYPE, TEXT_PLAIN)?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    if let Some(l) = r.location {
        resp.insert_header(LOCATION, l)?;
    }
    if let Some(id) = &ctx.ids.request_id {
        resp.insert_header(X_REQUEST_ID, id.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answer the request with a response stored for its idempotency key, marked as a
/// replay and carrying this request's id.
pub async fn replay(
    session: &mut Session,
    ctx: &mut Ctx,
    stored: &crate::idempotency::Stored,
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(stored.status, Some(stored.headers.len() + 3))?;
    for (name, value) in &stored.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    resp.insert_header(CONTENT_LENGTH, stored.body.len())?;
    resp.insert_header(crate::idempotency::REPLAYED, "true")?;
    if let Some(id) = &ctx.ids.request_id {
        resp.insert_header(X_REQUEST_ID, id.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(stored.body.clone()), true)
        .await
}

/// Whole seconds, rounded up (HTTP's delay-seconds).
pub fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `DETAIL\nreason: REASON\nrequest-id: ID\n`: one line for people, two for tools.
fn body(r: &Rejection, request_id: Option<&HeaderValue>) -> Bytes {
    let mut b = Vec::with_capacity(r.detail.len() + 80);
    b.extend_from_slice(r.detail.as_bytes());
    b.extend_from_slice(b"\nreason: ");
    b.extend_from_slice(r.reason.as_bytes());
    if let Some(id) = request_id {
        b.extend_from_slice(b"\nrequest-id: ");
        b.extend_from_slice(id.as_bytes());
    }
    b.push(b'\n');
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_says_why_and_names_the_request() {
        let r = Rejection::new(429, "rate_limited", "too many requests");
        let b = body(&r, Some(&HeaderValue::from_static("abc")));
        assert_eq!(
            &b[..],
            b"too many requests\nreason: rate_limited\nrequest-id: abc\n"
        );
        assert_eq!(
            &body(&r, None)[..],
            b"too many requests\nreason: rate_limited\n"
        );
    }
}
