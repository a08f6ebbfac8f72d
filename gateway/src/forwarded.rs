//! Who the client is, and what the upstream is told about it: the client address
//! behind trusted proxies, TLS and edge-mTLS identity, and the forwarding headers
//! (`X-Forwarded-For/-Proto/-Host`, `X-Request-Id`, `traceparent`, the identity header).
//!
//! Forwarding headers from a trusted proxy are extended; from anyone else they are
//! replaced, so a client cannot plant an address, a scheme or an identity.

use std::net::{IpAddr, SocketAddr};

use http::header::HOST;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use crate::context::{Client, Ctx, Ids};
use crate::snapshot::Snapshot;
use crate::trace;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The connection and client facts for a request.
pub fn client(session: &Session, snap: &Snapshot) -> Client {
    let mut c = Client::default();
    if let Some(local) = session.server_addr().and_then(|a| a.as_inet()).copied() {
        c.listener = snap.listener_index(local);
    }
    if let Some(ssl) = session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        c.tls = true;
        c.identity = ssl
            .extension
            .get::<crate::tls::ClientCert>()
            .and_then(|cert| cert.identity.clone());
    }
    c.peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    c.ip = c.peer;
    let listener = c.listener.and_then(|i| snap.config.listeners.get(i));
    if let (Some(peer), Some(l)) = (c.peer, listener) {
        if !l.trusted_proxies.is_empty() {
            c.peer_trusted = l.trusted_proxies.iter().any(|n| n.contains(&peer));
            c.ip = Some(client_behind_proxies(
                peer,
                session
                    .req_header()
                    .headers
                    .get_all(&X_FORWARDED_FOR)
                    .iter(),
                &l.trusted_proxies,
            ));
        }
    }
    c
}

/// The request id (the client's when it is a sane one). The `traceparent` sent
/// upstream is set per attempt (`attempts::next_peer`).
pub fn ids(req: &RequestHeader) -> Ids {
    Ids {
        request_id: Some(match req.headers.get(&X_REQUEST_ID) {
            Some(v) if valid_request_id(v) => v.clone(),
            _ => trace::new_request_id(),
        }),
        traceparent: None,
    }
}

