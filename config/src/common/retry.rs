//! Retry conditions, the same in both configs: `on: [connect-failure, reset, timeout,
//! 5xx, 503]`. The names are an enum, so a typo is refused while the file is read, with
//! the valid names in the message; status codes are checked during validation.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Problems;

/// Most tries a retry policy may ask for: more only multiplies load on a struggling
/// backend.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// A named retry condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RetryCondition {
    /// The connection could not be made: the request never left, so any method may be
    /// retried.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The connection was reset before a response arrived.
    #[serde(rename = "reset")]
    Reset,
    /// No response within the timeout.
    #[serde(rename = "timeout")]
    Timeout,
    /// Any 5xx status.
    #[serde(rename = "5xx")]
    Status5xx,
}

impl RetryCondition {
    pub const ALL: [Self; 4] = [
        Self::ConnectFailure,
        Self::Reset,
        Self::Timeout,
        Self::Status5xx,
    ];

    /// As written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConnectFailure => "connect-failure",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Status5xx => "5xx",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One `on:` entry as written: a condition name (`connect-failure`) or a status code
/// (`503`, a YAML number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOnFile {
    Status(#[schemars(range(min = 100, max = 599))] u16),
    Name(RetryCondition),
}

impl From<RetryCondition> for RetryOnFile {
    fn from(c: RetryCondition) -> Self {
        Self::Name(c)
    }
}

// By hand rather than `#[serde(untagged)]`: an untagged enum answers any mistake with
// "data did not match any variant", which names neither the valid names nor the value.
impl<'de> Deserialize<'de> for RetryOnFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RetryOnVisitor)
    }
}

struct RetryOnVisitor;

impl Visitor<'_> for RetryOnVisitor {
    type Value = RetryOnFile;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a retry condition (connect-failure, reset, timeout, 5xx) or a status code")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryOnFile, E> {
        u16::try_from(v)
            .map(RetryOnFile::Status)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryOnFile, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryOnFile, E> {
        if let Some(c) = RetryCondition::from_name(v.trim()) {
            return Ok(RetryOnFile::Name(c));
        }
        if v.trim().parse::<u16>().is_ok() {
            return Err(E::custom(format!(
                "{v:?} is a string: write status codes as numbers (e.g. 503)"
            )));
        }
        Err(E::custom(format!(
            "unknown retry condition {v:?} (expected connect-failure, reset, timeout, 5xx or a status code)"
        )))
    }
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
        match *entry {
            RetryOnFile::Status(s) if retryable_status(s) => out.statuses.push(s),
            RetryOnFile::Status(s) => p.push(
                format!("{at}[{i}]"),
                format!("status {s} is not retryable (use a 5xx, 408 or 429)"),
            ),
            RetryOnFile::Name(RetryCondition::ConnectFailure) => out.connect_failure = true,
            RetryOnFile::Name(RetryCondition::Reset) => out.reset = true,
            RetryOnFile::Name(RetryCondition::Timeout) => out.timeout = true,
            RetryOnFile::Name(RetryCondition::Status5xx) => out.status_5xx = true,
        }
    }
    out
}

/// One entry of a retry policy's `grpc_methods`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GrpcMethod {
    /// `/package.Service/Method`
    Exact(String),
    /// `/package.Service/*`, kept as its prefix `/package.Service/`.
    Service(String),
}

/// The gRPC methods a retry policy may retry, as gRPC's own retry policy names them
/// (per method, or every method of a service). A gRPC call is a POST whatever it
/// does, so its HTTP method says nothing of whether repeating it is safe: the user says
/// so here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcMethods(Vec<GrpcMethod>);

