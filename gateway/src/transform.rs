//! Route actions and transforms that change a request or response: the `redirect`
//! action's `Location`, path and host rewrites of the request sent upstream, and the
//! `request_headers` / `response_headers` transforms. Validation (`tollgate_config::
//! gateway::actions`) parsed every template once; here they are only rendered.

use std::fmt::Write as _;

use http::header::HOST;
use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};
use tollgate_config::gateway::actions::{HeaderOps, Redirect, Rewrite, Template, Var};

use crate::context::Ctx;

/// The request-side values header templates may name.
struct Values<'a> {
    ctx: &'a Ctx,
    host: &'a str,
}

impl Values<'_> {
    fn write(&self, v: Var, out: &mut String) {
        let ctx = self.ctx;
        match v {
            Var::ClientIp => {
                if let Some(ip) = ctx.client.ip {
                    let _ = write!(out, "{ip}");
                }
            }
            Var::RequestId => {
                if let Some(id) = ctx.ids.request_id.as_ref().and_then(|v| v.to_str().ok()) {
                    out.push_str(id);
                }
            }
            Var::TlsIdentity => {
                if let Some(id) = &ctx.client.identity {
                    out.push_str(id);
                }
            }
            Var::Host => out.push_str(self.host),
            Var::Route => out.push_str(ctx.route_name()),
            // Not allowed in header templates (validation).
            Var::Protocol | Var::Port | Var::Path | Var::Query => {}
        }
    }
}

/// The value of a header template; `None` when it came out empty from placeholders
/// with no value (no client certificate for `#{tls_identity}`): such a header is
/// not sent rather than sent empty.
fn header_value(t: &Template, values: &Values<'_>) -> Option<HeaderValue> {
    if let Some(text) = t.literal() {
        return HeaderValue::from_str(text).ok();
    }
    let s = t.render(|v, out| values.write(v, out));
    if s.is_empty() {
        return None;
    }
    HeaderValue::from_str(&s).ok()
}

/// Apply `ops` to a request on its way upstream.
pub fn request_headers(
    ops: &HeaderOps,
    ctx: &Ctx,
    host: &str,
    req: &mut RequestHeader,
) -> pingora_error::Result<()> {
    let values = Values { ctx, host };
    for name in &ops.remove {
        req.remove_header(name);
    }
    for (name, t) in &ops.set {
        match header_value(t, &values) {
            Some(v) => req.insert_header(name.clone(), v)?,
            None => {
                req.remove_header(name);
            }
        }
    }
    for (name, t) in &ops.add {
        if let Some(v) = header_value(t, &values) {
            req.append_header(name.clone(), v)?;
        }
    }
    Ok(())
}

/// Apply `ops` to a response on its way to the client.
pub fn response_headers(
    ops: &HeaderOps,
    ctx: &Ctx,
    host: &str,
    resp: &mut ResponseHeader,
) -> pingora_error::Result<()> {
    let values = Values { ctx, host };
    for name in &ops.remove {
        resp.remove_header(name);
    }
    for (name, t) in &ops.set {
        match header_value(t, &values) {
            Some(v) => resp.insert_header(name.clone(), v)?,
            None => {
                resp.remove_header(name);
            }
        }
    }
    for (name, t) in &ops.add {
        if let Some(v) = header_value(t, &values) {
            resp.append_header(name.clone(), v)?;
        }
    }
    Ok(())
}

/// Rewrite the path and/or `Host` of the request sent upstream. The query string is
/// kept as the client sent it.
pub fn rewrite(rw: &Rewrite, req: &mut RequestHeader) -> pingora_error::Result<()> {
    let path = req.uri.path();
    let new_path = if let Some((from, to)) = &rw.path_prefix {
        path.strip_prefix(from.as_str()).map(|rest| {
            let mut p = String::with_capacity(to.len() + rest.len() + 1);
            p.push_str(to);
            // `/api/` -> `/v2` on `/api/x` gives `/v2/x`, not `/v2x`.
            if !to.ends_with('/') && !rest.is_empty() && !rest.starts_with('/') {
                p.push('/');
            }
            p.push_str(rest);
            p
        })
    } else if let Some((re, replacement)) = &rw.path_regex {
        re.is_match(path)
            .then(|| re.replace(path, replacement.as_str()).into_owned())
    } else {
        None
    };
    if let Some(mut p) = new_path {
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        if let Some(q) = req.uri.query() {
            p.push('?');
            p.push_str(q);
        }
        match p.parse::<http::Uri>() {
            Ok(uri) => req.set_uri(uri),
            Err(_) => {
                return pingora_error::Error::e_explain(
                    pingora_error::ErrorType::InternalError,
                    "the rewritten path is not a valid request target",
                )
            }
        }
    }
    if let Some(host) = &rw.host {
        req.insert_header(HOST, host.clone())?;
    }
    Ok(())
}

