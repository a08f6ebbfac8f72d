//! Reloads and rotations are transactions: regression tests for three bugs where they
//! were not (issue 14): a rotation written right after start was never served, a
//! refused reload left some listeners on new certificates, and an upstream's TLS
//! could be dropped by a build that could not fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use backends_demo::pki::{CertSpec, Issued, TestCa};
use backends_demo::{free_addr, test_client, wait_until, Backend, Gateway};
use common::tls_backend;
use common::tls_client::{api, tls_get, wait_serial};

mod common;

fn issue(ca: &TestCa, serial: u64) -> Issued {
    ca.issue(&CertSpec::dns(&["api.example.com"]).serial(serial))
        .unwrap()
}

/// Two TLS listeners, `a` on `${LISTEN}` and `b` on `b_addr`, serving the files named.
fn two_listeners(
    dir: &Path,
    b_addr: SocketAddr,
    a_stem: &str,
    b_stem: &str,
    app: SocketAddr,
) -> String {
    let d = dir.display();
    format!(
        r#"
listeners:
  - name: a
    address: "${{LISTEN}}"
    tls: {{ certificates: [{{ cert: {d}/{a_stem}.crt, key: {d}/{a_stem}.key }}] }}
  - name: b
    address: "{b_addr}"
    tls: {{ certificates: [{{ cert: {d}/{b_stem}.crt, key: {d}/{b_stem}.key }}] }}
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: all, upstream: app }}]
upstreams: {{ app: {{ endpoints: [{{ address: {app} }}] }} }}
"#
    )
}

async fn serial(addr: SocketAddr) -> String {
    tls_get(addr, "/", api()).await.unwrap().serial
}

/// A user replaces the key, then the certificate (two separate writes, as
/// `openssl req -newkey ... -keyout` then `openssl x509 -req ... -out` do), within the
/// first second after start. The new pair must be served, and a pair written with a
/// long pause between key and certificate too (refused once, then loaded).
#[tokio::test]
async fn a_key_then_certificate_written_right_after_start_is_served() {
    let ca = TestCa::new("edge-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    issue(&ca, 0x0a01).write(dir.path(), "a").unwrap();
    issue(&ca, 0x0b01).write(dir.path(), "b").unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let b_addr = free_addr("127.0.0.1");
    let gw = Gateway::start(&two_listeners(dir.path(), b_addr, "a", "b", app.addr()))
        .await
        .unwrap();

    let next = issue(&ca, 0x0a02);
    std::fs::write(dir.path().join("a.key"), &next.key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    std::fs::write(dir.path().join("a.crt"), &next.chain_pem).unwrap();
    wait_until(Duration::from_secs(5), || async {
        serial(gw.listen).await == "0a:02"
    })
    .await
    .unwrap_or_else(|_| panic!("rotation right after start never served\n{}", gw.log()));

    // Key now, certificate well after the next look at the files: the half-written
    // pair is refused (and counted), the complete one served.
    let refused = || async {
        gw.metric(
            "gateway_tls_certificate_reloads_total",
            &[("listener", "a"), ("result", "failure")],
        )
        .await
        .unwrap()
    };
    let before = refused().await;
    let next = issue(&ca, 0x0a03);
    std::fs::write(dir.path().join("a.key"), &next.key_pem).unwrap();
    wait_until(Duration::from_secs(5), || async {
        refused().await > before
    })
    .await
    .expect("a key without its certificate is refused");
    assert_eq!(
        serial(gw.listen).await,
        "0a:02",
        "the last good pair keeps serving"
    );
    std::fs::write(dir.path().join("a.crt"), &next.chain_pem).unwrap();
    wait_serial(gw.listen, "0a:03").await;
    assert_eq!(serial(b_addr).await, "0b:01", "listener b untouched");
}

/// A reload whose certificates are fine for listener `a` but broken for `b` is
/// refused as a whole: `a` keeps its old certificate, and rotation keeps watching the
/// files of the running config, not of the refused one.
#[tokio::test]
async fn a_refused_reload_changes_no_listener() {
    let ca = TestCa::new("edge-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    issue(&ca, 0x0a01).write(dir.path(), "a").unwrap();
    issue(&ca, 0x0b01).write(dir.path(), "b").unwrap();
    issue(&ca, 0x0a22).write(dir.path(), "a-new").unwrap();
    std::fs::write(
        dir.path().join("broken.crt"),
        "-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.key"), "nope").unwrap();
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let b_addr = free_addr("127.0.0.1");
    let gw = Gateway::start(&two_listeners(dir.path(), b_addr, "a", "b", app.addr()))
        .await
        .unwrap();
    assert_eq!(serial(gw.listen).await, "0a:01");

    gw.write_config(&two_listeners(
        dir.path(),
        b_addr,
        "a-new",
        "broken",
        app.addr(),
    ))
    .unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 422, "{body}");
    let err = body["error"].as_str().unwrap();
    assert!(
        err.contains("listener b") && err.contains("broken.crt"),
        "{err}"
    );
    assert_eq!(
        serial(gw.listen).await,
        "0a:01",
        "listener a must not change"
    );
    assert_eq!(serial(b_addr).await, "0b:01");

    // The running config names a.crt/a.key: rotating those files is served.
    issue(&ca, 0x0a03).write(dir.path(), "a").unwrap();
    wait_serial(gw.listen, "0a:03").await;

    // Fixing the file applies the whole new config, both listeners at once.
    issue(&ca, 0x0b22).write(dir.path(), "broken").unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(serial(gw.listen).await, "0a:22");
    assert_eq!(serial(b_addr).await, "0b:22");
}

fn tls_upstream_config(backend: SocketAddr, ca: &Path, route: &str) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: {route}, upstream: app }}]
upstreams:
  app:
    endpoints: [{{ address: {backend} }}]
    tls: {{ sni: app.internal, ca: {} }}
    health_check: {{ path: /healthz, interval: 100ms, timeout: 500ms, healthy: 1, unhealthy: 1 }}
"#,
        ca.display()
    )
}

/// An upstream configured with TLS is only ever reached over TLS: when its CA file
/// is unusable at reload time, the reload is refused and the running snapshot keeps
/// its TLS (the backend only speaks TLS, so a plaintext attempt would be a 502).
#[tokio::test]
async fn an_upstream_with_tls_is_never_reached_without_it() {
    let ca = TestCa::new("internal-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.crt");
    ca.write_bundle(&ca_path).unwrap();
    let (_backend, addr) = tls_backend(&ca, dir.path(), "app.internal").await;
    let gw = Gateway::start(&tls_upstream_config(addr, &ca_path, "one"))
        .await
        .unwrap();
    let c = test_client();
    assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);

    // A rotation of the CA bundle caught half-written, with a config change.
    std::fs::write(&ca_path, "-----BEGIN CERTIFICATE-----\ntrunc").unwrap();
    gw.write_config(&tls_upstream_config(addr, &ca_path, "two"))
        .unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("upstream app"),
        "{body}"
    );
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    // Health checks kept TLS too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ups = gw.admin_json("/upstreams").await.unwrap();
    assert_eq!(
        ups["upstreams"][0]["endpoints"][0]["healthy"], true,
        "{ups}"
    );
    let cfg = gw.admin_json("/config").await.unwrap();
    assert_eq!(cfg["routes"][0], "one", "{cfg}");

    // Once the bundle is whole again, the new config goes through.
    ca.write_bundle(&ca_path).unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    let cfg = gw.admin_json("/config").await.unwrap();
    assert_eq!(cfg["routes"][0], "two", "{cfg}");
}
