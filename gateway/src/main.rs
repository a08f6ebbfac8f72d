//! `gateway --config FILE` runs; `gateway validate FILE` checks; `gateway schema` prints
//! the JSON Schema of the config; `gateway upgrade --config FILE` takes over from the
//! running gateway (binary upgrade without dropping a connection); `gateway waf replay`
//! shows what a WAF policy would block in recorded traffic.

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
    // The same build a start or a reload does: every certificate, CA and JWKS file is
    // read. No identity provider is called: a check must not depend on the network.
    gateway_lib::auth::jwks::offline();
    let s = gateway_lib::snapshot::Snapshot::build(l, None)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(format!(
        "{} listeners, {} certificates, {} routes, {} upstreams, version {}",
        s.config.listeners.len(),
        s.certificate_count(),
        s.config.routes.len(),
        s.config.upstreams.len(),
        s.version
    ))
}

fn run(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    gateway_lib::server::run(path).map_err(|e| format!("{e:#}").into())
}

fn upgrade_command() -> clap::Command {
    clap::Command::new("upgrade")
        .about(
            "Start a new gateway that takes the listening sockets over from the running one \
             (found through its admin API), which then drains and exits 0",
        )
        .arg(
            clap::Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .required(true)
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("Config file the new gateway runs with"),
        )
        .arg(
            clap::Arg::new("from")
                .long("from")
                .value_name("ADDRESS")
                .value_parser(clap::value_parser!(std::net::SocketAddr))
                .help("Admin address of the running gateway (default: admin.address of FILE)"),
        )
}

fn upgrade(m: &clap::ArgMatches) -> ExitCode {
    let Some(path) = m.get_one::<std::path::PathBuf>("config") else {
        return ExitCode::from(2);
    };
    let from = m.get_one::<std::net::SocketAddr>("from").copied();
    tollgate_config::telemetry::init_logging();
    match gateway_lib::server::upgrade(path, from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // Both rustls providers are linked (the sidecar's aws-lc-rs through the workspace);
    // the gateway, like Pingora, uses ring: make it the default for libraries that
    // build TLS configs without naming one (the Redis client for rediss://).
    let _ = rustls::crypto::ring::default_provider().install_default();
    cli::main_with(
        Binary {
            name: "gateway",
            about: "Edge gateway: routing, zone-aware load balancing, hot reload",
            schema: gateway::json_schema,
            validate,
            run,
        },
        vec![
            cli::Extra {
                command: upgrade_command(),
                run: upgrade,
            },
            cli::Extra {
                command: gateway_lib::replay::command(),
                run: gateway_lib::replay::run,
            },
        ],
    )
}
