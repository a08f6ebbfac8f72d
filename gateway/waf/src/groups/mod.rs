//! Managed rule groups: the rule tables and the detectors written as code.
//!
//! Rule ids are `GROUP.NAME` (`sqli.libinjection`, `lfi.sensitive_file`); a group name
//! alone names every rule of the group in exclusions. A table rule ([`RuleDef`]) is a set
//! of lower-case literals (an Aho-Corasick prefilter over all rules at once) and a
//! regular expression that confirms it on one view of the normalised value; detectors
//! ([`sqli`], [`xss`], [`java`], [`ssrf`], ...) are functions that parse what a regular
//! expression cannot (libinjection's SQL and HTML tokenizers, Log4j lookups, IP
//! address encodings).

use serde::Serialize;

pub(crate) mod java;
pub(crate) mod lfi;
pub(crate) mod misc;
pub(crate) mod nodejs;
pub(crate) mod php;
pub(crate) mod protocol;
pub(crate) mod rce;
pub(crate) mod rfi;
pub(crate) mod scanners;
pub(crate) mod session;
pub(crate) mod sqli;
pub(crate) mod ssrf;
pub(crate) mod ssti;
pub(crate) mod xss;

/// A managed rule group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// SQL injection.
    Sqli,
    /// Cross-site scripting.
    Xss,
    /// Local file inclusion, path traversal.
    Lfi,
    /// Remote file inclusion.
    Rfi,
    /// Remote command execution (Unix and Windows shells, Shellshock).
    Rce,
    /// PHP injection: wrappers, functions, object injection.
    Php,
    /// Java: Log4Shell, deserialization, Spring4Shell, OGNL/EL/SpEL.
    Java,
    /// Node.js: prototype pollution, server-side JavaScript.
    Nodejs,
    /// Server-side template injection.
    Ssti,
    /// Session fixation.
    SessionFixation,
    /// Server-side request forgery.
    Ssrf,
    /// XML external entities.
    Xxe,
    /// NoSQL (MongoDB operator) injection.
    Nosqli,
    /// Known scanners and probe paths.
    Scanners,
    /// HTTP protocol anomalies and limits.
    Protocol,
    /// A custom rule of the policy.
    Custom,
}

impl Group {
    /// Every managed group (not `Custom`).
    pub const MANAGED: [Group; 15] = [
        Group::Sqli,
        Group::Xss,
        Group::Lfi,
        Group::Rfi,
        Group::Rce,
        Group::Php,
        Group::Java,
        Group::Nodejs,
        Group::Ssti,
        Group::SessionFixation,
        Group::Ssrf,
        Group::Xxe,
        Group::Nosqli,
        Group::Scanners,
        Group::Protocol,
    ];

    /// The name used in configs and rule ids.
    pub fn name(self) -> &'static str {
        match self {
            Group::Sqli => "sqli",
            Group::Xss => "xss",
            Group::Lfi => "lfi",
            Group::Rfi => "rfi",
            Group::Rce => "rce",
            Group::Php => "php",
            Group::Java => "java",
            Group::Nodejs => "nodejs",
            Group::Ssti => "ssti",
            Group::SessionFixation => "session_fixation",
            Group::Ssrf => "ssrf",
            Group::Xxe => "xxe",
            Group::Nosqli => "nosqli",
            Group::Scanners => "scanners",
            Group::Protocol => "protocol",
            Group::Custom => "custom",
        }
    }

    /// A managed group by name.
    pub fn parse(name: &str) -> Option<Group> {
        Group::MANAGED.into_iter().find(|g| g.name() == name)
    }

    pub(crate) fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How much a match adds to the anomaly score (the Core Rule Set's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// 2 points.
    Notice,
    /// 3 points.
    Warning,
    /// 4 points.
    Error,
    /// 5 points: blocks alone at the default threshold.
    Critical,
}

impl Severity {
    /// Points added to the anomaly score.
    pub fn score(self) -> u32 {
        match self {
            Severity::Notice => 2,
            Severity::Warning => 3,
            Severity::Error => 4,
            Severity::Critical => 5,
        }
    }
}

