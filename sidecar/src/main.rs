//! `sidecar --config FILE` runs; `sidecar validate FILE` checks the config and the
//! identity files; `sidecar schema` prints the JSON Schema of the config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate_config::sidecar;

#[derive(Parser)]
#[command(
    name = "sidecar",
    version,
    about = "mTLS sidecar with per-dependency resilience"
)]
struct Cli {
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file and its identity files; exit non-zero with file:line: field: message.
    Validate { file: PathBuf },
    /// Print the JSON Schema of the config file.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Schema), _) => {
            println!("{}", sidecar::json_schema());
            ExitCode::SUCCESS
        }
        (Some(Command::Validate { file }), _) => match sidecar::load(&file) {
            Ok(l) => match sidecar_lib::identity::check_files(&l.config.identity) {
                Ok(id) => {
                    println!(
                        "{}: ok (identity {id}, {} dependencies, version {})",
                        file.display(),
                        l.config.dependencies.len(),
                        l.version
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: identity: {e}", file.display());
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        (None, Some(path)) => {
            tollgate_config::telemetry::init_logging();
            match sidecar_lib::server::run(&path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sidecar: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        (None, None) => {
            eprintln!("sidecar: nothing to do; use --config FILE, `validate FILE` or `schema` (see --help)");
            ExitCode::from(2)
        }
    }
}
