//! Cross-site scripting: libinjection's HTML5 tokenizer, and rules for what it leaves
//! out (JavaScript URIs, script-context breakouts, DOM sinks).

use super::loc::*;
use super::Group::Xss as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// libinjection detector id.
pub(crate) const LIBINJECTION: &str = "xss.libinjection";
/// libinjection's verdict on a value with no tag: an attribute (`style="..."`) is
/// weak evidence alone; event handlers and `javascript:` have their own rules.
pub(crate) const LIBINJECTION_ATTRIBUTE: &str = "xss.libinjection_attribute";

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "xss.script_tag",
        G,
        Critical,
        1,
        INPUT | NAMES,
        Norm,
        &["<script"],
        r"<script[\s>/]|<script$",
    ),
    rule(
        "xss.event_handler",
        G,
        Critical,
        1,
        INPUT | NAMES,
        Norm,
        &[
            "<", " on", "\"on", "'on", "`on", "/on", "\ton", "\non", "\ron", "\x0con",
        ],
        r#"<[a-z!/?][^>]*?[\s/"'`]on[a-z]{3,}\s*=|(?:^\W*|["'`][^<>]{0,200}?)[\s"'`/]on(?:error|load|mouse\w+|focus|blur|click|key\w+|animation\w+|transition\w+|pointer\w+|toggle|begin|pageshow|input|change|submit|wheel|scroll|drag\w*|copy|paste|touch\w+)\s*="#,
    ),
    rule(
        "xss.dangerous_tag",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &["<"],
        r"<(?:iframe|frame|frameset|object|embed|applet|meta|base|svg|math|xss|isindex|script|form\s+action|link\s[^>]*rel\s*=\s*.?import)\b",
    ),
    rule(
        "xss.js_uri",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &["script", "ipt:", "ipt\t", "ipt\n", "pt :"],
        // Browsers drop tabs and newlines inside a scheme: `jav&#x09;ascript:`.
        r#"(?:^|[\s"'=(<])(?:j\s*a\s*v\s*a|v\s*b|l\s*i\s*v\s*e)\s*s\s*c\s*r\s*i\s*p\s*t\s*:\s*(?://|[\w$.\[\]]+\s*[(`=]|["']|$)"#,
    ),
    rule(
        "xss.data_uri",
        G,
        Error,
        1,
        INPUT,
        Norm,
        &["data:"],
        r"data:\s*(?:text/html|application/x?html|image/svg\+xml|text/javascript)",
    ),
    rule(
        "xss.js_breakout",
        G,
        Error,
        1,
        INPUT,
        Norm,
        &[
            "alert",
            "prompt",
            "confirm",
            "eval",
            "fromcharcode",
            "document.",
            "window.",
            "atob",
            "constructor",
        ],
        r#"['"`;)}\]]\s*[-+;,)]?\s*(?:alert|prompt|confirm|eval|print|atob|settimeout|setinterval)\s*(?:\(|`)|\b(?:string\.fromcharcode|document\.(?:cookie|domain|write|location)|window\.(?:location|name|open)|top\.location)\b|\[\s*['"]constructor['"]\s*\]"#,
    ),
    rule(
        "xss.dom_sink",
        G,
        Warning,
        1,
        INPUT,
        Norm,
        &["alert", "prompt", "confirm", "innerhtml", "srcdoc"],
        r"\b(?:alert|prompt|confirm)\s*(?:\(|`)|\.innerhtml\s*=|\bsrcdoc\s*=",
    ),
    rule(
        "xss.css_expression",
        G,
        Error,
        1,
        INPUT,
        Norm,
        &["expression", "-moz-binding", "behavior"],
        r"\bexpression\s*\(|-moz-binding\s*:|\bbehavior\s*:\s*url",
    ),
    rule(
        "xss.html_tag",
        G,
        Warning,
        2,
        INPUT,
        Norm,
        &["<"],
        r"<(?:a|img|body|style|input|video|audio|details|marquee|textarea|button|select|keygen|template|div|span|table|p)\b[^>]*>?",
    ),
];
