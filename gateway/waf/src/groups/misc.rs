//! XML external entities and NoSQL operator injection: small groups kept together.

use super::loc::*;
use super::Group::{Nosqli, Xxe};
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// A DTD declaring an external entity in an XML body (`<!ENTITY x SYSTEM "...">`).
pub(crate) const XXE_DTD: &str = "xxe.external_entity";

pub(crate) const XXE_RULES: &[RuleDef] = &[
    rule(
        "xxe.entity_in_argument",
        Xxe,
        Critical,
        1,
        INPUT | RAWBODY,
        Norm,
        &[
            "<!entity",
            "<!doctype",
            "xinclude",
            "<xi:include",
            "<!element",
        ],
        r#"<!entity\s+(?:%\s*)?[\w.:-]+\s+(?:system|public)\b|<!doctype\s+[\w:.-]+\s+(?:system|public)\s+['"]|<!doctype[^>\[]*\[\s*<!(?:entity|element)|<xi:include\b|xmlns:\w+\s*=\s*['"]https?://www\.w3\.org/2001/xinclude|<!entity\s+%"#,
    ),
    rule(
        "xxe.entity_declaration",
        Xxe,
        Error,
        1,
        INPUT | RAWBODY,
        Norm,
        &["<!entity"],
        r"<!entity\s",
    ),
];

pub(crate) const NOSQLI_RULES: &[RuleDef] = &[
    rule(
        "nosqli.operator_in_name",
        Nosqli,
        Critical,
        1,
        NAMES,
        Norm,
        &["[$", "$"],
        r"\[\s*\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|or|and|not|nor|expr|elemmatch|size|all|type|mod|text|function|jsonschema)\s*\]|^\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|or|and|not|nor|expr|elemmatch|function|jsonschema)$",
    ),
    rule(
        "nosqli.operator_in_value",
        Nosqli,
        Critical,
        1,
        ARGS | PATH,
        Norm,
        &["$"],
        r#"[{,]\s*['"]?\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|or|and|not|nor|expr|elemmatch|function|jsonschema)['"]?\s*:"#,
    ),
    rule(
        "nosqli.js_injection",
        Nosqli,
        Critical,
        1,
        ARGS,
        Norm,
        &["this.", "return", "sleep(", "||", "db."],
        r#"\bthis\.\w+\s*(?:[=!]==?|\.match\s*\(|\.constructor)|;\s*return\s+(?:true|1|this)\b|['"]\s*\|\|\s*['"]?\w*['"]?\s*==\s*['"]|\bdb\.(?:\w+\.)?(?:find|drop|insert|remove|getcollection|eval)\w*\s*\(|\bsleep\s*\(\s*\d+\s*\)\s*(?:\|\||;|$)|\btojson\s*\(\s*db\b"#,
    ),
];
