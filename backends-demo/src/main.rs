//! `backend-demo --listen ADDR --zone ZONE --id NAME`: see `backends_demo::server`.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use backends_demo::server::{run, ServerConfig};
use clap::Parser;

/// Demo backend: echoes requests as JSON, with fault knobs under /_fault.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: SocketAddr,
    /// Zone reported in every answer.
    #[arg(long)]
    zone: String,
    /// Name reported in every answer.
    #[arg(long)]
    id: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run(ServerConfig {
        listen: args.listen,
        zone: args.zone,
        id: args.id,
        threads: args.threads,
        tls: args.tls_cert.zip(args.tls_key),
    })
}
