//! What the gateway does to requests on their way: routing, forwarding headers, retries,
//! timeouts, weighted splits, consistent hashing, DNS discovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use backends_demo::{test_client, wait_until, Backend, Gateway};
use serde_json::Value;

fn base(routes: &str, upstreams: &str) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes:
{routes}
upstreams:
{upstreams}
"#
    )
}

#[tokio::test]
async fn routes_and_forwarding_headers() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    let gw = Gateway::start(&base(
        r#"  - { name: api, upstream: ua, match: { host: api.example.com, path_prefix: /v1/ } }
  - { name: wild, upstream: ub, match: { host: "*.example.com" } }"#,
        &format!(
            "  ua: {{ endpoints: [{{ address: {} }}] }}\n  ub: {{ endpoints: [{{ address: {} }}] }}",
            a.addr(),
            b.addr()
        ),
    ))
    .await
    .unwrap();
    let c = test_client();

    let r = c
        .get(gw.url("/v1/users?x=1"))
        .header("host", "api.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["id"], "a");
    assert_eq!(j["path"], "/v1/users");
    assert_eq!(j["query"], "x=1");
    let h = &j["headers"];
    // The client is not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(
        h["x-request-id"],
        rid.as_str(),
        "same id to the backend and the client"
    );
    assert_eq!(rid.len(), 32);
    let tp = h["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );

    // An incoming request id is kept.
    let r = c
        .get(gw.url("/v1/"))
        .header("host", "api.example.com")
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["headers"]["x-request-id"], "req-123");

    // Wildcard host, and no route at all.
    let r = c
        .get(gw.url("/x"))
        .header("host", "www.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-backend-id"], "b");
    let r = c
        .get(gw.url("/x"))
        .header("host", "example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("no route for host \"example.org\""));
}

#[tokio::test]
async fn retries_on_status_only_for_idempotent_requests() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    // a always answers 503; b is fine.
    a.fault("status=503").await.unwrap();
    let gw = Gateway::start(&base(
        "  - { name: r, upstream: u, retry: { attempts: 3, on: [connect-failure, 503] } }",
        &format!(
            "  u: {{ balance: round_robin, endpoints: [{{ address: {} }}, {{ address: {} }}] }}",
            a.addr(),
            b.addr()
        ),
    ))
    .await
    .unwrap();
    let c = test_client();
    let mut get = BTreeMap::<u16, usize>::new();
    for _ in 0..100 {
        let s = c.get(gw.url("/")).send().await.unwrap().status().as_u16();
        *get.entry(s).or_default() += 1;
    }
    assert_eq!(
        get.get(&200),
        Some(&100),
        "every GET is retried onto b: {get:?}"
    );

    let before = a.stats().await.unwrap().requests + b.stats().await.unwrap().requests;
    let mut post = BTreeMap::<u16, usize>::new();
    for _ in 0..40 {
        let s = c
            .post(gw.url("/"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        *post.entry(s).or_default() += 1;
    }
    let after = a.stats().await.unwrap().requests + b.stats().await.unwrap().requests;
    assert_eq!(
        after - before,
        40,
        "POSTs are never retried on status: {post:?}"
    );
    // Round robin sends every other POST to a, and its 503 goes back to the client.
    assert_eq!(post.get(&503), Some(&20), "{post:?}");
    assert!(
        gw.metric("gateway_retries_total", &[("reason", "5xx")])
            .await
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn read_timeout_gives_504_with_a_reason() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    a.fault("latency=1s").await.unwrap();
    let gw = Gateway::start(&base(
        "  - { name: r, upstream: u, timeouts: { read: 200ms } }",
        &format!("  u: {{ endpoints: [{{ address: {} }}] }}", a.addr()),
    ))
    .await
    .unwrap();
    let r = test_client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("upstream timed out"));
}

#[tokio::test]
async fn connect_failure_is_retried_even_for_post_and_dead_upstream_gives_502() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let dead = backends_demo::free_addr("127.0.0.1");
    let gw = Gateway::start(&base(
        "  - { name: r, upstream: u, retry: { attempts: 2 } }\n  - { name: d, upstream: dead, match: { path_prefix: /dead } }",
        &format!(
            "  u: {{ endpoints: [{{ address: {dead} }}, {{ address: {} }}] }}\n  dead: {{ endpoints: [{{ address: {dead} }}] }}",
            a.addr()
        ),
    ))
    .await
    .unwrap();
    let c = test_client();
    for _ in 0..10 {
        let r = c.post(gw.url("/")).body("payload").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let j: Value = r.json().await.unwrap();
        assert_eq!(
            j["body_bytes"], 7,
            "the body is replayed to the second endpoint"
        );
    }
    let r = c.get(gw.url("/dead")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("upstream connection failed"));
}

