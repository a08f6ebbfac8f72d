//! A throwaway PKI for tests: a CA, optional intermediates, and leaf certificates for
//! SPIFFE workload identities (the sidecar) or DNS names (the gateway), written to files
//! the way cert-manager and SPIRE write them.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use backends_demo::pki::{CertSpec, TestCa};
//! let ca = TestCa::new("test root")?;
//! let leaf = ca.issue(&CertSpec::spiffe("spiffe://cluster.local/ns/shop/sa/frontend").serial(7))?;
//! let dir = tempfile::tempdir()?;
//! let (cert, key) = leaf.write(dir.path(), "tls")?;
//! ca.write_bundle(&dir.path().join("ca.crt"))?;
//! # let _ = (cert, key); Ok(()) }
//! ```
//!
//! Keys are ECDSA P-256 unless [`CertSpec::rsa`] asks for RSA 2048 (rcgen generates RSA
//! keys only with its aws-lc-rs backend, which this crate uses). Private keys come out as
//! PKCS#8 (`PRIVATE KEY`); [`Issued::key_pem_legacy`] gives the older SEC1 / PKCS#1 forms.
//! This is test code: nothing here is meant to protect anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// A self-signed root CA (ECDSA P-256), valid from a day ago for ten years.
pub struct TestCa {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A CA certificate issued by a [`TestCa`], to test chains with intermediates. Cheap to
/// clone; a [`CertSpec`] holds one to be signed by it.
#[derive(Clone)]
pub struct Intermediate {
    inner: Arc<IntermediateInner>,
}

struct IntermediateInner {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// What to put in a leaf certificate. Start from [`CertSpec::spiffe`] or
/// [`CertSpec::dns`], then chain options.
#[derive(Clone, Debug)]
pub struct CertSpec {
    common_name: String,
    sans: Vec<San>,
    rsa: bool,
    validity: Validity,
    serial: Option<u64>,
    server_auth: bool,
    client_auth: bool,
    intermediate: Option<Intermediate>,
}

#[derive(Clone, Debug)]
enum San {
    Uri(String),
    Dns(String),
    Ip(std::net::IpAddr),
}

#[derive(Clone, Copy, Debug)]
enum Validity {
    For(Duration),
    Expired,
    NotYetValid,
}

/// A leaf certificate and its key, in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf certificate alone.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// The leaf followed by its intermediate, if any: what a server or client presents.
    pub chain_pem: String,
    pkcs8_der: Vec<u8>,
}

/// Clock skew allowance: certificates start being valid a little before "now".
const BACKDATE: time::Duration = time::Duration::minutes(5);

impl TestCa {
    /// A new root CA whose subject common name is `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = ca_key_usages();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let key = KeyPair::generate().context("generating CA key")?;
        let issuer = CertifiedIssuer::self_signed(params, key)
            .with_context(|| format!("self-signing CA {name:?}"))?;
        Ok(TestCa {
            name: name.to_string(),
            issuer,
        })
    }

    /// The CA certificate, PEM: the trust bundle for certificates it issues.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// An intermediate CA signed by this CA (path length 0: it signs leaves only).
    pub fn intermediate(&self, name: &str) -> anyhow::Result<Intermediate> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = ca_key_usages();
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate().context("generating intermediate key")?;
        let issuer = CertifiedIssuer::signed_by(params, key, &self.issuer)
            .with_context(|| format!("CA {:?} signing intermediate {name:?}", self.name))?;
        Ok(Intermediate {
            inner: Arc::new(IntermediateInner {
                name: name.to_string(),
                issuer,
            }),
        })
    }

    /// Issue a leaf certificate, signed by this CA or by the spec's intermediate.
    pub fn issue(&self, spec: &CertSpec) -> anyhow::Result<Issued> {
        let params = spec.params()?;
        let key = if spec.rsa {
            KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).context("generating RSA key")?
        } else {
            KeyPair::generate().context("generating ECDSA key")?
        };
        let (cert, chain_tail) = match &spec.intermediate {
            Some(i) => (
                params.signed_by(&key, &i.inner.issuer),
                i.inner.issuer.pem(),
            ),
            None => (params.signed_by(&key, &self.issuer), String::new()),
        };
        let cert = cert.with_context(|| format!("signing {}", spec.common_name))?;
        let cert_pem = cert.pem();
        Ok(Issued {
            chain_pem: format!("{cert_pem}{chain_tail}"),
            cert_pem,
            key_pem: key.serialize_pem(),
            pkcs8_der: key.serialized_der().to_vec(),
        })
    }

    /// Write the CA certificate to `path` (atomically).
    pub fn write_bundle(&self, path: &Path) -> anyhow::Result<()> {
        write_atomic(path, self.cert_pem().as_bytes())
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("name", &self.name).finish()
    }
}

