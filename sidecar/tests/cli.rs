//! `sidecar validate`, `sidecar schema`, and the shipped example config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use backends_demo::pki::{CertSpec, TestCa};

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sidecar"))
}

/// Put the example next to freshly issued identity files and validate it.
#[test]
fn the_example_config_validates_with_real_identity_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/sidecar.yaml");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let ca = TestCa::new("example").unwrap();
    ca.write_bundle(&dir.path().join("certs/ca.crt")).unwrap();
    ca.issue(&CertSpec::spiffe(
        "spiffe://cluster.local/ns/shop/sa/frontend",
    ))
    .unwrap()
    .write(&dir.path().join("certs"), "tls")
    .unwrap();
    let file = dir.path().join("sidecar.yaml");
    std::fs::copy(&src, &file).unwrap();
    let out = sidecar().arg("validate").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("spiffe://cluster.local/ns/shop/sa/frontend"),
        "{stdout}"
    );
    assert!(stdout.contains("2 dependencies"), "{stdout}");
}

#[test]
fn validate_names_file_line_field_and_identity_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(
        &file,
        "identity: { cert: a.crt, key: a.key, trust_bundle: ca.crt }\noutbound:\n  pay:\n    listen: 127.0.0.1:15101\n    endpoints: [pay:15001]\n    server_identity: payments\n",
    )
    .unwrap();
    let out = sidecar().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s.yaml:6:5: outbound.pay.server_identity"),
        "{err}"
    );

    // Valid config, but the identity files are missing: named in the message.
    std::fs::write(
        &file,
        "identity: { cert: a.crt, key: a.key, trust_bundle: ca.crt }\n",
    )
    .unwrap();
    let out = sidecar().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.crt"), "{err}");

    // An expired certificate is refused by validate, before it could fail in production.
    let ca = TestCa::new("v").unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    ca.issue(&CertSpec::spiffe("spiffe://t/x").expired())
        .unwrap()
        .write(dir.path(), "a")
        .unwrap();
    let out = sidecar().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
}

#[test]
fn schema_is_json_schema() {
    let out = sidecar().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["properties"]["outbound"].is_object(), "{v}");
}
