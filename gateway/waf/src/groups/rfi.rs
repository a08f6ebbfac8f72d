//! Remote file inclusion: a URL handed to a parameter that includes files, or a URL
//! shaped to neutralise an appended extension (`?`, `%00`, `#` at the end).

use super::loc::*;
use super::Group::Rfi as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// A URL in a parameter named like an include (`file`, `page`, `include`, `template` ...).
pub(crate) const INCLUDE_PARAM: &str = "rfi.include_param";

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "rfi.url_ip_host",
        G,
        Warning,
        1,
        ARGS,
        Norm,
        &["://"],
        r"^\s*(?:https?|ftps?)://(?:[^/@]*@)?\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?:/|$)",
    ),
    rule(
        "rfi.url_truncated",
        G,
        Error,
        1,
        ARGS,
        Norm,
        &["://"],
        r"^\s*(?:https?|ftps?)://[^\s?]+\.(?:txt|php\d?|phtml|inc|jsp|asp|aspx|pl|py|sh|cgi|gif|jpg|png|jpeg)\?+(?:$|=)|^\s*(?:https?|ftps?)://\S+?\?{1,}$|^\s*(?:https?|ftps?)://\S+\x00",
    ),
    rule(
        "rfi.ftp_smb",
        G,
        Warning,
        1,
        ARGS,
        Norm,
        &["ftp://", "ftps://", "smb://", "\\\\"],
        r"^\s*(?:ftps?|smb)://|^\\\\\\\\[\w.-]+\\\\",
    ),
];

/// Parameter names that, holding a URL, mean an include.
pub(crate) fn include_like(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "file",
        "filename",
        "include",
        "inc",
        "page",
        "path",
        "template",
        "tpl",
        "dir",
        "document",
        "folder",
        "root",
        "pg",
        "style",
        "pdf",
        "lang",
        "language",
        "module",
        "mod",
        "load",
        "require",
        "layout",
        "conf",
        "config",
        "theme",
        "skin",
        "plugin",
        "basepath",
        "main",
        "mosconfig",
        "absolute_path",
        "path_to_root",
        "rootdir",
        "dirpath",
        "includedir",
        "classpath",
        "cmd",
        "exec",
    ];
    let n = name.trim_end_matches("[]");
    NAMES.iter().any(|k| n.eq_ignore_ascii_case(k))
        || n.ends_with("_path")
        || n.ends_with("_dir")
        || n.ends_with("_file")
        || n.ends_with("include")
}

/// Whether `norm` is a URL of a scheme PHP's include can load.
pub(crate) fn is_remote_url(norm: &str) -> bool {
    let v = norm.trim_start();
    [
        "http://",
        "https://",
        "ftp://",
        "ftps://",
        "php://",
        "data:",
        "expect://",
        "zip://",
        "phar://",
        "smb://",
        "\\\\",
    ]
    .iter()
    .any(|p| v.starts_with(p))
}