/// The client's `traceparent`, if any.
pub fn incoming_traceparent(req: &RequestHeader) -> Option<&[u8]> {
    req.headers.get(&TRACEPARENT).map(HeaderValue::as_bytes)
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Whether the client used HTTPS: on this connection, or (behind a trusted
/// TLS-terminating proxy) as `X-Forwarded-Proto: https` says.
pub fn client_used_https(client: &Client, req: &RequestHeader) -> bool {
    client.tls
        || (client.peer_trusted
            && req
                .headers
                .get(&X_FORWARDED_PROTO)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")))
}

/// Forwarding headers on the request sent upstream.
///
/// By default the upstream request (Pingora's clone of the client's) is rebuilt without
/// Pingora's case-preserving name map, and the headers go straight into the `http`
/// header map under static names: one hash-map insert each, where an insert through the
/// case map also renders, re-parses and stores a title-case copy of the name.
/// `server.preserve_header_case` keeps the map (header names go out as they came in).
pub fn upstream_headers(
    ctx: &Ctx,
    downstream: &RequestHeader,
    req: &mut RequestHeader,
) -> pingora_error::Result<()> {
    if ctx.snap.config.preserve_header_case {
        return write_forwarding(ctx, downstream, req);
    }
    let (mut parts, raw_target) = without_case_map(req);
    // One growth of the map at most, rather than one per insert.
    parts.headers.reserve(6);
    write_forwarding(ctx, downstream, &mut parts.headers)?;
    *req = RequestHeader::from(parts);
    if let Some(raw) = raw_target {
        req.set_raw_path(&raw)?;
    }
    Ok(())
}

/// Take the request apart, dropping the case map. The request target is returned when
/// the URI does not reproduce it (absolute form, bytes that are not UTF-8), to be put
/// back as it was.
fn without_case_map(req: &mut RequestHeader) -> (http::request::Parts, Option<Vec<u8>>) {
    let uri_target = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
    let raw = req.raw_path();
    let keep = (uri_target != Some(raw) || !req.raw_path_is_utf8()).then(|| raw.to_vec());
    // An empty request allocates nothing (no headers, no extensions).
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    (std::mem::replace(req, placeholder).into(), keep)
}

/// Add a header to a response the client will get, through Pingora's case map only
/// when `server.preserve_header_case` asks for it (see [`upstream_headers`]).
pub fn response_header(
    ctx: &Ctx,
    resp: &mut pingora_http::ResponseHeader,
    name: HeaderName,
    value: HeaderValue,
) -> pingora_error::Result<()> {
    if ctx.snap.config.preserve_header_case || !resp.has_case() {
        return resp.insert_header(name, value);
    }
    // The backend's own reason phrase, if not the standard one, is kept.
    let custom_reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let placeholder = pingora_http::ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    parts.headers.insert(name, value);
    *resp = pingora_http::ResponseHeader::from(parts);
    if let Some(r) = custom_reason {
        resp.set_reason_phrase(Some(&r))?;
    }
    Ok(())
}

/// Where forwarding headers are written: the plain `http` header map, or Pingora's
/// case-preserving request header.
trait HeaderSink {
    fn headers(&self) -> &http::HeaderMap;
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> pingora_error::Result<()>;
    fn remove(&mut self, name: &HeaderName);
}

impl HeaderSink for http::HeaderMap {
    fn headers(&self) -> &http::HeaderMap {
        self
    }
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> pingora_error::Result<()> {
        self.insert(name, value);
        Ok(())
    }
    fn remove(&mut self, name: &HeaderName) {
        http::HeaderMap::remove(self, name);
    }
}

impl HeaderSink for RequestHeader {
    fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> pingora_error::Result<()> {
        self.insert_header(name, value)
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
}

fn write_forwarding(
    ctx: &Ctx,
    downstream: &RequestHeader,
    out: &mut impl HeaderSink,
) -> pingora_error::Result<()> {
    let c = &ctx.client;
    if let Some(peer) = c.peer {
        let mut buf = [0u8; 48];
        let ip = write_ip(&mut buf, peer);
        let prev = out.headers().get_all(&X_FORWARDED_FOR);
        let xff = if c.peer_trusted && prev.iter().next().is_some() {
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
            out.set(X_FORWARDED_FOR, v)?;
        }
    } else if !c.peer_trusted {
        out.remove(&X_FORWARDED_FOR);
    }
    if !(c.peer_trusted && out.headers().contains_key(&X_FORWARDED_PROTO)) {
        out.set(X_FORWARDED_PROTO, if c.tls { HTTPS } else { HTTP })?;
    }
    // The client identity header is ours: never pass one the client made up.
    let client_auth = c
        .listener
        .and_then(|i| ctx.snap.config.listeners.get(i))
        .and_then(|l| l.tls.as_ref())
        .and_then(|t| t.client_auth.as_ref());
    if let Some(auth) = client_auth {
        out.remove(&auth.identity_header);
        if let Some(id) = c
            .identity
            .as_deref()
            .and_then(|i| HeaderValue::from_str(i).ok())
        {
            out.set(auth.identity_header.clone(), id)?;
        }
    }
    if let Some(routed) = ctx.routed.as_ref().filter(|r| !r.host.is_empty()) {
        let host = downstream
            .headers
            .get(HOST)
            .cloned()
            .or_else(|| HeaderValue::from_str(&routed.host).ok());
        if let Some(h) = host {
            out.set(X_FORWARDED_HOST, h)?;
        }
    }
    if let Some(id) = &ctx.ids.request_id {
        out.set(X_REQUEST_ID, id.clone())?;
    }
    if let Some(tp) = &ctx.ids.traceparent {
        out.set(TRACEPARENT, tp.clone())?;
    }
    Ok(())
}

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

/// The client address behind trusted proxies: walk `X-Forwarded-For` from the right
/// (the entry our peer added) past every trusted proxy; the first address that is not
/// one is the client. An entry that is not an address stops the walk: nothing left of
/// it can be believed. When every entry is trusted, the leftmost is the client.
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

/// Remove request headers whose names are not letters, digits and hyphens
/// (`server.limits.drop_invalid_header_fields`, as ALB's option).
pub fn drop_invalid_header_fields(req: &mut RequestHeader) {
    let invalid: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|n| {
            !n.as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .cloned()
        .collect();
    for n in &invalid {
        req.remove_header(n);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
