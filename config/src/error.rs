//! Config errors that name the file, the line and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::locate::{locate, Position};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path, e.g. `routes[1].upstream` (empty for the whole document).
    pub field: String,
    pub message: String,
    pub position: Option<Position>,
}

/// Why a config was refused: where (file, line, field) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn io(file: &Path, err: &std::io::Error) -> Self {
        Self {
            file: file.to_owned(),
            problems: vec![Problem {
                field: String::new(),
                message: format!("cannot read file: {err}"),
                position: None,
            }],
        }
    }

    /// A problem found outside the YAML itself (e.g. an unusable certificate file).
    pub fn other(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            problems: vec![Problem {
                field: String::new(),
                message: message.into(),
                position: None,
            }],
        }
    }

    /// The first problem's message (handy in tests and metrics labels).
    pub fn first_message(&self) -> &str {
        self.problems.first().map_or("", |p| p.message.as_str())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(pos) = p.position {
                write!(f, ":{}:{}", pos.line, pos.column)?;
            }
            if p.field.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.field, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects semantic problems during validation, keyed by field path.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<(String, String)>,
}

impl Problems {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push((field.into(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Turn collected problems into an error with positions looked up in `source`.
    pub fn into_error(self, file: &Path, source: &str) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            problems: self
                .list
                .into_iter()
                .map(|(field, message)| Problem {
                    position: locate(source, &field),
                    field,
                    message,
                })
                .collect(),
        }
    }
}
