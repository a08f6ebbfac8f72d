//! `sidecar --config FILE` runs; `sidecar validate FILE` checks the config and the
//! identity files; `sidecar schema` prints the JSON Schema of the config;
//! `sidecar iptables install|uninstall` sets up transparent interception.

use std::path::Path;
use std::process::ExitCode;

use tollgate_config::cli::{self, Binary};
use tollgate_config::sidecar;

fn validate(file: &Path) -> Result<String, String> {
    let l = sidecar::load(file).map_err(|e| e.to_string())?;
    let id = sidecar_lib::identity::check_files(&l.config.identity)
        .map_err(|e| format!("{}: identity: {e}", file.display()))?;
    Ok(format!(
        "identity {id}, {} dependencies, version {}",
        l.config.dependencies.len(),
        l.version
    ))
}

fn run(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    sidecar_lib::server::run(path).map_err(|e| format!("{e:#}").into())
}

fn main() -> ExitCode {
    // Both rustls providers are linked (ring through the workspace); libraries that
    // build TLS configs without naming one (kube's client, for EndpointSlice discovery)
    // need a process default, or they panic. The sidecar's own configs name theirs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let iptables = cli::Extra {
        command: sidecar_lib::nftables::command(),
        run: sidecar_lib::nftables::run_matches,
    };
    cli::main_with(
        Binary {
            name: "sidecar",
            about: "mTLS sidecar with per-dependency resilience",
            schema: sidecar::json_schema,
            validate,
            run,
        },
        vec![iptables],
    )
}
