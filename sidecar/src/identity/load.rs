//! Reading and validating the identity files: the certificate chain, its key and the
//! trust bundle, as cert-manager or SPIRE write them. Everything is checked before the
//! identity is used, so a bad rotation is refused with a message naming the file and
//! the problem instead of failing handshakes later.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, RootCertStore};
use tollgate_config::sidecar::IdentityPaths;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Which of the three identity files a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityFile {
    Cert,
    Key,
    TrustBundle,
}

impl fmt::Display for IdentityFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cert => "cert",
            Self::Key => "key",
            Self::TrustBundle => "trust bundle",
        })
    }
}

/// Why an identity could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{file} {}: cannot read: {source}", path.display())]
    Read {
        file: IdentityFile,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} {}: file is empty", path.display())]
    Empty { file: IdentityFile, path: PathBuf },
    /// Malformed PEM or DER, an unsupported key, a bad CA certificate.
    #[error("{file} {}: {problem}", path.display())]
    Invalid {
        file: IdentityFile,
        path: PathBuf,
        problem: String,
    },
    #[error("cert {}: expired on {not_after}", path.display())]
    Expired { path: PathBuf, not_after: String },
    #[error("cert {}: not valid before {not_before}", path.display())]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("cert {}: no spiffe:// URI SAN: the certificate carries no workload identity", path.display())]
    NoSpiffeId { path: PathBuf },
    #[error("cert {}: {} spiffe:// URI SANs ({}), expected exactly one", path.display(), ids.len(), ids.join(", "))]
    ManySpiffeIds { path: PathBuf, ids: Vec<String> },
    #[error("key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("cert {} does not chain to trust bundle {}: {problem}", cert.display(), bundle.display())]
    Untrusted {
        cert: PathBuf,
        bundle: PathBuf,
        problem: String,
    },
    #[error("building the TLS configuration: {0}")]
    Tls(String),
}

/// The three files' bytes, as read: also what tells a rotation from a no-op.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct RawFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    bundle: Vec<u8>,
}

impl RawFiles {
    pub(super) fn read(paths: &IdentityPaths) -> Result<Self, IdentityError> {
        Ok(Self {
            cert: read(IdentityFile::Cert, &paths.cert)?,
            key: read(IdentityFile::Key, &paths.key)?,
            bundle: read(IdentityFile::TrustBundle, &paths.trust_bundle)?,
        })
    }
}