#[tokio::test]
async fn weighted_split_and_consistent_hash() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    let h: Vec<Backend> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(
                Backend::builder()
                    .id(&format!("h{i}"))
                    .spawn()
                    .await
                    .unwrap(),
            );
        }
        v
    };
    let hash_eps: String = h
        .iter()
        .map(|b| format!("{{ address: {} }}, ", b.addr()))
        .collect();
    let gw = Gateway::start(&base(
        r#"  - { name: canary, split: [{ upstream: stable, weight: 9 }, { upstream: canary, weight: 1 }], match: { path_prefix: /split } }
  - { name: sticky, upstream: hashed }"#,
        &format!(
            "  stable: {{ endpoints: [{{ address: {} }}] }}\n  canary: {{ endpoints: [{{ address: {} }}] }}\n  hashed: {{ balance: consistent_hash, hash_on: {{ header: x-user }}, endpoints: [{hash_eps}] }}",
            a.addr(),
            b.addr()
        ),
    ))
    .await
    .unwrap();
    let c = test_client();
    let mut n_canary = 0;
    for _ in 0..400 {
        let r = c.get(gw.url("/split")).send().await.unwrap();
        if r.headers()["x-backend-id"] == "b" {
            n_canary += 1;
        }
    }
    assert!(
        (15..=70).contains(&n_canary),
        "~10% to the canary, got {n_canary}/400"
    );

    let mut first = BTreeMap::new();
    for u in 0..30 {
        let r = c
            .get(gw.url("/"))
            .header("x-user", format!("user{u}"))
            .send()
            .await
            .unwrap();
        first.insert(u, r.headers()["x-backend-id"].to_str().unwrap().to_owned());
    }
    let distinct: std::collections::BTreeSet<_> = first.values().collect();
    assert!(distinct.len() >= 2, "keys spread over endpoints: {first:?}");
    for u in 0..30 {
        let r = c
            .get(gw.url("/"))
            .header("x-user", format!("user{u}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["x-backend-id"].to_str().unwrap(),
            first[&u],
            "user{u} is sticky"
        );
    }
}

#[tokio::test]
async fn dns_discovery_finds_endpoints() {
    // `localhost` resolves on every machine; the backend listens on 127.0.0.1.
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let gw = Gateway::start(&base(
        "  - { name: r, upstream: u }",
        &format!(
            "  u: {{ discover: {{ dns: \"localhost:{}\", every: 200ms, zone: z }} }}",
            a.addr().port()
        ),
    ))
    .await
    .unwrap();
    let c = test_client();
    wait_until(Duration::from_secs(5), || async {
        c.get(gw.url("/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .unwrap();
    let ups = gw.admin_json("/upstreams").await.unwrap();
    let eps = ups["upstreams"][0]["endpoints"].as_array().unwrap();
    assert!(
        eps.iter()
            .any(|e| e["address"] == a.addr().to_string() && e["zone"] == "z"),
        "{ups}"
    );
}

#[tokio::test]
async fn h2c_listener_speaks_http2_with_prior_knowledge() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: h2c, address: "${{LISTEN}}", h2c: true }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: r, upstream: u }}]
upstreams: {{ u: {{ endpoints: [{{ address: {} }}] }} }}
"#,
        a.addr()
    ))
    .await
    .unwrap();
    let url = gw.url("/h2");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-w",
                "\\n%{http_version}",
                &url,
            ])
            .output()
    })
    .await
    .unwrap()
    .expect("curl is installed by .ci/test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2"), "HTTP/2 negotiated: {text}");
    assert!(text.contains("\"path\":\"/h2\""), "{text}");
}

/// Regression: `/readyz` answered 200 before Pingora had bound the listeners, so a load
/// balancer (or a test) could connect to a port nobody listened on yet.
#[tokio::test]
async fn ready_means_the_listeners_accept() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    for _ in 0..3 {
        let gw = Gateway::start(&base(
            "  - { name: r, upstream: u }",
            &format!("  u: {{ endpoints: [{{ address: {} }}] }}", a.addr()),
        ))
        .await
        .unwrap();
        // Gateway::start returns the moment /readyz says 200.
        std::net::TcpStream::connect(gw.listen).expect("listener accepts once ready");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_is_counted_not_logged_as_an_error() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::builder().id("slow").spawn().await.unwrap();
    backend.fault("latency=400ms").await.unwrap();
    let gw = Gateway::start(&base(
        "  - { name: all, upstream: slow }",
        &format!(
            "  slow: {{ endpoints: [{{ address: {} }}] }}",
            backend.addr()
        ),
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(gw.listen).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    wait_until(Duration::from_secs(5), || async {
        gw.metric(
            "gateway_requests_total",
            &[("route", "all"), ("status", "error")],
        )
        .await
        .unwrap()
            >= 3.0
    })
    .await
    .expect("the abandoned requests are counted");
    let log = gw.log();
    assert!(
        !log.contains("Downstream ConnectionClosed") && !log.contains("ERROR"),
        "{log}"
    );
}
