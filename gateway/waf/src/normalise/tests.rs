#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn norm(raw: &str, plus: bool) -> NormBufs {
    let mut b = NormBufs::default();
    normalise(raw.as_bytes(), plus, &mut b);
    b
}

#[test]
fn url_decoding_is_repeated_and_bounded() {
    assert_eq!(norm("%253Cscript%253E", false).norm, "<script>");
    assert_eq!(norm("%25253Cx", false).norm, "<x");
    // Four rounds deep stays partly encoded: the bound is three.
    assert_eq!(norm("%2525253C", false).norm, "%3c");
    assert_eq!(norm("a+b%2Bc", true).norm, "a b+c");
    assert_eq!(norm("a+b", false).norm, "a+b");
    assert_eq!(norm("%u003cscript%u003E", false).norm, "<script>");
    assert_eq!(norm("%zz%4", false).norm, "%zz%4");
}

#[test]
fn javascript_escapes() {
    assert_eq!(norm("\\x3cscript\\x3e", false).norm, "<script>");
    assert_eq!(norm("\\u003cimg\\u{3e}", false).norm, "<img>");
    // Other backslashes stay: paths and shell escapes are read by their own views.
    assert_eq!(
        norm("c:\\users\\xavier\\ufo", false).norm,
        "c:\\users\\xavier\\ufo"
    );
    assert_eq!(norm("..\\x2e\\x2e\\", false).norm, "....\\");
}

#[test]
fn html_entities() {
    assert_eq!(norm("&lt;img&gt;", false).norm, "<img>");
    assert_eq!(norm("&#60;&#x3C;&#0000060&#X3c;", false).norm, "<<<<");
    assert_eq!(norm("java&Tab;script&colon;", false).norm, "java\tscript:");
    assert_eq!(norm("AT&T &amp co", false).norm, "at&t & co");
    assert_eq!(norm("&#37;3Cb", false).norm, "<b");
}

#[test]
fn unicode_width_and_case() {
    assert_eq!(norm("ＳＥＬＥＣＴ", false).norm, "select");
    assert_eq!(norm("%EF%BC%9Cscript%EF%BC%9E", false).norm, "<script>");
    assert_eq!(norm("Renée Ñandú", false).norm, "renée ñandú");
    let b = norm("%ff%fe<x", false);
    assert!(b.invalid_utf8);
    assert!(b.norm.ends_with("<x"));
}

#[test]
fn nul_removed_and_flagged() {
    let b = norm("a%00b", false);
    assert!(b.had_nul);
    assert_eq!(b.norm, "ab");
}

#[test]
fn sql_comments() {
    let b = norm("1/**/UNION/**/SELECT", false);
    assert!(b.has_sql);
    assert_eq!(b.sql, "1 union select");
    assert_eq!(
        norm("1 /*!50000union*/ select", false).sql,
        "1  union  select"
    );
    assert!(!norm("plain text", false).has_sql);
}

#[test]
fn shell_evasions() {
    assert_eq!(
        norm("c'a't /e\"t\"c/pa\\sswd", false).shell,
        "cat /etc/passwd"
    );
    assert_eq!(
        norm(";cat${IFS}/etc/passwd", false).shell,
        ";cat /etc/passwd"
    );
    assert_eq!(
        norm(";cat$IFS$9/etc/passwd", false).shell,
        ";cat /etc/passwd"
    );
    assert_eq!(norm("{cat,/etc/passwd}", false).shell, " cat /etc/passwd ");
    assert_eq!(norm("c^a^l^c", false).shell, "calc");
}

#[test]
fn paths() {
    assert_eq!(
        norm("..\\..\\windows\\win.ini", false).path,
        "../../windows/win.ini"
    );
    assert_eq!(norm("/a//b/./c/.", false).path, "/a/b/c/");
    assert_eq!(norm("..%2f..%252fetc", false).path, "../../etc");
    let mut out = String::new();
    clean_path(b"/a/b/../c//./d%2F..", &mut out);
    assert_eq!(out, "/a/c/");
    clean_path(b"/../../etc", &mut out);
    assert_eq!(out, "/etc");
}

#[test]
fn plain_fast_path() {
    assert!(is_plain(b"abc-DEF_123.4"));
    assert!(!is_plain(b"a b"));
    assert!(!is_plain(b"a%20"));
}

#[test]
fn megabyte_of_percent_25_is_three_passes() {
    let raw = "%25".repeat(350_000);
    let b = norm(&raw, false);
    // %25 -> % after one round; `%%%...` decodes no further.
    assert_eq!(b.norm.len(), 350_000);
}
