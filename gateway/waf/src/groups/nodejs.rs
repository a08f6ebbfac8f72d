//! Node.js: prototype pollution (in names and values) and server-side JavaScript.

use super::loc::*;
use super::Group::Nodejs as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// A JSON object under `constructor` with a `prototype` key.
pub(crate) const PROTOTYPE_KEY: &str = "nodejs.prototype_key";

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "nodejs.prototype_pollution",
        G,
        Critical,
        1,
        ALL,
        Norm,
        &["__proto__", "prototype"],
        r#"__proto__|\bconstructor\s*(?:\.|\[\s*['"]?|\]\s*\[\s*['"]?)\s*prototype\b|\bconstructor\.prototype|^constructor\[prototype\]"#,
    ),
    rule(
        "nodejs.child_process",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &[
            "child_process",
            "mainmodule",
            "process.binding",
            "constructor",
            "require(",
            "require (",
            "global.process",
            "process.env",
            "process.exit",
            "readfilesync",
            "spawnsync",
            "execsync",
            "process.kill",
        ],
        r#"child_process|process\.mainmodule|process\.binding\s*\(|this\.constructor\.constructor|\.constructor\.constructor\s*\(|\bglobal\.process\b|require\s*\(\s*['"`](?:fs|child_process|net|vm|os|http)['"`]\s*\)\s*\.|\b(?:readfilesync|execsync|spawnsync)\s*\(|process\.(?:exit|kill)\s*\(|res\.(?:end|write|send)\s*\(\s*require|\bprocess\.env\b\s*[\[)};]"#,
    ),
    rule(
        "nodejs.ssjs",
        G,
        Warning,
        1,
        INPUT,
        Norm,
        &["eval", "function", "settimeout", "setinterval", "require"],
        r#"\beval\s*\(|\bnew\s+function\s*\(|\b(?:settimeout|setinterval)\s*\(\s*['"`]|\brequire\s*\(\s*['"`]"#,
    ),
];
