//! A real gRPC server and client for tests: `support/grpc_demo.py` run by Debian's
//! `python3-grpcio` (no stubs, no protoc). Used by the sidecar's and the gateway's gRPC
//! tests; the script's header lists what the server serves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use crate::{free_addr, Proc};

/// Debian's interpreter: `python3-grpcio` installs there, and a `python3` found first on
/// PATH (pyenv, a venv) may not have it.
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/grpc_demo.py")
}

/// The grpcio server, on a port picked at run time.
pub struct GrpcServer {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl GrpcServer {
    /// Cleartext HTTP/2 (h2c).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with("127.0.0.1", "", None).await
    }

    /// On `ip`, answering `/demo.Echo/Whoami` with `id`, over TLS when `tls` names a
    /// certificate and key.
    pub async fn start_with(
        ip: &str,
        id: &str,
        tls: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Self> {
        let addr = free_addr(ip);
        let mut cmd = Command::new(python());
        cmd.arg(script())
            .arg("serve")
            .arg(addr.to_string())
            .args(["--id", id]);
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        let mut proc = Proc::spawn(cmd, "grpc-server")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !proc.log().contains("listening") {
            if !proc.is_running() {
                bail!(
                    "the gRPC server exited (is python3-grpcio installed? `apt-get install python3-grpcio`):\n{}",
                    proc.log()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the gRPC server did not start:\n{}", proc.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { proc, addr })
    }

    /// How often the server ran `method` (asked directly, not through a proxy).
    pub async fn calls(&self, method: &str) -> anyhow::Result<u64> {
        let o = call(
            self.addr,
            "unary",
            "/demo.Stats/Calls",
            &["--payload", method],
        )
        .await?;
        if o.code != "OK" {
            bail!("{o:?}\n{}", self.proc.log());
        }
        let n = o.responses.first().ok_or_else(|| anyhow!("no answer"))?;
        Ok(n.parse()?)
    }

    /// Make the server's health service answer NOT_SERVING (`false`) or SERVING.
    pub async fn set_serving(&self, serving: bool) -> anyhow::Result<()> {
        let status = if serving { "SERVING" } else { "NOT_SERVING" };
        let o = call(
            self.addr,
            "unary",
            "/demo.Control/SetHealth",
            &["--payload", status],
        )
        .await?;
        if o.code != "OK" {
            bail!("{o:?}");
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// What the client saw of one call.
#[derive(Debug, Deserialize)]
pub struct Outcome {
    pub code: String,
    pub details: Option<String>,
    pub responses: Vec<String>,
    pub initial: HashMap<String, String>,
    pub trailing: HashMap<String, String>,
    pub seconds: f64,
}

impl Outcome {
    pub fn details(&self) -> &str {
        self.details.as_deref().unwrap_or("")
    }
}

/// One call by the grpcio client: `kind` is unary, server_stream or bidi; `args` are
/// the script's (`--payload`, `--timeout`, `--metadata`, `--root-cert`, `--authority`).
pub async fn call(
    target: SocketAddr,
    kind: &str,
    method: &str,
    args: &[&str],
) -> anyhow::Result<Outcome> {
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["call", &target.to_string(), kind, method])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| {
        format!(
            "grpc client\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
