//! Listener guards: what every request on a listener goes through before routing.
//! HTTPS redirect, request-head size, and desync (request smuggling) mitigation.

use http::header::HOST;
use http::HeaderValue;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use crate::context::Client;
use crate::desync::{Class, Reason};
use crate::filters::{Rejection, Verdict};
use crate::forwarded::client_used_https;
use crate::routing::normalize_host;
use crate::snapshot::Snapshot;
use tollgate_config::gateway::file::DesyncMode;

/// Run every guard of the request's listener, cheapest first.
pub fn check(session: &Session, snap: &Snapshot, client: &Client) -> Verdict {
    let req = session.req_header();
    let listener = client.listener.and_then(|i| snap.config.listeners.get(i));
    if let Some(port) = listener.and_then(|l| l.redirect_https) {
        if !client_used_https(client, req) {
            return Verdict::Reject(redirect_https(req, port));
        }
    }
    let line_limit = snap.config.max_request_line_bytes;
    if req.raw_path().len() > line_limit {
        return Verdict::Reject(Rejection::new(
            414,
            "uri_too_long",
            format!("request target too long (limit {line_limit} bytes)"),
        ));
    }
    let field_limit = snap.config.max_header_field_bytes;
    if let Some((name, _)) = req
        .headers
        .iter()
        .find(|(n, v)| n.as_str().len() + v.len() > field_limit)
    {
        return Verdict::Reject(Rejection::new(
            431,
            "header_too_large",
            format!("header field {name} too large (limit {field_limit} bytes)"),
        ));
    }
    let limit = snap.config.max_request_header_bytes;
    if head_size(req) > limit {
        return Verdict::Reject(Rejection::new(
            431,
            "header_too_large",
            format!("request header fields too large (limit {limit} bytes)"),
        ));
    }
    Verdict::Continue
}

/// What the listener's desync mitigation does with a request.
#[derive(Debug)]
pub enum Desync {
    Forward,
    /// Forward it, then close the client's and the upstream's connections (the
    /// next request on either could be read differently by the other side).
    ForwardAndClose,
    Refuse(Rejection),
}

/// Classify an HTTP/1 request's head ([`desync`](crate::desync)) and decide by the
/// listener's mode; count the decision. HTTP/2 framing is not ambiguous: not classified.
pub fn desync(session: &Session, snap: &Snapshot, client: &Client) -> (Desync, Option<Reason>) {
    let Some(h1) = session.as_downstream().as_http1() else {
        return (Desync::Forward, None);
    };
    let mode = client
        .listener
        .and_then(|i| snap.config.listeners.get(i))
        .map_or(DesyncMode::default(), |l| l.desync_mitigation);
    let c = crate::desync::classify(&h1.get_headers_raw_bytes());
    let decision = match (c.class, mode) {
        (Class::Compliant, _) => {
            crate::metrics::METRICS.desync_compliant[mode as usize].inc();
            return (Desync::Forward, None);
        }
        (Class::Severe, _) => Desync::Refuse(desync_rejection(c).close()),
        (Class::Ambiguous, DesyncMode::Strictest) => Desync::Refuse(desync_rejection(c).close()),
        (Class::Acceptable, DesyncMode::Strictest) => Desync::Refuse(desync_rejection(c)),
        (Class::Ambiguous, DesyncMode::Defensive) => Desync::ForwardAndClose,
        (Class::Acceptable | Class::Ambiguous, _) => Desync::Forward,
    };
    let action = match &decision {
        Desync::Forward => "forwarded",
        Desync::ForwardAndClose => "forwarded_closed",
        Desync::Refuse(_) => "refused",
    };
    crate::metrics::METRICS
        .desync
        .with_label_values(&[mode.as_str(), c.class.as_str(), c.reason.as_str(), action])
        .inc();
    (decision, Some(c.reason))
}

fn desync_rejection(c: crate::desync::Classification) -> Rejection {
    Rejection::new(
        400,
        "desync",
        format!(
            "request framing refused: {} ({})",
            c.reason.as_str(),
            c.class.as_str()
        ),
    )
}

/// The request's host (URI authority, else `Host`), without port, lower case.
pub fn request_host(req: &RequestHeader) -> String {
    let raw = req
        .uri
        .host()
        .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    normalize_host(raw)
}

/// 308 to the same host and path over HTTPS (308 keeps the method and body).
fn redirect_https(req: &RequestHeader, port: u16) -> Rejection {
    let host = request_host(req);
    if host.is_empty() {
        return Rejection::new(400, "no_host", "a Host header is required");
    }
    let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => Rejection::redirect(308, "redirect_https", v),
        Err(_) => Rejection::new(
            400,
            "bad_request",
            "request target not usable in a redirect",
        ),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redirects_keep_host_path_and_query() {
        let mut req = RequestHeader::build("POST", b"/a/b?x=1", None).unwrap();
        req.insert_header("host", "Api.Example.com:8080").unwrap();
        let r = redirect_https(&req, 443);
        assert_eq!((r.status, r.keep_alive), (308, true));
        assert_eq!(r.location.unwrap(), "https://api.example.com/a/b?x=1");
        let r = redirect_https(&req, 8443);
        assert_eq!(r.location.unwrap(), "https://api.example.com:8443/a/b?x=1");
        let no_host = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(redirect_https(&no_host, 443).status, 400);
    }

    #[test]
    fn head_size_counts_target_and_headers() {
        let mut req = RequestHeader::build("GET", b"/abc", None).unwrap();
        req.insert_header("x-a", "12345").unwrap();
        assert_eq!(head_size(&req), 4 + 3 + 5 + 4);
    }
}