/// The `Location` of a `redirect` action for this request: every part the action does
/// not set is the request's own (`#{path}` without its leading `/`, as ALB has it).
pub fn redirect_location(r: &Redirect, req: &RequestHeader, host: &str, tls: bool) -> String {
    let own_scheme = if tls { "https" } else { "http" };
    let scheme = r.scheme.unwrap_or(own_scheme);
    let default_port = |s: &str| if s == "https" { "443" } else { "80" };
    let raw_host = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    // The request's port: from its Host, else the default of its scheme.
    let after_host = match raw_host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => raw_host,
    };
    let own_port = match after_host.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) => p,
        _ => default_port(own_scheme),
    };
    let path = req.uri.path();
    let query = req.uri.query().unwrap_or("");
    let var = |v: Var, out: &mut String| match v {
        Var::Protocol => out.push_str(own_scheme),
        Var::Host => out.push_str(host),
        Var::Port => out.push_str(own_port),
        Var::Path => out.push_str(path.strip_prefix('/').unwrap_or(path)),
        Var::Query => out.push_str(query),
        _ => {}
    };
    let new_host = r.host.render(var);
    let port = match &r.port {
        Some(t) => t.render(var),
        None if scheme == own_scheme => own_port.to_owned(),
        None => default_port(scheme).to_owned(),
    };
    let new_path = r.path.render(var);
    let new_query = r.query.render(var);
    let mut loc = String::with_capacity(new_host.len() + new_path.len() + new_query.len() + 16);
    loc.push_str(scheme);
    loc.push_str("://");
    loc.push_str(&new_host);
    if port != default_port(scheme) && !port.is_empty() {
        loc.push(':');
        loc.push_str(&port);
    }
    // Always absolute, with the host: a path starting with `//` stays a path.
    loc.push_str(&new_path);
    if !new_query.is_empty() {
        loc.push('?');
        loc.push_str(&new_query);
    }
    loc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;
    use tollgate_config::gateway::{from_str, EnvOverrides, RouteAction};

    fn route(yaml: &str) -> tollgate_config::gateway::Route {
        let src = format!(
            "listeners: [{{ name: h, address: 127.0.0.1:1 }}]\nupstreams: {{ u: {{ endpoints: [{{ address: 127.0.0.1:2 }}] }} }}\nroutes:\n  - {yaml}\n"
        );
        from_str(Path::new("t.yaml"), &src, &EnvOverrides::default())
            .unwrap()
            .config
            .routes
            .remove(0)
    }

    fn req(target: &str, host: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        r
    }

    fn location(yaml: &str, target: &str, host: &str, tls: bool) -> String {
        let RouteAction::Redirect(r) = route(yaml).action else {
            panic!("not a redirect")
        };
        let h = crate::routing::normalize_host(host);
        redirect_location(&r, &req(target, host), &h, tls)
    }

    #[test]
    fn redirects_keep_what_they_do_not_set() {
        let to_https = "{ name: r, redirect: { scheme: https } }";
        assert_eq!(
            location(to_https, "/a/b?x=1", "Example.com", false),
            "https://example.com/a/b?x=1"
        );
        assert_eq!(
            location(to_https, "/a", "example.com:8080", false),
            "https://example.com/a",
            "a new scheme takes its default port"
        );
        let moved = "{ name: r, redirect: { host: new.example.com, path: \"/v2/#{path}\", query: \"\", status: 308 } }";
        assert_eq!(
            location(moved, "/users/7?debug=1", "old.example.com:8443", true),
            "https://new.example.com:8443/v2/users/7"
        );
        let port = "{ name: r, redirect: { port: \"9443\", scheme: https } }";
        assert_eq!(location(port, "/", "h", false), "https://h:9443/");
        let placeholders =
            "{ name: r, redirect: { path: \"/#{host}/#{protocol}\", query: \"from=#{path}&#{query}\" } }";
        assert_eq!(
            location(placeholders, "/p?q=1", "h", false),
            "http://h/h/http?from=p&q=1"
        );
        assert_eq!(
            location(
                "{ name: r, redirect: { host: other } }",
                "//evil.example/x",
                "h",
                false
            ),
            "http://other//evil.example/x",
            "the host is always written: a path never becomes one"
        );
    }

    #[test]
    fn rewrites_change_path_and_host_and_keep_the_query() {
        let r = route("{ name: r, upstream: u, match: { path_prefix: /api/ }, rewrite: { path_prefix: /, host: internal } }");
        let mut q = req("/api/users?x=1", "h");
        rewrite(r.rewrite.as_ref().unwrap(), &mut q).unwrap();
        assert_eq!(q.uri.to_string(), "/users?x=1");
        assert_eq!(q.headers.get("host").unwrap(), "internal");

        let r = route(
            "{ name: r, upstream: u, match: { path_prefix: /api }, rewrite: { path_prefix: /v2 } }",
        );
        let mut q = req("/api/users", "h");
        rewrite(r.rewrite.as_ref().unwrap(), &mut q).unwrap();
        assert_eq!(q.uri.to_string(), "/v2/users");

        let r = route("{ name: r, upstream: u, rewrite: { path_regex: { pattern: \"^/u/([0-9]+)/(.*)$\", replacement: \"/users/$1/$2\" } } }");
        let mut q = req("/u/42/orders?a", "h");
        rewrite(r.rewrite.as_ref().unwrap(), &mut q).unwrap();
        assert_eq!(q.uri.to_string(), "/users/42/orders?a");
        let mut q = req("/other", "h");
        rewrite(r.rewrite.as_ref().unwrap(), &mut q).unwrap();
        assert_eq!(q.uri.to_string(), "/other", "no match: unchanged");
    }
}
