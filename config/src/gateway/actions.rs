//! What a route does besides forwarding, and how it changes what it forwards:
//! `redirect` and `fixed_response` actions (ALB's two other actions), path and host
//! rewrites, request and response header transforms, and the wildcard patterns of
//! ALB's host, path and query-string conditions.
//!
//! ```yaml
//! routes:
//!   - name: old-docs
//!     match: { path: "/docs/*/old" }
//!     redirect: { host: docs.example.com, path: "/v2/#{path}", status: 308 }
//!   - name: maintenance
//!     match: { path_prefix: /billing/ }
//!     fixed_response: { status: 503, content_type: text/plain, body: "back at 10:00 UTC" }
//!   - name: api
//!     match: { path_prefix: /api/ }
//!     upstream: api
//!     rewrite: { path_prefix: /, host: api.internal }
//!     request_headers: { set: { x-client-ip: "#{client_ip}" }, remove: [x-debug] }
//!     response_headers: { remove: [server] }
//! ```

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;

// ---------------------------------------------------------------------------------
// Files

/// `redirect`: answer with a redirect built from the request's URL. Every part
/// defaults to the request's own; values may use `#{protocol}`, `#{host}`, `#{port}`,
/// `#{path}` (without its leading `/`, as ALB writes it) and `#{query}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectFile {
    /// `http` or `https` (default: the request's).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Default `#{host}`.
    #[serde(default)]
    pub host: Option<String>,
    /// A port number or `#{port}`. Default: the request's port when the scheme is
    /// kept, the new scheme's default port when it changes.
    #[serde(default)]
    pub port: Option<String>,
    /// Must start with `/`. Default `/#{path}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Without the `?`. Default `#{query}`; empty drops the query.
    #[serde(default)]
    pub query: Option<String>,
    /// 301, 302, 303, 307 or 308 (default 301, as ALB's HTTP_301). 307 and 308 keep
    /// the method and body; browsers turn a POST into a GET on 301 and 302.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    301
}

/// `fixed_response`: answer with this status and body, without a backend.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedResponseFile {
    /// 200 to 599.
    pub status: u16,
    /// Default `text/plain; charset=utf-8`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// At most 64 KiB (ALB: 1 KiB).
    #[serde(default)]
    pub body: String,
}

/// `rewrite`: change the request on its way to the upstream (the client's URL, the
/// access log and `X-Forwarded-Host` keep the original).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteFile {
    /// Replace the part of the path the route's `match.path_prefix` matched
    /// (`/api/` -> `/`: `/api/users` goes up as `/users`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Rewrite the path with a regular expression; `$1` / `${name}` in the replacement
    /// name its groups. A path it does not match goes up unchanged.
    #[serde(default)]
    pub path_regex: Option<PathRegexFile>,
    /// The `Host` header sent to the upstream.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRegexFile {
    pub pattern: String,
    pub replacement: String,
}

/// Header transforms: `set` replaces, `add` appends, `remove` deletes; applied in
/// that order: remove, set, add. Values may use `#{client_ip}`, `#{request_id}`,
/// `#{tls_identity}` (the verified client certificate's identity), `#{host}` and
/// `#{route}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsFile {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A query-string condition: some parameter's key and/or value matches (`*` any run
/// of characters, `?` one; compared case-insensitively after percent-decoding, as
/// ALB does).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryMatchFile {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

// ---------------------------------------------------------------------------------
// Checked forms

/// An ALB-style wildcard pattern (`*` any run, `?` one character), matched against
/// the whole text, compiled to a (linear-time) regex.
#[derive(Debug, Clone)]
pub struct Wildcard {
    pub source: String,
    regex: Regex,
    /// Characters other than `*` and `?`: the more, the more specific.
    pub literal_len: usize,
}

