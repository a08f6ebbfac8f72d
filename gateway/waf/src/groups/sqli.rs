//! SQL injection: libinjection's tokenizer and fingerprints on every argument that has
//! a character SQL needs, plus rules for what it does not model (time-based probes,
//! catalog names, error-based functions).

use super::loc::*;
use super::Group::Sqli as G;
use super::Severity::*;
use super::View::Sql;
use super::{rule, RuleDef};

/// libinjection detector id.
pub(crate) const LIBINJECTION: &str = "sqli.libinjection";

const TAUTOLOGY_LITERALS: &[&str] = &[
    "'or", "'and", "'xor", "'||", "'&&", "' or", "' and", "' xor", "' ||", "' &&", "\"or", "\"and",
    "\"xor", "\"||", "\"&&", "\" or", "\" and", "\" xor", "\" ||", "\" &&", ")or", ")and", ")xor",
    ")||", ")&&", ") or", ") and", ") xor", ") ||", ") &&", "0or", "0and", "0xor", "0||", "0&&",
    "0 or", "0 and", "0 xor", "0 ||", "0 &&", "1or", "1and", "1xor", "1||", "1&&", "1 or", "1 and",
    "1 xor", "1 ||", "1 &&", "2or", "2and", "2xor", "2||", "2&&", "2 or", "2 and", "2 xor", "2 ||",
    "2 &&", "3or", "3and", "3xor", "3||", "3&&", "3 or", "3 and", "3 xor", "3 ||", "3 &&", "4or",
    "4and", "4xor", "4||", "4&&", "4 or", "4 and", "4 xor", "4 ||", "4 &&", "5or", "5and", "5xor",
    "5||", "5&&", "5 or", "5 and", "5 xor", "5 ||", "5 &&", "6or", "6and", "6xor", "6||", "6&&",
    "6 or", "6 and", "6 xor", "6 ||", "6 &&", "7or", "7and", "7xor", "7||", "7&&", "7 or", "7 and",
    "7 xor", "7 ||", "7 &&", "8or", "8and", "8xor", "8||", "8&&", "8 or", "8 and", "8 xor", "8 ||",
    "8 &&", "9or", "9and", "9xor", "9||", "9&&", "9 or", "9 and", "9 xor", "9 ||", "9 &&",
];

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "sqli.union_select",
        G,
        Critical,
        1,
        INPUT,
        Sql,
        &["union"],
        // What follows `select` in an injection (a column list, NULL, a number, a
        // function, `from`): not "the union select committee met".
        r#"\bunion(?:\s+(?:all|distinct))?[\s(]+select(?:\s*[(*'"@`-]|\s+(?:\d|null\b|0x|char\b|concat|version|user\b|database|schema_name|table_name|column_name|group_concat|password|username|distinct\b|all\b|top\b|[\w.,\s'"`()]{1,120}?\bfrom\b))"#,
    ),
    rule(
        "sqli.time_based",
        G,
        Critical,
        1,
        INPUT,
        Sql,
        &["sleep", "benchmark", "waitfor", "dbms_lock", "randomblob"],
        r"\b(?:pg_)?sleep\s*\(\s*[\d.(]|\bbenchmark\s*\(\s*\d+\s*,|\bwaitfor\s+(?:delay|time)\s+'|\bdbms_lock\.sleep\s*\(|\brandomblob\s*\(\s*\d{6,}",
    ),
    rule(
        "sqli.catalog",
        G,
        Critical,
        1,
        INPUT,
        Sql,
        &[
            "information_schema",
            "sysobjects",
            "syscolumns",
            "pg_catalog",
            "pg_shadow",
            "sqlite_master",
            "mysql.user",
            "xp_cmdshell",
            "sp_executesql",
            "load_file",
            "into outfile",
            "into dumpfile",
            "@@version",
            "@@datadir",
            "utl_http",
            "utl_inaddr",
            "dbms_pipe",
            "all_tables",
            "user_tables",
            "sys.databases",
            "msysobjects",
            "pg_read_file",
            "lo_import",
            "copy (",
        ],
        r"information_schema|sys(?:objects|columns)\b|pg_(?:catalog|shadow|read_file)|sqlite_master|mysql\.user\b|xp_cmdshell|sp_executesql|load_file\s*\(|into\s+(?:out|dump)file|@@(?:version|datadir)|utl_(?:http|inaddr)|dbms_pipe|\b(?:all|user)_tables\b|sys\.databases|msysobjects|lo_import\s*\(|copy\s*\(\s*select",
    ),
    rule(
        "sqli.error_based",
        G,
        Critical,
        1,
        INPUT,
        Sql,
        &[
            "extractvalue",
            "updatexml",
            "0x",
            "floor(",
            "exp(",
            "geometrycollection",
            "multipoint",
            "polygon",
            "convert(",
            "cast(",
        ],
        r"\b(?:extractvalue|updatexml)\s*\(|\bconcat(?:_ws)?\s*\(\s*(?:0x[0-9a-f]+|char\s*\()|\bfloor\s*\(\s*rand\s*\(|\bexp\s*\(\s*~\s*\(|\b(?:geometrycollection|multipoint|polygon|multipolygon|linestring)\s*\(\s*\(?\s*select\b|\b(?:convert|cast)\s*\(\s*\(?\s*select\b",
    ),
    rule(
        "sqli.stacked_query",
        G,
        Critical,
        1,
        INPUT,
        Sql,
        &[";"],
        r#"(?:^|['"\d)])\s*;\s*(?:drop\s+(?:table|database|user)|shutdown\b|exec(?:ute)?\s+(?:xp_|sp_|master\.|\()|declare\s+@|insert\s+into|delete\s+from|update\s+\w+\s+set\b|truncate\s+table|create\s+(?:table|user|function)|alter\s+(?:table|user)|select\s+[\w*@(),\s'"]+?(?:\bfrom\b|--|#|$))"#,
    ),
    rule(
        "sqli.tautology",
        G,
        Error,
        1,
        INPUT,
        Sql,
        // A quote, digit or parenthesis right before the operator (as the regex says).
        TAUTOLOGY_LITERALS,
        r#"['"\d)]\s*(?:\bor\b|\band\b|\bxor\b|\|\||&&)\s*\(?\s*(?:['"]?\w*['"]?\s*(?:[=<>!]=?|\blike\b|\bis\b|\bbetween\b|\bin\b)\s*\(?['"]?\w*|not\s|true\b|\d+\s*(?:--|#|$))"#,
    ),
    rule(
        "sqli.comment_probe",
        G,
        Critical,
        1,
        INPUT,
        Sql,
        &["'", "\""],
        r#"^[\w.-]*['"]\)*\s*(?:--|#|;)"#,
    ),
    rule(
        "sqli.order_by_probe",
        G,
        Warning,
        1,
        INPUT,
        Sql,
        &["order", "group"],
        r"\b(?:order|group)\s+by\s+\d+\s*(?:--|#|;|$|,\s*\d)",
    ),
    rule(
        "sqli.order_by_comment",
        G,
        Critical,
        1,
        INPUT,
        Sql,
        &["order", "group"],
        r"\b(?:order|group)\s+by\s+\d+(?:\s*,\s*\d+)*\s*(?:--|#|/\*|;\s*$|%00)",
    ),
    rule(
        "sqli.functions",
        G,
        Warning,
        2,
        INPUT,
        Sql,
        &[
            "(", "char", "ascii", "substr", "mid", "version", "database", "user",
        ],
        r"\b(?:char|chr|ascii|ord|substr(?:ing)?|mid|hex|unhex|version|database|schema|user|current_user|system_user|group_concat|concat|if|ifnull|coalesce)\s*\(",
    ),
];

