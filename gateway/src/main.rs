//! `gateway --config FILE` runs; `gateway validate FILE` checks; `gateway schema` prints
//! the JSON Schema of the config.

use std::path::Path;
use std::process::ExitCode;

use tollgate_config::cli::{self, Binary};
use tollgate_config::gateway::{self, EnvOverrides};

// Pingora allocates per request (headers, tasks); mimalloc's thread-local free lists
// cut the gateway's CPU time per request noticeably (see benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn validate(file: &Path) -> Result<String, String> {
    let l = gateway::load(file, &EnvOverrides::from_process_env()).map_err(|e| e.to_string())?;
    let certs = gateway_lib::tls::check_config(&l.config)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(format!(
        "{} listeners, {certs} certificates, {} routes, {} upstreams, version {}",
        l.config.listeners.len(),
        l.config.routes.len(),
        l.config.upstreams.len(),
        l.version
    ))
}

fn run(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    gateway_lib::server::run(path).map_err(|e| format!("{e:#}").into())
}

fn main() -> ExitCode {
    cli::main(Binary {
        name: "gateway",
        about: "Edge gateway: routing, zone-aware load balancing, hot reload",
        schema: gateway::json_schema,
        validate,
        run,
    })
}
