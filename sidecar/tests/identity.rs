//! Workload identity over real TLS handshakes on loopback: mTLS between two stores,
//! refusals, TLS 1.3 with the post-quantum hybrid key exchange, rotation (by reload and
//! by file watch) that leaves established connections alone, and refused rotations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backends_demo::pki::{write_atomic, CertSpec, Issued, TestCa};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, NamedGroup, ProtocolVersion, SignatureScheme};
use sidecar_lib::identity::{self, IdentityStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{client, TlsAcceptor, TlsConnector};
use tollgate_config::sidecar::IdentityPaths;

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const PAYMENTS: &str = "spiffe://cluster.local/ns/shop/sa/payments";

/// One sidecar's identity files in their own directory, and the store loaded from them.
struct Node {
    dir: tempfile::TempDir,
    paths: IdentityPaths,
    store: Arc<IdentityStore>,
}

impl Node {
    fn new(ca: &TestCa, spec: CertSpec) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.issue(&spec).unwrap().write(dir.path(), "tls").unwrap();
        let trust_bundle = dir.path().join("ca.crt");
        ca.write_bundle(&trust_bundle).unwrap();
        let paths = IdentityPaths {
            cert,
            key,
            trust_bundle,
        };
        let store = IdentityStore::load(&paths).unwrap();
        Node { dir, paths, store }
    }

    /// Overwrite the certificate and key, as cert-manager does on renewal.
    fn rotate(&self, issued: &Issued) {
        issued.write(self.dir.path(), "tls").unwrap();
    }
}

/// What the server saw of one accepted connection.
#[derive(Debug)]
struct Accepted {
    peer_id: Option<String>,
    peer_serial: Vec<u8>,
    version: Option<ProtocolVersion>,
    group: Option<NamedGroup>,
    alpn: Option<Vec<u8>>,
}

/// An mTLS echo server taking the store's *current* server config per connection, as
/// the inbound listener does. Every handshake's outcome goes to `seen`.
struct Server {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Result<Accepted, String>>,
}

