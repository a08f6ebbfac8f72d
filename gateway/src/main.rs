//! `gateway --config FILE` runs; `gateway validate FILE` checks; `gateway schema` prints
//! the JSON Schema of the config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Pingora allocates per request (headers, tasks); mimalloc's thread-local free lists
// cut the gateway's CPU time per request noticeably (see benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tollgate_config::gateway::{self, EnvOverrides};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Edge gateway: routing, zone-aware load balancing, hot reload"
)]
struct Cli {
    /// Config file to run with.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file; exit non-zero with file:line: field: message on problems.
    Validate { file: PathBuf },
    /// Print the JSON Schema of the config file.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Schema), _) => {
            println!("{}", gateway::json_schema());
            ExitCode::SUCCESS
        }
        (Some(Command::Validate { file }), _) => {
            match gateway::load(&file, &EnvOverrides::from_process_env()) {
                Ok(l) => {
                    println!(
                        "{}: ok ({} listeners, {} routes, {} upstreams, version {})",
                        file.display(),
                        l.config.listeners.len(),
                        l.config.routes.len(),
                        l.config.upstreams.len(),
                        l.version
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        (None, Some(path)) => {
            tollgate_config::telemetry::init_logging();
            match gateway_lib::server::run(&path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        (None, None) => {
            eprintln!("gateway: nothing to do; use --config FILE, `validate FILE` or `schema` (see --help)");
            ExitCode::from(2)
        }
    }
}
