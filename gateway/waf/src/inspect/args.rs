//! Argument names (rendered only when something matches) and header handling.

use crate::body::Src;
use crate::groups::loc;
use crate::normalise::url_decode;
use crate::request::Request;

/// The name an argument is reported under, rendered only when something matches.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'x> {
    Path,
    Query(&'x [u8]),
    Header(&'x str),
    Cookie(&'x [u8]),
    Body(Src, &'x [u8]),
    Key(Src, &'x [u8], &'x [u8]),
    RawBody,
    Request,
}

fn lossy_decoded(raw: &[u8], out: &mut String) {
    let mut buf = Vec::new();
    let s: &[u8] = if url_decode(raw, &mut buf, true) {
        &buf
    } else {
        raw
    };
    out.push_str(&String::from_utf8_lossy(s));
}

impl Arg<'_> {
    pub(super) fn render(&self) -> String {
        let mut s = String::new();
        match *self {
            Arg::Path => s.push_str("path"),
            Arg::Query(n) => {
                s.push_str("query:");
                lossy_decoded(n, &mut s);
            }
            Arg::Header(h) => {
                s.push_str("header:");
                s.push_str(&h.to_ascii_lowercase());
            }
            Arg::Cookie(n) => {
                s.push_str("cookie:");
                s.push_str(&String::from_utf8_lossy(n));
            }
            Arg::Body(src, n) | Arg::Key(src, n, _) => match src {
                Src::Form => {
                    s.push_str("form:");
                    lossy_decoded(n, &mut s);
                }
                Src::Multipart => {
                    s.push_str("multipart:");
                    s.push_str(&String::from_utf8_lossy(n));
                }
                Src::MultipartFile => {
                    s.push_str("multipart-filename:");
                    s.push_str(&String::from_utf8_lossy(n));
                }
                Src::Json | Src::Xml => {
                    s.push_str(&String::from_utf8_lossy(n));
                    if let Arg::Key(Src::Json, _, k) = *self {
                        if s.len() > "json:".len() {
                            s.push('.');
                        }
                        s.push_str(&String::from_utf8_lossy(k));
                    }
                }
            },
            Arg::RawBody => s.push_str("body"),
            Arg::Request => s.push_str("request"),
        }
        s
    }
}

/// A Referer from the same host as the request.
pub(super) fn same_site_referer(req: &Request<'_>) -> bool {
    let Some(r) = req.header("referer") else {
        return false;
    };
    let host = req.authority.or_else(|| req.header("host")).unwrap_or(b"");
    let host = host.split(|&c| c == b':').next().unwrap_or(b"");
    let Some(i) = memchr::memmem::find(r, b"://") else {
        return false;
    };
    let rest = &r[i + 3..];
    let end = rest
        .iter()
        .position(|&c| matches!(c, b'/' | b':' | b'?' | b'#'))
        .unwrap_or(rest.len());
    !host.is_empty() && rest[..end].eq_ignore_ascii_case(host)
}

/// Which location bits a header's value gets; 0 = not inspected here.
pub(super) fn header_loc(name: &str) -> u16 {
    const STRUCTURED: &[&str] = &[
        "accept",
        "accept-encoding",
        "accept-language",
        "accept-charset",
        "content-type",
        "content-length",
        "connection",
        "cache-control",
        "pragma",
        "authorization",
        "proxy-authorization",
        "if-none-match",
        "if-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "range",
        "upgrade-insecure-requests",
        "dnt",
        "te",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "priority",
        "content-encoding",
        "expect",
        "x-request-id",
        "traceparent",
        "tracestate",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "x-amzn-trace-id",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "content-md5",
        "digest",
        "signature",
        "x-csrf-token",
        "x-xsrf-token",
        "date",
        "via",
        "forwarded",
        "x-forwarded-proto",
        "x-forwarded-port",
        "alt-used",
        "origin",
    ];
    if name.eq_ignore_ascii_case("host") {
        return 0;
    }
    if name.eq_ignore_ascii_case("cookie") {
        return loc::COOKIE;
    }
    if name.eq_ignore_ascii_case("user-agent") {
        return loc::UA | loc::HEADER;
    }
    if name
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"sec-"))
        || STRUCTURED.iter().any(|s| name.eq_ignore_ascii_case(s))
    {
        return loc::HSTRUCT;
    }
    loc::HEADER
}