/// Where a value was found, as bits, so a rule can say where it applies.
pub(crate) mod loc {
    /// The path (whole and per segment).
    pub const PATH: u16 = 1;
    /// A query argument value.
    pub const QUERY: u16 = 1 << 1;
    /// A query argument name.
    pub const QNAME: u16 = 1 << 2;
    /// A header value (not the structured ones, see `HSTRUCT`).
    pub const HEADER: u16 = 1 << 3;
    /// The User-Agent header.
    pub const UA: u16 = 1 << 4;
    /// A cookie value.
    pub const COOKIE: u16 = 1 << 5;
    /// A cookie name.
    pub const CNAME: u16 = 1 << 6;
    /// A body value (form, JSON string, multipart field, XML text or attribute).
    pub const BODY: u16 = 1 << 7;
    /// A body name (form name, JSON key, multipart field name, XML name).
    pub const BNAME: u16 = 1 << 8;
    /// A multipart file name.
    pub const FILENAME: u16 = 1 << 9;
    /// Structured headers (Accept, Authorization ...): only checked by rules for
    /// payloads that work anywhere (Log4Shell, Shellshock).
    pub const HSTRUCT: u16 = 1 << 10;
    /// A whole body that could not be parsed as its content type.
    pub const RAWBODY: u16 = 1 << 11;

    /// Arguments an application reads.
    pub const ARGS: u16 = QUERY | COOKIE | BODY | RAWBODY | FILENAME;
    /// Arguments and the places injections arrive through besides them.
    pub const INPUT: u16 = ARGS | PATH | HEADER | UA;
    /// Argument names.
    pub const NAMES: u16 = QNAME | CNAME | BNAME;
    /// Everywhere.
    pub const ALL: u16 = INPUT | NAMES | HSTRUCT;
}

/// Which view of the normalised value a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// Decoded, lower case.
    Norm,
    /// SQL comments as spaces.
    Sql,
    /// Shell evasions undone.
    Shell,
    /// Path separators normalised.
    Path,
}

/// A table rule.
#[derive(Debug)]
pub(crate) struct RuleDef {
    pub id: &'static str,
    pub group: Group,
    pub severity: Severity,
    pub paranoia: u8,
    pub locs: u16,
    pub view: View,
    /// Lower-case literals; the rule is confirmed only when one of them is in the view.
    pub lits: &'static [&'static str],
    /// Confirms the match on the view; empty = a literal alone is a match.
    pub re: &'static str,
    /// Deny at once, whatever the score.
    pub deny: bool,
}

/// Shorthand for the tables.
#[allow(clippy::too_many_arguments)]
pub(crate) const fn rule(
    id: &'static str,
    group: Group,
    severity: Severity,
    paranoia: u8,
    locs: u16,
    view: View,
    lits: &'static [&'static str],
    re: &'static str,
) -> RuleDef {
    RuleDef {
        id,
        group,
        severity,
        paranoia,
        locs,
        view,
        lits,
        re,
        deny: false,
    }
}

/// Every table rule, in group order.
pub(crate) fn table() -> impl Iterator<Item = &'static RuleDef> {
    [
        sqli::RULES,
        xss::RULES,
        lfi::RULES,
        rfi::RULES,
        rce::RULES,
        php::RULES,
        java::RULES,
        nodejs::RULES,
        ssti::RULES,
        session::RULES,
        ssrf::RULES,
        misc::XXE_RULES,
        misc::NOSQLI_RULES,
        scanners::RULES,
        protocol::RULES,
    ]
    .into_iter()
    .flatten()
}

/// Ids of the rules written as code, with their group and paranoia level, so
/// exclusions and reports can name them.
pub(crate) const DETECTORS: &[(&str, Group, Severity, u8)] = &[
    (sqli::LIBINJECTION, Group::Sqli, Severity::Critical, 1),
    (xss::LIBINJECTION, Group::Xss, Severity::Critical, 1),
    (java::LOG4SHELL, Group::Java, Severity::Critical, 1),
    (java::DESER, Group::Java, Severity::Critical, 1),
    (ssrf::METADATA, Group::Ssrf, Severity::Critical, 1),
    (ssrf::INTERNAL, Group::Ssrf, Severity::Critical, 1),
    (ssrf::PRIVATE, Group::Ssrf, Severity::Warning, 2),
    (rfi::INCLUDE_PARAM, Group::Rfi, Severity::Critical, 1),
    (
        session::PARAM,
        Group::SessionFixation,
        Severity::Critical,
        1,
    ),
    (sqli::STATEMENT, Group::Sqli, Severity::Warning, 1),
    (
        xss::LIBINJECTION_ATTRIBUTE,
        Group::Xss,
        Severity::Warning,
        1,
    ),
    (nodejs::PROTOTYPE_KEY, Group::Nodejs, Severity::Critical, 1),
    (protocol::MISSING_HOST, Group::Protocol, Severity::Notice, 1),
    (
        protocol::DUPLICATE_HOST,
        Group::Protocol,
        Severity::Critical,
        1,
    ),
    (protocol::METHOD, Group::Protocol, Severity::Critical, 1),
    (
        protocol::TOO_MANY_ARGS,
        Group::Protocol,
        Severity::Critical,
        1,
    ),
    (
        protocol::ARG_TOO_LONG,
        Group::Protocol,
        Severity::Warning,
        1,
    ),
    (protocol::INVALID_UTF8, Group::Protocol, Severity::Notice, 1),
    (protocol::NUL, Group::Protocol, Severity::Critical, 1),
    (protocol::CONTENT_TYPE, Group::Protocol, Severity::Notice, 1),
    (
        protocol::BODY_OVER_LIMIT,
        Group::Protocol,
        Severity::Critical,
        1,
    ),
    (protocol::BODY_PARSE, Group::Protocol, Severity::Warning, 1),
    (protocol::LIMITS, Group::Protocol, Severity::Notice, 1),
    (misc::XXE_DTD, Group::Xxe, Severity::Critical, 1),
];

