//! Configuration and the plumbing both proxies share.
//!
//! This crate owns the YAML schema (file types, exactly what users write), its
//! validation into runtime types, error reporting with file/line/field, the JSON Schema,
//! the file watcher, and the small runtime pieces both binaries need (admin HTTP
//! listener, metrics helpers, logging setup, duration/percentage/rate units, and the
//! per-request algorithms both apply: power of two choices, outlier ejection, GCRA).
//! It does not own any proxying logic: the gateway and the sidecar turn validated
//! config into their own runtime state.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod common;
pub mod error;
pub mod gateway;
pub mod load;
pub mod locate;
pub mod metrics;
pub mod outlier;
pub mod sidecar;
pub mod telemetry;
pub mod units;
pub mod watch;

pub use error::ConfigError;
pub use units::{HumanDuration, Percent, Rate};
