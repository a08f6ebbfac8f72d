//! End to end through two sidecars: HTTP/1.1 and HTTP/2, identities, streaming bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::test_client;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn app_to_app_through_two_sidecars_over_http2_and_http1() {
    for protocol in ["http2", "http1"] {
        let m = Mesh::start(MeshOpts {
            protocol,
            ..Default::default()
        })
        .await;
        let c = test_client();
        let r = c
            .get(m.url("/orders/7?x=1"))
            // An identity header from the caller must not survive.
            .header(
                "x-client-spiffe-id",
                "spiffe://test.local/ns/evil/sa/mallory",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{protocol}");
        let j: Value = r.json().await.unwrap();
        assert_eq!(j["path"], "/orders/7");
        assert_eq!(j["query"], "x=1");
        assert_eq!(j["headers"]["x-client-spiffe-id"], A_ID, "{protocol}: {j}");

        // A 2 MiB body streamed up, and the answer streamed back.
        let body = vec![b'x'; 2 * 1024 * 1024];
        let r = c.post(m.url("/upload")).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let j: Value = r.json().await.unwrap();
        assert_eq!(j["body_bytes"], 2 * 1024 * 1024, "{protocol}");
    }
}

#[tokio::test]
async fn http2_from_the_app_with_prior_knowledge() {
    let m = Mesh::start(MeshOpts::default()).await;
    let url = m.url("/h2");
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
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2"), "{text}");
    assert!(text.contains(A_ID), "{text}");
}

#[tokio::test]
async fn caller_not_on_the_allow_list_gets_403() {
    let m = Mesh::start(MeshOpts {
        a_id: "spiffe://test.local/ns/shop/sa/intruder".into(),
        ..Default::default()
    })
    .await;
    let r = test_client().get(m.url("/")).send().await;
    let r = r.unwrap_or_else(|e| panic!("{e}\nA:\n{}\nB:\n{}", m.a.log(), m.b.log()));
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("is not allowed"));
    assert_eq!(m.app.stats().await.unwrap().requests, 0);
    assert!(
        m.b.metric(
            "sidecar_inbound_refused_total",
            &[("reason", "not_allowed")]
        )
        .await
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn server_with_the_wrong_identity_is_refused_by_the_caller() {
    let m = Mesh::start(MeshOpts {
        expect_b_id: "spiffe://test.local/ns/shop/sa/someone-else".into(),
        ..Default::default()
    })
    .await;
    let r = test_client().get(m.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-sidecar-error"], "peer_identity");
    assert_eq!(m.app.stats().await.unwrap().requests, 0, "nothing was sent");
}

/// Callers B must refuse at the TLS layer: another CA, an expired certificate, no
/// certificate, no TLS at all. (A real sidecar refuses to start with such a
/// certificate, so the bad caller is a bare rustls client.)
#[tokio::test]
async fn bad_callers_are_refused_at_the_handshake() {
    let m = Mesh::start(MeshOpts::default()).await;
    let other = TestCa::new("other-ca").unwrap();
    let cases = [
        (
            "another CA",
            Some(other.issue(&CertSpec::spiffe(A_ID)).unwrap()),
        ),
        (
            "expired",
            Some(m.ca.issue(&CertSpec::spiffe(A_ID).expired()).unwrap()),
        ),
        ("no client certificate", None),
    ];
    for (what, issued) in cases {
        let got = raw_tls_get(m.b_inbound, issued.as_ref()).await;
        assert!(got.is_err(), "{what}: B answered {got:?}");
    }
    // The same client with a good certificate gets through (the harness is sound).
    let good = m.ca.issue(&CertSpec::spiffe(A_ID)).unwrap();
    let ok = raw_tls_get(m.b_inbound, Some(&good)).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

    // Plain text to the mTLS port.
    let r = test_client()
        .get(format!("http://{}/", m.b_inbound))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP must not be answered: {r:?}");
    assert_eq!(
        m.app.stats().await.unwrap().requests,
        1,
        "only the good call arrived"
    );
    assert!(
        m.b.metric("sidecar_inbound_refused_total", &[("reason", "handshake")])
            .await
            .unwrap()
            >= 4.0
    );
}

/// GET / over TLS 1.3 with an optional client certificate; the server certificate is
/// not checked (this client only probes what B accepts).
async fn raw_tls_get(
    addr: std::net::SocketAddr,
    client: Option<&backends_demo::pki::Issued>,
) -> Result<String, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(backends_demo::pki::accept_any_server_cert(provider));
    let mut cfg = match client {
        Some(i) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(i.chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
            let key =
                PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes()).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    // TLS 1.3 reports a refused client certificate on the first read.
    tls.read_to_end(&mut out)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if out.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