impl Server {
    async fn start(store: Arc<IdentityStore>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = TlsAcceptor::from(store.server_config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let conn = tls.get_ref().1;
                    let _ = tx.send(Ok(Accepted {
                        peer_id: identity::connection_peer_id(conn),
                        peer_serial: conn
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(serial)
                            .unwrap_or_default(),
                        version: conn.protocol_version(),
                        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
                        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    }));
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Server { addr, seen }
    }

    async fn next(&mut self) -> Result<Accepted, String> {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
            .await
            .expect("server saw no handshake")
            .expect("server stopped")
    }
}

fn serial(cert: &CertificateDer<'_>) -> Vec<u8> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).unwrap();
    x509.raw_serial().to_vec()
}

/// The server's certificate serial as the client saw it.
fn server_serial(tls: &client::TlsStream<TcpStream>) -> Vec<u8> {
    serial(&tls.get_ref().1.peer_certificates().unwrap()[0])
}

async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    // Any name: peers are verified by SPIFFE id, the name only goes out as SNI.
    let name = ServerName::try_from("peer.sidecar.invalid").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// Send bytes and read them back: proves the connection works end to end (with TLS 1.3
/// the client finishes its handshake before the server has checked its certificate).
async fn echo(tls: &mut client::TlsStream<TcpStream>, msg: &[u8]) -> std::io::Result<()> {
    tls.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    assert_eq!(buf, msg);
    Ok(())
}

fn one_byte_serial(n: u8) -> Vec<u8> {
    vec![n]
}

#[tokio::test]
async fn mutual_tls_between_two_identities() {
    let ca = TestCa::new("mesh root").unwrap();
    let payments = Node::new(&ca, CertSpec::spiffe(PAYMENTS).serial(7));
    let frontend = Node::new(&ca, CertSpec::spiffe(FRONTEND).serial(8));
    let mut server = Server::start(payments.store.clone()).await;

    for http2 in [true, false] {
        let config = frontend.store.client_config(PAYMENTS, http2);
        let mut tls = connect(config, server.addr).await.unwrap();
        echo(&mut tls, b"hello").await.unwrap();
        let seen = server.next().await.unwrap();
        assert_eq!(seen.peer_id.as_deref(), Some(FRONTEND));
        assert_eq!(seen.peer_serial, one_byte_serial(8));
        assert_eq!(seen.version, Some(ProtocolVersion::TLSv1_3));
        assert_eq!(seen.group, Some(NamedGroup::X25519MLKEM768));
        let alpn: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
        assert_eq!(seen.alpn.as_deref(), Some(alpn));

        let conn = tls.get_ref().1;
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(
            conn.negotiated_key_exchange_group().map(|g| g.name()),
            Some(NamedGroup::X25519MLKEM768)
        );
        assert_eq!(
            identity::connection_peer_id(conn).as_deref(),
            Some(PAYMENTS)
        );
        assert_eq!(server_serial(&tls), one_byte_serial(7));
    }
}

#[tokio::test]
async fn chains_through_an_intermediate_both_ways() {
    let ca = TestCa::new("mesh root").unwrap();
    let inter = ca.intermediate("mesh issuing").unwrap();
    let payments = Node::new(
        &ca,
        CertSpec::spiffe(PAYMENTS).with_intermediate(&inter).rsa(),
    );
    let frontend = Node::new(&ca, CertSpec::spiffe(FRONTEND).with_intermediate(&inter));
    let mut server = Server::start(payments.store.clone()).await;
    let mut tls = connect(frontend.store.client_config(PAYMENTS, true), server.addr)
        .await
        .unwrap();
    echo(&mut tls, b"via intermediate").await.unwrap();
    assert_eq!(
        server.next().await.unwrap().peer_id.as_deref(),
        Some(FRONTEND)
    );
}

/// Trusts any server: these tests are about the server refusing the client.
#[derive(Debug)]
struct TrustAnyServer;

impl ServerCertVerifier for TrustAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        identity::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client outside the identity store: any certificate (or none), any TLS version.
fn raw_client(
    cert: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(identity::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnyServer));
    let config = match cert {
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// The server must refuse this client: its handshake fails and the client cannot use
/// the connection.
async fn assert_refused(server: &mut Server, client: Arc<ClientConfig>, why: &str) -> String {
    if let Ok(mut tls) = connect(client, server.addr).await {
        assert!(
            echo(&mut tls, b"let me in").await.is_err(),
            "{why}: client could use the connection"
        );
    }
    let err = server
        .next()
        .await
        .expect_err(&format!("{why}: server accepted"));
    eprintln!("{why}: server said: {err}");
    err
}

#[tokio::test]
async fn refuses_unauthenticated_callers() {
    let ca = TestCa::new("mesh root").unwrap();
    let payments = Node::new(&ca, CertSpec::spiffe(PAYMENTS));
    let mut server = Server::start(payments.store.clone()).await;

    let stranger = TestCa::new("someone else's root").unwrap();
    let foreign = stranger.issue(&CertSpec::spiffe(FRONTEND)).unwrap();
    let err = assert_refused(
        &mut server,
        raw_client(Some(&foreign), &[&rustls::version::TLS13]),
        "certificate from another CA",
    )
    .await;
    assert!(err.contains("UnknownIssuer"), "{err}");

    let expired = ca.issue(&CertSpec::spiffe(FRONTEND).expired()).unwrap();
    let err = assert_refused(
        &mut server,
        raw_client(Some(&expired), &[&rustls::version::TLS13]),
        "expired certificate",
    )
    .await;
    assert!(err.to_lowercase().contains("expired"), "{err}");

    let err = assert_refused(
        &mut server,
        raw_client(None, &[&rustls::version::TLS13]),
        "no client certificate",
    )
    .await;
    assert!(err.contains("no certificates"), "{err}");

    let good = ca.issue(&CertSpec::spiffe(FRONTEND)).unwrap();
    assert_refused(
        &mut server,
        raw_client(Some(&good), &[&rustls::version::TLS12]),
        "TLS 1.2",
    )
    .await;

    // Plain text (an HTTP request to the TLS port) is refused too.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    server.next().await.expect_err("plain text accepted");

    // And the good one, same CA, gets in.
    let mut tls = connect(
        raw_client(Some(&good), &[&rustls::version::TLS13]),
        server.addr,
    )
    .await
    .unwrap();
    echo(&mut tls, b"ok").await.unwrap();
    assert!(server.next().await.is_ok());
}

#[tokio::test]
async fn client_refuses_a_server_with_the_wrong_identity() {
    let ca = TestCa::new("mesh root").unwrap();
    let impostor = Node::new(
        &ca,
        CertSpec::spiffe("spiffe://cluster.local/ns/shop/sa/evil"),
    );
    let frontend = Node::new(&ca, CertSpec::spiffe(FRONTEND));
    let mut server = Server::start(impostor.store.clone()).await;

    let err = connect(frontend.store.client_config(PAYMENTS, true), server.addr)
        .await
        .expect_err("sent to the wrong identity");
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err}"));
    assert_eq!(
        *rustls_err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    );
    server
        .next()
        .await
        .expect_err("server side should fail too");

    // A server from another CA is refused even with the right SPIFFE id.
    let stranger = TestCa::new("someone else's root").unwrap();
    let fake = Node::new(&stranger, CertSpec::spiffe(PAYMENTS));
    let server = Server::start(fake.store.clone()).await;
    let err = connect(frontend.store.client_config(PAYMENTS, true), server.addr)
        .await
        .expect_err("trusted a foreign CA");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_configs_are_cached_until_rotation() {
    let ca = TestCa::new("mesh root").unwrap();
    let node = Node::new(&ca, CertSpec::spiffe(FRONTEND));
    let a = node.store.client_config(PAYMENTS, true);
    assert!(Arc::ptr_eq(&a, &node.store.client_config(PAYMENTS, true)));
    assert!(!Arc::ptr_eq(&a, &node.store.client_config(PAYMENTS, false)));
    assert!(!Arc::ptr_eq(&a, &node.store.client_config(FRONTEND, true)));
    node.rotate(&ca.issue(&CertSpec::spiffe(FRONTEND)).unwrap());
    assert!(node.store.reload().unwrap());
    assert!(!Arc::ptr_eq(&a, &node.store.client_config(PAYMENTS, true)));
    // Nothing changed: nothing swapped.
    let s = node.store.server_config();
    assert!(!node.store.reload().unwrap());
    assert!(Arc::ptr_eq(&s, &node.store.server_config()));
}

#[tokio::test]
async fn rotation_applies_to_new_connections_only() {
    let ca = TestCa::new("mesh root").unwrap();
    let payments = Node::new(&ca, CertSpec::spiffe(PAYMENTS).serial(1));
    let frontend = Node::new(&ca, CertSpec::spiffe(FRONTEND).serial(11));
    let mut server = Server::start(payments.store.clone()).await;

    let mut old = connect(frontend.store.client_config(PAYMENTS, true), server.addr)
        .await
        .unwrap();
    echo(&mut old, b"before").await.unwrap();
    assert_eq!(server_serial(&old), one_byte_serial(1));
    assert_eq!(
        server.next().await.unwrap().peer_serial,
        one_byte_serial(11)
    );

    // Both sides rotate.
    payments.rotate(&ca.issue(&CertSpec::spiffe(PAYMENTS).serial(2)).unwrap());
    frontend.rotate(&ca.issue(&CertSpec::spiffe(FRONTEND).serial(12)).unwrap());
    assert!(payments.store.reload().unwrap());
    assert!(frontend.store.reload().unwrap());
    assert_eq!(payments.store.status()["serial"], "02");

    let mut new = connect(frontend.store.client_config(PAYMENTS, true), server.addr)
        .await
        .unwrap();
    echo(&mut new, b"after").await.unwrap();
    assert_eq!(server_serial(&new), one_byte_serial(2));
    assert_eq!(
        server.next().await.unwrap().peer_serial,
        one_byte_serial(12)
    );

    // The connection made before the rotation is untouched.
    echo(&mut old, b"still here").await.unwrap();
    assert_eq!(server_serial(&old), one_byte_serial(1));
}

#[tokio::test]
async fn trust_bundle_rotation_admits_a_new_ca() {
    let old_ca = TestCa::new("old root").unwrap();
    let new_ca = TestCa::new("new root").unwrap();
    let payments = Node::new(&old_ca, CertSpec::spiffe(PAYMENTS));
    let mut server = Server::start(payments.store.clone()).await;
    let caller = new_ca.issue(&CertSpec::spiffe(FRONTEND)).unwrap();
    let client = raw_client(Some(&caller), &[&rustls::version::TLS13]);

    assert_refused(&mut server, client.clone(), "CA not trusted yet").await;
    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    write_atomic(&payments.paths.trust_bundle, bundle.as_bytes()).unwrap();
    assert!(payments.store.reload().unwrap());
    assert_eq!(payments.store.status()["trust_bundle_certs"], 2);
    let mut tls = connect(client, server.addr).await.unwrap();
    echo(&mut tls, b"now trusted").await.unwrap();
    assert_eq!(
        server.next().await.unwrap().peer_id.as_deref(),
        Some(FRONTEND)
    );
}

#[tokio::test]
async fn bad_rotations_are_refused_and_the_old_identity_keeps_serving() {
    let ca = TestCa::new("mesh root").unwrap();
    let payments = Node::new(&ca, CertSpec::spiffe(PAYMENTS).serial(1));
    let frontend = Node::new(&ca, CertSpec::spiffe(FRONTEND));
    let mut server = Server::start(payments.store.clone()).await;
    let paths = &payments.paths;
    let good = ca.issue(&CertSpec::spiffe(PAYMENTS).serial(2)).unwrap();
    let other = ca.issue(&CertSpec::spiffe(PAYMENTS).serial(3)).unwrap();
    let expired = ca
        .issue(&CertSpec::spiffe(PAYMENTS).serial(4).expired())
        .unwrap();

    type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>, String);
    let breakages: Vec<Breakage<'_>> = vec![
        (
            "broken cert",
            Box::new(|| write_atomic(&paths.cert, b"-----BEGIN CERTIFICATE-----\nnope\n").unwrap()),
            format!("cert {}: malformed PEM", paths.cert.display()),
        ),
        (
            "mismatched key",
            Box::new(|| {
                write_atomic(&paths.cert, good.chain_pem.as_bytes()).unwrap();
                write_atomic(&paths.key, other.key_pem.as_bytes()).unwrap();
            }),
            format!(
                "key {} does not match certificate {}",
                paths.key.display(),
                paths.cert.display()
            ),
        ),
        (
            "expired cert",
            Box::new(|| payments.rotate(&expired)),
            format!("cert {}: expired on ", paths.cert.display()),
        ),
        (
            "empty trust bundle",
            Box::new(|| {
                payments.rotate(&good);
                write_atomic(&paths.trust_bundle, b"").unwrap();
            }),
            format!(
                "trust bundle {}: file is empty",
                paths.trust_bundle.display()
            ),
        ),
    ];
    let before = metric("sidecar_identity_reloads_total{result=\"failure\"}");
    for (what, break_it, message) in &breakages {
        break_it();
        let err = payments.store.reload().expect_err(what).to_string();
        assert!(err.starts_with(message), "{what}: {err}");
        let status = payments.store.status();
        assert_eq!(status["last_reload_error"], err, "{what}");
        assert_eq!(status["serial"], "01", "{what}");

        let mut tls = connect(frontend.store.client_config(PAYMENTS, true), server.addr)
            .await
            .unwrap();
        echo(&mut tls, what.as_bytes()).await.unwrap();
        assert_eq!(server_serial(&tls), one_byte_serial(1), "{what}");
        assert!(server.next().await.is_ok());
    }
    assert!(metric("sidecar_identity_reloads_total{result=\"failure\"}") >= before + 4.0);

