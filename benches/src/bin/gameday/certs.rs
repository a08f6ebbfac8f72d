//! `gameday certs DIR [--rotate]`: the sidecars' throwaway identities, from
//! `backends_demo::pki`. The CA's key lives only in this process, so the certificates
//! a rotation installs are issued up front, in `DIR/next-N/`; `--rotate` moves the next
//! generation over the live files (each file renamed into place, as cert-manager does).

use std::path::Path;

use anyhow::{bail, Context as _};
use backends_demo::pki::{write_atomic, CertSpec, TestCa};

/// Generations issued ahead for rotations.
const ROTATIONS: usize = 3;

pub const EDGE_ID: &str = "spiffe://gameday.tollgate/edge";
pub const BACKEND_ID: &str = "spiffe://gameday.tollgate/backend";

/// Every identity of the topology: (file stem, SPIFFE id).
fn identities() -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for z in ["a", "b", "c"] {
        out.push((format!("edge-{z}"), EDGE_ID));
        for i in 1..=2 {
            out.push((format!("backend-{z}{i}"), BACKEND_ID));
        }
    }
    out
}

pub fn run(dir: &Path, rotate: bool) -> anyhow::Result<()> {
    if rotate {
        return rotate_once(dir);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = TestCa::new("tollgate game day CA")?;
    ca.write_bundle(&dir.join("ca.crt"))?;
    for generation in 0..=ROTATIONS {
        let out = match generation {
            0 => dir.to_path_buf(),
            n => dir.join(format!("next-{n}")),
        };
        std::fs::create_dir_all(&out)?;
        for (stem, id) in identities() {
            ca.issue(&CertSpec::spiffe(id))?.write(&out, &stem)?;
        }
    }
    Ok(())
}

fn rotate_once(dir: &Path) -> anyhow::Result<()> {
    let Some(next) = (1..=ROTATIONS)
        .map(|n| dir.join(format!("next-{n}")))
        .find(|d| d.is_dir())
    else {
        bail!("{}: no certificates left to rotate to", dir.display());
    };
    for (stem, _) in identities() {
        for ext in ["crt", "key"] {
            let from = next.join(format!("{stem}.{ext}"));
            let pem =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            write_atomic(&dir.join(format!("{stem}.{ext}")), &pem)?;
        }
    }
    std::fs::remove_dir_all(&next)?;
    Ok(())
}
