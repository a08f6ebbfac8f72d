//! Java: Log4Shell lookups (nested and obfuscated, resolved before matching),
//! serialized objects, Spring4Shell class-loader paths, OGNL, EL and SpEL expressions.

use super::loc::*;
use super::Group::Java as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// `${jndi:...}` after resolving `${lower:j}`, `${::-j}`, `${env:X:-j}` and friends.
pub(crate) const LOG4SHELL: &str = "java.log4shell";
/// A Java serialized object (`aced0005`, `rO0AB`).
pub(crate) const DESER: &str = "java.deserialization";

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "java.spring4shell",
        G,
        Critical,
        1,
        ALL,
        Norm,
        &["classloader", "class.module", "class[", "protectiondomain"],
        r"\bclass\s*(?:\.|\[\s*.?)\s*(?:module|classloader|protectiondomain)\b|\.classloader\.(?:resources|urls|parent)|class\.module\.classloader",
    ),
    rule(
        "java.ognl",
        G,
        Critical,
        1,
        ALL,
        Norm,
        &[
            "%{",
            "#_memberaccess",
            "@ognl",
            "#context",
            "ognlcontext",
            "#attr",
            "#request",
            "(#",
            "#application",
            "#session",
            "@java.lang",
            "#parameters",
        ],
        r"%\{\s*[(#@'\w]|#_memberaccess|@ognl(?:\.|context)|ognlcontext|#context\s*\[|\(\s*#\w+\s*=|#(?:attr|request|application|session|parameters)\s*\[|@java\.lang\.\w+@",
    ),
    rule(
        "java.el_spel",
        G,
        Critical,
        1,
        ALL,
        Norm,
        &[
            "java.lang",
            "runtime",
            "processbuilder",
            "getclass",
            "forname",
            "t(",
            "scriptengine",
            "getruntime",
            "javax.",
            "invoke(",
        ],
        r#"\bt\s*\(\s*java\.(?:lang|io|net|util|nio)\.|java\.lang\.(?:runtime|processbuilder|system|class|thread|reflect)\b|new\s+(?:java\.lang\.)?processbuilder\b|getruntime\s*\(\s*\)|\.getclass\s*\(\s*\)\s*\.(?:forname|getclassloader|getmethod|getdeclared)|class\.forname\s*\(|(?:[$#]\{|%\{)[^}]*?\b(?:runtime|processbuilder|getclass|classloader|forname|scriptengine|invoke|exec)\b|javax\.script\.scriptenginemanager|\.getmethod\s*\(\s*['"]exec|\bjava\.beans\.xmldecoder\b|\.invoke\s*\([^)]*getruntime"#,
    ),
    rule(
        "java.el_probe",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &["${", "#{", "%{"],
        r"[$#%]\{\s*(?:\d+\s*[*+\-/]\s*\d+|applicationscope|requestscope|sessionscope|pagecontext|facescontext|header\[|param\[|initparam|cookie\[|request\.|session\.|application\.|servletcontext)",
    ),
    rule(
        "java.gadgets",
        G,
        Critical,
        1,
        ALL,
        Norm,
        &[
            "commons.collections",
            "invokertransformer",
            "templatesimpl",
            "jdbcrowsetimpl",
            "com.sun.",
            "ysoserial",
            "javax.management",
            "org.apache.xalan",
            "jndi",
            "xbean",
            "bsh.interpreter",
            "groovy.util",
            "@type",
        ],
        r#"org\.apache\.commons\.collections\d*\.functors|invokertransformer|templatesimpl|jdbcrowsetimpl|com\.sun\.(?:rowset|org\.apache\.xalan|jndi)|ysoserial|org\.apache\.xalan\.xsltc|org\.apache\.xbean\.|bsh\.interpreter|groovy\.util\.expando|"@type"\s*:\s*"(?:com\.|org\.|java\.|javax\.|sun\.)"#,
    ),
];

/// Resolve Log4j lookups far enough to see a `jndi:` hidden inside them. Returns true
/// if the resolved text has a JNDI lookup. Linear: each `${` is resolved once, with a
/// nesting limit.
pub(crate) fn log4shell(norm: &str, out: &mut String) -> bool {
    if !crate::normalise::has_pair(norm.as_bytes(), b'$', b'{') {
        return false;
    }
    out.clear();
    let b = norm.as_bytes();
    let mut pos = 0;
    resolve(b, &mut pos, 0, out);
    // Protocols Log4j's JNDI lookup spoke.
    let mut rest = out.as_str();
    while let Some(i) = rest.find("jndi") {
        let after = rest[i + 4..].trim_start();
        if after.starts_with(':') {
            return true;
        }
        rest = &rest[i + 4..];
    }
    out.contains("${ldap:") || out.contains("${rmi:") || out.contains("${dns:")
}

/// Copy `b[*pos..]` to `out`, replacing each `${...}` lookup by what Log4j would
/// make of it for our purpose: its default (`:-x` → `x`), its argument for case lookups
/// (`lower:x` → `x`), or `${` + content + `}` otherwise. Returns at a `}` closing the
/// current level (depth > 0).
fn resolve(b: &[u8], pos: &mut usize, depth: usize, out: &mut String) {
    while *pos < b.len() {
        if b[*pos] == b'}' && depth > 0 {
            *pos += 1;
            return;
        }
        if b[*pos] == b'$' && b.get(*pos + 1) == Some(&b'{') && depth < 16 {
            *pos += 2;
            let start = out.len();
            resolve(b, pos, depth + 1, out);
            let inner = out[start..].to_string();
            out.truncate(start);
            if let Some(i) = inner.find(":-") {
                out.push_str(&inner[i + 2..]);
            } else if let Some(rest) = ["lower:", "upper:", "date:"]
                .iter()
                .find_map(|p| inner.strip_prefix(p))
            {
                out.push_str(rest.trim_matches('\''));
            } else {
                out.push_str("${");
                out.push_str(&inner);
                out.push('}');
            }
            continue;
        }
        let ch_len = match b[*pos] {
            0xF0..=0xFF => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        if let Some(s) = b
            .get(*pos..*pos + ch_len)
            .and_then(|s| std::str::from_utf8(s).ok())
        {
            out.push_str(s);
        }
        *pos += ch_len;
    }
}

/// A Java serialized stream, as raw bytes, hex or base64.
pub(crate) fn deserialization(raw: &[u8]) -> bool {
    let t = raw.trim_ascii_start();
    t.starts_with(b"rO0AB")
        || t.starts_with(&[0xac, 0xed, 0x00, 0x05])
        || t.get(..8)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"aced0005"))
}
