//! TLS termination: certificates chosen by SNI, hot rotation, minimum version, client
//! certificate verification and the client identity passed to backends.
//!
//! Each TLS listener has one [`SniResolver`] (rustls `ResolvesServerCert`) holding an
//! `ArcSwap` of its certificate table. Rotation (file change) and config reloads build
//! a whole new table off the handshake path and swap it in: new handshakes see the new
//! certificate, established connections keep theirs. A broken, mismatched, expired or
//! unreadable replacement is refused (logged, counted) and the last good table stays.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec};
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tollgate_config::gateway::{CertPaths, ClientAuth, ListenerTls};
use tollgate_config::metrics as m;
use x509_parser::prelude::*;

pub struct TlsMetrics {
    pub started: IntCounterVec,
    pub handshakes: IntCounterVec,
    pub refused: IntCounterVec,
    pub reloads: IntCounterVec,
    pub expiry: IntGaugeVec,
}

pub static TLS_METRICS: LazyLock<TlsMetrics> = LazyLock::new(|| {
    TlsMetrics {
    started: m::counter_vec(
        "gateway_tls_handshakes_started_total",
        "TLS handshakes started (connections accepted on TLS listeners); started minus completed is failed or in progress",
        &["listener"],
    ),
    handshakes: m::counter_vec(
        "gateway_tls_handshakes_total",
        "Completed TLS handshakes by listener and version",
        &["listener", "version"],
    ),
    refused: m::counter_vec(
        "gateway_tls_handshakes_refused_total",
        "Handshakes the gateway refused, by reason (tls12_refused, client_cert_unknown_ca, client_cert_expired, client_cert_invalid)",
        &["listener", "reason"],
    ),
    reloads: m::counter_vec(
        "gateway_tls_certificate_reloads_total",
        "Certificate (re)loads by listener and result",
        &["listener", "result"],
    ),
    expiry: m::gauge_vec(
        "gateway_tls_certificate_expiry_timestamp_seconds",
        "notAfter of each served certificate (alert 14 days before)",
        &["listener", "certificate"],
    ),
}
});

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("listener {listener}: {reason}")]
    Listener { listener: String, reason: String },
}

fn file_err(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// One loaded certificate: the signing key and what SNI names it serves.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// Lower-case DNS SANs (wildcards as `*.example.com`).
    pub names: Vec<String>,
    pub not_after_unix: i64,
    pub serial: String,
}

/// Load and check one certificate chain and key, to serve: it needs a DNS name.
pub fn load_cert(paths: &CertPaths) -> Result<LoadedCert, TlsError> {
    let cert = load_any_cert(paths)?;
    if cert.names.is_empty() {
        return Err(file_err(
            &paths.cert,
            "has no DNS subject alternative name to serve",
        ));
    }
    Ok(cert)
}

