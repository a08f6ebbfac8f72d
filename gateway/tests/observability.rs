//! What operators see: access-log lines, metrics and traces, from real processes —
//! a gateway, two sidecars with mTLS between them, backend-demo and a real OTLP
//! receiver (protobuf over HTTP, decoded with `opentelemetry-proto`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use backends_demo::otlp::{OtlpReceiver, ReceivedSpan};
use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, sum_metric, test_client, Backend, Gateway, GatewayConfig, Sidecar};
use serde_json::{json, Value};

async fn wait_for_lines(path: &Path, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "fewer than {n} lines in {}:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// The process's `/metrics` text.
async fn metrics_text(p: &backends_demo::ProxyProc) -> String {
    test_client()
        .get(p.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `promtool`: `$PROMTOOL`, on the PATH, or where `.ci/test` and `deploy/check.sh`
/// extract it from Debian's prometheus package.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return p.into();
    }
    let cached = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/tollgate/promtool/usr/bin/promtool"));
    for p in ["/usr/bin/promtool".into(), "/usr/local/bin/promtool".into()]
        .into_iter()
        .chain(cached)
    {
        if p.exists() {
            return p;
        }
    }
    panic!("promtool not found: run .ci/test (it extracts it from Debian's prometheus package) or set PROMTOOL");
}

/// `promtool check metrics` on an exposition, as Prometheus' own linter sees it.
fn check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn one_access_log_line_per_request_and_metrics_by_route_method_and_zone() {
    let near = Backend::builder()
        .zone("z1")
        .id("near")
        .spawn()
        .await
        .unwrap();
    let far = Backend::builder()
        .zone("z2")
        .id("far")
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = GatewayConfig::new()
        .set("zone", "z1")
        .set(
            "access_log",
            json!({ "enabled": true, "path": log.display().to_string() }),
        )
        .route_with(
            "quiet",
            "api",
            json!({ "match": { "path_prefix": "/quiet" }, "access_log": { "enabled": false } }),
        )
        .route_with("api", "api", json!({ "match": { "host": "api.test" } }))
        .upstream_with(
            "api",
            &[],
            json!({ "balance": "round_robin", "endpoints": [
                { "address": near.addr().to_string(), "zone": "z1" },
                { "address": far.addr().to_string(), "zone": "z2" },
            ]}),
        );
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();
    let c = test_client();
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = format!("req-{i}");
        let r = c
            .post(gw.url("/orders?card=4111"))
            .header("host", "api.test")
            .header("x-request-id", &id)
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-request-id"], id.as_str());
        let echo: Value = r.json().await.unwrap();
        assert_eq!(
            echo["headers"]["x-request-id"],
            id.as_str(),
            "the backend sees the same id"
        );
        ids.push(id);
    }
    // Not logged: the route turns the log off.
    let r = c.get(gw.url("/quiet")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Logged: a refusal is always logged.
    let r = c
        .get(gw.url("/nowhere"))
        .header("host", "other.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let lines = wait_for_lines(&log, 11).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines_now = wait_for_lines(&log, 11).await;
    assert_eq!(lines_now.len(), 11, "{lines_now:#?}");
    let mut zones = std::collections::BTreeSet::new();
    for (line, id) in lines.iter().zip(&ids) {
        assert_eq!(line["request_id"], id.as_str(), "{line}");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["host"], "api.test");
        assert_eq!(
            line["path"], "/orders",
            "no query string by default: {line}"
        );
        assert_eq!(line["route"], "api");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes_in"], 10);
        assert!(line["bytes_out"].as_u64().unwrap() > 100, "{line}");
        assert_eq!(line["upstream"], "api");
        assert_eq!(line["attempts"], 1);
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        let zone = line["zone"].as_str().unwrap();
        assert_eq!(line["cross_zone"], zone == "z2", "{line}");
        assert_eq!(
            line["locality"],
            if zone == "z2" {
                "cross_zone"
            } else {
                "same_zone"
            }
        );
        zones.insert(zone.to_owned());
    }
    assert_eq!(zones.len(), 2, "round robin used both zones");
    let refused = &lines[10];
    assert_eq!(refused["status"], 404);
    assert_eq!(refused["rejection"], "no_route", "{refused}");
    assert!(refused["rejection_detail"]
        .as_str()
        .unwrap()
        .contains("no route"));

    let text = metrics_text(&gw).await;
    let m = |name: &str, labels: &[(&str, &str)]| sum_metric(&text, name, labels);
    assert_eq!(
        m(
            "gateway_requests_total",
            &[("route", "api"), ("method", "POST"), ("status", "2xx")]
        ),
        10.0
    );
    assert_eq!(
        m(
            "gateway_requests_total",
            &[("route", "none"), ("method", "GET"), ("status", "4xx")]
        ),
        1.0
    );
    let same = m(
        "gateway_upstream_requests_total",
        &[("upstream", "api"), ("locality", "same_zone")],
    );
    let cross = m(
        "gateway_upstream_requests_total",
        &[("upstream", "api"), ("locality", "cross_zone")],
    );
    assert_eq!(same + cross, 11.0, "10 api + 1 quiet");
    assert!(same >= 5.0 && cross >= 5.0, "{same} {cross}");
    let sent = m(
        "gateway_upstream_sent_bytes_total",
        &[("upstream", "api"), ("locality", "cross_zone")],
    );
    let received = m(
        "gateway_upstream_received_bytes_total",
        &[("upstream", "api"), ("locality", "cross_zone")],
    );
    // Each request: a head of ~200 bytes plus a 10-byte body; each answer an echo.
    assert!(
        sent > cross * 100.0 && received > cross * 200.0,
        "{sent} {received}"
    );
    assert_eq!(
        m(
            "gateway_upstream_response_duration_seconds_count",
            &[("upstream", "api")]
        ),
        11.0
    );
    assert!(
        text.contains("gateway_in_flight_requests{listener=\"http\"} 0"),
        "in flight by listener, back to 0"
    );
    assert!(
        m(
            "gateway_connections_accepted_total",
            &[("listener", "http")]
        ) >= 1.0
    );
    assert!(text.contains("gateway_connections_open{listener=\"http\"}"));
    assert_eq!(m("gateway_upstream_panic", &[("upstream", "api")]), 0.0);
    assert_eq!(m("access_log_lines_total", &[("result", "written")]), 11.0);
    assert_eq!(m("access_log_lines_total", &[("result", "dropped")]), 0.0);
    assert_eq!(m("config_generation", &[]), 1.0);
    // A refused reload is visible as an increase from 0, not as a new series.
    assert!(
        text.contains("config_reloads_total{result=\"failure\",trigger=\"file\"} 0"),
        "{text}"
    );
    assert_eq!(
        m(
            "gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    check_metrics(&text);
}

fn sidecar_yaml(dir: &Path, me: &str, body: &str, tracing: &str) -> String {
    let d = dir.display();
    format!(
        "identity: {{ cert: {d}/{me}.crt, key: {d}/{me}.key, trust_bundle: {d}/ca.crt }}\n{body}\nadmin: {{ address: \"${{ADMIN}}\" }}\nserver: {{ shutdown: {{ drain_delay: 0s, grace_period: 5s }} }}\n{tracing}\naccess_log: {{ enabled: true, path: {d}/{me}-access.log }}\n"
    )
}

fn by_service<'a>(spans: &'a [ReceivedSpan], service: &str, kind: i32) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.span.kind == kind)
        .unwrap_or_else(|| panic!("no {service} span of kind {kind} in {spans:#?}"))
}

