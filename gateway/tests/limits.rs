//! ALB parity, limits (issue 18): request target and single header 16 KiB, all headers
//! 64 KiB, a route's maximum request body (413, declared or chunked), the client idle
//! timeout and keep-alive duration, and drop_invalid_header_fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backends_demo::{Backend, Gateway, GatewayConfig};
use common::raw_http::RawConn;
use serde_json::json;

mod common;

#[tokio::test]
async fn head_and_body_limits() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("app", &[app.addr()])
            .route_with(
                "small",
                "app",
                json!({
                    "match": { "path_prefix": "/small" },
                    "max_request_body": "1KiB",
                }),
            )
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    let req =
        |target: &str, headers: &str| format!("GET {target} HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
    let status = |raw: &str| RawConn::open(gw.listen).exchange(raw).map(|r| r.status);

    let long = format!("/{}", "a".repeat(16 * 1024));
    assert_eq!(status(&req(&long, "")), Some(414));
    assert_eq!(status(&req(&long[..16 * 1024 - 10], "")), Some(200));
    let big = format!("X-Big: {}\r\n", "b".repeat(16 * 1024));
    assert_eq!(status(&req("/", &big)), Some(431));
    let many: String = (0..5)
        .map(|i| format!("X-Part-{i}: {}\r\n", "c".repeat(15 * 1024)))
        .collect();
    assert_eq!(status(&req("/", &many)), Some(431), "over 64 KiB in all");
    let some: String = (0..3)
        .map(|i| format!("X-Part-{i}: {}\r\n", "c".repeat(15 * 1024)))
        .collect();
    assert_eq!(status(&req("/", &some)), Some(200), "45 KiB in all is fine");

    let before = app.stats().await.unwrap().requests;
    let post = |body: &str| {
        format!(
            "POST /small HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let r = RawConn::open(gw.listen)
        .exchange(&post(&"x".repeat(2000)))
        .unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains("reason: body_too_large"), "{}", r.body);
    assert_eq!(
        app.stats().await.unwrap().requests,
        before,
        "a declared body over the limit never reaches the backend"
    );
    let chunked = format!(
        "POST /small HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        2000,
        "y".repeat(2000)
    );
    assert_eq!(
        status(&chunked),
        Some(413),
        "a chunked one is cut at the limit"
    );
    assert_eq!(status(&post(&"z".repeat(500))), Some(200));
}

#[tokio::test]
async fn idle_and_keepalive_duration_and_invalid_header_names() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.client_idle_timeout", "1s")
            .set("server.limits.keepalive_duration", "2s")
            .set("server.limits.drop_invalid_header_fields", true)
            .upstream("app", &[app.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    let get = "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX-Fine: 1\r\n\r\n";

    // Idle past client_idle_timeout: closed by the gateway.
    let mut c = RawConn::open(gw.listen);
    let r = c.exchange(get).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(seen["headers"].get("x_forwarded_for").is_none(), "{seen}");
    assert_eq!(seen["headers"]["x-fine"], "1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(c.closed(), "idle past client_idle_timeout");

    // A busy connection past keepalive_duration is told to close.
    let mut c = RawConn::open(gw.listen);
    let mut closes = 0;
    for _ in 0..6 {
        let r = c.exchange(get).unwrap();
        assert_eq!(r.status, 200);
        if r.header("connection") == Some("close") {
            closes += 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(closes, 1, "closed after keepalive_duration");
}