/// Load and check one certificate chain and key (parsable, matching, in date), with
/// whatever names it has: a client certificate needs none.
pub fn load_any_cert(paths: &CertPaths) -> Result<LoadedCert, TlsError> {
    let pem = std::fs::read(&paths.cert).map_err(|e| file_err(&paths.cert, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&paths.cert, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(file_err(&paths.cert, "no certificate in the file"));
    };
    let key_pem = std::fs::read(&paths.key).map_err(|e| file_err(&paths.key, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| file_err(&paths.key, format!("not a PEM private key: {e}")))?;
    let signing = provider::sign::any_supported_type(&key)
        .map_err(|e| file_err(&paths.key, format!("unsupported key: {e}")))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|_| {
        file_err(
            &paths.key,
            format!("does not match certificate {}", paths.cert.display()),
        )
    })?;
    let (_, x509) = X509Certificate::from_der(leaf)
        .map_err(|e| file_err(&paths.cert, format!("unparsable certificate: {e}")))?;
    let validity = x509.validity();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if validity.not_after.timestamp() < now {
        return Err(file_err(
            &paths.cert,
            format!("expired on {}", validity.not_after),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(file_err(
            &paths.cert,
            format!("not valid before {}", validity.not_before),
        ));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after_unix: validity.not_after.timestamp(),
        serial: x509.raw_serial_as_string(),
    })
}

/// Size and modification time of each file a listener's certificates are read from
/// (through symlinks, so a Kubernetes `..data` swap or a cert-manager renewal shows up).
pub type Fingerprint = Vec<Option<(u64, std::time::SystemTime)>>;

pub fn fingerprint(tls: &ListenerTls) -> Fingerprint {
    tls.certificates
        .iter()
        .flat_map(|c| [&c.cert, &c.key])
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// A listener's certificates indexed for SNI.
#[derive(Debug)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `.example.com` -> cert for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    min_tls13: bool,
    pub certs: Vec<LoadedCert>,
    /// The files as they were *before* they were read: a write that lands while (or
    /// just after) they are read changes them again and is picked up by the next look.
    pub fingerprint: Fingerprint,
}

impl CertTable {
    /// Load and index every certificate of a listener; fails if any is unusable.
    pub fn build(listener: &str, tls: &ListenerTls) -> Result<Self, TlsError> {
        let fingerprint = fingerprint(tls);
        let mut certs = Vec::new();
        for c in &tls.certificates {
            certs.push(load_cert(c)?);
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in &certs {
            for n in &c.names {
                match n.strip_prefix('*') {
                    Some(suffix) => {
                        wildcard
                            .entry(suffix.to_owned())
                            .or_insert_with(|| c.key.clone());
                    }
                    None => {
                        exact.entry(n.clone()).or_insert_with(|| c.key.clone());
                    }
                }
            }
        }
        let default = match &tls.default_certificate {
            Some(name) => {
                let name = name.to_ascii_lowercase();
                certs
                    .iter()
                    .find(|c| c.names.contains(&name))
                    .map(|c| c.key.clone())
                    .ok_or_else(|| TlsError::Listener {
                        listener: listener.to_owned(),
                        reason: format!(
                            "default_certificate {name:?} is not a DNS name of any certificate"
                        ),
                    })?
            }
            None => certs
                .first()
                .map(|c| c.key.clone())
                .ok_or_else(|| TlsError::Listener {
                    listener: listener.to_owned(),
                    reason: "no certificate".into(),
                })?,
        };
        Ok(Self {
            exact,
            wildcard,
            default,
            min_tls13: tls.min_tls13,
            certs,
            fingerprint,
        })
    }

    fn serials(&self) -> Vec<&str> {
        self.certs.iter().map(|c| c.serial.as_str()).collect()
    }
}

/// A TLS listener's certificates in one snapshot: what the config says, and the table
/// built from the files (swapped in place when the files rotate).
#[derive(Debug)]
pub struct ListenerCerts {
    pub listener: String,
    pub source: ListenerTls,
    pub table: ArcSwap<CertTable>,
    /// The files of the last refused rotation: not retried until they change again.
    refused: Mutex<Option<Fingerprint>>,
}

impl ListenerCerts {
    pub fn build(listener: &str, tls: &ListenerTls) -> Result<Self, TlsError> {
        Ok(Self {
            listener: listener.to_owned(),
            source: tls.clone(),
            table: ArcSwap::from_pointee(CertTable::build(listener, tls)?),
            refused: Mutex::new(None),
        })
    }

    /// Whether the files differ from the ones the table (or the last refused attempt)
    /// was built from.
    pub fn files_changed(&self) -> bool {
        let now = fingerprint(&self.source);
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        now != self.table.load().fingerprint && refused.as_ref() != Some(&now)
    }

    /// Rotation: rebuild the table from the files if they changed. A refused set is
    /// remembered and retried as soon as the files change again (a key written before
    /// its certificate is refused once, then the pair is loaded), while the last good
    /// table keeps serving. Returns whether anything was attempted.
    pub fn rotate(&self) -> bool {
        if !self.files_changed() {
            return false;
        }
        match CertTable::build(&self.listener, &self.source) {
            Ok(table) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(listener = %self.listener, serials = ?table.serials(), "certificates rotated");
                self.table.store(Arc::new(table));
                self.publish();
            }
            Err(e) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(fingerprint(&self.source));
                TLS_METRICS
                    .reloads
                    .with_label_values(&[&self.listener, "failure"])
                    .inc();
                tracing::error!(listener = %self.listener, "certificate reload refused, keeping the current certificates: {e}");
            }
        }
        true
    }

    /// Count a load and export expiry times (after the table is in service).
    pub fn publish(&self) {
        publish(&self.listener, &self.table.load().certs, "success");
    }
}

/// Chooses the certificate for each handshake from the listener's table in the
/// current snapshot: a reload that swaps the snapshot swaps certificates with it.
pub struct SniResolver {
    pub listener: String,
    snapshot: Arc<ArcSwap<crate::snapshot::Snapshot>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("listener", &self.listener)
            .finish()
    }
}

