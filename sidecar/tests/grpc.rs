//! gRPC end to end, as a new user would try it: a real gRPC client (Python grpcio) ->
//! sidecar A (outbound) -> mTLS -> sidecar B (inbound) -> a real gRPC server (grpcio,
//! cleartext HTTP/2 as every gRPC server speaks). The client and server are
//! `backends-demo/support/grpc_demo.py` (`backends_demo::grpc`); Debian's
//! `python3-grpcio` (installed by `.ci/test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use backends_demo::grpc::{GrpcServer, Outcome};
use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, Sidecar};
use common::{issue, start_in, A_ID, B_ID};

async fn call(target: SocketAddr, kind: &str, method: &str, args: &[&str]) -> Outcome {
    backends_demo::grpc::call(target, kind, method, args)
        .await
        .unwrap()
}

struct GrpcMesh {
    server: GrpcServer,
    a: Sidecar,
    b: Sidecar,
    /// A's listener for the dependency: what the client calls.
    out: SocketAddr,
    _ca: TestCa,
    _dir: tempfile::TempDir,
}

impl GrpcMesh {
    /// `inbound`: extra lines for B's inbound block; `dependency`: for A's dependency.
    async fn start(inbound: &str, dependency: &str) -> GrpcMesh {
        let server = GrpcServer::start().await.unwrap();
        let ca = TestCa::new("grpc-mesh-ca").unwrap();
        let dir = tempfile::tempdir().unwrap();
        ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
        issue(&ca, dir.path(), "a", CertSpec::spiffe(A_ID));
        issue(&ca, dir.path(), "b", CertSpec::spiffe(B_ID));
        let b_inbound = free_addr("127.0.0.1");
        let out = free_addr("127.0.0.1");
        let b = start_in(
            dir.path(),
            &format!(
                r#"
identity: {{ cert: b.crt, key: b.key, trust_bundle: ca.crt }}
inbound:
  listen: "${{INBOUND}}"
  forward_to: "${{APP}}"
  allow: ["{A_ID}"]
{inbound}
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 2, shutdown: {{ drain_delay: 0s, grace_period: 5s }} }}
"#
            ),
            &[
                ("INBOUND", b_inbound.to_string()),
                ("APP", server.addr.to_string()),
            ],
        )
        .await;
        let a = start_in(
            dir.path(),
            &format!(
                r#"
identity: {{ cert: a.crt, key: a.key, trust_bundle: ca.crt }}
outbound:
  app:
    listen: "${{OUT}}"
    endpoints: ["${{B}}"]
    server_identity: "{B_ID}"
{dependency}
admin: {{ address: "${{ADMIN}}" }}
server: {{ shutdown: {{ drain_delay: 0s, grace_period: 5s }} }}
"#
            ),
            &[("OUT", out.to_string()), ("B", b_inbound.to_string())],
        )
        .await;
        GrpcMesh {
            server,
            a,
            b,
            out,
            _ca: ca,
            _dir: dir,
        }
    }

    async fn call(&self, kind: &str, method: &str, args: &[&str]) -> Outcome {
        call(self.out, kind, method, args).await
    }

    fn logs(&self) -> String {
        format!(
            "A:\n{}\nB:\n{}\nserver:\n{}",
            self.a.log(),
            self.b.log(),
            self.server.log()
        )
    }
}

