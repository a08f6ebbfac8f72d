//! `gateway validate` and `gateway schema`, and every shipped example config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
}

#[test]
fn every_example_config_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && !path.to_string_lossy().contains("sidecar")
        {
            let out = gateway()
                .arg("validate")
                .arg(&path)
                .env_remove("GATEWAY_ZONE")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 1, "no example configs found in {}", dir.display());
}

#[test]
fn validate_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "listeners:\n  - { name: http, address: 127.0.0.1:8080 }\nroutes:\n  - name: api\n    upstream: missing\nupstreams:\n  api:\n    endpoints: [{ address: 127.0.0.1:9000 }]\n    health_check: { interval: soon }\n",
    )
    .unwrap();
    let out = gateway().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:9:"), "{err}");
    assert!(err.contains("upstreams.api.health_check.interval"), "{err}");
    assert!(err.contains("invalid duration"), "{err}");

    std::fs::write(
        &file,
        "listeners:\n  - { name: http, address: 127.0.0.1:8080 }\nroutes:\n  - name: api\n    upstream: missing\nupstreams:\n  api:\n    endpoints: [{ address: 127.0.0.1:9000 }]\n",
    )
    .unwrap();
    let out = gateway().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5:5: routes[0].upstream: upstream \"missing\" is not defined"),
        "{err}"
    );

    let out = gateway()
        .arg("validate")
        .arg(dir.path().join("nope.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read file"));
}

#[test]
fn schema_is_json_schema() {
    let out = gateway().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["properties"]["listeners"].is_object(), "{v}");
    assert!(v["properties"]["upstreams"].is_object());
}

#[test]
fn startup_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.yaml");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &file,
        format!(
            "listeners: [{{ name: http, address: \"{}\" }}]\nadmin: {{ address: 127.0.0.1:0 }}\nroutes: []\n",
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let out = gateway().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener http"), "{err}");
    assert!(
        err.contains("Address already in use") || err.contains("in use"),
        "{err}"
    );
}

#[test]
fn the_annotated_example_in_the_docs_validates() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let start = doc
        .find("```yaml\n")
        .expect("a yaml example in docs/configuration.md")
        + 8;
    let len = doc[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.yaml");
    std::fs::write(&file, &doc[start..start + len]).unwrap();
    let out = gateway()
        .arg("validate")
        .arg(&file)
        .env_remove("GATEWAY_ZONE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
