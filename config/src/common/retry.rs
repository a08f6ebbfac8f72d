//! Retry conditions, the same in both configs: `on: [connect-failure, reset, timeout,
//! 5xx, 503]`, and the policy's number of attempts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;

/// Most tries a retry policy may ask for: more only multiplies load on a struggling
/// backend.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// A retry condition as written: a status code (`503`) or a name
/// (`connect-failure`, `reset`, `timeout`, `5xx`); checked during validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOnFile {
    Status(u16),
    Name(String),
}

/// Which failures a retry policy retries, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryConditions {
    pub connect_failure: bool,
    pub reset: bool,
    pub timeout: bool,
    /// Any 5xx status.
    pub status_5xx: bool,
    /// Individual statuses (5xx, 408, 429).
    pub statuses: Vec<u16>,
}

impl RetryConditions {
    pub fn retries_status(&self, status: u16) -> bool {
        (self.status_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
    }
}

/// Whether retrying a status can help: a 4xx other than 408 (timeout) and 429 (try
/// later) says the request itself is wrong, and will be wrong again.
fn retryable_status(s: u16) -> bool {
    (500..600).contains(&s) || s == 408 || s == 429
}

/// Check a policy's `on:` list; `at` is its field path (`routes[0].retry.on`).
pub fn validate_retry_on(at: &str, on: &[RetryOnFile], p: &mut Problems) -> RetryConditions {
    let mut out = RetryConditions::default();
    for (i, entry) in on.iter().enumerate() {
        match entry {
            RetryOnFile::Status(s) if retryable_status(*s) => out.statuses.push(*s),
            RetryOnFile::Status(s) => p.push(
                format!("{at}[{i}]"),
                format!("status {s} is not retryable (use a 5xx, 408 or 429)"),
            ),
            RetryOnFile::Name(n) => match n.trim() {
                "connect-failure" => out.connect_failure = true,
                "reset" => out.reset = true,
                "timeout" => out.timeout = true,
                "5xx" => out.status_5xx = true,
                other => p.push(
                    format!("{at}[{i}]"),
                    format!(
                        "unknown retry condition {other:?} (expected connect-failure, reset, timeout, 5xx or a status code)"
                    ),
                ),
            },
        }
    }
    out
}

/// Check a policy's `attempts` (total tries, the first included); `field` is its path.
pub fn validate_attempts(field: &str, attempts: u32, p: &mut Problems) {
    if !(1..=MAX_RETRY_ATTEMPTS).contains(&attempts) {
        p.push(
            field,
            format!("must be between 1 (no retry) and {MAX_RETRY_ATTEMPTS}"),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<RetryOnFile> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn validation_sorts_conditions_and_refuses_client_errors() {
        let mut p = Problems::default();
        let on = parse("[connect-failure, 5xx, 429, 404, teapot]");
        let c = validate_retry_on("r.on", &on, &mut p);
        assert!(c.connect_failure && c.status_5xx && !c.reset && !c.timeout);
        assert_eq!(c.statuses, vec![429]);
        assert!(c.retries_status(503) && c.retries_status(429) && !c.retries_status(404));
        assert_eq!(p.len(), 2);
        validate_attempts("r.attempts", 0, &mut p);
        validate_attempts("r.attempts", MAX_RETRY_ATTEMPTS, &mut p);
        assert_eq!(p.len(), 3);
    }
}