impl SniResolver {
    pub fn new(listener: &str, snapshot: Arc<ArcSwap<crate::snapshot::Snapshot>>) -> Arc<Self> {
        Arc::new(Self {
            listener: listener.to_owned(),
            snapshot,
        })
    }
}

fn publish(listener: &str, loaded: &[LoadedCert], result: &str) {
    TLS_METRICS
        .reloads
        .with_label_values(&[listener, result])
        .inc();
    for c in loaded {
        let name = c.names.first().map_or("", String::as_str);
        TLS_METRICS
            .expiry
            .with_label_values(&[listener, name])
            .set(c.not_after_unix);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.snapshot.load();
        let table = snap.certs.get(&self.listener)?.table.load();
        if table.min_tls13
            && !hello
                .cipher_suites()
                .iter()
                .any(|cs| tls13_suite(u16::from(*cs)))
        {
            // A client that offers no TLS 1.3 suite cannot speak 1.3: refuse it here
            // (Pingora builds its rustls config with 1.2 and 1.3 enabled).
            TLS_METRICS
                .refused
                .with_label_values(&[&self.listener, "tls12_refused"])
                .inc();
            return None;
        }
        let Some(sni) = hello.server_name() else {
            return Some(table.default.clone());
        };
        let sni = sni.to_ascii_lowercase();
        if let Some(k) = table.exact.get(&sni) {
            return Some(k.clone());
        }
        // One wildcard label: *.example.com matches a.example.com, not a.b.example.com.
        if let Some(dot) = sni.find('.') {
            if let Some(k) = table.wildcard.get(&sni[dot..]) {
                return Some(k.clone());
            }
        }
        Some(table.default.clone())
    }
}

/// TLS 1.3 cipher suites are 0x13xx.
fn tls13_suite(id: u16) -> bool {
    id >> 8 == 0x13
}

/// The rustls verifier for a listener's client certificates.
pub fn client_verifier(
    listener: &str,
    auth: &ClientAuth,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let pem = std::fs::read(&auth.ca).map_err(|e| file_err(&auth.ca, e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| file_err(&auth.ca, format!("not PEM: {e}")))?;
        roots
            .add(c)
            .map_err(|e| file_err(&auth.ca, format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file_err(&auth.ca, "no CA certificate in the file"));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(provider::default_provider()),
    );
    let builder = if auth.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let inner = builder.build().map_err(|e| TlsError::Listener {
        listener: listener.to_owned(),
        reason: format!("client_auth: {e}"),
    })?;
    Ok(Arc::new(CountingVerifier {
        inner,
        listener: listener.to_owned(),
    }))
}

/// Counts refused client certificates by reason; verification itself is webpki's.
#[derive(Debug)]
struct CountingVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    listener: String,
}

impl rustls::server::danger::ClientCertVerifier for CountingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                use rustls::CertificateError as C;
                let reason = match e {
                    rustls::Error::InvalidCertificate(C::UnknownIssuer) => "client_cert_unknown_ca",
                    rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                        "client_cert_expired"
                    }
                    _ => "client_cert_invalid",
                };
                TLS_METRICS
                    .refused
                    .with_label_values(&[&self.listener, reason])
                    .inc();
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The verified client's identity as passed to backends: its SPIFFE/URI SAN, else its
/// first DNS SAN, else its subject (RFC 4514).
pub fn client_identity(leaf_der: &[u8]) -> Option<String> {
    let (_, x509) = X509Certificate::from_der(leaf_der).ok()?;
    let mut dns = None;
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => return Some((*u).to_owned()),
                GeneralName::DNSName(d) if dns.is_none() => dns = Some((*d).to_owned()),
                _ => {}
            }
        }
    }
    dns.or_else(|| Some(x509.subject().to_string()))
}