impl GrpcMethods {
    /// Whether the request path `/package.Service/Method` is listed.
    pub fn matches(&self, path: &str) -> bool {
        self.0.iter().any(|m| match m {
            GrpcMethod::Exact(p) => p == path,
            GrpcMethod::Service(prefix) => path
                .strip_prefix(prefix.as_str())
                .is_some_and(|method| !method.is_empty() && !method.contains('/')),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Check `grpc_methods`; `at` is its field path (`outbound.x.retry.grpc_methods`).
pub fn validate_grpc_methods(at: &str, methods: &[String], p: &mut Problems) -> GrpcMethods {
    let name_ok =
        |s: &str| !s.is_empty() && !s.contains(['/', '*']) && !s.contains(char::is_whitespace);
    let mut out = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let parsed = m
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(service, method)| match method {
                "*" if name_ok(service) => Some(GrpcMethod::Service(format!("/{service}/"))),
                _ if name_ok(service) && name_ok(method) => Some(GrpcMethod::Exact(m.clone())),
                _ => None,
            });
        match parsed {
            Some(g) => out.push(g),
            None => p.push(
                format!("{at}[{i}]"),
                format!(
                    "{m:?} is not a gRPC method: write /package.Service/Method, or /package.Service/* for all its methods"
                ),
            ),
        }
    }
    GrpcMethods(out)
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

    fn parse(yaml: &str) -> Result<Vec<RetryOnFile>, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn names_and_numbers_parse() {
        assert_eq!(
            parse("[connect-failure, reset, timeout, 5xx, 503]").unwrap(),
            vec![
                RetryCondition::ConnectFailure.into(),
                RetryCondition::Reset.into(),
                RetryCondition::Timeout.into(),
                RetryCondition::Status5xx.into(),
                RetryOnFile::Status(503),
            ]
        );
        assert_eq!(
            parse("[\"5xx\"]").unwrap(),
            vec![RetryCondition::Status5xx.into()]
        );
    }

    #[test]
    fn a_bad_entry_says_what_is_valid() {
        let e = parse("[teapot]").unwrap_err();
        assert!(
            e.contains("unknown retry condition \"teapot\" (expected connect-failure, reset, timeout, 5xx or a status code)"),
            "{e}"
        );
        let e = parse("[\"502\"]").unwrap_err();
        assert!(e.contains("write status codes as numbers"), "{e}");
        for bad in ["[70000]", "[-1]", "[5.5]", "[true]"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("expected a retry condition"), "{bad}: {e}");
        }
    }

    #[test]
    fn names_round_trip() {
        for c in RetryCondition::ALL {
            let yaml = serde_yaml::to_string(&RetryOnFile::Name(c)).unwrap();
            assert_eq!(
                parse(&format!("[{}]", yaml.trim())).unwrap(),
                vec![c.into()]
            );
        }
    }

    #[test]
    fn grpc_methods_match_a_method_or_a_whole_service() {
        let mut p = Problems::default();
        let m = validate_grpc_methods(
            "r.grpc_methods",
            &["/shop.Orders/Get".into(), "/shop.Stock/*".into()],
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(m.matches("/shop.Orders/Get"));
        assert!(!m.matches("/shop.Orders/Put"));
        assert!(!m.matches("/shop.Orders/GetMore"));
        assert!(m.matches("/shop.Stock/Reserve"));
        assert!(!m.matches("/shop.Stock/"));
        assert!(!m.matches("/shop.Stock/a/b"));
        assert!(!m.matches("/shop.StockX/Reserve"));
        assert!(!GrpcMethods::default().matches("/shop.Orders/Get"));
    }

    #[test]
    fn a_bad_grpc_method_says_how_to_write_one() {
        let mut p = Problems::default();
        let bad: Vec<String> = [
            "shop.Orders/Get",
            "/shop.Orders",
            "/shop.Orders/",
            "/*/Get",
            "/shop.Orders/Ge*",
            "/a/b/c",
            "*",
            "",
        ]
        .map(String::from)
        .to_vec();
        let m = validate_grpc_methods("r.grpc_methods", &bad, &mut p);
        assert!(m.is_empty());
        assert_eq!(p.len(), bad.len(), "{p:?}");
    }

    #[test]
    fn validation_sorts_conditions_and_refuses_client_errors() {
        let mut p = Problems::default();
        let on = parse("[connect-failure, 5xx, 429, 404]").unwrap();
        let c = validate_retry_on("r.on", &on, &mut p);
        assert!(c.connect_failure && c.status_5xx && !c.reset && !c.timeout);
        assert_eq!(c.statuses, vec![429]);
        assert!(c.retries_status(503) && c.retries_status(429) && !c.retries_status(404));
        assert_eq!(p.len(), 1);
        validate_attempts("r.attempts", 0, &mut p);
        validate_attempts("r.attempts", MAX_RETRY_ATTEMPTS, &mut p);
        assert_eq!(p.len(), 2);
    }
}