impl Intermediate {
    /// The intermediate's certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.inner.issuer.pem()
    }
}

impl std::fmt::Debug for Intermediate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intermediate")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl CertSpec {
    /// A workload certificate whose only SAN is the SPIFFE id `id` (a URI), valid for a
    /// day, for both server and client authentication (as SPIRE issues them).
    pub fn spiffe(id: &str) -> CertSpec {
        let cn = id.rsplit('/').next().unwrap_or(id).to_string();
        CertSpec::new(cn, vec![San::Uri(id.to_string())], true, true)
    }

    /// A server certificate for DNS names (`*.example.com` wildcards allowed), valid for a
    /// day, for server authentication only. The first name is the subject common name.
    pub fn dns(names: &[&str]) -> CertSpec {
        let cn = names.first().copied().unwrap_or("localhost").to_string();
        let sans = names.iter().map(|n| San::Dns(n.to_string())).collect();
        CertSpec::new(cn, sans, true, false)
    }

    fn new(common_name: String, sans: Vec<San>, server: bool, client: bool) -> CertSpec {
        CertSpec {
            common_name,
            sans,
            rsa: false,
            validity: Validity::For(Duration::from_secs(24 * 3600)),
            serial: None,
            server_auth: server,
            client_auth: client,
            intermediate: None,
        }
    }

    /// An RSA 2048 key (signed with SHA-256) instead of ECDSA P-256.
    pub fn rsa(mut self) -> Self {
        self.rsa = true;
        self
    }

    /// Valid from two days ago until yesterday.
    pub fn expired(mut self) -> Self {
        self.validity = Validity::Expired;
        self
    }

    /// Valid from tomorrow for a day.
    pub fn not_yet_valid(mut self) -> Self {
        self.validity = Validity::NotYetValid;
        self
    }

    /// Valid from (a few minutes before) now for `d`.
    pub fn valid_for(mut self, d: Duration) -> Self {
        self.validity = Validity::For(d);
        self
    }

    /// A fixed serial number (use a non-zero one); by default it derives from the key,
    /// so every issued certificate has its own.
    pub fn serial(mut self, serial: u64) -> Self {
        self.serial = Some(serial);
        self
    }

    /// Extended key usage: both `serverAuth` and `clientAuth`.
    pub fn client_and_server(mut self) -> Self {
        (self.server_auth, self.client_auth) = (true, true);
        self
    }

    /// Extended key usage: `serverAuth` only.
    pub fn server_only(mut self) -> Self {
        (self.server_auth, self.client_auth) = (true, false);
        self
    }

    /// Extended key usage: `clientAuth` only.
    pub fn client_only(mut self) -> Self {
        (self.server_auth, self.client_auth) = (false, true);
        self
    }

    /// One more URI SAN (e.g. a second SPIFFE id, to test that it is refused).
    pub fn add_uri(mut self, uri: &str) -> Self {
        self.sans.push(San::Uri(uri.to_string()));
        self
    }

    /// One more DNS SAN (e.g. so peers that check DNS names can verify a SPIFFE cert).
    pub fn add_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.sans.push(San::Ip(ip));
        self
    }

    pub fn add_dns(mut self, name: &str) -> Self {
        self.sans.push(San::Dns(name.to_string()));
        self
    }

    /// Signed by `intermediate` instead of the root; the chain then includes it.
    pub fn with_intermediate(mut self, intermediate: &Intermediate) -> Self {
        self.intermediate = Some(intermediate.clone());
        self
    }

    fn params(&self) -> anyhow::Result<CertificateParams> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&self.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = if self.rsa {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        if self.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        for san in &self.sans {
            let bad = || format!("invalid SAN {san:?}");
            params.subject_alt_names.push(match san {
                San::Uri(u) => SanType::URI(u.as_str().try_into().with_context(bad)?),
                San::Dns(d) => SanType::DnsName(d.as_str().try_into().with_context(bad)?),
                San::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
        params.serial_number = self.serial.map(SerialNumber::from);
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        (params.not_before, params.not_after) = match self.validity {
            Validity::For(d) => {
                let d = time::Duration::try_from(d).context("validity period")?;
                let end = now.checked_add(d).context("validity period too long")?;
                (now - BACKDATE, end)
            }
            Validity::Expired => (now - day - day, now - day),
            Validity::NotYetValid => (now + day, now + day + day),
        };
        Ok(params)
    }
}

impl Issued {
    /// Write `dir/{stem}.crt` (the chain, leaf first) and `dir/{stem}.key`, each
    /// atomically (a temporary file renamed over the target, as cert-manager does), and
    /// return their paths. Overwriting existing files is a rotation.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_atomic(&cert, self.chain_pem.as_bytes())?;
        write_atomic(&key, self.key_pem.as_bytes())?;
        Ok((cert, key))
    }

    /// The private key in its algorithm-specific legacy form: SEC1
    /// (`EC PRIVATE KEY`, with the curve named) or PKCS#1 (`RSA PRIVATE KEY`), as
    /// `openssl` and older tools write them.
    pub fn key_pem_legacy(&self) -> anyhow::Result<String> {
        let (label, der) = der::legacy_key(&self.pkcs8_der)?;
        Ok(pem_encode(label, &der))
    }
}

/// Write `contents` to `path` through a temporary file in the same directory and a
/// rename, so a reader (or a file watcher) never sees a half-written file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tollgate test PKI");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Just enough base64 to write PEM (rcgen only writes PKCS#8 keys).
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
            let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// The little DER needed to unwrap a PKCS#8 key into its SEC1 / PKCS#1 form.
mod der {
    use anyhow::{bail, Context};

    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;
    /// id-ecPublicKey, 1.2.840.10045.2.1
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// rsaEncryption, 1.2.840.113549.1.1.1
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

    /// One TLV: (tag, contents, rest of input).
    fn tlv(input: &[u8]) -> anyhow::Result<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first().context("truncated DER")?;
        let (&first, rest) = rest.split_first().context("truncated DER length")?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                bail!("unsupported DER length");
            }
            let (bytes, rest) = rest.split_at(n);
            (
                bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b)),
                rest,
            )
        };
        if rest.len() < len {
            bail!("truncated DER value");
        }
        let (value, rest) = rest.split_at(len);
        Ok((tag, value, rest))
    }

    fn expect(input: &[u8], want: u8) -> anyhow::Result<(&[u8], &[u8])> {
        let (tag, value, rest) = tlv(input)?;
        if tag != want {
            bail!("expected DER tag {want:#04x}, found {tag:#04x}");
        }
        Ok((value, rest))
    }

    fn encode(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = value.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(value);
        out
    }

    /// PKCS#8 `PrivateKeyInfo` -> (PEM label, SEC1 `ECPrivateKey` or PKCS#1 `RSAPrivateKey`).
    pub fn legacy_key(pkcs8: &[u8]) -> anyhow::Result<(&'static str, Vec<u8>)> {
        let (info, _) = expect(pkcs8, SEQUENCE)?;
        let (_version, rest) = expect(info, INTEGER)?;
        let (alg, rest) = expect(rest, SEQUENCE)?;
        let (inner, _) = expect(rest, OCTET_STRING)?;
        let (alg_oid, alg_params) = expect(alg, OID)?;
        if alg_oid == RSA_ENCRYPTION {
            return Ok(("RSA PRIVATE KEY", inner.to_vec()));
        }
        if alg_oid != EC_PUBLIC_KEY {
            bail!("not an EC or RSA key");
        }
        // Inside PKCS#8 the curve lives in the algorithm identifier and the
        // ECPrivateKey usually omits it; a standalone SEC1 key must name it ([0]).
        let (curve, _) = expect(alg_params, OID)?;
        let (fields, _) = expect(inner, SEQUENCE)?;
        let (version, rest) = expect(fields, INTEGER)?;
        let (private, mut rest) = expect(rest, OCTET_STRING)?;
        let mut body = encode(INTEGER, version);
        body.extend(encode(OCTET_STRING, private));
        body.extend(encode(0xa0, &encode(OID, curve)));
        while !rest.is_empty() {
            let (tag, value, next) = tlv(rest)?;
            if tag != 0xa0 {
                body.extend(encode(tag, value));
            }
            rest = next;
        }
        Ok(("EC PRIVATE KEY", encode(SEQUENCE, &body)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    // Parsing the certificates back (SANs, validity, EKUs, chains) is tested in the
    // sidecar's tests/identity.rs, which has x509-parser and rustls; here: shapes and files.

    fn blocks(pem: &str, label: &str) -> usize {
        pem.matches(&format!("-----BEGIN {label}-----")).count()
    }

    #[test]
    fn issues_pem_chain_and_key() {
        let ca = TestCa::new("root").unwrap();
        let leaf = ca
            .issue(&CertSpec::spiffe("spiffe://cluster.local/ns/a/sa/b"))
            .unwrap();
        assert_eq!(blocks(&leaf.cert_pem, "CERTIFICATE"), 1);
        assert_eq!(leaf.chain_pem, leaf.cert_pem);
        assert_eq!(blocks(&leaf.key_pem, "PRIVATE KEY"), 1);

        let inter = ca.intermediate("issuing").unwrap();
        let leaf = ca
            .issue(&CertSpec::dns(&["api.example.com", "*.example.com"]).with_intermediate(&inter))
            .unwrap();
        assert_eq!(blocks(&leaf.chain_pem, "CERTIFICATE"), 2);
        assert!(leaf.chain_pem.starts_with(&leaf.cert_pem));
        assert!(leaf.chain_pem.ends_with(&inter.cert_pem()));
    }

    #[test]
    fn writes_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("root").unwrap();
        let leaf = ca.issue(&CertSpec::dns(&["localhost"]).serial(3)).unwrap();
        let (cert, key) = leaf.write(dir.path(), "tls").unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), leaf.chain_pem);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), leaf.key_pem);
        // Overwrite (rotation) leaves no temporary files behind.
        let again = ca.issue(&CertSpec::dns(&["localhost"]).serial(4)).unwrap();
        again.write(dir.path(), "tls").unwrap();
        ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.crt", "tls.crt", "tls.key"]);
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), again.chain_pem);
    }

    #[test]
    fn legacy_key_forms() {
        let ca = TestCa::new("root").unwrap();
        let ec = ca.issue(&CertSpec::dns(&["localhost"])).unwrap();
        let sec1 = ec.key_pem_legacy().unwrap();
        assert_eq!(blocks(&sec1, "EC PRIVATE KEY"), 1);
        let (_, der) = der::legacy_key(&ec.pkcs8_der).unwrap();
        // The P-256 curve OID is named in the SEC1 key.
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(p256.len()).any(|w| w == p256));

        let rsa = ca.issue(&CertSpec::dns(&["localhost"]).rsa()).unwrap();
        assert_eq!(blocks(&rsa.key_pem, "PRIVATE KEY"), 1);
        assert_eq!(blocks(&rsa.key_pem_legacy().unwrap(), "RSA PRIVATE KEY"), 1);
    }

    #[test]
    fn base64() {
        assert_eq!(base64::encode(b""), "");
        assert_eq!(base64::encode(b"f"), "Zg==");
        assert_eq!(base64::encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64::encode(b"fo"), "Zm8=");
    }

    #[test]
    fn bad_names_are_errors_not_panics() {
        let ca = TestCa::new("root").unwrap();
        assert!(ca.issue(&CertSpec::spiffe("spiffe://bad\u{e9}")).is_err());
    }
}

/// A rustls server-certificate verifier that accepts anything, for test clients that
/// probe what a server presents (the test then checks the certificate itself).
pub fn accept_any_server_cert(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier> {
    std::sync::Arc::new(AcceptAny(provider))
}

#[derive(Debug)]
struct AcceptAny(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
