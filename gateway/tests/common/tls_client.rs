//! A TLS test client that reports which certificate the gateway served.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backends_demo::pki::Issued;
use backends_demo::wait_until;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client asking for api.example.com.
pub fn api<'a>() -> Client<'a> {
    Client {
        sni: Some("api.example.com"),
        ..Default::default()
    }
}

/// Wait until new handshakes see the certificate with `serial`.
pub async fn wait_serial(addr: SocketAddr, serial: &str) {
    wait_until(Duration::from_secs(5), || async {
        tls_get(addr, "/", api()).await.unwrap().serial == serial
    })
    .await
    .unwrap_or_else(|_| panic!("serial {serial} never served"));
}

/// What a TLS client saw.
#[derive(Debug)]
pub struct Seen {
    pub serial: String,
    pub names: Vec<String>,
    pub version: String,
    #[allow(dead_code)]
    pub alpn: Option<String>,
    pub response: String,
}

#[derive(Default)]
pub struct Client<'a> {
    pub sni: Option<&'a str>,
    pub tls12_only: bool,
    pub cert: Option<&'a Issued>,
    pub extra_headers: &'a str,
    /// Written before the TLS handshake (a PROXY protocol header).
    pub before_tls: &'a [u8],
}

/// One TLS connection, one HTTP/1.1 request. The server certificate is captured, not
/// verified (the tests check which one it is).
pub async fn tls_get(addr: SocketAddr, path: &str, c: Client<'_>) -> Result<Seen, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if c.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(backends_demo::pki::accept_any_server_cert(provider));
    let mut cfg = match c.cert {
        Some(i) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(i.chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tcp.write_all(c.before_tls)
        .await
        .map_err(|e| e.to_string())?;
    let name = match c.sni {
        Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .unwrap();
    let version = format!("{:?}", conn.protocol_version().unwrap());
    let alpn = conn
        .alpn_protocol()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let host = c.sni.unwrap_or("localhost");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{}Connection: close\r\n\r\n",
        c.extra_headers
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let (_, x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let names = x
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Seen {
        serial: x.raw_serial_as_string(),
        names,
        version,
        alpn,
        response: String::from_utf8_lossy(&out).into_owned(),
    })
}
