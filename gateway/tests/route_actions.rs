//! ALB parity, routes: `redirect` and `fixed_response` actions, query-string,
//! source-IP and wildcard conditions, path and host rewrites, and request and response
//! header transforms, through a real gateway to real backends (issue 18).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use backends_demo::{Backend, Gateway, GatewayConfig};
use common::raw_http::RawConn;
use serde_json::{json, Value};

mod common;

fn get(host: &str, target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
}

fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn actions_conditions_and_transforms() {
    let stable = Backend::builder().id("stable").spawn().await.unwrap();
    let beta = Backend::builder().id("beta").spawn().await.unwrap();
    let office = Backend::builder().id("office").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .main_listener(json!({ "trusted_proxies": ["127.0.0.0/8"] }))
            .upstream("stable", &[stable.addr()])
            .upstream("beta", &[beta.addr()])
            .upstream("office", &[office.addr()])
            .raw_route(json!({
                "name": "maintenance",
                "match": { "path_prefix": "/billing/" },
                "fixed_response": { "status": 503, "content_type": "application/json",
                                    "body": "{\"down\":\"until 10:00 UTC\"}" },
            }))
            .raw_route(json!({
                "name": "moved",
                "match": { "path": "/docs/*/old" },
                "redirect": { "host": "docs.example.com", "path": "/v2/#{path}",
                              "query": "from=#{host}&#{query}", "status": 308 },
            }))
            .route_with("stable", "stable", json!({
                "match": { "path_prefix": "/api/" },
                "rewrite": { "path_prefix": "/", "host": "internal.test" },
                "request_headers": {
                    "set": { "x-client": "#{client_ip}", "x-route": "#{route}",
                             "x-cert": "#{tls_identity}" },
                    "add": { "x-tag": "edge" },
                    "remove": ["x-debug"],
                },
                "response_headers": {
                    "set": { "x-served-by": "gateway #{route}" },
                    "remove": ["x-backend-zone"],
                },
            }))
            .route_with("beta", "beta", json!({
                "match": { "path_prefix": "/api/", "query": [{ "key": "ver*", "value": "beta*" }] },
                "rewrite": { "path_regex": { "pattern": "^/api/(.*)$", "replacement": "/beta/$1" } },
            }))
            .route_with("office", "office", json!({
                "match": { "path_prefix": "/api/", "source_ip": ["192.0.2.0/24"] },
            }))
            .to_yaml(),
    )
    .await
    .unwrap();

    let mut c = RawConn::open(gw.listen);

    // fixed_response: the configured answer, the request id, no backend reached.
    let r = c
        .exchange(&get("h", "/billing/invoices", "X-Request-Id: fixed-1\r\n"))
        .expect("fixed response");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, "{\"down\":\"until 10:00 UTC\"}");
    assert_eq!(r.header("x-request-id"), Some("fixed-1"));
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");

    // redirect: path pattern condition, placeholders, 308, connection kept.
    let r = c
        .exchange(&get("Old.Example.com:8080", "/docs/guide/old?lang=fr", ""))
        .expect("redirect");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("http://docs.example.com:8080/v2/docs/guide/old?from=old.example.com&lang=fr")
    );
    let r = c
        .exchange(&get("h", "/docs/guide/new", ""))
        .expect("no route");
    assert_eq!(r.status, 404, "the pattern covers the whole path: {r:?}");

    // Rewrites and request header transforms, as the backend saw them.
    let r = c
        .exchange(&get(
            "Front.test",
            "/api/users?id=7",
            "X-Debug: 1\r\nX-Client: forged\r\nX-Tag: client\r\n",
        ))
        .expect("forwarded");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = echo(&r.body);
    assert_eq!(seen["id"], "stable");
    assert_eq!(seen["path"], "/users", "{seen}");
    let h = &seen["headers"];
    assert_eq!(h["host"], "internal.test", "{h}");
    assert_eq!(
        h["x-forwarded-host"], "Front.test",
        "the original host: {h}"
    );
    assert_eq!(h["x-client"], "127.0.0.1", "set replaces the client's: {h}");
    assert_eq!(h["x-route"], "stable");
    assert!(h.get("x-debug").is_none(), "removed: {h}");
    assert!(
        h.get("x-cert").is_none(),
        "no client certificate, no header: {h}"
    );
    assert_eq!(h["x-tag"], "client, edge", "add appends: {h}");
    // Response transforms.
    assert_eq!(r.header("x-served-by"), Some("gateway stable"));
    assert_eq!(r.header("x-backend-id"), Some("stable"));
    assert_eq!(r.header("x-backend-zone"), None, "{r:?}");

    // Query condition (case-insensitive, decoded), with a regex rewrite that keeps the
    // query.
    let r = c
        .exchange(&get("h", "/api/users?Version=Beta%2D2", ""))
        .expect("beta");
    let seen = echo(&r.body);
    assert_eq!(seen["id"], "beta", "{seen}");
    assert_eq!(seen["path"], "/beta/users", "{seen}");
    let r = c
        .exchange(&get("h", "/api/users?version=stable", ""))
        .expect("stable");
    assert_eq!(echo(&r.body)["id"], "stable");

    // Source IP: the client address after trusted proxies (the loopback peer is one).
    let r = c
        .exchange(&get("h", "/api/x", "X-Forwarded-For: 192.0.2.9\r\n"))
        .expect("office");
    assert_eq!(echo(&r.body)["id"], "office", "{}", r.body);
    let r = c
        .exchange(&get("h", "/api/x", "X-Forwarded-For: 198.51.100.1\r\n"))
        .expect("stable");
    assert_eq!(echo(&r.body)["id"], "stable", "{}", r.body);

    // The self-answering routes never reached a backend: three backends saw exactly
    // the forwarded requests.
    let counts = (
        stable.stats().await.unwrap().requests,
        beta.stats().await.unwrap().requests,
        office.stats().await.unwrap().requests,
    );
    assert_eq!(counts, (3, 1, 1));
}

#[tokio::test]
async fn invalid_actions_are_refused_with_the_field() {
    let cases = [
        (
            json!({ "name": "r", "redirect": {}, "upstream": "u" }),
            "routes[0].redirect",
        ),
        (json!({ "name": "r", "redirect": {} }), "a loop"),
        (
            json!({ "name": "r", "fixed_response": { "status": 42 } }),
            "routes[0].fixed_response.status",
        ),
        (
            json!({ "name": "r", "upstream": "u", "rewrite": { "path_prefix": "/x" } }),
            "needs the route's match.path_prefix",
        ),
        (
            json!({ "name": "r", "upstream": "u", "request_headers": { "set": { "x": "#{nope}" } } }),
            "unknown placeholder #{nope}",
        ),
        (
            json!({ "name": "r", "upstream": "u", "match": { "source_ip": ["10.1.2.3/8"] } }),
            "did you mean 10.0.0.0/8",
        ),
        (
            json!({ "name": "r", "fixed_response": { "status": 200 }, "rewrite": { "host": "x" } }),
            "routes[0].rewrite",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (route, want) in cases {
        let yaml = GatewayConfig::new()
            .upstream("u", &["127.0.0.1:9".parse().unwrap()])
            .raw_route(route.clone())
            .to_yaml()
            .replace("${LISTEN}", "127.0.0.1:1")
            .replace("${ADMIN}", "127.0.0.1:2");
        let file = dir.path().join("g.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{route} was accepted");
        assert!(err.contains(want), "{route}: {err}");
    }
}
