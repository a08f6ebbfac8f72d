//! TLS termination with real TLS clients (rustls, curl, openssl): SNI, versions, HTTP/2,
//! hot rotation under load, refused replacements, edge mTLS, HTTPS redirect, HSTS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{test_client, wait_until, Backend, Gateway};
use common::tls_backend;
use common::tls_client::{api, tls_get, wait_serial, Client};

mod common;

struct Setup {
    ca: TestCa,
    dir: tempfile::TempDir,
    backend: Backend,
}

async fn setup() -> Setup {
    let ca = TestCa::new("edge-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    ca.issue(&CertSpec::dns(&["api.example.com"]).serial(0x0a01))
        .unwrap()
        .write(dir.path(), "api")
        .unwrap();
    ca.issue(&CertSpec::dns(&["*.shop.example.com"]).rsa().serial(0x0b01))
        .unwrap()
        .write(dir.path(), "shop")
        .unwrap();
    let backend = Backend::builder().id("app").spawn().await.unwrap();
    Setup { ca, dir, backend }
}

fn config(s: &Setup, tls_extra: &str, listeners_extra: &str, route_extra: &str) -> String {
    let d = s.dir.path().display();
    format!(
        r#"
listeners:
  - name: https
    address: "${{LISTEN}}"
    tls:
      certificates:
        - {{ cert: {d}/api.crt, key: {d}/api.key }}
        - {{ cert: {d}/shop.crt, key: {d}/shop.key }}
{tls_extra}
{listeners_extra}
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: all, upstream: app {route_extra} }}]
upstreams: {{ app: {{ endpoints: [{{ address: {} }}] }} }}
"#,
        s.backend.addr()
    )
}

