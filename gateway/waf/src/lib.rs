//! The WAF detection engine of the tollgate gateway: policy spec (the YAML users
//! write), normalisation, managed rule groups, custom rules, anomaly scoring, and
//! replay input parsing. Pure and synchronous: no I/O, no async, no Pingora types, so
//! it can be benchmarked and fuzzed alone. It does not own the request pipeline,
//! config loading, metrics, access logs, or reading bodies: the gateway does, against
//! this API.
//!
//! # Use
//!
//! ```
//! use tollgate_waf::{Policy, PolicySpec, Request, Body, Scratch, Action};
//!
//! // At config load (per route): parse and compile. Errors name the field.
//! let spec: PolicySpec = serde_json::from_str(r#"{"mode": "block", "paranoia": 1}"#).unwrap();
//! let policy = Policy::compile(&spec).unwrap();
//!
//! // Per request (one Scratch per worker thread, reused).
//! let mut scratch = Scratch::new();
//! let headers: &[(&str, &[u8])] = &[("host", b"shop.example"), ("user-agent", b"curl/8.5")];
//! let req = Request {
//!     method: "POST",
//!     target: b"/search?q=1%27%20OR%20%271%27%3D%271",
//!     authority: None,
//!     headers,
//!     client_ip: "203.0.113.9".parse().unwrap(),
//!     // Set when `policy.wants_body(&req)`: the first `policy.body_limit()` bytes.
//!     body: Some(Body { bytes: b"", truncated: false }),
//! };
//! let outcome = policy.inspect(&req, &mut scratch);
//! // Log every match (rare; clean traffic has none), whatever the action.
//! for m in &outcome.matches {
//!     println!("{m}"); // sqli.libinjection (sqli, Critical) in query:q: "1' or '1'='1"
//! }
//! match &outcome.action {
//!     // Answer now with deny.status (and deny.body/headers if set, else a page with
//!     // the request id). In detect mode this never happens: `detect_only` is set.
//!     Action::Block(deny) => assert_eq!(deny.status, 403),
//!     // Proxy on. `Allow` came from an allow list or a custom `allow` rule.
//!     Action::Pass | Action::Allow => {}
//! }
//! ```
//!
//! * [`Policy::inspect`] is one call per request with an optional body. The gateway
//!   calls it once the head is read, with `body: None` when [`Policy::wants_body`] is
//!   false; otherwise it pre-reads up to [`Policy::body_limit`] bytes first (in block
//!   mode the body must be seen before the upstream is contacted).
//! * The [`Outcome`] says what to do ([`Action`]), the score, the [`Match`]es (rule id,
//!   group, severity, argument name, normalised excerpt) and custom labels; in detect
//!   mode `detect_only` is set instead of blocking. Everything is `Serialize` for logs.
//! * Rule ids are `GROUP.NAME` (`sqli.libinjection`, `lfi.sensitive_file`); custom rules
//!   keep their own ids; [`Policy::rule_ids`] lists them for metrics.
//! * [`replay`] parses recorded traffic (JSON lines, HAR, access logs) and aggregates
//!   what a policy would block, false-positive candidates first.
//!
//! The policy keys, rule ids and severities are described in `docs/waf.md`.
//!
//! Costs: all patterns are compiled at load into one Aho-Corasick automaton (literal
//! prefilter) and `regex` confirmations (linear time, no backtracking); values made of
//! letters, digits, `_-.` skip the rules; parsing is iterative and bounded by
//! `max_arguments`, `max_argument_length`, `body.limit` and a nesting depth of 64.

#![forbid(unsafe_code)]

mod body;
mod compile;
mod custom;
mod groups;
mod inspect;
mod normalise;
pub mod replay;
mod request;
mod score;
pub mod spec;

pub use compile::{CompileError, Policy};
pub use groups::{Group, Severity};
pub use inspect::Scratch;
pub use request::{Body, Request};
pub use score::{Action, Deny, Match, Outcome, Stats, MAX_VALUE};
pub use spec::PolicySpec;