impl PartialEq for Wildcard {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Wildcard {}

impl Wildcard {
    pub fn new(source: &str, case_insensitive: bool) -> Result<Self, String> {
        let mut re = String::with_capacity(source.len() + 8);
        re.push_str(if case_insensitive { "(?is)^" } else { "(?s)^" });
        let mut literal_len = 0;
        for c in source.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => {
                    literal_len += 1;
                    let mut buf = [0u8; 4];
                    re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
                }
            }
        }
        re.push('$');
        let regex = Regex::new(&re).map_err(|e| format!("invalid pattern: {e}"))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
            literal_len,
        })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }

    /// The pattern has a wildcard at all.
    pub fn has_wildcard(s: &str) -> bool {
        s.contains(['*', '?'])
    }
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub key: Option<Wildcard>,
    pub value: Option<Wildcard>,
}

impl QueryMatch {
    /// Some `key=value` pair of the (raw) query string matches.
    pub fn matches(&self, query: Option<&str>) -> bool {
        let Some(q) = query else { return false };
        q.split('&').filter(|p| !p.is_empty()).any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            self.key.as_ref().is_none_or(|w| w.is_match(&decode(k)))
                && self.value.as_ref().is_none_or(|w| w.is_match(&decode(v)))
        })
    }
}

/// Percent-decoding with `+` as a space; invalid escapes and invalid UTF-8 are kept
/// as they are. Borrows when there is nothing to decode.
pub fn decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// A value with `#{name}` placeholders, split once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Var(Var),
}

/// What a placeholder names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Protocol,
    Host,
    Port,
    Path,
    Query,
    ClientIp,
    RequestId,
    TlsIdentity,
    Route,
}

impl Var {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "protocol" | "scheme" => Var::Protocol,
            "host" => Var::Host,
            "port" => Var::Port,
            "path" => Var::Path,
            "query" => Var::Query,
            "client_ip" => Var::ClientIp,
            "request_id" => Var::RequestId,
            "tls_identity" => Var::TlsIdentity,
            "route" => Var::Route,
            _ => return None,
        })
    }
}

