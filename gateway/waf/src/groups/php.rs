//! PHP injection: stream wrappers, open tags, dangerous function calls, superglobals,
//! serialized objects.

use super::loc::*;
use super::Group::Php as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "php.wrapper",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &["php://", "phar://", "zip://", "expect://", "glob://", "data://", "compress.", "zlib:", "rar://", "ogg://", "ssh2."],
        r"\b(?:php://(?:filter|input|stdin|memory|temp|fd|output)|phar://|zip://|expect://|glob://|data://|compress\.(?:zlib|bzip2)://|zlib:|rar://|ogg://|ssh2\.(?:shell|exec|tunnel|sftp|scp)://)",
    ),
    rule(
        "php.open_tag",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &["<?"],
        r"<\?(?:php\b|=|\s+(?:echo|eval|system|exec|passthru|include|require|\$))",
    ),
    rule(
        "php.exec_function",
        G,
        Critical,
        1,
        INPUT,
        Norm,
        &["system", "exec", "passthru", "popen", "proc_open", "phpinfo", "eval", "assert", "create_function", "base64_decode", "gzinflate", "str_rot13", "call_user_func", "preg_replace", "file_put_contents", "fwrite", "move_uploaded_file", "highlight_file", "show_source", "array_map", "usort", "pcntl", "putenv", "ini_set"],
        r#"\b(?:phpinfo\s*\(\s*\)|(?:shell_exec|passthru|proc_open|pcntl_exec|popen|create_function|highlight_file|show_source)\s*\(|(?:eval|assert)\s*\(\s*(?:\$|base64_decode|gzinflate|str_rot13|gzuncompress|stripslashes|urldecode|file_get_contents|['"]\s*\$|chr\s*\()|(?:system|exec)\s*\(\s*(?:\$_|['"](?:id|ls|whoami|cat|uname|dir|pwd|wget|curl|nc|bash|sh|ping)\b)|(?:base64_decode|gzinflate|str_rot13|gzuncompress)\s*\(\s*(?:base64_decode|gzinflate|str_rot13|\$_|['"][a-z0-9+/=]{16,})|preg_replace\s*\(\s*['"]([/#~|@!%]).*[/#~|@!%][a-z]*e[a-z]*['"]|call_user_func(?:_array)?\s*\(\s*['"]?(?:system|exec|passthru|assert|shell_exec)|file_put_contents\s*\([^)]*\.ph(?:p\d?|tml|ar)|move_uploaded_file\s*\(|(?:array_map|usort|array_filter)\s*\(\s*['"](?:system|exec|assert|passthru)|putenv\s*\(\s*['"]ld_preload|ini_set\s*\(\s*['"](?:allow_url_include|auto_prepend_file|open_basedir|disable_functions))"#,
    ),
    rule(
        "php.function_call",
        G,
        Warning,
        1,
        INPUT,
        Norm,
        &["system", "exec", "eval", "assert", "include", "require", "file_get_contents", "fopen", "readfile", "unserialize", "base64_decode"],
        r"\b(?:system|exec|eval|assert|include(?:_once)?|require(?:_once)?|file_get_contents|fopen|readfile|unserialize|base64_decode)\s*\(",
    ),
    rule(
        "php.superglobal",
        G,
        Warning,
        1,
        INPUT,
        Norm,
        &["$_", "$globals", "$http_"],
        r"\$_(?:get|post|request|cookie|server|files|env|session)\b|\$globals\b|\$http_(?:get|post|raw_post_data)_?",
    ),
    rule(
        "php.object_injection",
        G,
        Critical,
        1,
        INPUT | NAMES,
        Norm,
        &[":{", "o:", "c:"],
        r#"(?:^|[;{(\s"'])[oc]:[+]?\d+:"[a-z_\\][\w\\]*":\d+:\{|^a:\d+:\{(?:[isbd]:[^;]*;|s:\d+:"[^"]*";)*[oc]:\d+:""#,
    ),
];
