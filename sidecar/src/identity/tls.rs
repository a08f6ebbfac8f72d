//! The sidecar's TLS: aws-lc-rs with the post-quantum hybrid key exchange preferred,
//! TLS 1.3 only, mTLS both ways, and peers identified by SPIFFE id instead of DNS name.

use std::sync::{Arc, LazyLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    verify_server_cert_signed_by_trust_anchor, ResolvesClientCert, WantsClientCert,
};
use rustls::crypto::{aws_lc_rs, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, Error, RootCertStore,
    ServerConfig, SignatureScheme,
};

use super::load::{peer_spiffe_id, IdentityError, Material};

/// ALPN between sidecars: HTTP/2 preferred, HTTP/1.1 accepted.
const ALPN_SERVER: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// rustls's aws-lc-rs provider with key exchange limited to X25519MLKEM768 (post-quantum
/// hybrid, preferred), X25519, then P-256. Always passed explicitly to config builders:
/// the gateway in the same workspace installs ring's as the process default.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> = LazyLock::new(|| {
        use aws_lc_rs::kx_group::{SECP256R1, X25519, X25519MLKEM768};
        Arc::new(CryptoProvider {
            kx_groups: vec![X25519MLKEM768, X25519, SECP256R1],
            ..aws_lc_rs::default_provider()
        })
    });
    PROVIDER.clone()
}

/// The inbound configuration: TLS 1.3, a client certificate required and chained to
/// the trust bundle, ALPN `h2` and `http/1.1`. Who may call what is decided later, per
/// request, from [`super::peer_spiffe_id`].
pub(super) fn server_config(
    m: &Material,
    provider: &Arc<CryptoProvider>,
) -> Result<ServerConfig, IdentityError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(m.roots.clone(), provider.clone())
        .build()
        .map_err(|e| IdentityError::Tls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| IdentityError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(m.certified_key.clone())));
    config.alpn_protocols = ALPN_SERVER.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// What every client configuration starts from, validated once per identity so that
/// making one per peer identity cannot fail.
#[derive(Clone)]
pub(super) struct ClientBase {
    builder: ConfigBuilder<ClientConfig, rustls::WantsVerifier>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    key: Arc<CertifiedKey>,
}

impl ClientBase {
    pub(super) fn new(m: &Material, provider: &Arc<CryptoProvider>) -> Result<Self, IdentityError> {
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        Ok(Self {
            builder,
            roots: m.roots.clone(),
            provider: provider.clone(),
            key: m.certified_key.clone(),
        })
    }

    /// The outbound configuration toward a peer sidecar that must be `server_identity`:
    /// TLS 1.3, our certificate as client certificate, ALPN `h2` or `http/1.1`.
    pub(super) fn config(&self, server_identity: &str, http2: bool) -> ClientConfig {
        let verifier = SpiffeServerVerifier {
            roots: self.roots.clone(),
            provider: self.provider.clone(),
            expected: server_identity.to_string(),
        };
        let builder: ConfigBuilder<ClientConfig, WantsClientCert> = self
            .builder
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = builder.with_client_cert_resolver(Arc::new(Fixed(self.key.clone())));
        config.alpn_protocols = vec![if http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        config
    }
}

/// Always the same certificate and key, on both sides of the connection.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a peer sidecar: its chain against the trust bundle (validity included) and
/// its SPIFFE id against the one expected. The DNS name we dialled means nothing here:
/// endpoints are addresses, workloads are SPIFFE ids.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    expected: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match peer_spiffe_id(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            got => {
                tracing::warn!(
                    expected = %self.expected,
                    got = got.as_deref().unwrap_or("(no single SPIFFE id)"),
                    "peer sidecar presented the wrong identity; refusing to send to it"
                );
                Err(Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
