#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use backends_demo::pki::{write_atomic, CertSpec, Issued, TestCa};

use super::*;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

struct Files {
    dir: tempfile::TempDir,
    paths: IdentityPaths,
}

impl Files {
    fn new(ca: &TestCa, leaf: &Issued) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf.write(dir.path(), "tls").unwrap();
        let trust_bundle = dir.path().join("ca.crt");
        ca.write_bundle(&trust_bundle).unwrap();
        Files {
            paths: IdentityPaths {
                cert,
                key,
                trust_bundle,
            },
            dir,
        }
    }

    fn err(&self) -> String {
        check_files(&self.paths).unwrap_err().to_string()
    }
}

fn files(spec: CertSpec) -> (TestCa, Files) {
    let ca = TestCa::new("root").unwrap();
    let leaf = ca.issue(&spec).unwrap();
    let files = Files::new(&ca, &leaf);
    (ca, files)
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn good_files_give_the_spiffe_id() {
    let (_ca, f) = files(CertSpec::spiffe(ID));
    assert_eq!(check_files(&f.paths).unwrap(), ID);
}

#[test]
fn rsa_keys_and_legacy_key_formats_load() {
    for spec in [CertSpec::spiffe(ID), CertSpec::spiffe(ID).rsa()] {
        let ca = TestCa::new("root").unwrap();
        let leaf = ca.issue(&spec).unwrap();
        let f = Files::new(&ca, &leaf);
        assert_eq!(check_files(&f.paths).unwrap(), ID, "PKCS#8");
        write_atomic(&f.paths.key, leaf.key_pem_legacy().unwrap().as_bytes()).unwrap();
        assert_eq!(check_files(&f.paths).unwrap(), ID, "SEC1 / PKCS#1");
    }
}

#[test]
fn chain_with_intermediate_loads_and_without_it_is_untrusted() {
    let ca = TestCa::new("root").unwrap();
    let inter = ca.intermediate("issuing").unwrap();
    let leaf = ca
        .issue(&CertSpec::spiffe(ID).with_intermediate(&inter))
        .unwrap();
    let f = Files::new(&ca, &leaf);
    assert_eq!(check_files(&f.paths).unwrap(), ID);
    write_atomic(&f.paths.cert, leaf.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        f.err(),
        format!(
            "cert {} does not chain to trust bundle {}: issued by a CA that is not in the trust bundle",
            shown(&f.paths.cert),
            shown(&f.paths.trust_bundle)
        )
    );
}

#[test]
fn missing_and_empty_files() {
    let (_ca, f) = files(CertSpec::spiffe(ID));
    std::fs::remove_file(&f.paths.key).unwrap();
    let err = f.err();
    assert!(
        err.starts_with(&format!("key {}: cannot read: ", shown(&f.paths.key))),
        "{err}"
    );
    std::fs::write(&f.paths.key, "\n").unwrap();
    assert_eq!(
        f.err(),
        format!("key {}: file is empty", shown(&f.paths.key))
    );
    std::fs::write(&f.paths.trust_bundle, "").unwrap();
    std::fs::write(&f.paths.key, "x").unwrap();
    // Files are read (and reported) in order: cert, key, bundle.
    assert_eq!(
        f.err(),
        format!(
            "trust bundle {}: file is empty",
            shown(&f.paths.trust_bundle)
        )
    );
}

#[test]
fn malformed_pem() {
    let (ca, f) = files(CertSpec::spiffe(ID));
    std::fs::write(&f.paths.cert, "not a certificate\n").unwrap();
    assert_eq!(
        f.err(),
        format!("cert {}: no CERTIFICATE PEM block", shown(&f.paths.cert))
    );
    std::fs::write(
        &f.paths.cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = f.err();
    assert!(
        err.starts_with(&format!(
            "cert {}: not a valid X.509 certificate",
            shown(&f.paths.cert)
        )),
        "{err}"
    );
    let truncated = ca.cert_pem().replace("-----END CERTIFICATE-----", "");
    std::fs::write(&f.paths.cert, truncated).unwrap();
    let err = f.err();
    assert!(err.contains("malformed PEM: missing"), "{err}");
}

#[test]
fn bad_keys() {
    let (_ca, f) = files(CertSpec::spiffe(ID));
    std::fs::write(&f.paths.key, "garbage\n").unwrap();
    assert_eq!(
        f.err(),
        format!(
            "key {}: no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block",
            shown(&f.paths.key)
        )
    );
    std::fs::write(
        &f.paths.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = f.err();
    assert!(
        err.starts_with(&format!(
            "key {}: unsupported or malformed private key",
            shown(&f.paths.key)
        )),
        "{err}"
    );
}

#[test]
fn key_of_another_certificate_is_a_mismatch() {
    let (ca, f) = files(CertSpec::spiffe(ID));
    let other = ca.issue(&CertSpec::spiffe(ID)).unwrap();
    write_atomic(&f.paths.key, other.key_pem.as_bytes()).unwrap();
    assert_eq!(
        f.err(),
        format!(
            "key {} does not match certificate {}",
            shown(&f.paths.key),
            shown(&f.paths.cert)
        )
    );
}

#[test]
fn expired_and_not_yet_valid() {
    let (_ca, f) = files(CertSpec::spiffe(ID).expired());
    let err = f.err();
    let prefix = format!("cert {}: expired on ", shown(&f.paths.cert));
    let date = err.strip_prefix(&prefix).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(date.len(), "2026-01-01T00:00:00Z".len(), "{err}");
    assert!(date.ends_with('Z'), "{err}");

    let (_ca, f) = files(CertSpec::spiffe(ID).not_yet_valid());
    let err = f.err();
    assert!(
        err.starts_with(&format!("cert {}: not valid before ", shown(&f.paths.cert))),
        "{err}"
    );
}

#[test]
fn spiffe_id_must_be_there_exactly_once() {
    let (_ca, f) = files(CertSpec::dns(&["frontend.shop.svc"]).client_and_server());
    assert_eq!(
        f.err(),
        format!(
            "cert {}: no spiffe:// URI SAN: the certificate carries no workload identity",
            shown(&f.paths.cert)
        )
    );
    let (_ca, f) = files(CertSpec::spiffe(ID).add_uri("spiffe://cluster.local/ns/x/sa/y"));
    assert_eq!(
        f.err(),
        format!(
            "cert {}: 2 spiffe:// URI SANs ({ID}, spiffe://cluster.local/ns/x/sa/y), expected exactly one",
            shown(&f.paths.cert)
        )
    );
    // Other URI SANs are fine.
    let (_ca, f) = files(CertSpec::spiffe(ID).add_uri("https://example.com/"));
    assert_eq!(check_files(&f.paths).unwrap(), ID);
    let (_ca, f) = files(CertSpec::spiffe("spiffe://"));
    assert!(f.err().contains("is not a valid SPIFFE id"), "{}", f.err());
}

#[test]
fn trust_bundle_problems() {
    let (_ca, f) = files(CertSpec::spiffe(ID));
    let stranger = TestCa::new("stranger").unwrap();
    stranger.write_bundle(&f.paths.trust_bundle).unwrap();
    assert_eq!(
        f.err(),
        format!(
            "cert {} does not chain to trust bundle {}: issued by a CA that is not in the trust bundle",
            shown(&f.paths.cert),
            shown(&f.paths.trust_bundle)
        )
    );
    std::fs::write(&f.paths.trust_bundle, "# nothing\n").unwrap();
    assert_eq!(
        f.err(),
        format!(
            "trust bundle {}: no CERTIFICATE PEM block",
            shown(&f.paths.trust_bundle)
        )
    );
}

#[test]
fn a_bundle_of_several_cas_is_fine() {
    let (ca, f) = files(CertSpec::spiffe(ID));
    let next = TestCa::new("next root").unwrap();
    let bundle = format!("{}{}", next.cert_pem(), ca.cert_pem());
    write_atomic(&f.paths.trust_bundle, bundle.as_bytes()).unwrap();
    let store = IdentityStore::load(&f.paths).unwrap();
    assert_eq!(store.status()["trust_bundle_certs"], 2);
    drop(f.dir);
}

#[test]
fn certificate_must_serve_both_directions() {
    let (_ca, f) = files(CertSpec::spiffe(ID).client_only());
    let err = f.err();
    assert!(
        err.ends_with("the certificate is not valid for both TLS server and client authentication (extended key usage)"),
        "{err}"
    );
    let (_ca, f) = files(CertSpec::spiffe(ID).server_only());
    assert!(f.err().ends_with("(extended key usage)"), "{}", f.err());
}

#[test]
fn peer_id_extraction() {
    let ca = TestCa::new("root").unwrap();
    let der = |spec: CertSpec| {
        let issued = ca.issue(&spec).unwrap();
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()
    };
    assert_eq!(
        peer_spiffe_id(&der(CertSpec::spiffe(ID))).as_deref(),
        Some(ID)
    );
    assert_eq!(peer_spiffe_id(&der(CertSpec::dns(&["a.example"]))), None);
    assert_eq!(
        peer_spiffe_id(&der(CertSpec::spiffe(ID).add_uri("spiffe://td/other"))),
        None
    );
    assert_eq!(
        peer_spiffe_id(&rustls::pki_types::CertificateDer::from(vec![1, 2, 3])),
        None
    );
}

#[test]
fn timestamps_format_as_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
    assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
}

#[test]
fn provider_prefers_post_quantum_key_exchange() {
    use rustls::NamedGroup;
    let groups: Vec<NamedGroup> = provider().kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups,
        [
            NamedGroup::X25519MLKEM768,
            NamedGroup::X25519,
            NamedGroup::secp256r1
        ]
    );
}
