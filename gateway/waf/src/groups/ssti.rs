//! Server-side template injection: arithmetic probes and object walks in Jinja, Twig,
//! Freemarker, Velocity, ERB, Smarty, Handlebars, Mako, Thymeleaf.

use super::loc::*;
use super::Group::Ssti as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "ssti.arithmetic_probe",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &["{{", "${", "<%", "#{", "{%", "*{", "@(", "@{", "{#", "[["],
        r#"(?:\{\{|\$\{\{?|<%=?|#\{|\*\{|@\(|@\{|\[\[|\{#|\{%=?)\s*['"]?\d+['"]?\s*[*+/-]\s*['"]?\d+['"]?\s*(?:\}\}?|%>|\)|\]\]|#\}|%\})"#,
    ),
    rule(
        "ssti.object_walk",
        G,
        Critical,
        1,
        INPUT | NAMES,
        Norm,
        &[
            "__class__",
            "__mro__",
            "__subclasses__",
            "__globals__",
            "__builtins__",
            "__import__",
            "__base__",
            "__bases__",
            "__init__",
            "func_globals",
            "__getattribute__",
        ],
        r"__(?:class|mro|subclasses|globals|builtins|import|bases?|getattribute)__|__init__\s*\.\s*__globals__|\bfunc_globals\b",
    ),
    rule(
        "ssti.template_globals",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &[
            "{{",
            "{%",
            "${",
            "<#",
            "#set",
            "#foreach",
            "<%",
            "{php",
            "{system",
            "{exec",
            "{passthru",
            "{include",
            "{fetch",
            "{eval",
            "{math",
            "$class",
            "freemarker",
            "{$smarty",
        ],
        r#"\{\{[-\s]*(?:config|self|request|settings|app|url_for|get_flashed_messages|lipsum|cycler|joiner|namespace|range|_self|g|session|dump|constructor)\b[\s.|\[(}]|\{\{[^}]*\|\s*(?:attr|map|filter|reduce|sort|system|exec|passthru)\s*\(|\{%-?\s*(?:import|include|set|for|if|extends|macro|raw|debug|load|exec|python|with|block|call|print|module|cycle|now|filter)\b|<#(?:assign|include|import|list|if|macro|global|setting)\b|freemarker\.template\.utility|\$\{\s*(?:product|object|self|module|request|class|ctx|context)\.|#set\s*\(\s*\$|#foreach\s*\(|\$class\.inject|\{\$smarty\.|\{\{#with\b|\{(?:php|system|exec|passthru|include|fetch|eval|math)\b|<%[=\-]?\s*(?:system|exec|`|%x|eval|file\.|io\.|require|import|open3|kernel|process|runtime)|\$\{\s*t\s*\("#,
    ),
    rule(
        "ssti.expression",
        G,
        Notice,
        2,
        INPUT,
        Norm,
        &["{{", "${", "<%", "#{"],
        r"\{\{[^}]{1,100}\}\}|\$\{[^}]{1,100}\}|<%[^%]{1,100}%>|#\{[^}]{1,100}\}",
    ),
];