fn read(file: IdentityFile, path: &Path) -> Result<Vec<u8>, IdentityError> {
    let bytes = std::fs::read(path).map_err(|source| IdentityError::Read {
        file,
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(IdentityError::Empty {
            file,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// A validated identity: what the TLS configurations are built from.
pub(super) struct Material {
    pub spiffe_id: String,
    pub certified_key: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// Colon-separated hex, as `openssl x509 -serial` shows it.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub bundle_size: usize,
}

impl Material {
    /// Validate `raw` (read from `paths`) at time `now`.
    pub(super) fn build(
        paths: &IdentityPaths,
        raw: &RawFiles,
        provider: &Arc<CryptoProvider>,
        now: UnixTime,
    ) -> Result<Self, IdentityError> {
        let invalid = |file: IdentityFile, path: &Path, problem: String| IdentityError::Invalid {
            file,
            path: path.to_path_buf(),
            problem,
        };
        let cert_path = &paths.cert;

        let chain = pem_certs(&raw.cert).map_err(|p| invalid(IdentityFile::Cert, cert_path, p))?;
        let Some(leaf) = chain.first() else {
            return Err(invalid(
                IdentityFile::Cert,
                cert_path,
                "no CERTIFICATE PEM block".into(),
            ));
        };
        let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
            invalid(
                IdentityFile::Cert,
                cert_path,
                format!("not a valid X.509 certificate: {e}"),
            )
        })?;

        let validity = x509.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now_secs < not_before {
            return Err(IdentityError::NotYetValid {
                path: cert_path.clone(),
                not_before: rfc3339(not_before),
            });
        }
        if now_secs > not_after {
            return Err(IdentityError::Expired {
                path: cert_path.clone(),
                not_after: rfc3339(not_after),
            });
        }

        let ids = spiffe_ids(&x509).map_err(|e| {
            invalid(
                IdentityFile::Cert,
                cert_path,
                format!("unreadable subjectAltName: {e}"),
            )
        })?;
        let spiffe_id = match ids.as_slice() {
            [] => {
                return Err(IdentityError::NoSpiffeId {
                    path: cert_path.clone(),
                })
            }
            [one] if valid_spiffe_id(one) => one.clone(),
            [one] => {
                return Err(invalid(
                    IdentityFile::Cert,
                    cert_path,
                    format!("URI SAN {one:?} is not a valid SPIFFE id"),
                ))
            }
            _ => {
                return Err(IdentityError::ManySpiffeIds {
                    path: cert_path.clone(),
                    ids,
                })
            }
        };
        let serial = x509.raw_serial_as_string();

        let key = PrivateKeyDer::from_pem_slice(&raw.key).map_err(|e| {
            let problem = match e {
                pem::Error::NoItemsFound => {
                    "no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block".into()
                }
                e => pem_problem(e),
            };
            invalid(IdentityFile::Key, &paths.key, problem)
        })?;
        let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
            invalid(
                IdentityFile::Key,
                &paths.key,
                format!("unsupported or malformed private key: {e}"),
            )
        })?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        if certified_key.keys_match().is_err() {
            return Err(IdentityError::KeyMismatch {
                key: paths.key.clone(),
                cert: cert_path.clone(),
            });
        }

        let bundle_path = &paths.trust_bundle;
        let cas = pem_certs(&raw.bundle)
            .map_err(|p| invalid(IdentityFile::TrustBundle, bundle_path, p))?;
        if cas.is_empty() {
            return Err(invalid(
                IdentityFile::TrustBundle,
                bundle_path,
                "no CERTIFICATE PEM block".into(),
            ));
        }
        let mut roots = RootCertStore::empty();
        for (i, ca) in cas.iter().enumerate() {
            roots.add(ca.clone()).map_err(|e| {
                invalid(
                    IdentityFile::TrustBundle,
                    bundle_path,
                    format!("certificate #{}: {e}", i + 1),
                )
            })?;
        }
        let roots = Arc::new(roots);

        // The same certificate serves inbound (as a server) and outbound (as a client):
        // check both roles now, so a rotation cannot break one direction silently.
        let untrusted = |e: rustls::Error| IdentityError::Untrusted {
            cert: cert_path.clone(),
            bundle: bundle_path.clone(),
            problem: chain_problem(&e),
        };
        let intermediates = chain.get(1..).unwrap_or_default();
        let parsed = ParsedCertificate::try_from(leaf).map_err(untrusted)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )
        .map_err(untrusted)?;
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| IdentityError::Tls(e.to_string()))?
            .verify_client_cert(leaf, intermediates, now)
            .map_err(untrusted)?;

        Ok(Material {
            spiffe_id,
            certified_key: Arc::new(certified_key),
            roots,
            serial,
            not_before,
            not_after,
            bundle_size: cas.len(),
        })
    }
}

fn pem_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_problem)
}

fn pem_problem(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "malformed PEM: missing {:?}",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM: bad line {:?}",
            String::from_utf8_lossy(&line)
        ),
        pem::Error::Base64Decode(e) => format!("malformed PEM: bad base64: {e}"),
        e => format!("malformed PEM: {e}"),
    }
}

/// Say why a chain failed in words an operator can act on.
fn chain_problem(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "issued by a CA that is not in the trust bundle".into(),
            CertificateError::BadSignature => "bad signature in the chain".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "a certificate in the chain (an intermediate or the CA) has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "a certificate in the chain (an intermediate or the CA) is not valid yet".into()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the certificate is not valid for both TLS server and client authentication (extended key usage)".into()
            }
            other => format!("{other}"),
        },
        other => format!("{other}"),
    }
}

/// The URI SANs that are SPIFFE ids.
fn spiffe_ids(x509: &X509Certificate<'_>) -> Result<Vec<String>, x509_parser::error::X509Error> {
    Ok(x509
        .subject_alternative_name()?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                        Some((*uri).to_string())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// `spiffe://trust-domain[/path]`, no whitespace.
fn valid_spiffe_id(id: &str) -> bool {
    id.strip_prefix("spiffe://").is_some_and(|rest| {
        !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
    })
}

/// The SPIFFE id of a peer's end-entity certificate: its `spiffe://` URI SAN. `None`
/// when the certificate cannot be parsed or has no SPIFFE id, or more than one (an
/// X.509-SVID has exactly one: with several, which one the peer "is" is ambiguous).
///
/// This does not verify anything: call it on a certificate the TLS handshake verified.
pub fn peer_spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut ids = spiffe_ids(&x509).ok()?;
    match ids.len() {
        1 => ids.pop(),
        _ => None,
    }
}

/// `2026-01-01T00:00:00Z` for a Unix timestamp (UTC).
pub(super) fn rfc3339(unix: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm; avoids a date crate for one format.
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
