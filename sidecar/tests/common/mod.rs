//! A two-sidecar mesh on loopback: app -> sidecar A (outbound "app") -> mTLS ->
//! sidecar B (inbound) -> backend-demo. Certificates from a throwaway CA.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, Backend, Sidecar};

pub const A_ID: &str = "spiffe://test.local/ns/shop/sa/frontend";
pub const B_ID: &str = "spiffe://test.local/ns/shop/sa/payments";

pub struct Mesh {
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
    pub app: Backend,
    pub a: Sidecar,
    pub b: Sidecar,
    /// A's listener for the dependency: what the app calls.
    pub out: SocketAddr,
    pub b_inbound: SocketAddr,
}

pub struct MeshOpts {
    /// Extra YAML lines for A's dependency block (indented 4 spaces).
    pub dep_policy: String,
    pub protocol: &'static str,
    pub a_id: String,
    pub expect_b_id: String,
    pub b_allow: Vec<String>,
}

impl Default for MeshOpts {
    fn default() -> Self {
        Self {
            dep_policy: String::new(),
            protocol: "http2",
            a_id: A_ID.into(),
            expect_b_id: B_ID.into(),
            b_allow: vec![A_ID.into()],
        }
    }
}

pub fn issue(ca: &TestCa, dir: &Path, stem: &str, spec: CertSpec) -> (PathBuf, PathBuf) {
    ca.issue(&spec).unwrap().write(dir, stem).unwrap()
}

pub fn b_config(allow: &[String]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
identity: {{ cert: b.crt, key: b.key, trust_bundle: ca.crt }}
inbound:
  listen: "${{INBOUND}}"
  forward_to: "${{APP}}"
  allow: [{}]
admin: {{ address: "${{ADMIN}}" }}
# Two threads: B runs the multi-thread runtime, A (default 1) the current-thread one.
server: {{ threads: 2, shutdown: {{ drain_delay: 0s, grace_period: 5s }} }}
"#,
        allow.join(", ")
    )
}

pub fn a_config(opts: &MeshOpts) -> String {
    format!(
        r#"
identity: {{ cert: a.crt, key: a.key, trust_bundle: ca.crt }}
outbound:
  app:
    listen: "${{OUT}}"
    endpoints: ["${{B}}"]
    server_identity: "{}"
    protocol: {}
{}
admin: {{ address: "${{ADMIN}}" }}
server: {{ shutdown: {{ drain_delay: 0s, grace_period: 5s }} }}
"#,
        opts.expect_b_id, opts.protocol, opts.dep_policy
    )
}

impl Mesh {
    pub async fn start(opts: MeshOpts) -> Mesh {
        let ca = TestCa::new("mesh-ca").unwrap();
        let dir = tempfile::tempdir().unwrap();
        ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
        issue(&ca, dir.path(), "a", CertSpec::spiffe(&opts.a_id));
        issue(&ca, dir.path(), "b", CertSpec::spiffe(B_ID));
        let app = Backend::builder().id("app").spawn().await.unwrap();
        let b_inbound = free_addr("127.0.0.1");
        let out = free_addr("127.0.0.1");
        // Configs live next to the certificates (relative paths resolve from there).
        let b = start_in(
            dir.path(),
            &b_config(&opts.b_allow),
            &[
                ("INBOUND", b_inbound.to_string()),
                ("APP", app.addr().to_string()),
            ],
        )
        .await;
        let a = start_in(
            dir.path(),
            &a_config(&opts),
            &[("OUT", out.to_string()), ("B", b_inbound.to_string())],
        )
        .await;
        Mesh {
            ca,
            dir,
            app,
            a,
            b,
            out,
            b_inbound,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.out)
    }
}

/// Start a sidecar whose relative identity paths point into `dir`.
pub async fn start_in(dir: &Path, yaml: &str, vars: &[(&str, String)]) -> Sidecar {
    start_in_with_env(dir, yaml, vars, &[]).await
}

/// [`start_in`] with environment variables for the sidecar process.
pub async fn start_in_with_env(
    dir: &Path,
    yaml: &str,
    vars: &[(&str, String)],
    env: &[(&str, &str)],
) -> Sidecar {
    let d = dir.display().to_string();
    let yaml = yaml
        .replace("cert: a.crt", &format!("cert: {d}/a.crt"))
        .replace("key: a.key", &format!("key: {d}/a.key"))
        .replace("cert: b.crt", &format!("cert: {d}/b.crt"))
        .replace("key: b.key", &format!("key: {d}/b.key"))
        .replace("trust_bundle: ca.crt", &format!("trust_bundle: {d}/ca.crt"));
    Sidecar::start_with_env(&yaml, vars, env).await.unwrap()
}