/// Indexes into [`DETECTORS`].
pub(crate) mod det {
    pub const SQLI: usize = 0;
    pub const XSS: usize = 1;
    pub const LOG4SHELL: usize = 2;
    pub const DESER: usize = 3;
    pub const SSRF_METADATA: usize = 4;
    pub const SSRF_INTERNAL: usize = 5;
    pub const SSRF_PRIVATE: usize = 6;
    pub const RFI_INCLUDE: usize = 7;
    pub const SESSION_PARAM: usize = 8;
    pub const SQLI_STATEMENT: usize = 9;
    pub const XSS_ATTRIBUTE: usize = 10;
    pub const PROTO_KEY: usize = 11;
    pub const MISSING_HOST: usize = 12;
    pub const DUPLICATE_HOST: usize = 13;
    pub const METHOD: usize = 14;
    pub const TOO_MANY_ARGS: usize = 15;
    pub const ARG_TOO_LONG: usize = 16;
    pub const INVALID_UTF8: usize = 17;
    pub const NUL: usize = 18;
    pub const CONTENT_TYPE: usize = 19;
    pub const BODY_OVER_LIMIT: usize = 20;
    pub const BODY_PARSE: usize = 21;
    pub const LIMITS: usize = 22;
    pub const XXE_DTD: usize = 23;
}

/// Whether libinjection's SQL check is worth running: a quote to break out of a
/// string, or a value that starts like a number (numeric context: `1 or 1=1`,
/// `-1;drop ...`, `1) or (1`) and has an operator. Text that starts with a word and
/// has no quote (user agents, URLs, prose) cannot leave a SQL string or number.
/// Keyword-only injections (`union select`, `sleep(5)`) have their own rules.
pub(crate) fn sqli_gate(norm: &str) -> bool {
    let b = norm.as_bytes();
    if memchr::memchr3(b'\'', b'"', b'`', b).is_some() {
        return true;
    }
    let first = b
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .copied()
        .unwrap_or(b'a');
    (first.is_ascii_digit() || matches!(first, b'-' | b'(' | b')' | b'@' | b'+' | b'.'))
        && b.iter().any(|&c| {
            matches!(
                c,
                b'(' | b')'
                    | b';'
                    | b'='
                    | b'<'
                    | b'>'
                    | b'|'
                    | b'&'
                    | b'*'
                    | b'#'
                    | b'-'
                    | b' '
                    | b','
            )
        })
}