/// Handshake bookkeeping and the client identity, attached to the connection.
pub struct HandshakeCallbacks {
    pub listener: String,
}

/// What the handshake learned about the client, read by the proxy per request.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub identity: Option<String>,
}

#[async_trait::async_trait]
impl pingora_core::listeners::TlsAccept for HandshakeCallbacks {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora_core::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        TLS_METRICS
            .handshakes
            .with_label_values(&[&self.listener, tls.version().unwrap_or("unknown")])
            .inc();
        let identity = tls.peer_certificate_der().and_then(client_identity);
        Some(Arc::new(ClientCert { identity }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls13_suites_are_recognised() {
        assert!(super::tls13_suite(0x1301));
        assert!(super::tls13_suite(0x1303));
        assert!(!super::tls13_suite(0xc02f));
    }
}

/// TLS towards an upstream's endpoints: what Pingora's connector needs (SNI, CA,
/// verification, the client certificate of upstream mTLS) and client configs for health
/// checks that verify and present the same way.
pub struct PeerTls {
    pub sni: String,
    pub verify: bool,
    pub ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    roots: Arc<rustls::RootCertStore>,
    /// Health-check configs and Pingora's client certificate, swapped in place when the
    /// client certificate's files change.
    presented: ArcSwap<Presented>,
    client: Option<CertPaths>,
    /// The client certificate files of the last refused rotation.
    refused: Mutex<Option<FileStamp>>,
}

/// What one load of the upstream's client identity gives.
struct Presented {
    /// For Pingora's connector (`HttpPeer::client_cert_key`).
    cert_key: Option<Arc<pingora_core::utils::tls::CertKey>>,
    health_client: Arc<rustls::ClientConfig>,
    /// The same, offering only HTTP/2 in ALPN (gRPC health checks).
    health_client_h2: Arc<rustls::ClientConfig>,
    stamp: Option<FileStamp>,
}

/// Size and modification time of a certificate and its key: "did they change".
type FileStamp = [(u64, Option<std::time::SystemTime>); 2];

fn file_stamp(paths: &CertPaths) -> FileStamp {
    let one = |p: &Path| std::fs::metadata(p).map_or((0, None), |m| (m.len(), m.modified().ok()));
    [one(&paths.cert), one(&paths.key)]
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("client", &self.client)
            .finish()
    }
}

impl PeerTls {
    /// The client certificate Pingora presents to endpoints that ask, if any.
    pub fn client_cert_key(&self) -> Option<Arc<pingora_core::utils::tls::CertKey>> {
        self.presented.load().cert_key.clone()
    }

    pub fn health_client(&self) -> Arc<rustls::ClientConfig> {
        self.presented.load().health_client.clone()
    }

    pub fn health_client_h2(&self) -> Arc<rustls::ClientConfig> {
        self.presented.load().health_client_h2.clone()
    }

    /// The client certificate's files changed since they were loaded (or refused).
    pub fn client_files_changed(&self) -> bool {
        let Some(paths) = &self.client else {
            return false;
        };
        let now = Some(file_stamp(paths));
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        now != self.presented.load().stamp && *refused != now
    }

    /// Load the client certificate again if its files changed; a refused pair is
    /// logged and the loaded one kept. Connections made with the old certificate stay
    /// in the pool until idle (Pingora keys its pool by the certificate).
    pub fn rotate_client(&self, upstream: &str) {
        let Some(paths) = &self.client else { return };
        if !self.client_files_changed() {
            return;
        }
        match presented(&self.roots, self.verify, Some(paths)) {
            Ok(p) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(upstream, cert = %paths.cert.display(), "upstream client certificate rotated");
                self.presented.store(Arc::new(p));
            }
            Err(e) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(file_stamp(paths));
                tracing::error!(
                    upstream,
                    "upstream client certificate refused, keeping the loaded one: {e}"
                );
            }
        }
    }
}