impl Template {
    /// Parse `text`; `allowed` are the placeholders this field may use.
    pub fn parse(text: &str, allowed: &[Var]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("#{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("{text:?}: `#{{` without a closing `}}`"));
            };
            let name = &after[..end];
            match Var::parse(name) {
                Some(v) if allowed.contains(&v) => parts.push(Part::Var(v)),
                _ => {
                    let names: Vec<String> = allowed.iter().map(|v| var_name(*v)).collect();
                    return Err(format!(
                        "{text:?}: unknown placeholder #{{{name}}} (here: {})",
                        names.join(", ")
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The template has no placeholder: its text as it is.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Render with `value` giving each placeholder's text.
    pub fn render(&self, mut value: impl FnMut(Var, &mut String)) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => value(*v, &mut out),
            }
        }
        out
    }

    fn is_single(&self, v: Var) -> bool {
        self.parts == [Part::Var(v)]
    }
}

fn var_name(v: Var) -> String {
    let n = match v {
        Var::Protocol => "protocol",
        Var::Host => "host",
        Var::Port => "port",
        Var::Path => "path",
        Var::Query => "query",
        Var::ClientIp => "client_ip",
        Var::RequestId => "request_id",
        Var::TlsIdentity => "tls_identity",
        Var::Route => "route",
    };
    format!("#{{{n}}}")
}

const URL_VARS: &[Var] = &[Var::Protocol, Var::Host, Var::Port, Var::Path, Var::Query];
const HEADER_VARS: &[Var] = &[
    Var::ClientIp,
    Var::RequestId,
    Var::TlsIdentity,
    Var::Host,
    Var::Route,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `None`: the request's scheme.
    pub scheme: Option<&'static str>,
    pub host: Template,
    /// `None`: the request's port when the scheme is kept, else the new scheme's default.
    pub port: Option<Template>,
    pub path: Template,
    pub query: Template,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedResponse {
    pub status: u16,
    pub content_type: HeaderValue,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    /// (the matched prefix, its replacement)
    pub path_prefix: Option<(String, String)>,
    pub path_regex: Option<(Regex, String)>,
    pub host: Option<HeaderValue>,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

// ---------------------------------------------------------------------------------
// Validation

pub(crate) fn validate_redirect(at: &str, r: &RedirectFile, p: &mut Problems) -> Redirect {
    let scheme = r.scheme.as_deref().and_then(|s| {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" => Some("http"),
            "https" => Some("https"),
            // ALB's #{protocol} default, written out.
            "#{protocol}" | "#{scheme}" => None,
            _ => {
                p.push(format!("{at}.scheme"), format!("{s:?}: use http or https"));
                None
            }
        }
    });
    let mut template = |field: &str, v: Option<&String>, default: &str| {
        let text = v.map_or(default, String::as_str);
        Template::parse(text, URL_VARS).unwrap_or_else(|e| {
            p.push(format!("{at}.{field}"), e);
            Template { parts: Vec::new() }
        })
    };
    let host = template("host", r.host.as_ref(), "#{host}");
    let path = template("path", r.path.as_ref(), "/#{path}");
    let query = template("query", r.query.as_ref(), "#{query}");
    let port = r.port.as_ref().map(|v| template("port", Some(v), ""));
    if let Some(t) = host.literal() {
        if t.is_empty() || t.contains(['/', '?', '#', ' ']) {
            p.push(format!("{at}.host"), format!("{t:?} is not a host name"));
        }
    }
    if let Some(t) = port.as_ref().and_then(Template::literal) {
        if t.parse::<u16>().map_or(true, |n| n == 0) {
            p.push(
                format!("{at}.port"),
                format!("{t:?} is not a port (1-65535 or #{{port}})"),
            );
        }
    }
    if !matches!(path.parts.first(), Some(Part::Text(t)) if t.starts_with('/')) {
        p.push(format!("{at}.path"), "must start with /");
    }
    if ![301, 302, 303, 307, 308].contains(&r.status) {
        p.push(
            format!("{at}.status"),
            format!(
                "{} is not a redirect status (301, 302, 303, 307, 308)",
                r.status
            ),
        );
    }
    let unchanged = scheme.is_none()
        && host.is_single(Var::Host)
        && port.as_ref().is_none_or(|t| t.is_single(Var::Port))
        && path.parts == [Part::Text("/".into()), Part::Var(Var::Path)]
        && query.is_single(Var::Query);
    if unchanged {
        p.push(
            at,
            "redirects every request to its own URL (a loop): set at least one of \
             scheme, host, port, path, query",
        );
    }
    Redirect {
        scheme,
        host,
        port,
        path,
        query,
        status: r.status,
    }
}

pub(crate) fn validate_fixed_response(
    at: &str,
    f: &FixedResponseFile,
    p: &mut Problems,
) -> FixedResponse {
    if !(200..=599).contains(&f.status) {
        p.push(format!("{at}.status"), "must be between 200 and 599");
    }
    if f.body.len() > 64 * 1024 {
        p.push(format!("{at}.body"), "must be at most 64 KiB");
    }
    let content_type = match &f.content_type {
        None => HeaderValue::from_static("text/plain; charset=utf-8"),
        Some(ct) => HeaderValue::from_str(ct.trim()).unwrap_or_else(|_| {
            p.push(
                format!("{at}.content_type"),
                format!("{ct:?} is not a header value"),
            );
            HeaderValue::from_static("text/plain")
        }),
    };
    FixedResponse {
        status: f.status,
        content_type,
        body: bytes::Bytes::from(f.body.clone()),
    }
}

/// `matched_prefix`: the route's `match.path_prefix` (`None` when it has none).
pub(crate) fn validate_rewrite(
    at: &str,
    r: &RewriteFile,
    matched_prefix: Option<&str>,
    p: &mut Problems,
) -> Rewrite {
    let path_prefix = r.path_prefix.as_ref().and_then(|to| {
        if !to.starts_with('/') {
            p.push(format!("{at}.path_prefix"), "must start with /");
            return None;
        }
        match matched_prefix {
            Some(from) => Some((from.to_owned(), to.clone())),
            None => {
                p.push(
                    format!("{at}.path_prefix"),
                    "needs the route's match.path_prefix (the part it replaces)",
                );
                None
            }
        }
    });
    if r.path_prefix.is_some() && r.path_regex.is_some() {
        p.push(
            format!("{at}.path_regex"),
            "set either `path_prefix` or `path_regex`, not both",
        );
    }
    let path_regex = r
        .path_regex
        .as_ref()
        .and_then(|pr| match Regex::new(&pr.pattern) {
            Ok(re) => {
                if !pr.replacement.starts_with('/') && !pr.replacement.starts_with('$') {
                    p.push(
                        format!("{at}.path_regex.replacement"),
                        "must start with / (or a group that does)",
                    );
                }
                Some((re, pr.replacement.clone()))
            }
            Err(e) => {
                p.push(
                    format!("{at}.path_regex.pattern"),
                    format!("invalid regex: {e}"),
                );
                None
            }
        });
    let host = r.host.as_ref().and_then(|h| {
        let t = h.trim();
        let ok = !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        match (ok, HeaderValue::from_str(t)) {
            (true, Ok(v)) => Some(v),
            _ => {
                p.push(format!("{at}.host"), format!("{h:?} is not a host[:port]"));
                None
            }
        }
    });
    Rewrite {
        path_prefix,
        path_regex,
        host,
    }
}

/// Headers a transform must not touch: framing and routing are the proxy's.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

fn header_name(field: String, n: &str, p: &mut Problems) -> Option<HeaderName> {
    match HeaderName::from_bytes(n.trim().as_bytes()) {
        Ok(name) if RESERVED.contains(&name.as_str()) => {
            p.push(
                field,
                format!("{n:?} is managed by the proxy (use rewrite.host for Host)"),
            );
            None
        }
        Ok(name) => Some(name),
        Err(_) => {
            p.push(field, format!("{n:?} is not a header name"));
            None
        }
    }
}

fn header_values(
    at: &str,
    map: &BTreeMap<String, String>,
    p: &mut Problems,
) -> Vec<(HeaderName, Template)> {
    let mut out = Vec::new();
    for (n, v) in map {
        let field = format!("{at}.{n}");
        let Some(hn) = header_name(field.clone(), n, p) else {
            continue;
        };
        match Template::parse(v, HEADER_VARS) {
            Ok(t)
                if t.literal()
                    .is_some_and(|l| HeaderValue::from_str(l).is_err()) =>
            {
                p.push(field, format!("{v:?} is not a header value"));
            }
            Ok(t) => out.push((hn, t)),
            Err(e) => p.push(field, e),
        }
    }
    out
}

pub(crate) fn validate_header_ops(at: &str, h: &HeaderOpsFile, p: &mut Problems) -> HeaderOps {
    let remove = h
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, n)| header_name(format!("{at}.remove[{i}]"), n, p))
        .collect();
    let set = header_values(&format!("{at}.set"), &h.set, p);
    let add = header_values(&format!("{at}.add"), &h.add, p);
    HeaderOps { remove, set, add }
}

pub(crate) fn validate_query_match(
    at: &str,
    q: &QueryMatchFile,
    p: &mut Problems,
) -> Option<QueryMatch> {
    if q.key.is_none() && q.value.is_none() {
        p.push(at, "set `key`, `value` or both");
        return None;
    }
    let mut w = |field: &str, v: &Option<String>| {
        v.as_ref().and_then(|s| match Wildcard::new(s, true) {
            Ok(w) => Some(w),
            Err(e) => {
                p.push(format!("{at}.{field}"), e);
                None
            }
        })
    };
    Some(QueryMatch {
        key: w("key", &q.key),
        value: w("value", &q.value),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wildcards_match_the_whole_text() {
        let w = Wildcard::new("/api/*/users/?", false).unwrap();
        assert!(w.is_match("/api/v1/users/7"));
        assert!(w.is_match("/api/a/b/users/x"));
        assert!(!w.is_match("/api/v1/users/77"));
        assert!(!w.is_match("/API/v1/users/7"), "paths are case-sensitive");
        assert_eq!(w.literal_len, 12);
        let h = Wildcard::new("api-?.example.*", true).unwrap();
        assert!(h.is_match("API-1.example.org"));
        assert!(!h.is_match("api-12.example.org"));
        assert!(Wildcard::new("a.b+c", false).unwrap().is_match("a.b+c"));
        assert!(!Wildcard::new("a.b", false).unwrap().is_match("axb"));
    }

    #[test]
    fn query_conditions_decode_and_ignore_case() {
        let mut p = Problems::default();
        let q = validate_query_match(
            "q",
            &QueryMatchFile {
                key: Some("ver*".into()),
                value: Some("beta ?".into()),
            },
            &mut p,
        )
        .unwrap();
        assert!(p.is_empty());
        assert!(q.matches(Some("a=1&Version=BETA+2")));
        assert!(q.matches(Some("version=beta%202&x")));
        assert!(!q.matches(Some("version=beta")));
        assert!(!q.matches(None));
        let key_only = validate_query_match(
            "q",
            &QueryMatchFile {
                key: Some("debug".into()),
                value: None,
            },
            &mut p,
        )
        .unwrap();
        assert!(key_only.matches(Some("x=1&debug")));
        assert!(!key_only.matches(Some("debugger=1")));
    }

    #[test]
    fn decode_keeps_what_is_not_an_escape() {
        assert_eq!(decode("a%2Fb+c"), "a/b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("plain"), "plain");
    }

    #[test]
    fn templates_split_once_and_name_unknown_placeholders() {
        let t = Template::parse("/v2/#{path}?x", URL_VARS).unwrap();
        assert_eq!(
            t.render(|v, out| {
                assert_eq!(v, Var::Path);
                out.push_str("users/7");
            }),
            "/v2/users/7?x"
        );
        let e = Template::parse("#{nope}", URL_VARS).unwrap_err();
        assert!(e.contains("unknown placeholder #{nope}"), "{e}");
        assert!(Template::parse("#{client_ip}", URL_VARS).is_err());
        assert!(Template::parse("#{unclosed", URL_VARS).is_err());
        assert_eq!(
            Template::parse("plain", URL_VARS).unwrap().literal(),
            Some("plain")
        );
    }

    #[test]
    fn a_redirect_to_itself_is_refused() {
        let mut p = Problems::default();
        let own = RedirectFile {
            status: 301,
            ..Default::default()
        };
        validate_redirect("r", &own, &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        let mut p = Problems::default();
        validate_redirect(
            "r",
            &RedirectFile {
                scheme: Some("https".into()),
                status: 301,
                ..Default::default()
            },
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
        let mut p = Problems::default();
        validate_redirect(
            "r",
            &RedirectFile {
                path: Some("no-slash".into()),
                port: Some("99999".into()),
                status: 200,
                ..Default::default()
            },
            &mut p,
        );
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn header_transforms_refuse_framing_headers() {
        let mut p = Problems::default();
        let ops = validate_header_ops(
            "h",
            &HeaderOpsFile {
                set: [("x-a".to_string(), "#{client_ip}".to_string())].into(),
                add: [("content-length".to_string(), "1".to_string())].into(),
                remove: vec!["Host".into(), "x-b".into()],
            },
            &mut p,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(ops.set.len(), 1);
        assert_eq!(ops.remove.len(), 1);
    }
}