#[tokio::test]
async fn one_trace_from_the_gateway_through_two_sidecars_to_the_backend() {
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let otlp = OtlpReceiver::spawn().await.unwrap();
    let tracing = format!(
        "tracing: {{ otlp_endpoint: \"{}\", sample_ratio: 100%, export_interval: 50ms }}",
        otlp.endpoint()
    );
    let ca = TestCa::new("obs-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    let a_id = "spiffe://test.local/ns/edge/sa/gateway";
    let b_id = "spiffe://test.local/ns/shop/sa/orders";
    ca.issue(&CertSpec::spiffe(a_id))
        .unwrap()
        .write(dir.path(), "a")
        .unwrap();
    ca.issue(&CertSpec::spiffe(b_id))
        .unwrap()
        .write(dir.path(), "b")
        .unwrap();
    let app = Backend::builder().id("orders").spawn().await.unwrap();
    let (b_in, a_out) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let b = Sidecar::start(
        &sidecar_yaml(
            dir.path(),
            "b",
            &format!(
                "inbound: {{ listen: \"{b_in}\", forward_to: \"{}\", allow: [\"{a_id}\"] }}",
                app.addr()
            ),
            &tracing,
        ),
        &[],
    )
    .await
    .unwrap();
    let a = Sidecar::start(
        &sidecar_yaml(
            dir.path(),
            "a",
            &format!("outbound:\n  orders: {{ listen: \"{a_out}\", endpoints: [\"{b_in}\"], server_identity: \"{b_id}\" }}"),
            &tracing,
        ),
        &[],
    )
    .await
    .unwrap();
    let cfg = GatewayConfig::new()
        .route("orders", "orders")
        .upstream("orders", &[a_out])
        .set("tracing", json!({ "otlp_endpoint": otlp.endpoint(), "sample_ratio": "100%", "export_interval": "50ms" }));
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();

    let r = test_client()
        .get(gw.url("/orders/7"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "A:\n{}\nB:\n{}", a.log(), b.log());
    let echo: Value = r.json().await.unwrap();
    let spans = otlp
        .wait_for(Duration::from_secs(10), |s| s.len() >= 4)
        .await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let g_server = by_service(&spans, "gateway", SERVER);
    let g_client = by_service(&spans, "gateway", CLIENT);
    let a_client = by_service(&spans, "sidecar", CLIENT);
    let b_server = by_service(&spans, "sidecar", SERVER);
    let trace = g_server.trace_id();
    for s in [g_client, a_client, b_server] {
        assert_eq!(s.trace_id(), trace, "one trace: {spans:#?}");
    }
    assert_eq!(
        g_server.parent_span_id(),
        "",
        "the gateway started the trace"
    );
    assert_eq!(g_client.parent_span_id(), g_server.span_id());
    assert_eq!(a_client.parent_span_id(), g_client.span_id());
    assert_eq!(b_server.parent_span_id(), a_client.span_id());
    // The backend is told the inbound sidecar's span is its parent.
    let tp = echo["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(tp, format!("00-{trace}-{}-01", b_server.span_id()));
    // HTTP semantic conventions.
    assert_eq!(g_server.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(g_server.attr("http.route").as_deref(), Some("orders"));
    assert_eq!(
        g_server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(g_server.span.name, "GET orders");
    assert_eq!(
        g_client.attr("server.port").as_deref(),
        Some(a_out.port().to_string().as_str())
    );
    assert_eq!(
        a_client.attr("tollgate.dependency").as_deref(),
        Some("orders")
    );
    assert_eq!(b_server.attr("tollgate.caller").as_deref(), Some(a_id));
    for s in &spans {
        assert!(s.span.end_time_unix_nano >= s.span.start_time_unix_nano);
    }

    // The sidecar's access log: one line per outbound call, same ids.
    let lines = wait_for_lines(&dir.path().join("a-access.log"), 1).await;
    assert_eq!(lines[0]["dependency"], "orders");
    assert_eq!(lines[0]["request_id"], "trace-me");
    assert_eq!(lines[0]["trace_id"], trace.as_str());
    assert_eq!(lines[0]["attempts"], 1);
    assert_eq!(lines[0]["status"], 200);

    // A caller that decided not to sample: nothing recorded anywhere, and the
    // decision travels on (flags 00).
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let r = test_client()
        .get(gw.url("/orders/8"))
        .header("traceparent", unsampled)
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    let tp = echo["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && tp.ends_with("-00"),
        "{tp}"
    );
    // A sampled request after it: once its spans are in, the unsampled one's would be too.
    let r = test_client().get(gw.url("/orders/9")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let spans = otlp
        .wait_for(Duration::from_secs(10), |s| s.len() >= 8)
        .await;
    assert_eq!(spans.len(), 8, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|s| s.trace_id() != "0af7651916cd43dd8448eb211c80319c"));
    let text = metrics_text(&gw).await;
    assert_eq!(
        sum_metric(&text, "trace_spans_total", &[("result", "exported")]),
        4.0
    );
    check_metrics(&text);
    let text = metrics_text(&a).await;
    assert_eq!(sum_metric(&text, "sidecar_build_info", &[]), 1.0);
    check_metrics(&text);
}

#[tokio::test]
async fn a_dead_collector_costs_spans_not_requests() {
    let otlp = OtlpReceiver::spawn().await.unwrap();
    otlp.set_failing(true);
    let app = Backend::builder().spawn().await.unwrap();
    let cfg = GatewayConfig::new()
        .route("r", "u")
        .upstream("u", &[app.addr()])
        .set("tracing", json!({ "otlp_endpoint": otlp.endpoint(), "sample_ratio": "100%", "export_interval": "20ms", "max_queue": 4 }));
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();
    let c = test_client();
    for _ in 0..50 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    let metric = |text: &str, r: &str| sum_metric(text, "trace_spans_total", &[("result", r)]);
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(&gw).await;
        if metric(&text, "failed") + metric(&text, "dropped") >= 100.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every span is accounted for: 50 requests, 2 spans each, none exported.
    assert_eq!(
        metric(&text, "failed") + metric(&text, "dropped"),
        100.0,
        "{text}"
    );
    assert_eq!(metric(&text, "exported"), 0.0);
    assert!(otlp.requests() > 0, "the exporter tried");
    assert!(otlp.spans().is_empty());
    assert!(gw.log().contains("trace export to"), "{}", gw.log());
}

/// What clients do every day is not an ERROR: an abandoned TLS handshake and a
/// connection reset halfway through a request head are counted, not logged.
#[tokio::test]
async fn client_noise_is_counted_not_logged_at_error() {
    use tokio::io::AsyncWriteExt;
    let ca = TestCa::new("noise-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .issue(&CertSpec::dns(&["noise.example.com"]))
        .unwrap()
        .write(dir.path(), "noise")
        .unwrap();
    let app = Backend::builder().spawn().await.unwrap();
    let tls_addr = free_addr("127.0.0.1");
    let cfg = GatewayConfig::new()
        .listener(json!({
            "name": "https",
            "address": tls_addr.to_string(),
            "tls": { "certificates": [{ "cert": cert, "key": key }] },
        }))
        .route("r", "u")
        .upstream("u", &[app.addr()]);
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();
    for _ in 0..3 {
        // Not TLS at all, then gone.
        let mut s = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(s);
        // Half a request head, then a reset (SO_LINGER 0), as a crashed client.
        let mut s = tokio::net::TcpStream::connect(gw.listen).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        reset(s);
    }
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(&gw).await;
        let n = |k: &str| sum_metric(&text, "gateway_downstream_errors_total", &[("kind", k)]);
        if n("tls_handshake") >= 3.0 && n("request_read") >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = |k: &str| sum_metric(&text, "gateway_downstream_errors_total", &[("kind", k)]);
    // At least: the gateway's own readiness probe (a connect, then close) is one more.
    assert!(n("tls_handshake") >= 3.0, "{}", gw.log());
    assert_eq!(n("request_read"), 3.0, "{}", gw.log());
    let log = gw.log();
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "no ERROR line for client behaviour:\n{log}"
    );
    // A real request still works and is not counted as noise.
    assert_eq!(
        test_client()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Close with an RST (SO_LINGER 0), as a client that crashes or times out does.
fn reset(s: tokio::net::TcpStream) {
    s.set_zero_linger().unwrap();
    drop(s);
}

#[tokio::test]
async fn the_log_level_comes_from_the_config_and_a_reload_changes_it() {
    let app = Backend::builder().spawn().await.unwrap();
    let cfg = GatewayConfig::new()
        .route("r", "u")
        .upstream("u", &[app.addr()])
        .set("server.log_level", "warn");
    // RUST_LOG, when set, would win over the file.
    let gw = Gateway::start_with_env(&cfg.to_yaml(), &[("RUST_LOG", "")])
        .await
        .unwrap();
    assert_eq!(
        test_client()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        !gw.log().contains("gateway started"),
        "warn hides info:\n{}",
        gw.log()
    );
    gw.write_config(&cfg.set("server.log_level", "info").to_yaml())
        .unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        gw.log().contains("applied"),
        "info shows again:\n{}",
        gw.log()
    );
    // A filter that does not parse is refused like any other bad value.
    gw.write_config(
        &GatewayConfig::new()
            .set("server.log_level", "warn,gateway=loud")
            .to_yaml(),
    )
    .unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("server.log_level"),
        "{body}"
    );
}
