//! Session fixation: a session id handed to the application in the URL or a form
//! (`?PHPSESSID=...`, `;jsessionid=...`) by a link from elsewhere, or a cookie set
//! through an argument (`document.cookie=`, `<meta http-equiv="Set-Cookie">`).

use super::loc::*;
use super::Group::SessionFixation as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// A session-id parameter with no Referer, or a Referer from another host.
pub(crate) const PARAM: &str = "session_fixation.session_param";

pub(crate) const RULES: &[RuleDef] = &[rule(
    "session_fixation.set_cookie",
    G,
    Critical,
    1,
    INPUT,
    Norm,
    &["cookie", "set-cookie"],
    r#"\.cookie\b[^;]{0,200}?;\s*(?:expires|domain|path|max-age)\s*=|\bhttp-equiv\s*=?\s*['"]?set-cookie\b|(?:^|[\r\n])\s*set-cookie\s*:|\bset-cookie\s*:\s*\w+="#,
)];

/// Whether an argument name is a session identifier's.
pub(crate) fn session_name(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "jsessionid",
        "phpsessid",
        "sessionid",
        "session_id",
        "sessid",
        "sess_id",
        "aspsessionid",
        "asp.net_sessionid",
        "cfid",
        "cftoken",
        "laravel_session",
        "connect.sid",
        "_session_id",
    ];
    let n = name.trim();
    NAMES.iter().any(|k| n.eq_ignore_ascii_case(k))
        || n.len() > 12
            && n.as_bytes()
                .get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"aspsessionid"))
}

/// A session id as a path parameter (`/app;jsessionid=...`).
pub(crate) fn session_in_path(path: &[u8]) -> bool {
    let Some(i) = memchr::memchr(b';', path) else {
        return false;
    };
    let rest = &path[i + 1..];
    ["jsessionid=", "phpsessid=", "sessionid=", "sid="]
        .iter()
        .any(|p| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}