    // Fixed: the good rotation goes through and the error clears.
    ca.write_bundle(&paths.trust_bundle).unwrap();
    assert!(payments.store.reload().unwrap());
    let status = payments.store.status();
    assert_eq!(status["serial"], "02");
    assert!(status["last_reload_error"].is_null());
    assert_eq!(status["spiffe_id"], PAYMENTS);
    assert_eq!(
        metric("sidecar_identity_cert_expiry_timestamp_seconds") as i64,
        payments.store.not_after_unix()
    );
}

/// A sample's value in the Prometheus text output, 0 when absent.
fn metric(series: &str) -> f64 {
    tollgate_config::metrics::encode_text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn watch_picks_up_a_rename_over_within_two_seconds() {
    let ca = TestCa::new("mesh root").unwrap();
    let payments = Node::new(&ca, CertSpec::spiffe(PAYMENTS).serial(1));
    let frontend = Node::new(&ca, CertSpec::spiffe(FRONTEND));
    let _watch = payments.store.watch().unwrap();
    let server = Server::start(payments.store.clone()).await;

    // Issued::write renames a temporary file over each target.
    let started = Instant::now();
    payments.rotate(&ca.issue(&CertSpec::spiffe(PAYMENTS).serial(2)).unwrap());
    while payments.store.status()["serial"] != "02" {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "rotation not seen within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tls = connect(frontend.store.client_config(PAYMENTS, true), server.addr)
        .await
        .unwrap();
    assert_eq!(server_serial(&tls), one_byte_serial(2));

    // A broken write is noticed and refused, and the status says so.
    write_atomic(&payments.paths.key, b"oops").unwrap();
    let started = Instant::now();
    while payments.store.status()["last_reload_error"].is_null() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "broken key not seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(payments.store.status()["serial"], "02");
}

#[tokio::test]
async fn watch_follows_a_kubernetes_secret_volume_swap() {
    // kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..2026_01_01 (a directory);
    // an update writes a new directory and renames a new ..data link over the old one.
    let ca = TestCa::new("mesh root").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, serial: u64| {
        let v = dir.path().join(name);
        std::fs::create_dir(&v).unwrap();
        let leaf = ca
            .issue(&CertSpec::spiffe(PAYMENTS).serial(serial))
            .unwrap();
        leaf.write(&v, "tls").unwrap();
        ca.write_bundle(&v.join("ca.crt")).unwrap();
    };
    version("..2026_01_01", 1);
    std::os::unix::fs::symlink("..2026_01_01", dir.path().join("..data")).unwrap();
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.path().join(f)).unwrap();
    }
    let paths = IdentityPaths {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        trust_bundle: dir.path().join("ca.crt"),
    };
    let store = IdentityStore::load(&paths).unwrap();
    let _watch = store.watch().unwrap();
    assert_eq!(store.status()["serial"], "01");

    version("..2026_02_01", 2);
    std::os::unix::fs::symlink("..2026_02_01", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    let started = Instant::now();
    while store.status()["serial"] != "02" {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "swap not seen within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.status()["last_reload_error"].is_null());
}

#[test]
fn pki_output_parses_back() {
    use x509_parser::extensions::GeneralName;
    let ca = TestCa::new("mesh root").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let parse = |pem: &str| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    };

    let root = &parse(&ca.cert_pem())[0];
    let (_, root) = x509_parser::parse_x509_certificate(root).unwrap();
    assert!(root.is_ca());
    assert_eq!(root.subject(), root.issuer());

    let leaf = ca
        .issue(
            &CertSpec::dns(&["api.example.com", "*.example.com"])
                .valid_for(Duration::from_secs(3600))
                .serial(0x1234),
        )
        .unwrap();
    let der = &parse(&leaf.cert_pem)[0];
    let (_, x509) = x509_parser::parse_x509_certificate(der).unwrap();
    let sans: Vec<String> = x509
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other}"),
        })
        .collect();
    assert_eq!(sans, ["api.example.com", "*.example.com"]);
    assert!(!x509.is_ca());
    assert_eq!(x509.raw_serial(), [0x12, 0x34]);
    assert_eq!(x509.issuer(), root.subject());
    let validity = x509.validity();
    assert!(validity.not_before.timestamp() <= now);
    assert!((validity.not_after.timestamp() - (now + 3600)).abs() <= 5);
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);

    let spiffe = parse(&ca.issue(&CertSpec::spiffe(FRONTEND)).unwrap().cert_pem);
    let (_, x509) = x509_parser::parse_x509_certificate(&spiffe[0]).unwrap();
    assert_eq!(
        identity::peer_spiffe_id(&spiffe[0]).as_deref(),
        Some(FRONTEND)
    );
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);

    let expired = parse(
        &ca.issue(&CertSpec::spiffe(FRONTEND).expired())
            .unwrap()
            .cert_pem,
    );
    let (_, x509) = x509_parser::parse_x509_certificate(&expired[0]).unwrap();
    assert!(x509.validity().not_after.timestamp() < now);
    let later = parse(
        &ca.issue(&CertSpec::spiffe(FRONTEND).not_yet_valid())
            .unwrap()
            .cert_pem,
    );
    let (_, x509) = x509_parser::parse_x509_certificate(&later[0]).unwrap();
    assert!(x509.validity().not_before.timestamp() > now);

    let inter = ca.intermediate("issuing").unwrap();
    let chained = ca
        .issue(&CertSpec::spiffe(FRONTEND).with_intermediate(&inter).rsa())
        .unwrap();
    let chain = parse(&chained.chain_pem);
    assert_eq!(chain.len(), 2);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, mid) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
    assert_eq!(leaf.issuer(), mid.subject());
    assert_eq!(mid.issuer(), root.subject());
    assert!(mid.is_ca());
    assert_eq!(
        leaf.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
    );
}
