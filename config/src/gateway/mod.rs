//! The gateway's configuration: file types, validation, loading.

pub mod actions;
pub mod auth;
pub mod file;
pub mod grpc;
pub mod idempotency;
pub mod ratelimit;
pub mod runtime;
#[cfg(test)]
mod tests;
mod upgrade_socket;
pub mod waf;

use std::path::Path;

pub use file::GatewayFile;
pub use idempotency::{Idempotency, InFlight};
pub use ratelimit::{
    Algorithm, HeadersMode, KeyPart, OnStoreError, OneOrMany, RateLimitPolicy, RedisConfig,
    StoreFile,
};
pub use runtime::*;

use crate::error::ConfigError;
use crate::load::{fingerprint, parse_yaml};

/// A validated config and what it was built from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: GatewayConfig,
    /// Fingerprint of the file's text (shown on `/config`).
    pub version: String,
}

/// Parse and validate gateway config text. `file` is only used in messages.
pub fn from_str(file: &Path, source: &str, env: &EnvOverrides) -> Result<Loaded, ConfigError> {
    let parsed: GatewayFile = parse_yaml(file, source)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let config = runtime::validate(parsed, env, base).map_err(|p| p.into_error(file, source))?;
    Ok(Loaded {
        config,
        version: fingerprint(source),
    })
}

/// Read, parse and validate a gateway config file.
pub fn load(file: &Path, env: &EnvOverrides) -> Result<Loaded, ConfigError> {
    let source = std::fs::read_to_string(file).map_err(|e| ConfigError::io(file, &e))?;
    from_str(file, &source, env)
}

/// JSON Schema of the gateway config file, for editor completion and checks.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(GatewayFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