#[tokio::test]
async fn sni_picks_the_certificate_and_no_sni_gets_the_default() {
    let s = setup().await;
    let gw = Gateway::start(&config(
        &s,
        "      default_certificate: api.example.com",
        "",
        "",
    ))
    .await
    .unwrap();
    let api = tls_get(gw.listen, "/", api()).await.unwrap();
    assert_eq!(api.names, ["api.example.com"]);
    assert!(api.response.starts_with("HTTP/1.1 200"), "{}", api.response);
    assert!(
        api.response.contains("\"x-forwarded-proto\":\"https\""),
        "{}",
        api.response
    );
    let shop = tls_get(
        gw.listen,
        "/",
        Client {
            sni: Some("cart.shop.example.com"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(shop.names, ["*.shop.example.com"], "wildcard, RSA key");
    let deeper = tls_get(
        gw.listen,
        "/",
        Client {
            sni: Some("a.b.shop.example.com"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        deeper.names,
        ["api.example.com"],
        "a wildcard covers one label only; default otherwise"
    );
    let none = tls_get(gw.listen, "/", Client::default()).await.unwrap();
    assert_eq!(none.names, ["api.example.com"]);
    assert_eq!(none.version, "TLSv1_3");
    assert!(
        gw.metric("gateway_tls_handshakes_total", &[("listener", "https")])
            .await
            .unwrap()
            >= 4.0
    );
    assert!(
        gw.metric("gateway_tls_certificate_expiry_timestamp_seconds", &[])
            .await
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn versions_and_http2() {
    let s = setup().await;
    // Default: 1.2 and 1.3.
    let gw = Gateway::start(&config(&s, "", "", "")).await.unwrap();
    let t12 = tls_get(
        gw.listen,
        "/",
        Client {
            sni: Some("api.example.com"),
            tls12_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(t12.version, "TLSv1_2");
    // TLS 1.1 and below are never offered (openssl client forced to 1.1).
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &gw.listen.to_string(),
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() || text.contains("Cipher is (NONE)"),
        "TLS 1.1 must fail: {text}"
    );
    // HTTP/2 end to end, with curl verifying the chain and the name.
    let url = format!("https://api.example.com:{}/h2", gw.listen.port());
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2", "--cacert"])
        .arg(s.dir.path().join("ca.crt"))
        .args([
            "--resolve",
            &format!("api.example.com:{}:127.0.0.1", gw.listen.port()),
            "-w",
            "\\n%{http_version}",
            &url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n2"),
        "h2 negotiated: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"path\":\"/h2\""), "{text}");
    drop(gw);

    // min_version 1.3 refuses a 1.2-only client (openssl capped at 1.2 offers no 1.3
    // cipher suite, as every 1.2-only client does).
    let gw = Gateway::start(&config(&s, "      min_version: \"1.3\"", "", ""))
        .await
        .unwrap();
    let s_client = |flag: &str| {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &gw.listen.to_string(),
                "-servername",
                "api.example.com",
                flag,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let t12 = s_client("-tls1_2");
    assert!(
        t12.contains("Cipher is (NONE)") || !t12.contains("BEGIN CERTIFICATE"),
        "1.2 refused: {t12}"
    );
    let t13 = s_client("-tls1_3");
    assert!(t13.contains("TLSv1.3"), "1.3 accepted: {t13}");
    let ok = tls_get(gw.listen, "/", api()).await.unwrap();
    assert_eq!(ok.version, "TLSv1_3");
    assert!(
        gw.metric(
            "gateway_tls_handshakes_refused_total",
            &[("reason", "tls12_refused")]
        )
        .await
        .unwrap()
            >= 1.0
    );
}

fn write_api(s: &Setup, spec: CertSpec) {
    s.ca.issue(&spec)
        .unwrap()
        .write(s.dir.path(), "api")
        .unwrap();
}

#[tokio::test]
async fn rotation_under_load_loses_nothing_and_bad_replacements_are_refused() {
    let s = setup().await;
    let gw = Gateway::start(&config(&s, "", "", "")).await.unwrap();
    let addr = gw.listen;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = tls_get(addr, "/", api()).await;
                    seen.push(r.map(|s| (s.serial, s.response.starts_with("HTTP/1.1 200"))));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rotated = Instant::now();
    write_api(&s, CertSpec::dns(&["api.example.com"]).serial(0x0a02));
    let mut took = None;
    while rotated.elapsed() < Duration::from_secs(5) {
        let r = tls_get(addr, "/", api()).await.unwrap();
        if r.serial == "0a:02" {
            took = Some(rotated.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let failed: Vec<_> = all.iter().filter(|r| !matches!(r, Ok((_, true)))).collect();
    println!(
        "rotation: new serial after {took:?}; {} requests, {} failed",
        all.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(2)),
        "new serial within 2 s: {took:?}"
    );

    // Broken, mismatched and expired replacements: refused, 0a:02 keeps serving.
    let good = std::fs::read(s.dir.path().join("api.crt")).unwrap();
    let cases: Vec<(&str, Box<dyn Fn()>)> = vec![
        (
            "broken",
            Box::new(|| {
                std::fs::write(
                    s.dir.path().join("api.crt"),
                    b"-----BEGIN CERTIFICATE-----\nnope\n",
                )
                .unwrap()
            }),
        ),
        (
            "mismatched key",
            Box::new(|| {
                let other =
                    s.ca.issue(&CertSpec::dns(&["api.example.com"]).serial(0x0a03))
                        .unwrap();
                std::fs::write(s.dir.path().join("api.crt"), other.chain_pem).unwrap();
            }),
        ),
        (
            "expired",
            Box::new(|| {
                write_api(
                    &s,
                    CertSpec::dns(&["api.example.com"]).expired().serial(0x0a04),
                )
            }),
        ),
    ];
    for (what, break_it) in cases {
        let before = gw
            .metric(
                "gateway_tls_certificate_reloads_total",
                &[("result", "failure")],
            )
            .await
            .unwrap();
        break_it();
        wait_until(Duration::from_secs(5), || async {
            gw.metric(
                "gateway_tls_certificate_reloads_total",
                &[("result", "failure")],
            )
            .await
            .unwrap()
                > before
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: refusal not counted\n{}", gw.log()));
        let r = tls_get(addr, "/", api()).await.unwrap();
        assert_eq!(
            r.serial, "0a:02",
            "{what}: the last good certificate keeps serving"
        );
        // Restore the good pair for the next case.
        std::fs::write(s.dir.path().join("api.crt"), &good).unwrap();
        write_api(&s, CertSpec::dns(&["api.example.com"]).serial(0x0a05));
        wait_serial(addr, "0a:05").await;
        // Back to a known serial for the assertion above.
        write_api(&s, CertSpec::dns(&["api.example.com"]).serial(0x0a02));
        wait_serial(addr, "0a:02").await;
    }
    assert!(gw.log().contains("certificate reload refused"));
}

#[tokio::test]
async fn edge_mtls_identity_reaches_the_backend_and_bad_clients_are_refused() {
    let s = setup().await;
    let clients = TestCa::new("clients-ca").unwrap();
    clients
        .write_bundle(&s.dir.path().join("clients.crt"))
        .unwrap();
    let d = s.dir.path().display();
    let gw = Gateway::start(&config(
        &s,
        &format!("      client_auth: {{ mode: required, ca: {d}/clients.crt, identity_header: x-client-id }}"),
        "",
        "",
    ))
    .await
    .unwrap();
    let good = clients
        .issue(&CertSpec::spiffe("spiffe://partner.example/billing"))
        .unwrap();
    let r = tls_get(
        gw.listen,
        "/",
        Client {
            sni: Some("api.example.com"),
            cert: Some(&good),
            extra_headers: "X-Client-Id: forged\r\n",
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.response.starts_with("HTTP/1.1 200"), "{}", r.response);
    assert!(
        r.response
            .contains("\"x-client-id\":\"spiffe://partner.example/billing\""),
        "{}",
        r.response
    );
    assert!(!r.response.contains("forged"));

    let stranger =
        s.ca.issue(&CertSpec::spiffe("spiffe://partner.example/billing"))
            .unwrap();
    for (what, cert) in [("no certificate", None), ("another CA", Some(&stranger))] {
        let r = tls_get(
            gw.listen,
            "/",
            Client {
                sni: Some("api.example.com"),
                cert,
                ..Default::default()
            },
        )
        .await;
        assert!(
            r.is_err() || !r.as_ref().unwrap().response.starts_with("HTTP/1.1 200"),
            "{what}: {r:?}"
        );
    }
    assert_eq!(
        s.backend.stats().await.unwrap().requests,
        1,
        "only the good client got through"
    );
    // Failed handshakes show as started minus completed; refusals have a reason.
    let m = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let gw = &gw;
        async move { gw.metric(name, labels).await.unwrap() }
    };
    let https = &[("listener", "https")];
    // (The readiness probe's bare TCP connect counts as a started handshake too.)
    assert!(m("gateway_tls_handshakes_started_total", https).await >= 3.0);
    assert_eq!(m("gateway_tls_handshakes_total", https).await, 1.0);
    assert_eq!(
        m(
            "gateway_tls_handshakes_refused_total",
            &[("listener", "https"), ("reason", "client_cert_unknown_ca")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn http_listener_redirects_to_https_and_hsts_is_sent() {
    let s = setup().await;
    let plain = backends_demo::free_addr("127.0.0.1");
    let gw = Gateway::start(&config(
        &s,
        "",
        &format!("  - {{ name: http, address: \"{plain}\", redirect_https: true }}"),
        ", hsts: { max_age: 365d, include_subdomains: true }",
    ))
    .await
    .unwrap();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let r = c
        .get(format!("http://{plain}/a/b?c=1"))
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://api.example.com:{}/a/b?c=1", gw.listen.port()).as_str()
    );
    assert_eq!(s.backend.stats().await.unwrap().requests, 0);
    let r = tls_get(gw.listen, "/", api()).await.unwrap();
    assert!(
        r.response
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{}",
        r.response
    );
    let _ = test_client();
}

#[tokio::test]
async fn proxy_protocol_on_a_tls_listener() {
    let s = setup().await;
    let gw = Gateway::start(&config(&s, "    proxy_protocol: true", "", ""))
        .await
        .unwrap();
    let with = |before_tls| Client {
        sni: Some("api.example.com"),
        before_tls,
        ..Default::default()
    };
    let r = tls_get(
        gw.listen,
        "/",
        with(b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 443\r\n"),
    )
    .await
    .unwrap();
    assert!(
        r.response.contains("\"x-forwarded-for\":\"203.0.113.9\""),
        "{}",
        r.response
    );
    assert_eq!(
        r.names,
        ["api.example.com"],
        "SNI still chooses after the header"
    );
    // v2, as AWS NLB sends it (with a TLV).
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x13".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 20, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]);
    v2.extend_from_slice(&[0xEA, 0x00, 0x04, 0x01, b'v', b'p', b'c']);
    let r = tls_get(gw.listen, "/", with(&v2)).await.unwrap();
    assert!(
        r.response.contains("\"x-forwarded-for\":\"198.51.100.20\""),
        "{}",
        r.response
    );
    // A client that starts the handshake without a header is refused.
    assert!(tls_get(gw.listen, "/", api()).await.is_err());
    assert_eq!(
        gw.metric(
            "gateway_proxy_protocol_errors_total",
            &[("listener", "https"), ("reason", "missing")]
        )
        .await
        .unwrap(),
        1.0
    );
    assert_eq!(s.backend.stats().await.unwrap().requests, 2);
}

/// `gateway validate FILE`: exit code and stderr.
fn validate(file: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("validate")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_checks_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("v").unwrap();
    ca.issue(&CertSpec::dns(&["a.example.com"]).expired())
        .unwrap()
        .write(dir.path(), "a")
        .unwrap();
    let file = dir.path().join("g.yaml");
    std::fs::write(
        &file,
        "listeners:\n  - name: https\n    address: 127.0.0.1:8443\n    tls: { certificates: [{ cert: a.crt, key: a.key }] }\n",
    )
    .unwrap();
    let (code, err) = validate(&file);
    assert_eq!(code, Some(1));
    assert!(err.contains("a.crt") && err.contains("expired"), "{err}");
}

/// The shipped TLS example, next to freshly issued certificates, validates.
#[test]
fn the_tls_example_config_validates() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/tls/gateway-tls.yaml");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = TestCa::new("example").unwrap();
    ca.issue(&CertSpec::dns(&["api.example.com"]))
        .unwrap()
        .write(&certs, "api")
        .unwrap();
    ca.issue(&CertSpec::dns(&["*.shop.example.com"]))
        .unwrap()
        .write(&certs, "shop")
        .unwrap();
    TestCa::new("partners")
        .unwrap()
        .write_bundle(&certs.join("partners-ca.crt"))
        .unwrap();
    let file = dir.path().join("gateway-tls.yaml");
    std::fs::copy(&src, &file).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("validate")
        .arg(&file)
        .env_remove("GATEWAY_ZONE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 certificates"));
}

fn upstream_tls_config(backend: SocketAddr, tls: &str) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: all, upstream: app }}]
upstreams:
  app:
    endpoints: [{{ address: {backend} }}]
    tls: {tls}
    health_check: {{ path: /healthz, interval: 100ms, timeout: 500ms, healthy: 1, unhealthy: 1 }}
"#
    )
}

#[tokio::test]
async fn tls_to_upstreams_verifies_the_endpoint_certificate() {
    let ca = TestCa::new("internal-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    let (_backend, addr) = tls_backend(&ca, dir.path(), "app.internal").await;
    let ca_path = dir.path().join("ca.crt").display().to_string();
    let c = test_client();

    // Right name, right CA: proxied over TLS, and health checks speak TLS too.
    let gw = Gateway::start(&upstream_tls_config(
        addr,
        &format!("{{ sni: app.internal, ca: {ca_path} }}"),
    ))
    .await
    .unwrap();
    let r = c.get(gw.url("/over-tls")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("\"id\":\"tls-app\""));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ups = gw.admin_json("/upstreams").await.unwrap();
    assert_eq!(
        ups["upstreams"][0]["endpoints"][0]["healthy"], true,
        "{ups}"
    );
    drop(gw);

    // Wrong name: verification fails, 502, and the health check fails the same way.
    let gw = Gateway::start(&upstream_tls_config(
        addr,
        &format!("{{ sni: other.internal, ca: {ca_path} }}"),
    ))
    .await
    .unwrap();
    assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 502);
    wait_until(Duration::from_secs(3), || async {
        gw.admin_json("/upstreams").await.unwrap()["upstreams"][0]["endpoints"][0]["healthy"]
            == false
    })
    .await
    .unwrap();
    drop(gw);

    // Unknown CA with verify: false is accepted (test setups only).
    let other = TestCa::new("other").unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (_b2, addr2) = tls_backend(&other, d2.path(), "app.internal").await;
    let gw = Gateway::start(&upstream_tls_config(
        addr2,
        "{ sni: app.internal, verify: false }",
    ))
    .await
    .unwrap();
    assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);

    // An unreadable CA is refused by validate with the file named.
    let file = d2.path().join("g.yaml");
    std::fs::write(
        &file,
        "listeners: [{ name: h, address: 127.0.0.1:1 }]\nroutes: [{ name: r, upstream: u }]\nupstreams:\n  u:\n    endpoints: [{ address: 127.0.0.1:2 }]\n    tls: { sni: a.internal, ca: missing-ca.crt }\n",
    )
    .unwrap();
    let (code, err) = validate(&file);
    assert_eq!(code, Some(1));
    assert!(err.contains("missing-ca.crt"), "{err}");
}