/// libinjection's verdict, less the fingerprints that prose produces: a number or word
/// followed by a `--` comment ("50% off -- today only" is `1c`).
///
/// `Some(true)`: an injection (data, then SQL: `1' or 1=1`). `Some(false)`: a whole
/// statement or expression from its first byte (`SELECT a FROM t`, `if (a && b)`),
/// which is what code snippets and SQL prose look like: a weaker signal.
pub(crate) fn libinjection(norm: &str) -> Option<bool> {
    let verdict = run(norm.as_bytes())?;
    if !verdict {
        return Some(false);
    }
    let b = norm.as_bytes();
    let letter = |j: Option<usize>| {
        j.and_then(|j| b.get(j))
            .is_some_and(|c| c.is_ascii_alphabetic())
    };
    let contraction = |i: usize| b[i] == b'\'' && letter(i.checked_sub(1)) && letter(Some(i + 1));
    let quotes = || (0..b.len()).filter(|&i| matches!(b[i], b'\'' | b'"' | b'`'));
    // An injection breaks out of its string early (`admin'`, `1'`, `x"`); a quote
    // that first comes after several words is prose quoting something ("I tried
    // "SELECT * FROM t" but ...").
    if let Some(q) = quotes().find(|&i| !contraction(i)) {
        if norm[..q].split_whitespace().nth(2).is_some() {
            return Some(false);
        }
    }
    // Prose whose first quote is an apostrophe inside a word ("what's", "O'Brien")
    // opens a "string" libinjection reads on from there; without those apostrophes
    // a sentence is clean, an injection is not.
    if quotes().next().is_some_and(contraction) && norm.split_whitespace().nth(3).is_some() {
        let stripped: Vec<u8> = (0..b.len())
            .filter(|&i| !contraction(i))
            .map(|i| b[i])
            .collect();
        return Some(run(&stripped).unwrap_or(false));
    }
    Some(true)
}

fn run(v: &[u8]) -> Option<bool> {
    let r = libinjectionrs::detect_sqli(v);
    if !r.is_injection() {
        return None;
    }
    let fp = r.fingerprint.as_ref().map_or("", |f| f.as_str());
    if matches!(fp, "1c" | "nc" | "c" | "n" | "1") {
        return None;
    }
    Some(!(fp.starts_with('E') || fp.starts_with('f') || fp.starts_with('k')))
}

/// A whole SQL statement in an argument, or SQL quoted in prose (weaker than an
/// injection).
pub(crate) const STATEMENT: &str = "sqli.statement";