/// Health-check client configs verifying as `verify` says against `roots`, presenting
/// `client` when given, and the same certificate for Pingora's connector.
fn presented(
    roots: &Arc<rustls::RootCertStore>,
    verify: bool,
    client: Option<&CertPaths>,
) -> Result<Presented, TlsError> {
    let provider = Arc::new(provider::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::File {
            path: String::new(),
            reason: e.to_string(),
        })?;
    let builder = if verify {
        builder.with_root_certificates(roots.clone())
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let (health_client, cert_key, stamp) = match client {
        None => (builder.with_no_client_auth(), None, None),
        Some(paths) => {
            let stamp = file_stamp(paths);
            // The same checks as a listener's certificate: a chain, a key that matches,
            // in date.
            let loaded = load_any_cert(paths)?;
            let chain: Vec<CertificateDer<'static>> = loaded.key.cert.clone();
            for c in &chain {
                X509Certificate::from_der(c)
                    .map_err(|e| file_err(&paths.cert, format!("unparsable certificate: {e}")))?;
            }
            let key_pem =
                std::fs::read(&paths.key).map_err(|e| file_err(&paths.key, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| file_err(&paths.key, format!("not a PEM private key: {e}")))?;
            let key_der = key.secret_der().to_vec();
            // Pingora's connector reads the key back with this conversion (and unwraps).
            PrivateKeyDer::try_from(key_der.clone())
                .map_err(|e| file_err(&paths.key, format!("unusable private key: {e}")))?;
            let cert_key = pingora_core::utils::tls::CertKey::new(
                chain.iter().map(|c| c.to_vec()).collect(),
                key_der,
            );
            let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                file_err(
                    &paths.cert,
                    format!("unusable as a client certificate: {e}"),
                )
            })?;
            (config, Some(Arc::new(cert_key)), Some(stamp))
        }
    };
    let mut health_client_h2 = health_client.clone();
    health_client_h2.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Presented {
        cert_key,
        health_client: Arc::new(health_client),
        health_client_h2: Arc::new(health_client_h2),
        stamp,
    })
}

/// Load an upstream's TLS settings (its CA file and client certificate, if any). Errors
/// name the file.
pub fn peer_tls(
    upstream: &str,
    t: &tollgate_config::gateway::UpstreamTls,
) -> Result<PeerTls, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = match &t.ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| file_err(path, e.to_string()))?;
            let mut wrapped = Vec::new();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| file_err(path, format!("not PEM: {e}")))?;
                // Parse first: Pingora's own parser panics on a bad certificate.
                X509Certificate::from_der(&c)
                    .map_err(|e| file_err(path, format!("unparsable CA certificate: {e}")))?;
                roots
                    .add(c.clone())
                    .map_err(|e| file_err(path, format!("unusable CA certificate: {e}")))?;
                wrapped.push(pingora_core::utils::tls::WrappedX509::new(
                    c.to_vec(),
                    pingora_core::utils::tls::parse_x509,
                ));
            }
            if wrapped.is_empty() {
                return Err(file_err(path, "no CA certificate in the file"));
            }
            Some(Arc::from(wrapped.into_boxed_slice()))
        }
        None => {
            for c in rustls_native_certs::load_native_certs().unwrap_or_default() {
                let _ = roots.add(c);
            }
            None
        }
    };
    let roots = Arc::new(roots);
    let presented = presented(&roots, t.verify, t.client.as_ref()).map_err(|e| match e {
        TlsError::File { path, reason } if path.is_empty() => TlsError::Listener {
            listener: upstream.to_owned(),
            reason,
        },
        other => other,
    })?;
    Ok(PeerTls {
        sni: t.sni.clone(),
        verify: t.verify,
        ca,
        roots,
        presented: ArcSwap::from_pointee(presented),
        client: t.client.clone(),
        refused: Mutex::new(None),
    })
}

/// `verify: false`: accept any upstream certificate (tests and migrations only).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
