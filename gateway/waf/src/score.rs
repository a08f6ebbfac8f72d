//! What an inspection says: the action, the score, and why.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::groups::{Group, Severity};

/// The result of [`crate::Policy::inspect`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// What the gateway should do.
    pub action: Action,
    /// `mode: detect` and the request would have been blocked (the action is `Pass`).
    pub detect_only: bool,
    /// Anomaly score: the summed severities of matched rules (each rule counted once)
    /// plus custom `score` actions.
    pub score: u32,
    /// Matched rules, in the order they matched. Empty for clean traffic.
    pub matches: Vec<Match>,
    /// Labels attached by custom rules.
    pub labels: Vec<Arc<str>>,
    /// An inspection limit was hit (arguments, depth, body size): part of the request
    /// was not inspected. A `protocol.*` match says which.
    pub limited: bool,
    /// How much work the inspection did.
    pub stats: Stats,
}

/// Work counters of one inspection (bounded by the policy's limits, whatever the input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Query, form and multipart arguments counted against `max_arguments`.
    pub arguments: u32,
    /// Bytes of values inspected (before decoding).
    pub bytes: u64,
}

impl Outcome {
    /// Whether the gateway must answer with a deny response.
    pub fn is_blocked(&self) -> bool {
        matches!(self.action, Action::Block(_))
    }

    /// Whether the request was blocked, or would have been in detect mode.
    pub fn would_block(&self) -> bool {
        self.is_blocked() || self.detect_only
    }
}

/// What to do with the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through.
    #[default]
    Pass,
    /// Answer with this response instead of proxying.
    Block(Deny),
    /// A custom `allow` rule or the allow list let it through without the managed groups.
    Allow,
}

/// The response to a blocked request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deny {
    /// Status code.
    pub status: u16,
    /// Body, if the rule set one (the gateway writes its own with the request id otherwise).
    pub body: Option<Arc<str>>,
    /// Extra response headers.
    pub headers: Arc<[(String, String)]>,
}

/// One matched rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// `sqli.libinjection`, `lfi.sensitive_file`, or the custom rule's id.
    pub rule_id: Arc<str>,
    /// The rule's group.
    pub group: Group,
    /// Its severity (custom rules: `notice` for count/label, `critical` for deny).
    pub severity: Severity,
    /// Where it matched: `path`, `query:id`, `query-name:x[$ne]`, `header:user-agent`,
    /// `cookie:session`, `form:comment`, `json:user.address[0].street`,
    /// `multipart:avatar`, `multipart-filename:avatar`, `xml:root.item@id`, `body`
    /// (an unparsed body), `request` (the request as a whole).
    pub argument: String,
    /// The normalised value around the match, at most [`MAX_VALUE`] characters.
    pub value: String,
}

/// Longest `Match::value` kept.
pub const MAX_VALUE: usize = 64;

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {:?}) in {}: {:?}",
            self.rule_id, self.group, self.severity, self.argument, self.value
        )
    }
}

/// A window of at most [`MAX_VALUE`] characters of `s` around byte offset `at`.
pub(crate) fn excerpt(s: &str, at: usize) -> String {
    let mut start = at.saturating_sub(16).min(s.len());
    while !s.is_char_boundary(start) {
        start -= 1;
    }
    s[start..].chars().take(MAX_VALUE).collect()
}
