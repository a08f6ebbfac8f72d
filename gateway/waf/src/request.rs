//! The request as the engine sees it: borrowed, so the gateway builds it from its own
//! header map without copying.

use std::net::IpAddr;

/// A request to inspect. Build it from the request head; add [`Body`] when the policy
/// inspects bodies (see [`crate::Policy::wants_body`]).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method as sent (`GET`).
    pub method: &'a str,
    /// Request target as sent: path and query, still percent-encoded (`/a%20b?x=1`). An
    /// absolute-form target (`http://host/path`) is accepted; its path is used.
    pub target: &'a [u8],
    /// The authority when it is not in the headers (HTTP/2 `:authority`); the Host
    /// header is read from `headers`.
    pub authority: Option<&'a [u8]>,
    /// Header names (any case) and values, in order, repeats kept.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The client address (after trusted-proxy handling).
    pub client_ip: IpAddr,
    /// The body, or what was read of it.
    pub body: Option<Body<'a>>,
}

/// A request body, or its first bytes. How it is parsed comes from the request's
/// `Content-Type` header (form, multipart, JSON and `+json`, XML; other text is
/// inspected whole; images, archives, octet-streams and protobuf are not read); with
/// no Content-Type, `{`/`[` means JSON and `<` XML.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// The bytes read (at most the policy's `body.limit` are inspected).
    pub bytes: &'a [u8],
    /// The body was longer than `bytes` (the gateway stopped reading).
    pub truncated: bool,
}

impl<'a> Request<'a> {
    /// A GET with no headers from `client_ip`; fill in the rest with struct update
    /// syntax. Handy in tests.
    pub fn get(target: &'a [u8], client_ip: IpAddr) -> Self {
        Request {
            method: "GET",
            target,
            authority: None,
            headers: &[],
            client_ip,
            body: None,
        }
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The raw path (before `?`), without the scheme and authority of an absolute-form
    /// target.
    pub fn raw_path(&self) -> &'a [u8] {
        let t = self.target;
        let t = match memchr::memmem::find(t, b"://") {
            Some(i) if !t.starts_with(b"/") => {
                let rest = &t[i + 3..];
                match rest.iter().position(|&c| c == b'/' || c == b'?') {
                    Some(p) => &rest[p..],
                    None => b"/",
                }
            }
            _ => t,
        };
        match memchr::memchr2(b'?', b'#', t) {
            Some(q) => &t[..q],
            None => t,
        }
    }

    /// The raw query (after `?`, before `#`), if any.
    pub fn raw_query(&self) -> Option<&'a [u8]> {
        let t = self.target;
        let q = memchr::memchr(b'?', t)?;
        let rest = &t[q + 1..];
        Some(match memchr::memchr(b'#', rest) {
            Some(h) => &rest[..h],
            None => rest,
        })
    }

    /// The media type of the body (`application/json`), lower case, parameters dropped.
    pub fn content_type(&self) -> Option<(&'a [u8], &'a [u8])> {
        let ct = self.header("content-type")?;
        let (media, params) = match memchr::memchr(b';', ct) {
            Some(i) => (&ct[..i], &ct[i + 1..]),
            None => (ct, &b""[..]),
        };
        Some((media.trim_ascii(), params))
    }
}

/// Split `a=1&b=2` into raw (still encoded) name/value pairs. `;` is not a separator
/// (it is data in most frameworks).
pub(crate) fn pairs(q: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    q.split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match memchr::memchr(b'=', p) {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &b""[..]),
        })
}

/// Split a Cookie header into name/value pairs.
pub(crate) fn cookies(h: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    h.split(|&c| c == b';').filter_map(|p| {
        let p = p.trim_ascii();
        if p.is_empty() {
            return None;
        }
        Some(match memchr::memchr(b'=', p) {
            Some(i) => (p[..i].trim_ascii(), p[i + 1..].trim_ascii()),
            None => (&b""[..], p),
        })
    })
}

/// A parameter of a `Content-Type` (`boundary`, `charset`), quotes removed.
pub(crate) fn ct_param<'a>(params: &'a [u8], name: &str) -> Option<&'a [u8]> {
    params.split(|&c| c == b';').find_map(|p| {
        let p = p.trim_ascii();
        let eq = memchr::memchr(b'=', p)?;
        if p[..eq].trim_ascii().eq_ignore_ascii_case(name.as_bytes()) {
            let v = p[eq + 1..].trim_ascii();
            Some(
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v),
            )
        } else {
            None
        }
    })
}
