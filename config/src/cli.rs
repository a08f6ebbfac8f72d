//! The command line both binaries share: `NAME --config FILE` runs, `NAME validate FILE`
//! checks (exit 1 with `file:line:col: field: message`), `NAME schema` prints the
//! JSON Schema of the config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    /// Config file to run with.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file; exit non-zero with file:line:col: field: message on problems.
    Validate { file: PathBuf },
    /// Print the JSON Schema of the config file (for editor completion).
    Schema,
}

/// What a binary plugs into the shared command line.
pub struct Binary {
    pub name: &'static str,
    pub about: &'static str,
    pub schema: fn() -> String,
    /// Check a file; `Ok` carries a one-line summary, `Err` the full report.
    pub validate: fn(&Path) -> Result<String, String>,
    pub run: fn(&Path) -> Result<(), Box<dyn std::error::Error>>,
}

/// A subcommand only one binary has (`sidecar iptables`), run instead of the rest.
pub struct Extra {
    pub command: clap::Command,
    pub run: fn(&clap::ArgMatches) -> ExitCode,
}

/// Parse the command line and do what it says.
pub fn main(bin: Binary) -> ExitCode {
    main_with(bin, Vec::new())
}

/// [`main`] with subcommands of the binary's own.
pub fn main_with(bin: Binary, extra: Vec<Extra>) -> ExitCode {
    let mut command = Cli::command()
        .name(bin.name)
        .about(bin.about)
        .version(env!("CARGO_PKG_VERSION"));
    for e in &extra {
        command = command.subcommand(e.command.clone());
    }
    let matches = command.get_matches();
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(e) = extra.iter().find(|e| e.command.get_name() == name) {
            return (e.run)(sub);
        }
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match (cli.command, cli.config) {
        (Some(Command::Schema), _) => {
            println!("{}", (bin.schema)());
            ExitCode::SUCCESS
        }
        (Some(Command::Validate { file }), _) => match (bin.validate)(&file) {
            Ok(summary) => {
                println!("{}: ok ({summary})", file.display());
                ExitCode::SUCCESS
            }
            Err(report) => {
                eprintln!("{report}");
                ExitCode::FAILURE
            }
        },
        (None, Some(path)) => {
            crate::telemetry::init_logging();
            match (bin.run)(&path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{}: {e}", bin.name);
                    ExitCode::FAILURE
                }
            }
        }
        (None, None) => {
            eprintln!(
                "{}: nothing to do; use --config FILE, `validate FILE` or `schema` (see --help)",
                bin.name
            );
            ExitCode::from(2)
        }
    }
}