/// Whether a value could be HTML or break out of an attribute; libinjection's XSS
/// check is skipped otherwise.
pub(crate) fn xss_gate(norm: &str) -> bool {
    let b = norm.as_bytes();
    memchr::memchr2(b'<', b'>', b).is_some()
        || (memchr::memchr(b'=', b).is_some() && memchr::memchr3(b'"', b'\'', b'`', b).is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn detector_indexes_match_the_table() {
        let at = |i: usize| DETECTORS[i].0;
        assert_eq!(at(det::SQLI), sqli::LIBINJECTION);
        assert_eq!(at(det::XSS), xss::LIBINJECTION);
        assert_eq!(at(det::LOG4SHELL), java::LOG4SHELL);
        assert_eq!(at(det::DESER), java::DESER);
        assert_eq!(at(det::SSRF_METADATA), ssrf::METADATA);
        assert_eq!(at(det::SSRF_INTERNAL), ssrf::INTERNAL);
        assert_eq!(at(det::SSRF_PRIVATE), ssrf::PRIVATE);
        assert_eq!(at(det::RFI_INCLUDE), rfi::INCLUDE_PARAM);
        assert_eq!(at(det::SESSION_PARAM), session::PARAM);
        assert_eq!(at(det::SQLI_STATEMENT), sqli::STATEMENT);
        assert_eq!(at(det::XSS_ATTRIBUTE), xss::LIBINJECTION_ATTRIBUTE);
        assert_eq!(at(det::PROTO_KEY), nodejs::PROTOTYPE_KEY);
        assert_eq!(at(det::MISSING_HOST), protocol::MISSING_HOST);
        assert_eq!(at(det::DUPLICATE_HOST), protocol::DUPLICATE_HOST);
        assert_eq!(at(det::METHOD), protocol::METHOD);
        assert_eq!(at(det::TOO_MANY_ARGS), protocol::TOO_MANY_ARGS);
        assert_eq!(at(det::ARG_TOO_LONG), protocol::ARG_TOO_LONG);
        assert_eq!(at(det::INVALID_UTF8), protocol::INVALID_UTF8);
        assert_eq!(at(det::NUL), protocol::NUL);
        assert_eq!(at(det::CONTENT_TYPE), protocol::CONTENT_TYPE);
        assert_eq!(at(det::BODY_OVER_LIMIT), protocol::BODY_OVER_LIMIT);
        assert_eq!(at(det::BODY_PARSE), protocol::BODY_PARSE);
        assert_eq!(at(det::LIMITS), protocol::LIMITS);
        assert_eq!(at(det::XXE_DTD), misc::XXE_DTD);
        assert_eq!(DETECTORS.len(), det::XXE_DTD + 1);
        assert!(DETECTORS.len() <= 64, "det_fired is a u64");
    }

    #[test]
    fn every_rule_compiles_has_a_unique_id_and_a_literal() {
        let mut ids: Vec<&str> = table()
            .map(|r| r.id)
            .chain(DETECTORS.iter().map(|d| d.0))
            .collect();
        for r in table() {
            assert!(r.id.starts_with(r.group.name()), "{}", r.id);
            assert!(!r.lits.is_empty(), "{} has no prefilter literal", r.id);
            assert!(
                r.lits.iter().all(|l| l.to_lowercase() == *l),
                "{}: literals are lower case",
                r.id
            );
            regex::bytes::RegexBuilder::new(r.re)
                .unicode(false)
                .build()
                .unwrap_or_else(|e| panic!("{}: {e}", r.id));
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate rule ids");
    }

    #[test]
    fn ssrf_address_forms() {
        use ssrf::{classify, Target::*};
        for m in [
            "http://169.254.169.254/latest",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.43518/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::ffff:169.254.169.254]/",
            "http://x@169.254.169.254:80/",
            "http://169.254.169.254.nip.io/",
            "http://metadata.google.internal/",
            "http://[fd00:ec2::254]/",
            "http://0x7f.1/",
            "http://localhost:6379/",
        ] {
            assert_eq!(classify(m), Metadata, "{m}");
        }
        for i in [
            "http://127.0.0.1/",
            "http://localhost/x",
            "http://[::1]/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
        ] {
            assert_ne!(classify(i), Public, "{i}");
        }
        for p in [
            "https://example.com/a?b=c",
            "http://203.0.113.9/",
            "not a url",
            "https://1.1.1.1/dns",
        ] {
            assert_eq!(classify(p), Public, "{p}");
        }
    }

    #[test]
    fn bare_addresses() {
        use ssrf::{plain_address, Target::*};
        for (v, want) in [
            ("169.254.169.254", Some(Metadata)),
            ("2852039166", Some(Metadata)),
            ("0xA9FEA9FE", Some(Metadata)),
            ("metadata.google.internal", Some(Metadata)),
            ("127.0.0.1", Some(Internal)),
            ("localhost", Some(Internal)),
            ("2130706433", None),
            ("0.0", None),
            ("59.99", None),
            ("1715940000", None),
            ("10.0.0.1", None),
            ("v1.2.3", None),
        ] {
            assert_eq!(plain_address(v.as_bytes()), want, "{v}");
        }
    }

    #[test]
    fn log4shell_resolution() {
        let mut out = String::new();
        for a in [
            "${jndi:ldap://x/a}",
            "${${lower:j}ndi:ldap://x}",
            "${${::-j}${::-n}${::-d}${::-i}:rmi://x}",
            "${${env:nan:-j}ndi${env:nan:-:}ldap://x}",
            "${j${k8s:k5:-nd}i:ldap://x}",
            "${${upper:j}${upper:n}${upper:d}${upper:i}:dns://x}",
        ] {
            assert!(java::log4shell(a, &mut out), "{a} -> {out}");
        }
        for b in ["${user.name}", "price ${amount}", "${", "}}}${{{"] {
            assert!(!java::log4shell(b, &mut out), "{b}");
        }
        let deep = "${".repeat(10_000) + &"}".repeat(10_000);
        assert!(!java::log4shell(&deep, &mut out));
    }
}
