//! gRPC through the gateway with real processes: a grpcio client -> the gateway (h2c
//! listener, or TLS listener with HTTP/2) -> grpcio servers (h2c, or h2 over TLS).
//! Client and server are `backends-demo/support/grpc_demo.py` (Debian's python3-grpcio).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use backends_demo::grpc::{call, GrpcServer, Outcome};
use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, wait_until, Gateway};
use serde_json::Value;

/// A gateway with one h2c listener (`gw.listen`) in front of `upstream` (YAML of the
/// upstream's body), with `route_extra` on its one route.
async fn gateway(upstream: &str, route_extra: &str, listeners_extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
listeners:
  - {{ name: h2c, address: "${{LISTEN}}", h2c: true }}
{listeners_extra}
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 2 }}
routes: [{{ name: grpc, upstream: app {route_extra} }}]
upstreams:
  app:
{upstream}
"#
    ))
    .await
    .unwrap()
}

fn h2c_upstream(servers: &[&GrpcServer], extra: &str) -> String {
    let eps: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address: \"{}\" }}", s.addr))
        .collect();
    format!(
        "    protocol: h2c\n    endpoints: [{}]\n{extra}",
        eps.join(", ")
    )
}

async fn assert_calls_work(target: SocketAddr, tls: &[&str], logs: &dyn Fn() -> String) {
    let args = |extra: &[&'static str]| -> Vec<String> {
        tls.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |kind: &'static str, method: &'static str, extra: &[&'static str]| {
        let a = args(extra);
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            call(target, kind, method, &a).await.unwrap()
        }
    };
    let o = run("unary", "/demo.Echo/Unary", &["--payload", "hello"]).await;
    assert_eq!(o.code, "OK", "{o:?}\n{}", logs());
    assert_eq!(o.responses, ["hello"]);
    // The server's trailing metadata comes through with its grpc-status.
    assert_eq!(o.trailing["x-demo-trailer"], "unary", "{o:?}");

    let o = run(
        "server_stream",
        "/demo.Echo/ServerStream",
        &["--payload", "5"],
    )
    .await;
    assert_eq!(o.code, "OK", "{o:?}\n{}", logs());
    assert_eq!(o.responses, ["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]);
    assert_eq!(o.trailing["x-demo-trailer"], "server-stream", "{o:?}");

    // Each message waits for the answer to the one before: nothing may be buffered.
    let o = run(
        "bidi",
        "/demo.Echo/Bidi",
        &["--payload", "a", "--payload", "b", "--payload", "c"],
    )
    .await;
    assert_eq!(o.code, "OK", "{o:?}\n{}", logs());
    assert_eq!(o.responses, ["echo:a", "echo:b", "echo:c"]);
    assert_eq!(o.trailing["x-demo-trailer"], "bidi", "{o:?}");

    // A status of the server's, trailers-only, comes back as it was sent.
    let o = run("unary", "/demo.Echo/NotFound", &["--payload", "order 7"]).await;
    assert_eq!(o.code, "NOT_FOUND", "{o:?}");
    assert_eq!(o.details(), "no such thing: order 7");
}

/// h2c all the way: client -> h2c listener -> `protocol: h2c` upstream.
#[tokio::test]
async fn unary_streaming_and_bidi_calls_over_h2c() {
    let server = GrpcServer::start().await.unwrap();
    let gw = gateway(&h2c_upstream(&[&server], ""), "", "").await;
    let logs = || format!("gateway:\n{}\nserver:\n{}", gw.log(), server.log());
    assert_calls_work(gw.listen, &[], &logs).await;
}

/// TLS all the way: client -> TLS listener offering h2 -> `protocol: h2` upstream over
/// TLS (ALPN), each side with its certificate from a throwaway CA.
#[tokio::test]
async fn unary_streaming_and_bidi_calls_over_tls_and_h2() {
    let ca = TestCa::new("grpc-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca.write_bundle(&d.join("ca.crt")).unwrap();
    ca.issue(&CertSpec::dns(&["grpc.example.com"]))
        .unwrap()
        .write(d, "edge")
        .unwrap();
    ca.issue(&CertSpec::dns(&["backend.example.com"]))
        .unwrap()
        .write(d, "backend")
        .unwrap();
    let server = GrpcServer::start_with(
        "127.0.0.1",
        "tls",
        Some((&d.join("backend.crt"), &d.join("backend.key"))),
    )
    .await
    .unwrap();
    let tls_listen = free_addr("127.0.0.1");
    let dd = d.display();
    let gw = gateway(
        &format!(
            "    protocol: h2\n    tls: {{ sni: backend.example.com, ca: {dd}/ca.crt }}\n    endpoints: [{{ address: \"{}\" }}]\n",
            server.addr
        ),
        "",
        &format!(
            "  - name: https\n    address: \"{tls_listen}\"\n    tls: {{ certificates: [{{ cert: {dd}/edge.crt, key: {dd}/edge.key }}], http2: true }}"
        ),
    )
    .await;
    let logs = || format!("gateway:\n{}\nserver:\n{}", gw.log(), server.log());
    let ca_path = d.join("ca.crt").display().to_string();
    let tls: [&str; 4] = ["--root-cert", &ca_path, "--authority", "grpc.example.com"];
    assert_calls_work(tls_listen, &tls, &logs).await;
}

/// gRPC's retry policy, per method, as the sidecar's: a trailers-only UNAVAILABLE is
/// retried for the methods listed in `retry.grpc_methods`, never for the others.
#[tokio::test]
async fn unavailable_is_retried_for_a_listed_method_and_not_for_an_unlisted_one() {
    let server = GrpcServer::start().await.unwrap();
    let gw = gateway(
        &h2c_upstream(&[&server], ""),
        r#", retry: { attempts: 3, grpc_methods: ["/demo.Flaky/Get", "/demo.Down/*"] }"#,
        "",
    )
    .await;
    let logs = || format!("gateway:\n{}\nserver:\n{}", gw.log(), server.log());
    // Listed: the first call's UNAVAILABLE is retried, the client sees the second's OK.
    let o = call(gw.listen, "unary", "/demo.Flaky/Get", &[])
        .await
        .unwrap();
    assert_eq!(o.code, "OK", "{o:?}\n{}", logs());
    assert_eq!(server.calls("/demo.Flaky/Get").await.unwrap(), 2);
    // Unlisted: the client gets the UNAVAILABLE, the server was called once.
    let o = call(gw.listen, "unary", "/demo.Flaky/Put", &[])
        .await
        .unwrap();
    assert_eq!(o.code, "UNAVAILABLE", "{o:?}");
    assert_eq!(o.details(), "first call of /demo.Flaky/Put fails");
    assert_eq!(server.calls("/demo.Flaky/Put").await.unwrap(), 1);
    // Listed by service: tried `attempts` times, then the last answer goes back.
    let o = call(gw.listen, "unary", "/demo.Down/Put", &[])
        .await
        .unwrap();
    assert_eq!(o.code, "UNAVAILABLE", "{o:?}");
    assert_eq!(o.details(), "down for good");
    assert_eq!(server.calls("/demo.Down/Put").await.unwrap(), 3);
    let retries = gw
        .metric(
            "gateway_retries_total",
            &[("route", "grpc"), ("reason", "grpc")],
        )
        .await
        .unwrap();
    assert_eq!(retries, 3.0, "one for Flaky/Get, two for Down/Put");

    // Outlier detection's reading of the same calls: every UNAVAILABLE was a failure of
    // the endpoint; a NOT_FOUND is an answer, and a stream's OK comes in its trailers.
    let o = call(
        gw.listen,
        "unary",
        "/demo.Echo/NotFound",
        &["--payload", "x"],
    )
    .await
    .unwrap();
    assert_eq!(o.code, "NOT_FOUND", "{o:?}");
    let o = call(
        gw.listen,
        "server_stream",
        "/demo.Echo/ServerStream",
        &["--payload", "2"],
    )
    .await
    .unwrap();
    assert_eq!(o.code, "OK", "{o:?}");
    let attempts = |outcome: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(
                "gateway_upstream_attempts_total",
                &[("upstream", "app"), ("outcome", outcome)],
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(attempts("failure").await, 5.0, "{}", logs());
    assert_eq!(attempts("success").await, 3.0, "{}", logs());
}

async fn healthy(gw: &Gateway, addr: SocketAddr) -> Option<bool> {
    let ups: Value = gw.admin_json("/upstreams").await.ok()?;
    ups["upstreams"][0]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == addr.to_string())?["healthy"]
        .as_bool()
}

async fn whoami(gw: &Gateway) -> Outcome {
    call(gw.listen, "unary", "/demo.Echo/Whoami", &[])
        .await
        .unwrap()
}

/// `health_check.grpc`: grpc.health.v1.Health/Check over h2c; NOT_SERVING takes the
/// endpoint out of rotation, SERVING brings it back.
#[tokio::test]
async fn a_grpc_health_check_marks_a_not_serving_endpoint_unhealthy() {
    let a = GrpcServer::start_with("127.0.0.1", "a", None)
        .await
        .unwrap();
    let b = GrpcServer::start_with("127.0.0.1", "b", None)
        .await
        .unwrap();
    let gw = gateway(
        &h2c_upstream(
            &[&a, &b],
            "    health_check: { grpc: { service: demo.Echo }, interval: 100ms, timeout: 2s, healthy: 1, unhealthy: 1 }\n",
        ),
        "",
        "",
    )
    .await;
    let logs = || format!("gateway:\n{}\nb:\n{}", gw.log(), b.log());
    wait_until(Duration::from_secs(20), || async {
        healthy(&gw, a.addr).await == Some(true) && healthy(&gw, b.addr).await == Some(true)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert!(b.calls("/grpc.health.v1.Health/Check").await.unwrap() > 0);

    b.set_serving(false).await.unwrap();
    wait_until(Duration::from_secs(20), || async {
        healthy(&gw, b.addr).await == Some(false)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(healthy(&gw, a.addr).await, Some(true));
    for _ in 0..6 {
        let o = whoami(&gw).await;
        assert_eq!(o.code, "OK", "{o:?}");
        assert_eq!(o.responses, ["a"], "{o:?}");
    }
    assert!(gw.log().contains("NOT_SERVING"), "{}", logs());

    b.set_serving(true).await.unwrap();
    wait_until(Duration::from_secs(20), || async {
        healthy(&gw, b.addr).await == Some(true)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
}

/// The seconds the server saw left of the call's deadline when it arrived.
fn time_remaining(o: &Outcome) -> f64 {
    let j: Value = serde_json::from_str(&o.responses[0]).unwrap();
    j["time_remaining"].as_f64().unwrap()
}

/// The call's deadline is the sooner of the route's `timeouts.request` and the caller's
/// `grpc-timeout`; the server hears of it, and one that passes in the gateway is
/// DEADLINE_EXCEEDED (a gRPC answer, not an HTTP 504). The gateway's other own
/// answers to gRPC callers are gRPC too.
#[tokio::test]
async fn the_sooner_deadline_is_passed_on_and_enforced_as_deadline_exceeded() {
    let server = GrpcServer::start().await.unwrap();
    let gw = gateway(
        &h2c_upstream(&[&server], ""),
        ", timeouts: { request: 2s }, match: { path_prefix: /demo.Echo/ }",
        "",
    )
    .await;
    let logs = || format!("gateway:\n{}\nserver:\n{}", gw.log(), server.log());
    let slow = |ms: &'static str, timeout: &'static str| {
        let target = gw.listen;
        async move {
            call(
                target,
                "unary",
                "/demo.Echo/Slow",
                &["--payload", ms, "--timeout", timeout],
            )
            .await
            .unwrap()
        }
    };
    // The route's is the sooner: the server hears of (at most) 2s, not 30s.
    let o = slow("0", "30").await;
    assert_eq!(o.code, "OK", "{o:?}\n{}", logs());
    let left = time_remaining(&o);
    assert!(left > 0.0 && left <= 2.0, "{left} {o:?}");
    // The caller's is the sooner: passed on as it is, less what the hop took.
    let o = slow("0", "1.5").await;
    assert_eq!(o.code, "OK", "{o:?}");
    let left = time_remaining(&o);
    assert!(left > 0.0 && left <= 1.5, "{left} {o:?}");
    // A server slower than the route's deadline: DEADLINE_EXCEEDED long before the
    // client's own 30s. (The server was told the deadline, so either it or the gateway
    // may be the one that ends the call.)
    let o = slow("8000", "30").await;
    assert_eq!(o.code, "DEADLINE_EXCEEDED", "{o:?}\n{}", logs());
    assert!(o.seconds < 6.0, "{o:?}");

    // No route for the method: UNIMPLEMENTED, as a gRPC server says of a method it
    // does not have.
    let o = call(gw.listen, "unary", "/other.Service/Get", &[])
        .await
        .unwrap();
    assert_eq!(o.code, "UNIMPLEMENTED", "{o:?}");
    assert!(o.details().starts_with("no route for host"), "{o:?}");
    assert!(o.trailing.contains_key("x-request-id"), "{o:?}");
}

/// A timeout only the gateway knows of (the route's read timeout, not passed on as a
/// deadline): the caller gets the gateway's own DEADLINE_EXCEEDED, with its reason.
#[tokio::test]
async fn a_timeout_in_the_gateway_is_deadline_exceeded_with_its_reason() {
    let server = GrpcServer::start().await.unwrap();
    let gw = gateway(
        &h2c_upstream(&[&server], ""),
        ", timeouts: { read: 1s }",
        "",
    )
    .await;
    let o = call(
        gw.listen,
        "unary",
        "/demo.Echo/Slow",
        &["--payload", "8000", "--timeout", "30"],
    )
    .await
    .unwrap();
    assert_eq!(o.code, "DEADLINE_EXCEEDED", "{o:?}\n{}", gw.log());
    assert_eq!(o.details(), "upstream timed out", "{o:?}");
    assert!(o.trailing.contains_key("x-request-id"), "{o:?}");
}
