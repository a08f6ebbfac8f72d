//! The sidecar's configuration: file types, validation, loading.

pub mod file;
pub mod runtime;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use file::SidecarFile;
pub use runtime::*;

use crate::error::ConfigError;
use crate::load::{fingerprint, parse_yaml};

#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: SidecarConfig,
    pub version: String,
}

/// Parse and validate sidecar config text; relative paths are relative to `file`'s
/// directory; `SIDECAR_ZONE`/`SIDECAR_REGION` from the process environment.
pub fn from_str(file: &Path, source: &str) -> Result<Loaded, ConfigError> {
    from_str_with_env(file, source, &SidecarEnv::from_process_env())
}

/// [`from_str`] with the environment's values given (tests).
pub fn from_str_with_env(
    file: &Path,
    source: &str,
    env: &SidecarEnv,
) -> Result<Loaded, ConfigError> {
    let parsed: SidecarFile = parse_yaml(file, source)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let config = runtime::validate(parsed, env, base).map_err(|p| p.into_error(file, source))?;
    Ok(Loaded {
        config,
        version: fingerprint(source),
    })
}

pub fn load(file: &Path) -> Result<Loaded, ConfigError> {
    let source = std::fs::read_to_string(file).map_err(|e| ConfigError::io(file, &e))?;
    from_str(file, &source)
}

pub fn json_schema() -> String {
    let schema = schemars::schema_for!(SidecarFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
