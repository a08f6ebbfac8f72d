//! The status page at `GET /` and `GET /status`: one self-contained HTML page (inline CSS
//! and JS, no external assets, works offline) that renders the JSON endpoints of
//! whichever binary serves it and refreshes itself. It is the same page for both
//! binaries: the script tells them apart from the shape of `/config`.

use http::StatusCode;

use super::AdminResponse;

/// The page, compiled into the binary so it cannot go missing at run time.
pub const PAGE: &str = include_str!("status.html");

/// Only this origin, and inline script/style because the page carries its own: a value
/// that somehow made it into the markup could load nothing from anywhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const HEADERS: &[(&str, &str)] = &[
    // The page is tiny and its data is live: never show a stale copy.
    ("cache-control", "no-store"),
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

pub fn page() -> AdminResponse {
    AdminResponse {
        status: StatusCode::OK,
        content_type: "text/html; charset=utf-8",
        body: PAGE.to_owned(),
        headers: HEADERS,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::{Read, Write};
    use std::sync::Arc;

    use super::*;
    use crate::admin::{spawn, AdminHandler, AdminRequest, Health};

    struct NoEndpoints;
    impl AdminHandler for NoEndpoints {
        fn handle(&self, _: &AdminRequest) -> Option<AdminResponse> {
            None
        }
    }

    /// A raw HTTP/1.1 exchange with a real admin listener: status line, headers
    /// (lower-cased names) and body.
    fn get(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
    ) -> (String, Vec<(String, String)>, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_page_is_served_at_root_and_status_with_strict_headers() {
        let addr = spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Health::default()),
            Arc::new(NoEndpoints),
        )
        .unwrap();
        for path in ["/", "/status"] {
            let (status, headers, body) = get(addr, "GET", path);
            assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
            assert_eq!(
                header(&headers, "content-type"),
                Some("text/html; charset=utf-8")
            );
            assert_eq!(header(&headers, "cache-control"), Some("no-store"));
            assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
            let csp = header(&headers, "content-security-policy").unwrap();
            assert!(csp.starts_with("default-src 'self';"), "{csp}");
            assert!(!csp.contains("http"), "no external origin: {csp}");
            assert!(!csp.contains('*'), "no wildcard source: {csp}");
            assert_eq!(body, PAGE);
        }
        // HEAD answers the headers without the page; other methods are not the page.
        let (status, headers, body) = get(addr, "HEAD", "/");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(body.is_empty(), "{body}");
        let (status, _, _) = get(addr, "POST", "/");
        assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    }

    /// The page must work offline and never turn data into markup.
    #[test]
    fn the_page_is_self_contained_and_inserts_data_as_text() {
        let lower = PAGE.to_ascii_lowercase();
        assert!(lower.starts_with("<!doctype html>"));
        for external in ["http://", "https://", "//cdn", "src=", "@import", "url("] {
            assert!(!lower.contains(external), "external asset: {external}");
        }
        for sink in [
            "innerhtml",
            "outerhtml",
            "insertadjacenthtml",
            "document.write",
            "eval(",
            "new function",
        ] {
            assert!(!lower.contains(sink), "HTML/JS sink in the page: {sink}");
        }
        // The endpoints the script reads exist on one binary or the other.
        for endpoint in [
            "\"/config\"",
            "\"/upstreams\"",
            "\"/certificates\"",
            "\"/dependencies\"",
            "\"/identity\"",
        ] {
            assert!(PAGE.contains(endpoint), "{endpoint}");
        }
        assert!(PAGE.len() < 32 * 1024, "small: {} bytes", PAGE.len());
    }
}
