//! Reading YAML into file types, with errors that say where.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{ConfigError, Problem};
use crate::locate::Position;

/// Parse `source` (the text of `file`) into the file-layer type `T`.
///
/// Syntax errors, unknown fields, wrong types and bad units all come back as a
/// [`ConfigError`] naming the file, line, column and field path.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, source: &str) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(source);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = err.into_inner();
        let position = inner.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        });
        let message = strip_path(&field, &strip_location(&inner.to_string()));
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                field,
                message,
                position,
            }],
        }
    })
}

/// serde_yaml prefixes some messages with (part of) the field path; we print the full
/// path ourselves.
fn strip_path(field: &str, msg: &str) -> String {
    match msg.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && field.starts_with(head) => rest.to_owned(),
        _ => msg.to_owned(),
    }
}

/// serde_yaml appends " at line X column Y" to its messages; we print positions ourselves.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A stable fingerprint of the config text, shown on `/config` so operators can tell
/// which version is running (FNV-1a: no dependency, stable across builds).
pub fn fingerprint(source: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
