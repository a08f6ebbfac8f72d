//! Protocol anomalies and limits. Most of these are checked in code by the engine;
//! the table holds what a pattern can say (response splitting in arguments).

use super::loc::*;
use super::Group::Protocol as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// No Host header and no authority.
pub(crate) const MISSING_HOST: &str = "protocol.missing_host";
/// More than one Host header.
pub(crate) const DUPLICATE_HOST: &str = "protocol.duplicate_host";
/// A method outside the policy's `allowed_methods`.
pub(crate) const METHOD: &str = "protocol.method_not_allowed";
/// More arguments than `max_arguments`; the rest are not inspected.
pub(crate) const TOO_MANY_ARGS: &str = "protocol.too_many_arguments";
/// An argument longer than `max_argument_length`; only the first part is inspected.
pub(crate) const ARG_TOO_LONG: &str = "protocol.argument_too_long";
/// Decoded text that is not UTF-8.
pub(crate) const INVALID_UTF8: &str = "protocol.invalid_utf8";
/// A NUL byte in a decoded argument.
pub(crate) const NUL: &str = "protocol.nul_byte";
/// A body content type outside `allowed_content_types`.
pub(crate) const CONTENT_TYPE: &str = "protocol.content_type";
/// A body over `body.limit` with `over_limit: block`.
pub(crate) const BODY_OVER_LIMIT: &str = "protocol.body_over_limit";
/// A body that does not parse as its content type (inspected as one raw value).
pub(crate) const BODY_PARSE: &str = "protocol.body_parse_error";
/// A parsing limit was reached (JSON depth, multipart parts, XML nodes ...).
pub(crate) const LIMITS: &str = "protocol.inspection_limit";

pub(crate) const RULES: &[RuleDef] = &[rule(
    "protocol.response_splitting",
    G,
    Critical,
    1,
    ARGS | PATH | NAMES,
    Norm,
    &["\r", "\n"],
    r"[\r\n]\s*(?:set-cookie|location|content-(?:type|length)|refresh|x-xss-protection|http/1\.[01])\s*:?|[\r\n][\r\n]\s*<(?:html|script)",
)];
