//! Finding the workspace's binaries (`backend-demo`, `gateway`, `sidecar`) from a test,
//! bench or example, building them when missing or older than their sources.
//!
//! `cargo test -p gateway` builds the gateway binary but not `backend-demo`, and a binary
//! left over from an older checkout would silently test old code; hence the build here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use anyhow::{bail, Context as _};

/// Names already checked (and built if needed) by this process. Held while building, so
/// concurrent tests build a binary once.
fn checked() -> &'static Mutex<HashSet<String>> {
    static CHECKED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CHECKED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The path of workspace binary `name`, built first (once per process) if it is missing
/// or older than its crate's sources.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let profile_dir = profile_dir()?;
    let path = profile_dir.join(name);
    let mut checked = checked().lock().unwrap_or_else(PoisonError::into_inner);
    if !checked.contains(name) {
        if is_stale(&path, name) {
            match build(name, &profile_dir) {
                Ok(()) => {}
                // A stale binary beats none when, say, someone else's crate is mid-edit.
                Err(e) if path.is_file() => {
                    eprintln!("warning: using possibly stale {}: {e:#}", path.display())
                }
                Err(e) => return Err(e),
            }
        }
        checked.insert(name.to_owned());
    }
    if !path.is_file() {
        bail!("binary {name} not found at {}", path.display());
    }
    Ok(path)
}

/// `target/<profile>/`: test and bench binaries live in its `deps/`, examples in its
/// `examples/`, binaries in it directly.
fn profile_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        let dir = match dir.file_name().and_then(|n| n.to_str()) {
            Some("deps" | "examples") => dir.parent().unwrap_or(dir),
            _ => dir,
        };
        if dir
            .parent()
            .is_some_and(|t| t.join("CACHEDIR.TAG").exists())
        {
            return Ok(dir.to_path_buf());
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    if !target.is_dir() {
        bail!(
            "cannot find the cargo target dir (tried {})",
            target.display()
        );
    }
    Ok(target.join("debug"))
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Missing, or older than a source file of the crate that owns it or of `config`.
fn is_stale(path: &Path, name: &str) -> bool {
    let Ok(built) = path.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    let crate_dir = match name {
        "backend-demo" => "backends-demo",
        other => other,
    };
    let root = workspace_root();
    [crate_dir, "config"]
        .iter()
        .filter_map(|dir| newest(&root.join(dir)))
        .any(|source| source > built)
}

/// The newest modification time of `Cargo.toml` and `src/**` under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        let Ok(meta) = path.metadata() else { return };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(modified) = meta.modified() {
            *newest = (*newest).max(Some(modified));
        }
    }
    let mut found = None;
    walk(&dir.join("Cargo.toml"), &mut found);
    walk(&dir.join("src"), &mut found);
    found
}

fn build(name: &str, profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--bin", name]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    if let Some(target) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target);
    }
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
