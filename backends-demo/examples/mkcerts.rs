//! Write a throwaway CA and two workload certificates for benchmarks and manual tests:
//! `cargo run -p backends-demo --example mkcerts -- DIR`
//! -> DIR/ca.crt, DIR/a.{crt,key} (spiffe://bench.local/ns/bench/sa/a),
//!    DIR/b.{crt,key} (spiffe://bench.local/ns/bench/sa/b, also DNS b.bench.local so
//!    peers that check DNS names, such as nginx, can verify it too).

use std::path::PathBuf;

use backends_demo::pki::{CertSpec, TestCa};

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&dir)?;
    let ca = TestCa::new("bench-ca")?;
    ca.write_bundle(&dir.join("ca.crt"))?;
    ca.issue(&CertSpec::spiffe("spiffe://bench.local/ns/bench/sa/a").add_dns("a.bench.local"))?
        .write(&dir, "a")?;
    ca.issue(&CertSpec::spiffe("spiffe://bench.local/ns/bench/sa/b").add_dns("b.bench.local"))?
        .write(&dir, "b")?;
    println!("certificates in {}", dir.display());
    Ok(())
}
