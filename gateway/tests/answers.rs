//! The gateway's own answers (no route, redirects, upstream failures, bad framing)
//! come from one writer: a body saying why with the request id, and the connection
//! kept open unless the request's framing is in doubt (issue 14).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use backends_demo::{free_addr, Backend, Gateway, GatewayConfig};
use common::raw_http::RawConn;
use serde_json::json;

mod common;

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[tokio::test]
async fn policy_answers_keep_the_connection_and_say_why() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let plain = free_addr("127.0.0.1");
    let dead = free_addr("127.0.0.1");
    let gw = Gateway::start(
        &GatewayConfig::new()
            .listener(json!({ "name": "plain", "address": plain.to_string(),
                              "redirect_https": true, "https_port": 8443 }))
            .upstream("app", &[app.addr()])
            .upstream("dead", &[dead])
            .route_with("app", "app", json!({ "match": { "host": "app.test" } }))
            .route_with(
                "dead",
                "dead",
                json!({ "match": { "host": "dead.test" }, "retry": { "attempts": 1 } }),
            )
            .to_yaml(),
    )
    .await
    .unwrap();

    let mut c = RawConn::open(gw.listen);
    // No route: 404, the reason and the request id in the body, connection kept.
    let r = c
        .exchange("GET /nope HTTP/1.1\r\nHost: other.test\r\nX-Request-Id: req-42\r\n\r\n")
        .expect("404");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("x-request-id"), Some("req-42"));
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    assert!(
        r.body.contains("no route for host \"other.test\""),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("reason: no_route\nrequest-id: req-42\n"),
        "{}",
        r.body
    );
    // The same connection still serves.
    let r = c
        .exchange(&get("app.test", "/ok"))
        .expect("200 on the same connection");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"path\":\"/ok\""), "{}", r.body);
    // An upstream that refuses connections: 502, and the connection is closed (Pingora
    // does not reuse a client connection after a failed proxy attempt) and says so.
    let r = c.exchange(&get("dead.test", "/")).expect("502");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("reason: upstream_failure"), "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(c.closed());

    // Redirects keep the connection too.
    let mut c = RawConn::open(plain);
    for path in ["/a?x=1", "/b"] {
        let r = c.exchange(&get("app.test", path)).expect("308");
        assert_eq!(r.status, 308);
        assert_eq!(
            r.header("location"),
            Some(format!("https://app.test:8443{path}").as_str())
        );
        assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    }

    // Ambiguous framing: 400 and the connection is closed (where this request ends
    // is exactly what is in doubt).
    let mut c = RawConn::open(gw.listen);
    let r = c
        .exchange("POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .expect("400");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(r.body.contains("reason: desync"), "{}", r.body);
    assert!(r.body.contains("both_te_cl_present (severe)"), "{}", r.body);
    assert!(c.closed(), "connection closed after ambiguous framing");
    assert_eq!(
        app.stats().await.unwrap().requests,
        1,
        "only /ok reached the app"
    );
}
