//! Sticky sessions (ALB's target-group stickiness): a cookie the gateway issues names
//! the endpoint a client was sent to, and its next requests go there while that
//! endpoint is available. `lb_cookie`: always. `app_cookie`: while the client also
//! carries the application's own session cookie. The cookie holds a token derived from
//! the endpoint's address with fixed keys, so every replica reads it the same way; a
//! client that edits it only chooses among endpoints it could reach anyway.

use http::header::SET_COOKIE;
use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};
use tollgate_config::gateway::Sticky;

use crate::attempts::cookie_value;

/// The endpoint token the request's sticky cookie names, if it carries one (and, for
/// `app_cookie`, the application's cookie too).
pub fn requested(st: &Sticky, req: &RequestHeader) -> Option<u64> {
    if let Some(app) = &st.app_cookie {
        cookie_value(req, app)?;
    }
    let v = cookie_value(req, &st.cookie)?;
    if v.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
}

/// Set the sticky cookie on the response: `lb_cookie` always (its lifetime starts
/// again with each answer, as ALB's does), `app_cookie` when the application sets
/// its cookie or the client sent it.
pub fn on_response(
    st: &Sticky,
    token: u64,
    tls: bool,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
) -> pingora_error::Result<()> {
    if let Some(app) = &st.app_cookie {
        let sets_it = resp.headers.get_all(SET_COOKIE).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b'=')
                .next()
                .is_some_and(|n| n.trim_ascii() == app.as_bytes())
        });
        if !sets_it && cookie_value(req, app).is_none() {
            return Ok(());
        }
    }
    let cookie = format!(
        "{}={token:016x}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        st.cookie,
        st.duration.as_secs(),
        if tls { "; Secure" } else { "" }
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => resp.append_header(SET_COOKIE, v).map(|_| ()),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn lb() -> Sticky {
        Sticky {
            app_cookie: None,
            cookie: "tollgate_sticky".into(),
            duration: Duration::from_secs(60),
        }
    }

    fn req(cookie: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("cookie", cookie).unwrap();
        r
    }

    #[test]
    fn the_cookie_names_a_token_and_nothing_else() {
        assert_eq!(
            requested(&lb(), &req("a=1; tollgate_sticky=00000000000000ff")),
            Some(255)
        );
        assert_eq!(requested(&lb(), &req("tollgate_sticky=ff")), None);
        assert_eq!(
            requested(&lb(), &req("tollgate_sticky=zzzzzzzzzzzzzzzz")),
            None
        );
        let app = Sticky {
            app_cookie: Some("JSESSIONID".into()),
            cookie: "tollgate_sticky_JSESSIONID".into(),
            ..lb()
        };
        assert_eq!(
            requested(&app, &req("tollgate_sticky_JSESSIONID=0000000000000001")),
            None,
            "app_cookie: only with the application's cookie"
        );
        assert_eq!(
            requested(
                &app,
                &req("JSESSIONID=x; tollgate_sticky_JSESSIONID=0000000000000001")
            ),
            Some(1)
        );
    }

    #[test]
    fn flags_are_sane_by_default() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        on_response(&lb(), 255, true, &req(""), &mut resp).unwrap();
        assert_eq!(
            resp.headers.get(SET_COOKIE).unwrap(),
            "tollgate_sticky=00000000000000ff; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
