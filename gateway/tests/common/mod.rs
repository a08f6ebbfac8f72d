//! Helpers shared by the gateway's integration tests.
#![allow(dead_code, clippy::expect_used)]
pub mod raw_http;
pub mod tls_client;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::wait_until;

/// A backend-demo serving HTTPS with a certificate for `name` from `ca`.
pub async fn tls_backend(ca: &TestCa, dir: &Path, name: &str) -> (backends_demo::Proc, SocketAddr) {
    ca.issue(&CertSpec::dns(&[name]))
        .expect("tls backend")
        .write(dir, "backend")
        .expect("tls backend");
    let addr = backends_demo::free_addr("127.0.0.1");
    let mut cmd =
        std::process::Command::new(backends_demo::bin_path("backend-demo").expect("tls backend"));
    cmd.args([
        "--listen",
        &addr.to_string(),
        "--zone",
        "a",
        "--id",
        "tls-app",
        "--tls-cert",
    ])
    .arg(dir.join("backend.crt"))
    .arg("--tls-key")
    .arg(dir.join("backend.key"));
    let proc = backends_demo::Proc::spawn(cmd, "tls-backend").expect("tls backend");
    wait_until(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await
    .expect("tls backend");
    (proc, addr)
}