/// Unary, server-streaming and bidirectional calls with their messages, trailing
/// metadata and statuses, with `app_protocol` left to its default and set to h2c.
#[tokio::test]
async fn unary_server_streaming_and_bidi_calls_through_two_sidecars() {
    for inbound in ["", "  app_protocol: h2c"] {
        let m = GrpcMesh::start(inbound, "").await;

        let o = m
            .call("unary", "/demo.Echo/Unary", &["--payload", "hello"])
            .await;
        assert_eq!(o.code, "OK", "{inbound:?} {o:?}\n{}", m.logs());
        assert_eq!(o.responses, ["hello"]);
        assert_eq!(o.trailing["x-demo-trailer"], "unary", "{o:?}");

        let o = m
            .call(
                "server_stream",
                "/demo.Echo/ServerStream",
                &["--payload", "5"],
            )
            .await;
        assert_eq!(o.code, "OK", "{o:?}");
        assert_eq!(o.responses, ["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]);
        assert_eq!(o.trailing["x-demo-trailer"], "server-stream", "{o:?}");

        // Each message waits for the answer to the one before: nothing may be buffered.
        let o = m
            .call(
                "bidi",
                "/demo.Echo/Bidi",
                &["--payload", "a", "--payload", "b", "--payload", "c"],
            )
            .await;
        assert_eq!(o.code, "OK", "{o:?}\n{}", m.logs());
        assert_eq!(o.responses, ["echo:a", "echo:b", "echo:c"]);
        assert_eq!(o.trailing["x-demo-trailer"], "bidi", "{o:?}");

        // A status of the server's comes back as it was sent.
        let o = m
            .call("unary", "/demo.Echo/NotFound", &["--payload", "order 7"])
            .await;
        assert_eq!(o.code, "NOT_FOUND", "{o:?}");
        assert_eq!(o.details(), "no such thing: order 7");
    }
}

/// Before: "Received http2 header with status: 503", which says nothing of why.
#[tokio::test]
async fn an_open_breaker_is_unavailable_with_its_reason() {
    let m = GrpcMesh::start(
        "",
        "    circuit_breaker: { failure_rate: 50%, min_requests: 3, open_for: 30s, max_open_for: 60s }",
    )
    .await;
    // The server's own UNAVAILABLE goes through until the breaker has seen enough.
    for _ in 0..3 {
        let o = m.call("unary", "/demo.Down/Get", &[]).await;
        assert_eq!(o.code, "UNAVAILABLE", "{o:?}\n{}", m.logs());
        assert_eq!(o.details(), "down for good", "{o:?}");
    }
    let o = m.call("unary", "/demo.Down/Get", &[]).await;
    assert_eq!(o.code, "UNAVAILABLE", "{o:?}");
    assert_eq!(o.details(), "app: circuit breaker open", "{o:?}");
    assert_eq!(o.trailing["x-sidecar-error"], "circuit_open", "{o:?}");
    let pushback: u64 = o.trailing["grpc-retry-pushback-ms"].parse().unwrap();
    assert!((25_000..=30_000).contains(&pushback), "{o:?}");
    assert_eq!(
        m.server.calls("/demo.Down/Get").await.unwrap(),
        3,
        "refused calls never left"
    );
}

#[tokio::test]
async fn a_full_bulkhead_is_resource_exhausted() {
    let m = GrpcMesh::start("", "    max_concurrent: 1").await;
    let out = m.out;
    let slow =
        tokio::spawn(
            async move { call(out, "unary", "/demo.Echo/Slow", &["--payload", "3000"]).await },
        );
    // The slow call holds the only slot once the server has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.server.calls("/demo.Echo/Slow").await.unwrap() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{}", m.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let o = m
        .call("unary", "/demo.Echo/Unary", &["--payload", "x"])
        .await;
    assert_eq!(o.code, "RESOURCE_EXHAUSTED", "{o:?}\n{}", m.logs());
    assert_eq!(
        o.details(),
        "app: bulkhead full: 1 calls already in flight",
        "{o:?}"
    );
    assert_eq!(m.server.calls("/demo.Echo/Unary").await.unwrap(), 0);
    assert_eq!(slow.await.unwrap().code, "OK");
}

/// `app_protocol: http1` is what the inbound side spoke before: a gRPC server cannot
/// answer it, and the caller is told so in gRPC, not with a bare 502.
#[tokio::test]
async fn app_protocol_http1_cannot_reach_a_grpc_server_and_says_so() {
    let m = GrpcMesh::start("  app_protocol: http1", "").await;
    let o = m
        .call("unary", "/demo.Echo/Unary", &["--payload", "x"])
        .await;
    assert_eq!(o.code, "UNAVAILABLE", "{o:?}\n{}", m.logs());
    assert_eq!(o.details(), "local app unavailable", "{o:?}");
    assert_eq!(o.trailing["x-sidecar-error"], "app_unavailable", "{o:?}");
}

/// The seconds the server saw left of the call's deadline when it arrived.
fn time_remaining(o: &Outcome) -> f64 {
    let j: serde_json::Value = serde_json::from_str(&o.responses[0]).unwrap();
    j["time_remaining"].as_f64().unwrap()
}

/// The call's deadline is the sooner of the caller's `grpc-timeout` and the
/// dependency's timeout; the server is told the time left of it, and a deadline that
/// passes in the mesh is DEADLINE_EXCEEDED (before: an HTTP 504, UNAVAILABLE to grpcio).
#[tokio::test]
async fn the_sooner_deadline_is_enforced_and_passed_on() {
    let m = GrpcMesh::start("", "    timeout: 2s").await;
    let slow = |ms: &'static str, timeout: &'static str| {
        let out = m.out;
        async move {
            call(
                out,
                "unary",
                "/demo.Echo/Slow",
                &["--payload", ms, "--timeout", timeout],
            )
            .await
        }
    };
    // The dependency's timeout is the sooner: the server hears of 2s, not 30s.
    // (Margins of a second for the hops on a loaded machine.)
    let o = slow("0", "30").await;
    assert_eq!(o.code, "OK", "{o:?}\n{}", m.logs());
    let left = time_remaining(&o);
    assert!(left > 1.0 && left <= 2.0, "{left} {o:?}");
    // The caller's is the sooner: passed on, less what the hops took.
    let o = slow("0", "1.5").await;
    assert_eq!(o.code, "OK", "{o:?}");
    let left = time_remaining(&o);
    assert!(left > 0.5 && left <= 1.5, "{left} {o:?}");
    // A server slower than the deadline: DEADLINE_EXCEEDED long before the client's own.
    let o = slow("8000", "30").await;
    assert_eq!(o.code, "DEADLINE_EXCEEDED", "{o:?}\n{}", m.logs());
    assert!(o.seconds < 6.0, "{o:?}");
}

/// gRPC's own retry policy, per method: UNAVAILABLE is retried for the methods listed,
/// never for the others (every gRPC call is a POST; only the user knows which are safe).
#[tokio::test]
async fn a_listed_method_is_retried_on_unavailable_and_an_unlisted_one_is_not() {
    let m = GrpcMesh::start(
        "",
        r#"    retry: { attempts: 3, backoff: 1ms..5ms, grpc_methods: ["/demo.Flaky/Get", "/demo.Down/*"] }"#,
    )
    .await;
    // Listed: the first call's UNAVAILABLE is retried, the client sees the second's OK.
    let o = m.call("unary", "/demo.Flaky/Get", &[]).await;
    assert_eq!(o.code, "OK", "{o:?}\n{}", m.logs());
    assert_eq!(o.initial["x-sidecar-retries"], "1", "{o:?}");
    assert_eq!(m.server.calls("/demo.Flaky/Get").await.unwrap(), 2);
    // Unlisted: the client gets the UNAVAILABLE, the server was called once.
    let o = m.call("unary", "/demo.Flaky/Put", &[]).await;
    assert_eq!(o.code, "UNAVAILABLE", "{o:?}");
    assert_eq!(o.details(), "first call of /demo.Flaky/Put fails");
    assert_eq!(m.server.calls("/demo.Flaky/Put").await.unwrap(), 1);
    // Listed by service: tried `attempts` times, then the last answer goes back.
    let o = m.call("unary", "/demo.Down/Put", &[]).await;
    assert_eq!(o.code, "UNAVAILABLE", "{o:?}");
    assert_eq!(o.details(), "down for good");
    assert_eq!(m.server.calls("/demo.Down/Put").await.unwrap(), 3);
}
